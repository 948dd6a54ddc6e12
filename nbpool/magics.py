"""``%%pmap`` and ``%pmap``: parallel maps written as notebook cells.

Registered by ``%load_ext nbpool`` and by the startup file pip installs into
``{sys.prefix}/etc/ipython/startup``. Registering is cheap: the pool and the engine are imported
on the first use of a magic, not when a kernel starts.
"""

from __future__ import annotations

import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import (Magics, line_cell_magic, magics_class, needs_local_scope,
                                no_var_expand)
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import cellcode

DEFAULT_OUT = "_pmap"
USAGE = """\
usage:
  %%pmap [options] TARGET in ITERABLE     the cell body runs once per item; its last
  <cell body>                             expression is the item's result
  %%pmap [options] ITERABLE               the cell defines one function; it is mapped
  <def f(x): ...>
  %pmap [options] FUNC ITERABLE           map an existing function (line magic)
options: -n/--n-jobs N, --chunk-size K, --unordered, --start-method M, --no-progress,
         --insights, -o/--out NAME"""

# options that take a value; every other option is a flag
_VALUE_OPTIONS = {"-n", "--n-jobs", "--chunk-size", "--start-method", "-o", "--out"}
_FLAG_OPTIONS = {"--unordered", "--no-progress", "--insights"}
_TOKEN = re.compile(r"\s*(\S+)")


def split_options(line: str) -> tuple[list[str], str]:
    """Leading option tokens, and the rest of the line untouched (it is Python code)."""
    tokens: list[str] = []
    position = 0
    while True:
        match = _TOKEN.match(line, position)
        if match is None or not match.group(1).startswith("-"):
            return tokens, line[position:].strip()
        token = match.group(1)
        name = token.split("=", 1)[0]
        if name not in _VALUE_OPTIONS and name not in _FLAG_OPTIONS:
            raise UsageError(f"%pmap: unknown option {token!r}\n{USAGE}")
        tokens.append(token)
        position = match.end()
        if name in _VALUE_OPTIONS and "=" not in token:
            value = _TOKEN.match(line, position)
            if value is None:
                raise UsageError(f"%pmap: option {token} needs a value\n{USAGE}")
            tokens.append(value.group(1))
            position = value.end()


@magics_class
class PmapMagics(Magics):
    """The ``pmap`` magics. Each call runs its own pool and stops it before returning."""

    @magic_arguments()
    @argument("-n", "--n-jobs", type=int, default=None, help="number of workers (default: CPUs)")
    @argument("--chunk-size", type=float, default=None, help="tasks per chunk")
    @argument("--unordered", action="store_true", help="results in completion order")
    @argument("--start-method", default="auto", help="fork, forkserver, spawn, threading, auto")
    @argument("--no-progress", action="store_true", help="no progress bar")
    @argument("--insights", action="store_true", help="show the insights after the map")
    @argument("-o", "--out", default=DEFAULT_OUT, help="variable that receives the results")
    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def pmap(self, line: str, cell: str | None = None, local_ns: dict | None = None) -> Any:
        """Map a cell body (``%%pmap x in xs``), a cell's function (``%%pmap xs``) or a
        function (``%pmap f xs``) over an iterable, in parallel worker processes."""
        option_tokens, header = split_options(line)
        try:
            options = parse_argstring(self.pmap, " ".join(option_tokens))
        except UsageError as exc:
            raise UsageError(f"%pmap: {exc}\n{USAGE}") from None
        if not header:
            raise UsageError(f"%pmap: nothing to map over\n{USAGE}")
        namespace = self.shell.user_ns
        if cell is None:
            func, iterable = self._line_form(header, namespace, local_ns or {})
        else:
            func, iterable = self._cell_form(line, header, cell, namespace)
        try:
            results = self._run(func, iterable, options)
        except Exception as exc:
            # what matters is the worker's traceback (the exception's cause, shown above it);
            # the frames of nbpool's machinery between here and there are noise
            raise exc.with_traceback(None) from exc.__cause__
        namespace[options.out] = results
        return results

    # -- turning the input into (function, iterable) -------------------------------------
    def _evaluate(self, source: str, namespace: dict, local_ns: dict | None = None) -> Any:
        return eval(compile(source, "<pmap line>", "eval"), namespace, local_ns or None)

    def _line_form(self, header: str, namespace: dict, local_ns: dict):
        parts = cellcode.split_function_and_iterable(header)
        if parts is None:
            raise UsageError(f"%pmap: expected 'FUNC ITERABLE', got {header!r}\n{USAGE}")
        func = self._evaluate(parts[0], namespace, local_ns)
        if not callable(func):
            raise UsageError(f"%pmap: {parts[0]!r} is not callable ({type(func).__name__})")
        return func, self._evaluate(parts[1], namespace, local_ns)

    def _cell_form(self, line: str, header: str, cell: str, namespace: dict):
        source = f"%%pmap {line}\n{cell}"
        filename = self._cache_source(source)
        body = self._transform(cell)
        loop = cellcode.split_loop_header(header)
        if loop is not None:
            iterable = self._evaluate(loop.iterable, namespace)
            # a SyntaxError in the body carries the cell's line: IPython shows it
            func = cellcode.loop_body_function(loop, body, namespace, filename)
            return cellcode.CellTask(func, filename, source), iterable
        tree = cellcode.body_module(body, filename)
        try:
            name = cellcode.single_function_name(tree)
        except cellcode.CellSyntaxError as exc:
            raise UsageError(f"%pmap: {exc}") from None
        if not cellcode._parses(header, "eval"):
            raise UsageError(f"%pmap: {header!r} is neither 'TARGET in ITERABLE' nor an "
                             f"iterable expression\n{USAGE}")
        iterable = self._evaluate(header, namespace)
        exec(compile(tree, filename, "exec"), namespace)  # defines the function, as a cell would
        return namespace[name], iterable

    def _transform(self, cell: str) -> str:
        """IPython syntax in the body (magics, ``!cmd``) cannot run in a worker: say so."""
        transformed = self.shell.transform_cell(cell)
        if "get_ipython()" in transformed and "get_ipython()" not in cell:
            raise UsageError("%%pmap: IPython magics and shell commands (%..., !...) cannot run "
                             "inside workers; move them to another cell")
        return transformed

    def _cache_source(self, source: str) -> str:
        """A file name under which tracebacks find the cell's lines ("Cell In[n]")."""
        try:
            return self.shell.compile.cache(source, self.shell.execution_count, raw_code=source)
        except Exception:
            filename = f"<pmap cell {self.shell.execution_count}>"
            cellcode.cache_source(filename, source)
            return filename

    # -- running ---------------------------------------------------------------------------
    def _run(self, func, iterable, options) -> list:
        from .pool import WorkerPool
        from .utils import make_single_arguments

        try:
            length = len(iterable)
        except TypeError:  # a generator, zip, a file...: the results list is as long anyway
            iterable = list(iterable)
            length = len(iterable)
        # every item is one argument, as with the builtin map (tuples are not unpacked)
        items = make_single_arguments(iterable, generator=True)
        with WorkerPool(n_jobs=options.n_jobs, start_method=options.start_method,
                        enable_insights=options.insights) as pool:
            run = pool.map_unordered if options.unordered else pool.map
            results = run(func, items, iterable_len=length, chunk_size=options.chunk_size,
                          progress_bar=not options.no_progress)
            if options.insights:
                pool.show_insights()
        return results


def register(shell) -> None:
    shell.register_magics(PmapMagics)


def unregister(shell) -> None:
    for kind in ("line", "cell"):
        shell.magics_manager.magics[kind].pop("pmap", None)
