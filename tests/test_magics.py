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


def test_an_unknown_option_is_a_usage_error():
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="unknown option '--fast'"):
        split_options("--fast x in xs")
    with pytest.raises(UsageError, match="option -n needs a value"):
        split_options("-n")


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


def test_function_and_iterable_split():
    assert cellcode.split_function_and_iterable("f range(10)") == ("f", "range(10)")
    assert cellcode.split_function_and_iterable("lambda x: x + 1 range(3)") == (
        "lambda x: x + 1", "range(3)")
    assert cellcode.split_function_and_iterable("np.sqrt  arr[::2]") == ("np.sqrt", "arr[::2]")
    assert cellcode.split_function_and_iterable("range(10)") is None


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
print("pool imported:", "nbpool.pool" in sys.modules)
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
%%pmap --insights --no-progress x in range(8)
x
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


@pytest.fixture(scope="module")
def startup_file():
    """Skips: a kernel has the magics auto-loaded only through the startup file pip installs."""
    if not os.path.exists(os.path.join(sys.prefix, "etc", "ipython", "startup",
                                       "50-nbpool-magics.py")):
        pytest.skip("nbpool's IPython startup file is not installed in this environment")


@pytest.fixture(scope="module")
def magic_cells(startup_file, tmp_path_factory):
    return _run_notebook(CELLS, tmp_path_factory.mktemp("magics"))


@pytest.mark.notebook
def test_magics_are_autoloaded_without_importing_the_pool(magic_cells):
    out = _text(magic_cells["autoloaded"])
    assert "magic registered: True" in out and "pool imported: False" in out, out


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
def test_an_error_shows_the_workers_traceback_at_the_cells_line(magic_cells):
    [error] = _errors(magic_cells["error"])
    assert error["ename"] == "ZeroDivisionError"
    text = _text(magic_cells["error"])
    assert "Arg 0: 2" in text
    assert re.search(r'line 3, in pmap_cell\n\s+1 / y', text), text


@pytest.mark.notebook
def test_bad_magic_lines_get_a_usage_message(magic_cells):
    text = _text(magic_cells["unknown_option"])
    assert "UsageError: %pmap: unknown option '--bogus'" in text and "usage:" in text, text
    assert "cannot run inside workers" in _text(magic_cells["shell_in_body"])


@pytest.mark.notebook
def test_insights_option_shows_the_insights(magic_cells):
    text = _text(magic_cells["insights"])
    assert "nbpool insights: " in text and "8 tasks completed" in text, text


@pytest.mark.notebook
def test_autoload_can_be_turned_off(startup_file, tmp_path):
    cells = _run_notebook({"check": CELLS["autoloaded"]}, tmp_path, env={"NBPOOL_AUTOLOAD": "0"})
    assert "magic registered: False" in _text(cells["check"])


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
