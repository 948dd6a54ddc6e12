"""The %%pmap / %pmap magics: how a cell becomes a task (unit tests), and the magics in a real
Jupyter kernel, auto-loaded by the startup file pip installs (nbclient and jupyter_client)."""

from __future__ import annotations

import os
import re
import sys
import time

import pytest

from nbpool import cellcode

from kernel_helpers import run_cells

IPython = pytest.importorskip("IPython")
from nbpool.magics import split_options  # noqa: E402  (needs IPython)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


# -- the magic line ---------------------------------------------------------------------------
@pytest.mark.parametrize("line, options, rest", [
    ("x in range(3)", [], "x in range(3)"),
    ("-n 2 --unordered x in xs", ["-n", "2", "--unordered"], "x in xs"),
    ("--chunk-size=4 -o out a, b in zip(xs, ys)", ["--chunk-size=4", "-o", "out"],
     "a, b in zip(xs, ys)"),
    ("--no-progress f [-1, -2]", ["--no-progress"], "f [-1, -2]"),
])
def test_options_come_first_and_the_rest_stays_code(line, options, rest):
    assert split_options(line) == (options, rest)


@pytest.mark.parametrize("line, options, rest", [
    ("-n2 x in xs", ["-n2"], "x in xs"),
    ("-oname --n-jobs=3 x in xs", ["-oname", "--n-jobs=3"], "x in xs"),
    ("-n 2 -- -arr", ["-n", "2"], "-arr"),
    ("-- x in xs", [], "x in xs"),
])
def test_attached_values_and_the_end_of_the_options(line, options, rest):
    assert split_options(line) == (options, rest)


def test_an_unknown_option_is_a_usage_error():
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="unknown option '--fast'"):
        split_options("--fast x in xs")
    with pytest.raises(UsageError, match="unknown option '-arr'.*end the options with '--'"):
        split_options("-arr")
    with pytest.raises(UsageError, match="option -n needs a value"):
        split_options("-n")
    # the message names the magic the user typed
    with pytest.raises(UsageError, match="^%%pmap: unknown option '--fast'"):
        split_options("--fast x in xs", "%%pmap")
    with pytest.raises(UsageError, match="^%pmap: option -o needs a value"):
        split_options("-o", "%pmap")


@pytest.mark.parametrize("tokens, message", [
    (["-n", "0"], "argument -n/--n-jobs: n_jobs must be >= 1, got 0"),
    (["-n", "abc"], "argument -n/--n-jobs: expected an integer, got 'abc'"),
    (["--chunk-size", "-1"], "argument --chunk-size: chunk_size must be >= 1"),
    (["--start-method", "bogus"], "argument --start-method: Unknown start method: 'bogus'"),
    (["-o", "1bad"], "argument -o/--out: expected a variable name, got '1bad'"),
    (["-o", "a.b"], "argument -o/--out: expected a variable name, got 'a.b'"),
    (["--out", "class"], "argument -o/--out: expected a variable name, got 'class'"),
])
def test_bad_option_values_are_usage_errors_naming_the_option(tokens, message):
    from IPython.core.error import UsageError

    from nbpool.magics import PmapMagics

    with pytest.raises(UsageError) as info:
        PmapMagics.pmap.parser.parse_args(tokens)
    assert str(info.value).startswith(message), str(info.value)


def test_good_option_values():
    from nbpool.magics import PmapMagics

    options = PmapMagics.pmap.parser.parse_args(["-n2", "--chunk-size", "2.5", "--start-method",
                                                 "spawn", "-o", "squares"])
    assert (options.n_jobs, options.chunk_size, options.start_method, options.out) == (
        2, 2.5, "spawn", "squares")


@pytest.mark.parametrize("header, target, iterable", [
    ("x in range(3)", "x", "range(3)"),
    ("a, b in zip(xs, ys)", "a, b", "zip(xs, ys)"),
    ("(i, (j, k)) in pairs", "(i, (j, k))", "pairs"),
    ("x in [y for y in ys if y in zs]", "x", "[y for y in ys if y in zs]"),
    ("s in {1, 2, 3}", "s", "{1, 2, 3}"),
    ("item in index", "item", "index"),
])
def test_loop_headers_split_at_the_right_in(header, target, iterable):
    assert cellcode.split_loop_header(header) == cellcode.LoopHeader(target, iterable)


@pytest.mark.parametrize("header", ["range(3)", "f(x) in xs", "x in", "in xs", "x = 1 in xs"])
def test_not_a_loop_header(header):
    assert cellcode.split_loop_header(header) is None


@pytest.mark.parametrize("header, message", [
    ("x in range(3", ("the iterable after 'in' is not a valid expression: '(' was never "
                      "closed (column 11)\n    x in range(3\n              ^")),
    ("x range(3)", ("it is neither 'TARGET in ITERABLE' nor an iterable expression: "
                    "invalid syntax (column 3)\n    x range(3)\n      ^")),
    ("s in [$x for x in xs]", ("the iterable after 'in' is not a valid expression: invalid "
                               "syntax (column 7)\n    s in [$x for x in xs]\n          ^")),
])
def test_a_magic_line_that_does_not_parse_is_quoted_with_a_caret(header, message):
    with pytest.raises(cellcode.CellSyntaxError) as info:
        cellcode.parse_header(header)
    assert str(info.value) == "cannot parse the magic line, " + message


def test_a_parsing_magic_line_is_a_loop_or_an_iterable():
    loop = cellcode.LoopHeader("a, b", "zip(xs, ys)")
    assert cellcode.parse_header("a, b in zip(xs, ys)") == loop
    assert cellcode.parse_header("range(3)") is None


def test_function_and_iterable_split():
    assert cellcode.split_function_and_iterable("f range(10)") == ("f", "range(10)")
    assert cellcode.split_function_and_iterable("lambda x: x + 1 range(3)") == (
        "lambda x: x + 1", "range(3)")
    assert cellcode.split_function_and_iterable("np.sqrt  arr[::2]") == ("np.sqrt", "arr[::2]")
    assert cellcode.split_function_and_iterable("range(10)") is None


def test_a_line_magic_that_does_not_parse_says_why():
    from IPython.core.error import UsageError

    from nbpool.magics import PmapMagics

    with pytest.raises(UsageError, match=r"got 'abs \[1,2' \('\[' was never closed\)"):
        PmapMagics(shell=None)._line_form("abs [1,2", {}, "<cell>", {})


# -- the cell body as a function ----------------------------------------------------------------
def test_the_last_expression_is_the_result_and_globals_come_from_the_notebook():
    namespace = {"scale": 10}
    func = cellcode.loop_body_function(cellcode.LoopHeader("a, b", "pairs"),
                                       "c = a * b\nc * scale", namespace, "<cell>")
    assert func((2, 3)) == 60
    assert "c" not in namespace  # assignments stay local to the task


def test_a_body_without_a_final_expression_gives_none():
    func = cellcode.loop_body_function(cellcode.LoopHeader("x", "xs"), "y = x\n", {}, "<c>")
    assert func(1) is None


@pytest.mark.parametrize("body, line", [
    ("y = x\n", 2), ("y = x\nz: int = y\n", 3), ("y = 1\ny += x\n", 3), ("\n", 1), ("", 1),
    ("y = x\ny\n", None), ("for i in x:\n    y = i\n", None), ("print(x)\n", None),
])
def test_the_line_to_warn_about_when_results_would_be_none(body, line):
    assert cellcode.line_without_result(cellcode.body_module(body, "<c>")) == line


@pytest.mark.parametrize("source, quiet", [
    ("x;\n", True), ("x; # done\n\n", True), ("def f(v):\n    return v;\n", True),
    ("x\n", False), ("x;\ny\n", False), ("'a;'\n", False), ("x = (1,\n", False),
])
def test_a_trailing_semicolon(source, quiet):
    assert cellcode.ends_with_semicolon(source) is quiet


def test_tracebacks_name_the_cells_own_line_numbers():
    source = "%%pmap x in xs\ny = x - 1\n1 / y\n"
    func = cellcode.loop_body_function(cellcode.LoopHeader("x", "xs"), "y = x - 1\n1 / y\n",
                                       {}, "<cell 7>")
    task = cellcode.CellTask(func, "<cell 7>", source)
    with pytest.raises(ZeroDivisionError) as info:
        task(1)
    frame = info.traceback[-1]
    assert frame.path == "<cell 7>" or str(frame.path) == "<cell 7>"
    assert frame.lineno + 1 == 3  # pytest counts from 0
    assert "1 / y" in str(info.getrepr())


def test_syntax_errors_point_at_the_cell_line():
    with pytest.raises(SyntaxError) as info:
        cellcode.loop_body_function(cellcode.LoopHeader("x", "xs"), "y = 1\ny = = 2\n", {}, "<c>")
    assert info.value.lineno == 3
    assert cellcode.describe_body_syntax_error(info.value) == (
        "the cell body does not parse, line 3 of the cell: invalid syntax\n    y = = 2\n        ^")


@pytest.mark.parametrize("body, line, message", [
    ("y = x\nfrom math import *\nsqrt(y)\n", 3, "import * only allowed at module level; "
     "the body runs as a function in each worker, where 'import *' is not allowed"),
    ("await g(x)\n", 2, "'await' outside async function; the body runs as an ordinary function"),
    ("if x:\n    return 1\nx\n", 3, "'return' outside function: an item's result is the value"),
    ("for i in x:\n    yield i\n", 3, "'yield' outside function: every item's result would be"),
    ("y = [(yield)]\n", 2, "'yield' outside function"),
])
def test_what_parses_but_cannot_be_the_body_of_a_function(body, line, message):
    with pytest.raises(SyntaxError) as info:
        cellcode.loop_body_function(cellcode.LoopHeader("x", "xs"), body, {}, "<c>")
    assert info.value.lineno == line
    assert cellcode.describe_body_syntax_error(info.value, parsing=False).startswith(
        f"the cell body cannot run as a task, line {line} of the cell: {message}")


def test_return_and_yield_in_a_function_of_the_body_are_its_own():
    body = "def f(v):\n    return v + 1\ng = lambda: (yield)\nclass C:\n    y = 1\nf(x)\n"
    func = cellcode.loop_body_function(cellcode.LoopHeader("x", "xs"), body, {}, "<c>")
    assert func(1) == 2


def test_the_notebook_variable_that_cannot_be_pickled():
    import threading

    from nbpool.engine.serialization import unpicklable_global

    namespace = {"__name__": "__main__", "scale": 2, "lock": threading.Lock()}
    exec("def locked(v):\n    with lock:\n        return v * scale\n", namespace)
    header = cellcode.LoopHeader("x", "xs")
    direct = cellcode.loop_body_function(header, "[lock.locked() for _ in x]\n", namespace, "<c>")
    name, via, error = unpicklable_global(direct)
    assert (name, via, type(error)) == ("lock", None, TypeError)
    through = cellcode.loop_body_function(header, "y = scale\nlocked(x + y)\n", namespace, "<c>")
    assert unpicklable_global(through)[:2] == ("lock", "locked")
    fine = cellcode.loop_body_function(header, "x * scale\n", namespace, "<c>")
    assert unpicklable_global(fine) is None
    assert unpicklable_global(threading.Thread.start) is None  # not a notebook's


def test_the_function_form_needs_exactly_one_function():
    assert cellcode.single_function_name("import math\ndef f(x):\n    return x\n") == "f"
    with pytest.raises(cellcode.CellSyntaxError, match="defines 2 \\(f, g\\)"):
        cellcode.single_function_name("def f(): pass\ndef g(): pass\n")
    with pytest.raises(cellcode.CellSyntaxError, match="defines 0 \\(none\\)"):
        cellcode.single_function_name("x = 1\n")


# -- in a real kernel -----------------------------------------------------------------------------
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

CELLS = {
    "autoloaded": """
import sys
print("magic registered:", "pmap" in get_ipython().magics_manager.magics["cell"])
print("heavy modules imported:",
      [name for name in ("nbpool.pool", "nbpool.engine", "numpy", "ipywidgets", "tqdm",
                         "cloudpickle", "multiprocessing") if name in sys.modules])
""",
    "names": """
import math
scale = 10
class Point:
    def __init__(self, x):
        self.x = x
def helper(v):
    return math.sqrt(v)
""",
    "loop": """
%%pmap x in range(6)
y = x * scale
Point(helper(y))
""",
    "loop_check": """
assert [round(p.x ** 2) for p in _pmap] == [0, 10, 20, 30, 40, 50]
assert all(type(p) is Point for p in _pmap)
""",
    "tuples": """
%%pmap -n 2 --no-progress --unordered -o pairs a, b in zip([1, 2, 3], sorted({4, 5, 6}))
a + b
""",
    "function_form": """
%%pmap --start-method spawn range(4)
def cube(v):
    return v ** 3 + scale
""",
    "line": """
res = %pmap cube range(3)
print(sorted(pairs), res, cube(2))
""",
    "error": """
%%pmap --no-progress x in range(4)
y = x - 2
1 / y
""",
    "unknown_option": """
%%pmap --bogus x in range(3)
x
""",
    "shell_in_body": """
%%pmap x in range(3)
!ls
""",
    "insights": """
%%pmap -n2 --chunk-size 3 --unordered --insights --no-progress -o squares x in range(8)
x * x
""",
    "insights_check": """
print(sorted(squares))
""",
    "spawn_loop": """
%%pmap -n 2 --no-progress --start-method spawn x in [4, 9]
y = helper(x) * scale
y + 1
""",
    "spawn_loop_error": """
%%pmap -n 2 --no-progress --start-method spawn x in [4, 0]
y = helper(x)
1 / y
""",
    "print_in_body": """
%%pmap -n 1 --no-progress x in range(3)
print(f"item {x} done")
x
""",
    "semicolon": """
%%pmap --no-progress -o quiet x in range(3)
x * 2;
""",
    "semicolon_check": """
print(quiet)
""",
    "no_result": """
%%pmap --no-progress x in range(3)
y = x * 2
""",
    "header_unclosed": """
%%pmap x in range(3
x * 2
""",
    "header_without_in": """
%%pmap x range(3)
x * 2
""",
    "header_dollar": """
%%pmap s in [$x for x in range(2)]
s
""",
    "more_names": """
import numpy as np
n = 5
""",
    "braces": """
%%pmap --no-progress s in {n}
s * 2
""",
    "options_end": """
%%pmap -n1 --no-progress -- -np.arange(3)
def as_int(v):
    return int(v)
""",
    "bad_n_jobs": """
%%pmap -n 0 x in range(3)
x
""",
    "nothing_to_map": """
%%pmap --no-progress
x
""",
    "bad_out": """
%%pmap -o 1bad x in range(3)
x
""",
    "line_unknown_option": """
%pmap --bogus abs [1]
""",
    "function_form_error": """
%%pmap --no-progress -n1 [2, 0]
def inverse(v):
    w = v * 2
    return 1 / w
""",
    "line_function": """
def shrink(v):
    return v / (v - 3)
""",
    "line_error": """
shrunk = %pmap --no-progress -n1 shrink [1, 3]
""",
    "body_import_star": """
%%pmap -n1 v in [4]
from math import *
sqrt(v)
""",
    "body_await": """
%%pmap -n1 v in [0]
import asyncio
await asyncio.sleep(0)
v
""",
    "body_return": """
%%pmap -n1 v in [0, 1]
if v == 0:
    return 5
v
""",
    "body_yield": """
%%pmap -n1 v in [0]
yield v
""",
    "function_form_import_star": """
%%pmap -n1 [1]
def star(v):
    from math import *
    return v
""",
    "unpicklable": """
import threading
lock = threading.Lock()
def locked(v):
    with lock:
        return v
""",
    "unpicklable_in_body": """
%%pmap --no-progress -n1 v in [1]
lock.locked() or v
""",
    "unpicklable_in_function": """
%pmap --no-progress -n1 locked [1]
""",
    "unpicklable_through_function": """
%%pmap --no-progress -n1 v in [1]
locked(v)
""",
}


def _run_notebook(cells: dict, root, env: dict | None = None) -> dict:
    return run_cells(cells, root, env=env, allow_errors=True, timeout=120)[0]


def _text(cell) -> str:
    parts = []
    for output in cell.outputs:
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] == "error":
            parts.append("\n".join(output["traceback"]))
        else:
            parts.append(output.get("data", {}).get("text/plain", ""))
    return ANSI.sub("", "\n".join(parts))


def _errors(cell) -> list:
    return [o for o in cell.outputs if o["output_type"] == "error"]


def _cell_numbers(text: str) -> set[int]:
    """The n of every "Cell In[n]" a traceback names."""
    return {int(n) for n in re.findall(r"Cell In\[(\d+)\]", text)}


def _number(cells: dict, name: str) -> int:
    """The execution count of a cell of CELLS: its place in the notebook."""
    number = cells[name]["execution_count"]
    assert number == list(CELLS).index(name) + 1, (name, number)
    return number


STARTUP_FILE = "50-nbpool-magics.py"


@pytest.fixture(scope="module")
def startup_file():
    """The kernel tests need the magics auto-loaded by the startup file pip installs.

    Skips only where nbpool is not installed (run from a checkout); an installed nbpool without
    the file is a packaging bug, which must not turn into skipped tests.
    """
    from importlib import metadata

    path = os.path.join(sys.prefix, "etc", "ipython", "startup", STARTUP_FILE)
    if os.path.exists(path):
        return path
    try:
        metadata.distribution("nbpool")
    except metadata.PackageNotFoundError:
        pytest.skip("nbpool is not installed here, so neither is its IPython startup file")
    pytest.fail(f"nbpool is installed in {sys.prefix}, but its package data is missing: no "
                f"{path}. Check [tool.hatch.build.targets.wheel.shared-data] in pyproject.toml, "
                "then reinstall (pip install -e .)")


def test_the_wheel_installs_the_startup_file():
    """pyproject.toml's shared-data maps the startup file to {sys.prefix}/etc/ipython/startup."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as file:
        config = tomllib.load(file)
    mapping = config["tool"]["hatch"]["build"]["targets"]["wheel"]["shared-data"]
    installed = {os.path.join(target, os.path.relpath(os.path.join(folder, name), source))
                 for source, target in mapping.items()
                 for folder, _, names in os.walk(os.path.join(root, source))
                 for name in names}
    assert os.path.join("etc", "ipython", "startup", STARTUP_FILE) in installed, mapping


@pytest.fixture(scope="module")
def magic_cells(startup_file, tmp_path_factory):
    return _run_notebook(CELLS, tmp_path_factory.mktemp("magics"))


@pytest.mark.notebook
def test_magics_are_autoloaded_without_importing_the_pool(magic_cells):
    out = _text(magic_cells["autoloaded"])
    assert "magic registered: True" in out and "heavy modules imported: []" in out, out


@pytest.mark.notebook
def test_cell_magic_uses_the_notebooks_names_and_shows_progress(magic_cells):
    for name in ("names", "loop", "loop_check", "tuples", "function_form", "line"):
        assert not _errors(magic_cells[name]), (name, _text(magic_cells[name]))
    assert "100% 6/6 (done)" in _text(magic_cells["loop"])
    assert "[5, 7, 9] [10, 11, 18] 18" in _text(magic_cells["line"])
    # --no-progress: no widget
    assert not [o for o in magic_cells["tuples"].outputs if o["output_type"] == "display_data"]
    assert "[10, 11, 18, 37]" in _text(magic_cells["function_form"])


@pytest.mark.notebook
@pytest.mark.parametrize("cell, argument", [("error", 2), ("spawn_loop_error", 0)])
def test_an_error_shows_the_workers_traceback_at_the_cells_line(magic_cells, cell, argument):
    [error] = _errors(magic_cells[cell])
    assert error["ename"] == "ZeroDivisionError"
    text = _text(magic_cells[cell])
    assert f"Arg 0: {argument}" in text
    # the worker's traceback and the notebook's name the cell the user ran, as IPython does
    number = _number(magic_cells, cell)
    assert re.search(rf"Cell In\[{number}\], line 3, in pmap_cell\n\s+1 / y", text), text
    assert _cell_numbers(text) == {number}, text
    # nbpool's frames are hidden: the notebook's traceback ends at the magic line
    assert "magics.py" not in text and "with_traceback" not in text, text
    assert re.search(rf"Cell In\[{number}\], line 1\n----> 1 %%pmap [^\n]*\n\s+2 y = ", text), text


@pytest.mark.notebook
def test_an_error_in_a_cells_function_points_at_its_line(magic_cells):
    text = _text(magic_cells["function_form_error"])
    number = _number(magic_cells, "function_form_error")
    assert "Arg 0: 0" in text, text
    assert re.search(rf"Cell In\[{number}\], line 4, in inverse\n\s+return 1 / w", text), text
    assert re.search(rf"Cell In\[{number}\], line 1\n----> 1 %%pmap ", text), text
    assert _cell_numbers(text) == {number}, text
    assert "magics.py" not in text, text


@pytest.mark.notebook
def test_an_error_in_a_line_magics_function_points_at_the_functions_line(magic_cells):
    text = _text(magic_cells["line_error"])
    defined = _number(magic_cells, "line_function")
    number = _number(magic_cells, "line_error")
    assert "Arg 0: 3" in text, text
    assert re.search(rf"Cell In\[{defined}\], line 2, in shrink\n\s+return v / \(v - 3\)",
                     text), text
    assert re.search(rf"Cell In\[{number}\], line 1\n----> 1 %pmap --no-progress", text), text
    assert _cell_numbers(text) == {defined, number}, text
    assert "magics.py" not in text, text


@pytest.mark.notebook
def test_the_loop_form_under_spawn(magic_cells):
    assert not _errors(magic_cells["spawn_loop"]), _text(magic_cells["spawn_loop"])
    assert "[21.0, 31.0]" in _text(magic_cells["spawn_loop"])


@pytest.mark.notebook
def test_print_in_the_body_shows_in_the_cell(magic_cells):
    text = _text(magic_cells["print_in_body"])
    assert all(f"item {x} done" in text for x in range(3)) and "[0, 1, 2]" in text, text


@pytest.mark.notebook
def test_a_trailing_semicolon_hides_the_results_but_stores_them(magic_cells):
    assert not [o for o in magic_cells["semicolon"].outputs
                if o["output_type"] == "execute_result"], _text(magic_cells["semicolon"])
    assert "[0, 2, 4]" in _text(magic_cells["semicolon_check"])


@pytest.mark.notebook
def test_a_body_without_a_result_warns_once(magic_cells):
    text = _text(magic_cells["no_result"])
    assert text.count("UserWarning: %%pmap: the cell body has no final expression, so each "
                      "item's result is None.") == 1, text
    assert "y = x * 2" in text and "[None, None, None]" in text, text


@pytest.mark.notebook
@pytest.mark.parametrize("cell, problem, caret", [
    ("header_unclosed", ("the iterable after 'in' is not a valid expression: '(' was never "
                         "closed (column 11)"), "    x in range(3\n              ^"),
    ("header_without_in", ("it is neither 'TARGET in ITERABLE' nor an iterable expression: "
                           "invalid syntax (column 3)"), "    x range(3)\n      ^"),
    # no_var_expand: IPython leaves '$x' alone, so the line reaches the magic as written
    ("header_dollar", ("the iterable after 'in' is not a valid expression: invalid syntax "
                       "(column 7)"), "    s in [$x for x in range(2)]\n          ^"),
])
def test_a_magic_line_that_does_not_parse_is_quoted(magic_cells, cell, problem, caret):
    text = _text(magic_cells[cell])
    assert f"UsageError: %%pmap: cannot parse the magic line, {problem}\n{caret}" in text, text
    assert "usage:" in text and "defines 0" not in text, text


@pytest.mark.notebook
def test_braces_in_the_magic_line_are_python_not_variable_expansion(magic_cells):
    assert not _errors(magic_cells["braces"]), _text(magic_cells["braces"])
    assert "[10]" in _text(magic_cells["braces"])


@pytest.mark.notebook
def test_double_dash_ends_the_options(magic_cells):
    assert "[0, -1, -2]" in _text(magic_cells["options_end"]), _text(magic_cells["options_end"])


@pytest.mark.notebook
def test_a_bad_option_value_is_a_usage_error(magic_cells):
    text = _text(magic_cells["bad_n_jobs"])
    assert "UsageError: %%pmap: argument -n/--n-jobs: n_jobs must be >= 1, got 0" in text, text
    text = _text(magic_cells["bad_out"])
    assert "UsageError: %%pmap: argument -o/--out: expected a variable name, got '1bad'" in text


@pytest.mark.notebook
def test_bad_magic_lines_get_a_usage_message(magic_cells):
    text = _text(magic_cells["unknown_option"])
    assert "UsageError: %%pmap: unknown option '--bogus'" in text and "usage:" in text, text
    assert "cannot run inside workers" in _text(magic_cells["shell_in_body"])
    assert "UsageError: %%pmap: nothing to map over" in _text(magic_cells["nothing_to_map"])
    # the line magic's messages name the line magic
    text = _text(magic_cells["line_unknown_option"])
    assert "UsageError: %pmap: unknown option '--bogus'" in text and "usage:" in text, text


@pytest.mark.notebook
@pytest.mark.parametrize("cell, problem, caret", [
    ("body_import_star", "line 2 of the cell: import * only allowed at module level",
     "    from math import *"),
    ("body_await", "line 3 of the cell: 'await' outside async function",
     "    await asyncio.sleep(0)"),
    ("body_return", "line 3 of the cell: 'return' outside function: an item's result is",
     "        return 5"),
    ("body_yield", "line 2 of the cell: 'yield' outside function: every item's result",
     "    yield v"),
    ("function_form_import_star", "line 3 of the cell: import * only allowed at module level",
     "        from math import *"),
])
def test_a_body_that_cannot_be_a_function_is_a_usage_error(magic_cells, cell, problem, caret):
    """Errors that ast.parse lets through but compile (or the body's function) rejects."""
    text = _text(magic_cells[cell])
    assert f"UsageError: %%pmap: the cell body cannot run as a task, {problem}" in text, text
    assert f"\n{caret}\n" in text, text
    assert not _errors(magic_cells[cell]) and "Traceback" not in text, text


@pytest.mark.notebook
@pytest.mark.parametrize("cell, magic, user", [
    ("unpicklable_in_body", "%%pmap", "the cell"),
    ("unpicklable_in_function", "%pmap", "locked"),
    ("unpicklable_through_function", "%%pmap", "the cell"),
])
def test_an_unpicklable_notebook_variable_is_named(magic_cells, cell, magic, user):
    [error] = _errors(magic_cells[cell])
    text = _text(magic_cells[cell])
    assert error["ename"] == "TaskPicklingError", text
    through = " (through locked)" if cell == "unpicklable_through_function" else ""
    assert (f"TaskPicklingError: {magic}: {user} uses the notebook variable 'lock'{through}, "
            "which cannot be sent to the workers (TypeError: cannot pickle '_thread.lock' "
            "object)") in text, text
    # neither nbpool's nor cloudpickle's frames, nor the cell's internal function name
    assert "cloudpickle" not in text and ".py:" not in text and "pmap_cell" not in text, text
    assert re.search(rf"----> 1 {magic} --no-progress", text), text


@pytest.mark.notebook
def test_chunked_unordered_map_with_insights(magic_cells):
    text = _text(magic_cells["insights"])
    assert "nbpool insights: " in text and "8 tasks completed" in text, text
    assert "[0, 1, 4, 9, 16, 25, 36, 49]" in _text(magic_cells["insights_check"])


@pytest.mark.notebook
def test_autoload_can_be_turned_off_and_load_ext_loads_the_magics(startup_file, tmp_path):
    cells = _run_notebook({
        "check": CELLS["autoloaded"],
        "load": "%load_ext nbpool",
        "use": "r = %pmap --no-progress -n1 abs [-1, -2]\nprint(r)",
    }, tmp_path, env={"NBPOOL_AUTOLOAD": "0"})
    assert "magic registered: False" in _text(cells["check"])
    assert not _errors(cells["load"]) and not _errors(cells["use"]), _text(cells["use"])
    assert "[1, 2]" in _text(cells["use"]), _text(cells["use"])


@pytest.mark.notebook
@pytest.mark.timeout(120)
def test_interrupting_a_pmap_cell_stops_its_workers_and_raises(startup_file,
                                                               current_python_kernel):
    """The Jupyter "interrupt kernel" button during %%pmap: KeyboardInterrupt, no workers left."""
    jupyter_client = pytest.importorskip("jupyter_client")
    psutil = pytest.importorskip("psutil")
    manager = jupyter_client.KernelManager(kernel_name=current_python_kernel)
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        client.execute_interactive("import time", timeout=30)
        msg_id = client.execute("%%pmap -n 2 x in range(100)\ntime.sleep(0.5)\nx")
        kernel = psutil.Process(manager.provisioner.process.pid)

        def workers():  # the forkserver's children (the forkserver itself stays, by design)
            return [child for server in kernel.children()
                    if "forkserver" in " ".join(server.cmdline())
                    for child in server.children()]

        deadline = time.monotonic() + 30
        while len(workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers()) >= 2, "the workers did not start"
        interrupted_at = time.monotonic()
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = client.get_shell_msg(timeout=30)
        took = time.monotonic() - interrupted_at
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert took < 2.0, f"the interrupt took {took:.2f} s"
        assert workers() == [], workers()
        # the next cell can use a pool at once
        reply = client.execute_interactive("r = %pmap abs [-1, -2]\nprint(r)", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
