"""Turning a ``%%pmap`` cell into a function that workers can run (no IPython needed here).

``%%pmap x in xs`` makes the cell body the body of ``def task(item): x = item; ...`` whose last
expression is returned, like a list comprehension's element. The function is compiled with the
notebook's namespace as its globals, so cloudpickle sends the names it uses (variables,
functions, classes, modules) to workers under every start method.
"""

from __future__ import annotations

import ast
import linecache
import re
from dataclasses import dataclass
from typing import Any, Callable

ITEM_NAME = "_nbpool_pmap_item"
BODY_FIRST_LINE = 2  # a %%pmap cell's body starts after the magic line
_IN = re.compile(r"\bin\b")


class CellSyntaxError(ValueError):
    """The magic line or the cell cannot be turned into a task; the message says how to fix it."""


@dataclass
class LoopHeader:
    target: str  # source of the assignment target, e.g. "x" or "a, b"
    iterable: str  # source of the iterable expression


def _parses(source: str, mode: str) -> bool:
    try:
        ast.parse(source, mode=mode)
        return True
    except SyntaxError:
        return False


def split_loop_header(text: str) -> LoopHeader | None:
    """``'a, b in zip(xs, ys)'`` -> target ``'a, b'`` and iterable ``'zip(xs, ys)'``.

    The first ``in`` that leaves a valid ``for`` target on its left and an expression on its
    right wins, so ``x in [y for y in ys]`` splits at the first ``in``. None if there is none.
    """
    for match in _IN.finditer(text):
        target, iterable = text[: match.start()].strip(), text[match.end():].strip()
        if not target or not iterable:
            continue
        if _parses(f"for {target} in _: pass", "exec") and _parses(iterable, "eval"):
            return LoopHeader(target, iterable)
    return None


def split_function_and_iterable(text: str) -> tuple[str, str] | None:
    """``'f range(10)'`` or ``'lambda x: x + 1 range(3)'`` -> (function, iterable) sources."""
    text = text.strip()
    for match in re.finditer(r"\s+", text):
        left, right = text[: match.start()], text[match.end():]
        if _parses(left, "eval") and _parses(right, "eval"):
            return left, right
    return None


def body_module(body: str, filename: str) -> ast.Module:
    """The cell body parsed with the line numbers of the cell (it starts on line 2, after the
    magic line), so that syntax errors and tracebacks name the lines the user sees."""
    try:
        tree = ast.parse(body, filename=filename)
    except SyntaxError as exc:
        exc.lineno = (exc.lineno or 1) + BODY_FIRST_LINE - 1
        raise
    ast.increment_lineno(tree, BODY_FIRST_LINE - 1)
    return tree


def loop_body_function(header: LoopHeader, body: str, namespace: dict,
                       filename: str) -> Callable[[Any], Any]:
    """A function of one item that binds ``header.target`` and runs ``body``."""
    tree = body_module(body, filename)
    statements = list(tree.body)
    if statements and isinstance(statements[-1], ast.Expr):
        last = statements[-1]
        statements[-1] = ast.copy_location(ast.Return(value=last.value), last)
    bind = ast.parse(f"{header.target} = {ITEM_NAME}").body[0]
    for node in ast.walk(bind):
        if hasattr(node, "lineno"):
            node.lineno = node.end_lineno = BODY_FIRST_LINE - 1  # the magic line
    function = ast.parse(f"def pmap_cell({ITEM_NAME}):\n    pass").body[0]
    function.body = [bind] + (statements or [ast.Pass()])
    module = ast.Module(body=[function], type_ignores=[])
    ast.fix_missing_locations(module)
    scope: dict = {}
    exec(compile(module, filename, "exec"), namespace, scope)
    return scope["pmap_cell"]


def single_function_name(body: str | ast.Module) -> str:
    """The name of the one function a cell defines (the ``%%pmap ITERABLE`` form)."""
    tree = ast.parse(body) if isinstance(body, str) else body
    names = [node.name for node in tree.body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(names) != 1:
        found = ", ".join(names) if names else "none"
        raise CellSyntaxError(
            "%%pmap ITERABLE maps the one function the cell defines, but this cell defines "
            f"{len(names)} ({found}). Use '%%pmap TARGET in ITERABLE' to map the cell body instead."
        )
    return names[0]


class CellTask:
    """The cell's function plus its source, so a worker's traceback can show the cell's lines.

    Picklable: this class is found by reference, the function travels by value.
    """

    def __init__(self, func: Callable, filename: str, source: str):
        self.func = func
        self.filename = filename
        self.source = source
        cache_source(filename, source)

    def __setstate__(self, state: dict) -> None:
        """In a worker: the cell's lines go to its linecache once, not at every task."""
        self.__dict__.update(state)
        cache_source(self.filename, self.source)

    def __call__(self, item):
        return self.func(item)


def cache_source(filename: str, source: str) -> None:
    """Puts a cell's lines in linecache (with no file behind them), unless they are there."""
    if filename not in linecache.cache:
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
