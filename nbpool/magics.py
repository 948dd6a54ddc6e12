"""``%%pmap`` and ``%pmap``: parallel maps written as notebook cells.

Registered by ``%load_ext nbpool`` and by the startup file pip installs into
``{sys.prefix}/etc/ipython/startup``. Registering is cheap: the pool and the engine are imported
on the first use of a magic, not when a kernel starts.
"""

from __future__ import annotations

import argparse
import keyword
import re
import warnings
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import (Magics, line_cell_magic, magics_class, needs_local_scope,
                                no_var_expand)
from IPython.core.magic_arguments import argument, magic_arguments

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
         --insights, -o/--out NAME; '--' ends the options (for an iterable that starts with -)"""

_TOKEN = re.compile(r"\s*(\S+)")


def split_options(line: str, magic: str = "%pmap") -> tuple[list[str], str]:
    """Leading option tokens, and the rest of the line untouched (it is Python code).
    Usage errors start with ``magic``, the name the user typed."""
    tokens: list[str] = []
    position = 0
    while True:
        match = _TOKEN.match(line, position)
        if match is None or not match.group(1).startswith("-"):
            return tokens, line[position:].strip()
        token = match.group(1)
        position = match.end()
        if token == "--":
            return tokens, line[position:].strip()
        name = token.split("=", 1)[0]
        if name[:2] in ("-n", "-o") and not name.startswith("--"):
            name = name[:2]  # '-n2', '-oname': the value is attached, as argparse allows
        takes_value = _OPTIONS.get(name)
        if takes_value is None:
            raise UsageError(f"{magic}: unknown option {token!r} (to map over an iterable that "
                             f"starts with '-', end the options with '--')\n{USAGE}")
        tokens.append(token)
        if takes_value and name == token:
            value = _TOKEN.match(line, position)
            if value is None:
                raise UsageError(f"{magic}: option {token} needs a value\n{USAGE}")
            tokens.append(value.group(1))
            position = value.end()


def _checked(check: str, convert: type, expected: str):
    """An argparse type that converts an option's text, then checks it as WorkerPool would;
    a bad value becomes a usage error that argparse prefixes with the option's name."""
    def parse(text: str):
        from . import params  # imported on use: loading the magics stays cheap

        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        try:
            return getattr(params, check)(value)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = check
    return parse


def _variable_name(text: str) -> str:
    if not text.isidentifier() or keyword.iskeyword(text):
        raise argparse.ArgumentTypeError(f"expected a variable name, got {text!r}")
    return text


@magics_class
class PmapMagics(Magics):
    """The ``pmap`` magics. Each call runs its own pool and stops it before returning."""

    @magic_arguments()
    @argument("-n", "--n-jobs", type=_checked("n_jobs", int, "an integer"), default=None,
              help="number of workers (default: CPUs)")
    @argument("--chunk-size", type=_checked("chunk_size", float, "a number"), default=None,
              help="tasks per chunk")
    @argument("--unordered", action="store_true", help="results in completion order")
    @argument("--start-method", type=_checked("start_method", str, "a start method"),
              default="auto", help="fork, forkserver, spawn, threading, auto")
    @argument("--no-progress", action="store_true", help="no progress bar")
    @argument("--insights", action="store_true", help="show the insights after the map")
    @argument("-o", "--out", type=_variable_name, default=DEFAULT_OUT,
              help="variable that receives the results")
    @no_var_expand
    @needs_local_scope
    @line_cell_magic
    def pmap(self, line: str, cell: str | None = None, local_ns: dict | None = None) -> Any:
        """Map a cell body (``%%pmap x in xs``), a cell's function (``%%pmap xs``) or a
        function (``%pmap f xs``) over an iterable, in parallel worker processes."""
        # IPython leaves this frame out of tracebacks unless the error is raised in it
        __tracebackhide__ = True
        magic = "%pmap" if cell is None else "%%pmap"  # usage errors name the magic used
        option_tokens, header = split_options(line, magic)
        try:
            options = self.pmap.parser.parse_args(option_tokens)
        except UsageError as exc:
            raise UsageError(f"{magic}: {exc}\n{USAGE}") from None
        if not header:
            raise UsageError(f"{magic}: nothing to map over\n{USAGE}")
        namespace = self.shell.user_ns
        source = f"%pmap {line}" if cell is None else f"%%pmap {line}\n{cell}"
        filename = self._cache_source(source)
        try:
            if cell is None:
                func, iterable = self._line_form(header, namespace, filename, local_ns or {})
            else:
                func, iterable = self._cell_form(header, cell, namespace, filename, source)
            results = self._run(func, iterable, options, magic)
        except UsageError:
            raise
        except (Exception, KeyboardInterrupt) as exc:
            _raise_without_nbpool_frames(exc, filename)
        namespace[options.out] = results
        if cell is not None and cellcode.ends_with_semicolon(cell):
            return None  # a trailing ';' hides the results, as in any cell
        return results

    # -- turning the input into (function, iterable) -------------------------------------
    def _evaluate(self, source: str, namespace: dict, filename: str,
                  local_ns: dict | None = None, magic: str = "%%pmap") -> Any:
        # compiled as line 1 of the cell: an error shows the magic line, not nbpool's source
        try:
            code = compile(source, filename, "eval")
        except SyntaxError as exc:  # parses, but cannot run here: 'await x', for one
            raise UsageError(f"{magic}: cannot evaluate {source!r}: {exc.msg}") from None
        return eval(code, namespace, local_ns or None)

    def _line_form(self, header: str, namespace: dict, filename: str, local_ns: dict):
        parts = cellcode.split_function_and_iterable(header)
        if parts is None:
            why = cellcode.syntax_problem(header.strip().partition(" ")[2] or header)
            why = f" ({why})" if why else ""
            raise UsageError(f"%pmap: expected 'FUNC ITERABLE', got {header!r}{why}\n{USAGE}")
        func = self._evaluate(parts[0], namespace, filename, local_ns, "%pmap")
        if not callable(func):
            raise UsageError(f"%pmap: {parts[0]!r} is not callable ({type(func).__name__})")
        return func, self._evaluate(parts[1], namespace, filename, local_ns, "%pmap")

    def _cell_form(self, header: str, cell: str, namespace: dict, filename: str, source: str):
        try:
            loop = cellcode.parse_header(header)
        except cellcode.CellSyntaxError as exc:
            raise UsageError(f"%%pmap: {exc}\n{USAGE}") from None
        try:
            tree = cellcode.body_module(self._transform(cell), filename)
        except SyntaxError as exc:
            raise UsageError(f"%%pmap: {cellcode.describe_body_syntax_error(exc)}") from None
        if loop is not None:
            try:  # the body first: a mistake in it is reported before the iterable runs
                func = cellcode.loop_body_function(loop, tree, namespace, filename)
            except SyntaxError as exc:  # parses, but cannot be the body of a function
                raise UsageError(
                    f"%%pmap: {cellcode.describe_body_syntax_error(exc, parsing=False)}") from None
            iterable = self._evaluate(loop.iterable, namespace, filename)
            self._warn_if_no_result(tree, filename)
            return cellcode.CellTask(func, filename, source), iterable
        try:
            name = cellcode.single_function_name(tree)
        except cellcode.CellSyntaxError as exc:
            raise UsageError(f"%%pmap: {exc}") from None
        try:
            code = compile(tree, filename, "exec")
        except SyntaxError as exc:  # parses, but Python rejects it ('import *' in the def)
            raise UsageError(
                f"%%pmap: {cellcode.describe_body_syntax_error(exc, parsing=False)}") from None
        iterable = self._evaluate(header, namespace, filename)
        exec(code, namespace)  # defines the function, as a cell would
        return namespace[name], iterable

    @staticmethod
    def _warn_if_no_result(tree, filename: str) -> None:
        lineno = cellcode.line_without_result(tree)
        if lineno is not None:
            # warn_explicit with no registry: shown at every such cell, with the cell's line
            warnings.warn_explicit(
                "%%pmap: the cell body has no final expression, so each item's result is None. "
                "End the body with the expression whose value you want.",
                UserWarning, filename, lineno)

    def _transform(self, cell: str) -> str:
        """IPython syntax in the body (magics, ``!cmd``) cannot run in a worker: say so."""
        transformed = self.shell.transform_cell(cell)
        if "get_ipython()" in transformed and "get_ipython()" not in cell:
            raise UsageError("%%pmap: IPython magics and shell commands (%..., !...) cannot run "
                             "inside workers; move them to another cell")
        return transformed

    def _cache_source(self, source: str) -> str:
        """A file name under which tracebacks find the cell's lines ("Cell In[n]")."""
        number = self._cell_number()
        try:
            return self.shell.compile.cache(source, number, raw_code=source)
        except Exception:
            filename = f"<pmap cell {number}>"
            cellcode.cache_source(filename, source)
            return filename

    def _cell_number(self) -> int:
        """The n of the running cell's In[n]. IPython 9 counts a cell before running it and
        IPython 8 after, so ``execution_count`` is one too high in 9; the running cell's
        result holds the number in both."""
        result = getattr(self.shell.displayhook, "exec_result", None)
        number = getattr(result, "execution_count", None)
        return number if isinstance(number, int) else self.shell.execution_count

    # -- running ---------------------------------------------------------------------------
    def _run(self, func, iterable, options, magic: str) -> list:
        from .engine.errors import TaskPicklingError
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
            try:
                results = run(func, items, iterable_len=length, chunk_size=options.chunk_size,
                              progress_bar=not options.no_progress)
            except TaskPicklingError:
                error = _unpicklable_variable_error(func, magic)
                if error is None:
                    raise
                # from None: the original's message names the cell's inner function, and
                # its cause holds cloudpickle's frames
                raise error from None
            if options.insights:
                pool.show_insights()
        return results


def _unpicklable_variable_error(func, magic: str):
    """A TaskPicklingError naming the notebook variable that kept ``func`` from being sent to
    the workers, or None if no variable is to blame. Only called once pickling failed: it
    pickles each variable the function uses once more."""
    from .engine.errors import TaskPicklingError, describe_exception
    from .engine.serialization import unpicklable_global

    in_cell = isinstance(func, cellcode.CellTask)
    found = unpicklable_global(func.func if in_cell else func)
    if found is None:
        return None
    name, via, exc = found
    user = "the cell" if in_cell else getattr(func, "__name__", "the function")
    where = "cell" if in_cell else "function"
    through = f" (through {via})" if via else ""
    return TaskPicklingError(
        f"{magic}: {user} uses the notebook variable {name!r}{through}, which cannot be sent to "
        f"the workers ({describe_exception(exc)}). Each worker gets a copy of the "
        f"notebook variables it uses: create this one inside the {where} instead.")


def _raise_without_nbpool_frames(exc: BaseException, filename: str):
    """Raises ``exc`` with the frames of nbpool's machinery cut from its traceback.

    What the user needs is the cell: the frames of code compiled from it (the magic line's
    expressions, and what they call), or the exception's cause (the worker's traceback).
    IPython never hides the frame an error is raised from, so with no frame of the cell left,
    the error is raised from line 1 of the cell: the traceback ends at the magic line.
    """
    __tracebackhide__ = True
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    if tb is not None:
        raise exc.with_traceback(tb)
    raise_here = compile("raise error from error.__cause__", filename, "exec")
    exec(raise_here, {"error": exc.with_traceback(None)})


def _options_of(parser: argparse.ArgumentParser) -> dict[str, bool]:
    """Each option string of the magic -> whether it takes a value (the decorators above are
    the one list of options)."""
    return {name: action.nargs != 0 for action in parser._actions
            for name in action.option_strings}


_OPTIONS = _options_of(PmapMagics.pmap.parser)


def register(shell) -> None:
    shell.register_magics(PmapMagics)


def unregister(shell) -> None:
    for kind in ("line", "cell"):
        shell.magics_manager.magics[kind].pop("pmap", None)
