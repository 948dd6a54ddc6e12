"""Turning a ``%%pmap`` cell into a function that workers can run (no IPython needed here).

``%%pmap x in xs`` makes the cell body the body of ``def task(item): x = item; ...`` whose last
expression is returned, like a list comprehension's element. The function is compiled with the
notebook's namespace as its globals, so cloudpickle sends the names it uses (variables,
functions, classes, modules) to workers under every start method.
"""

from __future__ import annotations

import ast
import io
import linecache
import re
import tokenize
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


def syntax_problem(expression: str) -> str | None:
    """Python's complaint about ``expression``, or None if it parses."""
    try:
        ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        return exc.msg
    return None


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


def parse_header(text: str) -> LoopHeader | None:
    """The loop header of ``%%pmap TARGET in ITERABLE``, or None for ``%%pmap ITERABLE``.

    Raises CellSyntaxError, quoting the line with a caret under the SyntaxError, when it is
    neither: a typo there must not be taken for the other form.
    """
    loop = split_loop_header(text)
    if loop is not None or _parses(text, "eval"):
        return loop
    for match in _IN.finditer(text):  # 'x in <broken>': the iterable is what is wrong
        target = text[: match.start()].strip()
        if target and _parses(f"for {target} in _: pass", "exec"):
            start = len(text) - len(text[match.end():].lstrip())
            what = "the iterable after 'in' is not a valid expression"
            break
    else:
        start = 0
        what = "it is neither 'TARGET in ITERABLE' nor an iterable expression"
    try:
        ast.parse(text[start:], mode="eval")
    except SyntaxError as exc:
        column = start + exc.offset if exc.offset and exc.offset > 0 else len(text) + 1
        raise CellSyntaxError(f"cannot parse the magic line, {what}: {exc.msg} "
                              f"(column {column})\n{_pointing_at(text, column)}") from None
    raise CellSyntaxError(f"cannot parse the magic line: {what}")  # unreachable in practice


def describe_body_syntax_error(exc: SyntaxError, parsing: bool = True) -> str:
    """A SyntaxError of the cell body as one message with the line: from :func:`body_module`
    (``parsing``), or from turning the parsed body into code (:func:`loop_body_function`)."""
    where = f"line {exc.lineno} of the cell" if exc.lineno else "the cell body"
    text = (exc.text or "").rstrip("\n")
    if not text.strip() and exc.lineno and exc.filename:  # compile() of a tree has no text
        text = linecache.getline(exc.filename, exc.lineno).rstrip("\n")
    what = "does not parse" if parsing else "cannot run as a task"
    message = f"the cell body {what}, {where}: {exc.msg}"
    return f"{message}\n{_pointing_at(text, exc.offset or 0)}" if text.strip() else message


def _pointing_at(text: str, column: int) -> str:
    """The line, indented, and a caret under its (1-based) column."""
    caret = f"\n    {' ' * (column - 1)}^" if column > 0 else ""
    return f"    {text}{caret}"


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


def loop_body_function(header: LoopHeader, body: str | ast.Module, namespace: dict,
                       filename: str) -> Callable[[Any], Any]:
    """A function of one item that binds ``header.target`` and runs ``body`` (source, or the
    tree from :func:`body_module`).

    Raises SyntaxError, at the line of the cell, for what parses but cannot be the body of a
    function (``import *``, ``await``) or would silently change what the body means (a
    ``return`` or ``yield`` of its own).
    """
    tree = body if isinstance(body, ast.Module) else body_module(body, filename)
    _reject_return_and_yield(tree, filename)
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
    try:
        code = compile(module, filename, "exec")
    except SyntaxError as exc:
        hint = next((hint for start, hint in _BODY_HINTS if exc.msg.startswith(start)), None)
        if hint:
            exc.msg = f"{exc.msg}; {hint}"
            exc.args = (exc.msg,) + exc.args[1:]
        raise
    scope: dict = {}
    exec(code, namespace, scope)
    return scope["pmap_cell"]


# why Python rejects these lines in a %%pmap body though it accepts them in a cell
_NO_AWAIT = "the body runs as an ordinary function in each worker, so it cannot await"
_BODY_HINTS = [
    ("import *", "the body runs as a function in each worker, where 'import *' is not "
                 "allowed: import the names it uses"),
    ("'await'", _NO_AWAIT),
    ("'async ", _NO_AWAIT),
    ("asynchronous comprehension", _NO_AWAIT),
]


def _reject_return_and_yield(tree: ast.Module, filename: str) -> None:
    """A cell rejects a ``return`` or ``yield`` of its own, but the body's function would not:
    the item would end early with another result than the last expression's, or every result
    would be a generator, which cannot leave the worker. Reject them as a cell would."""
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    nodes, found = list(tree.body), []
    while nodes:  # the body's own nodes: a def, lambda or class in it is its own scope
        node = nodes.pop()
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)):
            found.append(node)
        elif not isinstance(node, scopes):
            nodes.extend(ast.iter_child_nodes(node))
    if not found:
        return
    node = min(found, key=lambda node: (node.lineno, node.col_offset))
    if isinstance(node, ast.Return):
        why = ("'return' outside function: an item's result is the value of the body's last "
               "expression; to return early, define a function in the cell and map it with "
               "'%%pmap ITERABLE'")
    else:
        why = ("'yield' outside function: every item's result would be a generator, which "
               "cannot be sent back from a worker; end the body with a list instead")
    text = linecache.getline(filename, node.lineno) or None
    raise SyntaxError(why, (filename, node.lineno, node.col_offset + 1, text))


def line_without_result(tree: ast.Module) -> int | None:
    """The line to warn about when every item's result would be None by mistake: a body that
    ends with an assignment (its line), or an empty body (the magic line). None otherwise: a
    body that ends with a loop, ``with`` or ``if`` statement is taken to run for its effects."""
    if not tree.body:
        return BODY_FIRST_LINE - 1
    last = tree.body[-1]
    return last.lineno if isinstance(last, (ast.Assign, ast.AugAssign, ast.AnnAssign)) else None


def ends_with_semicolon(source: str) -> bool:
    """Whether the last token is ``;``: IPython then shows no result, and neither does %%pmap."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return False
    ignored = (tokenize.ENDMARKER, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT,
               tokenize.DEDENT, tokenize.INDENT)
    for token in reversed(tokens):
        if token.type not in ignored:
            return token.type == tokenize.OP and token.string == ";"
    return False


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
