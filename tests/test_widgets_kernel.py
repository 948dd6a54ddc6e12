"""Widgets and worker output in a real Jupyter kernel, executed with nbclient.

One notebook runs once per module; each test reads what it recorded: the cell outputs (what
nbval compares) and the widget state nbclient stores (what a browser would draw).
"""

from __future__ import annotations

import re

import pytest

from kernel_helpers import run_cells

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

pytestmark = pytest.mark.notebook

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

CELLS = {
    "setup": """
import logging, time
from nbpool import WorkerPool

def slow(x):
    time.sleep(0.02)
    return x * 2

def bad(x):
    if x == 3:
        raise ValueError("three is bad")
    time.sleep(0.01)
    return x

def shout(method, i):
    print(f"hello from {method} {i}")
    logger = logging.getLogger("nbpool-test")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
    logger.warning(f"logged from {method} {i}")
    return i

def square(x):
    time.sleep(0.005)
    return x * x

def dispatcher(worker_id, xs):
    with WorkerPool(n_jobs=2) as nested_pool:
        return nested_pool.map(square, xs, progress_bar=True,
                               progress_bar_position=worker_id + 1)

def chatty(tag, n):
    for i in range(n):
        print(tag, i)
    return n

def chatty_then_hang(tag):
    for i in range(1000):
        print(tag, i)
    time.sleep(60)

def chatty_then_exit(tag):
    import os
    for i in range(1000):
        print(tag, i)
    os._exit(1)  # no finally block runs

def init(worker_state):
    worker_state["count"] = 0

def count(worker_state, x):
    worker_state["count"] += 1
    time.sleep(0.01)
    return x
""",
    "success": """
with WorkerPool(2) as pool:
    result = pool.map(slow, range(12), progress_bar=True, progress_bar_options={"desc": "doubling"})
assert result == [x * 2 for x in range(12)]
""",
    "error": """
try:
    with WorkerPool(2) as pool:
        pool.map(bad, range(8), progress_bar=True)
except ValueError as exc:
    print("caught", type(exc).__name__)
""",
    "closed_early": """
with WorkerPool(2) as pool:
    it = pool.imap(slow, range(50), progress_bar=True)
    next(it)
    it.close()
""",
    "prints": """
for method in ("forkserver", "spawn", "fork", "threading"):
    with WorkerPool(2, start_method=method) as pool:
        pool.map(shout, [(method, i) for i in range(3)])
""",
    "flood": """
with WorkerPool(2) as pool:
    pool.map(chatty, [("a", 5000), ("b", 5000)], chunk_size=1)
print("map returned")
""",
    "flood_then_timeout": """
try:
    with WorkerPool(2) as pool:
        pool.map(chatty_then_hang, ["c", "d"], chunk_size=1, task_timeout=1)
except TimeoutError:
    print("timed out")
""",
    "flood_then_exit": """
try:
    with WorkerPool(1) as pool:
        pool.map(chatty_then_exit, ["e"])
except Exception as exc:
    print("died:", type(exc).__name__)
""",
    "nested": """
with WorkerPool(n_jobs=2, daemon=False, pass_worker_id=True) as pool:
    nested = pool.map(dispatcher, ((range(x, x + 10),) for x in range(6)), iterable_len=6,
                      n_splits=2, progress_bar=True)
assert nested == [[y * y for y in range(x, x + 10)] for x in range(6)]
""",
    "nested_without_parent_bar": """
with WorkerPool(n_jobs=2, daemon=False, pass_worker_id=True) as pool:
    nested = pool.map(dispatcher, ((range(x, x + 10),) for x in range(6)), iterable_len=6,
                      n_splits=2)
assert nested == [[y * y for y in range(x, x + 10)] for x in range(6)]
""",
    "nested_in_threads": """
with WorkerPool(n_jobs=2, start_method="threading", pass_worker_id=True) as pool:
    nested = pool.map(dispatcher, ((range(x, x + 10),) for x in range(4)), iterable_len=4,
                      n_splits=2, progress_bar=True)
assert nested == [[y * y for y in range(x, x + 10)] for x in range(4)]
""",
    "nested_in_apply": """
with WorkerPool(n_jobs=2, daemon=False) as pool:
    got = [pool.apply_async(dispatcher, (0, range(x, x + 10))) for x in range(2)]
    assert [r.get() for r in got] == [[y * y for y in range(x, x + 10)] for x in range(2)]
""",
    "styles": """
for style in ("widget", "notebook", "std"):
    with WorkerPool(2) as pool:
        pool.map(slow, range(5), progress_bar=True, progress_bar_style=style,
                 progress_bar_options={"desc": style})
""",
    "apply_batch": """
with WorkerPool(2) as pool:
    with pool.progress(desc="applies") as batch:
        pending = [pool.apply_async(slow, (x,)) for x in range(10)]
    assert [r.get() for r in pending] == [x * 2 for x in range(10)]
    print("counted", batch.submitted, batch.finished, batch.failed)
""",
    "disabled_and_coloured": """
with WorkerPool(2) as pool:
    pool.map(slow, range(4), progress_bar=True, progress_bar_options={"disable": True})
    pool.map(slow, range(4), progress_bar=True, progress_bar_options={"colour": "GREEN"})
""",
    "text_by_environment": """
import os
from nbpool import tqdm
from tqdm.notebook import tqdm_notebook
print("nbpool.tqdm is a widget bar:", issubclass(tqdm, tqdm_notebook))
os.environ["NBPOOL_PROGRESS"] = "text"
try:
    with WorkerPool(2) as pool:
        pool.map(slow, range(6), progress_bar=True)
finally:
    del os.environ["NBPOOL_PROGRESS"]
""",
    "workers": """
pool = WorkerPool(2, use_worker_state=True, enable_insights=True, keep_alive=True)
pool.show_workers()
pool.show_insights()
out = pool.map(count, range(30), worker_init=init)
rows = pool.worker_status()
assert [r["status"] for r in rows] == ["idle", "idle"], rows
assert sum(r["tasks_done"] for r in rows) == 30, rows
assert sum(int(r["state"]["count"]) for r in rows) == 30, rows
pool.terminate()
assert [r["status"] for r in pool.worker_status()] == ["dead", "dead"]
""",
    "shown_during_imap": """
pool = WorkerPool(2, enable_insights=True)
results = pool.imap(slow, range(20), chunk_size=1)
next(results)
pool.show_workers()
pool.show_insights()
rest = list(results)
""",
    # last: it closes every widget of the kernel
    "closed_by_user": """
import ipywidgets
with WorkerPool(2) as pool:
    results = pool.imap(slow, range(30), chunk_size=1, progress_bar=True)
    got = [next(results)]
    time.sleep(0.3)  # past the delay after which the bar shows
    got.append(next(results))
    ipywidgets.Widget.close_all()
    got += list(results)
print("finished", got == [x * 2 for x in range(30)])
with WorkerPool(2) as pool:  # the next bar makes the shared layout and style again
    pool.map(slow, range(4), progress_bar=True)
""",
}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Runs the notebook once in a kernel of this interpreter; returns ({name: cell}, state)."""
    cells, nb = run_cells(CELLS, tmp_path_factory.mktemp("widgets-kernel"))
    return cells, nb.metadata["widgets"][WIDGET_STATE]["state"]


def _displays(cell) -> list[dict]:
    return [o["data"] for o in cell.outputs if o["output_type"] == "display_data"]


def _stream(cell, name: str) -> str:
    return "".join(o["text"] for o in cell.outputs
                   if o["output_type"] == "stream" and o["name"] == name)


def _models(state: dict, model_id: str, name: str) -> list[dict]:
    """Every model called ``name`` under ``model_id`` (walking children), in order."""
    found = []
    model = state[model_id]
    if model["model_name"] == name:
        found.append(model["state"])
    for child in model["state"].get("children", []):
        found += _models(state, child.removeprefix("IPY_MODEL_"), name)
    return found


_BAR_ROW = re.compile(
    r'<div class="nbpool-progress-bar" data-bar-style="(?P<bar_style>[a-z]*)" '
    r'data-value="(?P<value>\d+)" data-max="(?P<max>\d+)" '
    r'data-description="(?P<description>[^"]*)".*?background:(?P<fill>[^"]*)"></div>')


def _bars(state: dict, data: dict) -> list[dict]:
    """The bars of a progress display: one HTML widget whose rows state their bar style,
    count and total, with the fill's colour."""
    [model] = _models(state, data[WIDGET_VIEW]["model_id"], "HTMLModel")
    assert "nbpool-progress" in model["_dom_classes"]
    bars = []
    for match in _BAR_ROW.finditer(model["value"]):
        bar = match.groupdict()
        bar["value"], bar["max"] = float(bar["value"]), float(bar["max"])
        bars.append(bar)
    return bars


def _html(state: dict, data: dict) -> str:
    return " ".join(m["value"] for m in _models(state, data[WIDGET_VIEW]["model_id"], "HTMLModel"))


def test_progress_widget_ends_at_the_total_with_success(executed):
    cells, state = executed
    [data] = _displays(cells["success"])
    assert data["text/plain"] == "doubling: 100% 12/12 (done)"
    [bar] = _bars(state, data)
    assert (bar["value"], bar["max"], bar["bar_style"]) == (12.0, 12.0, "success")
    assert bar["description"] == "doubling"
    html = _html(state, data).replace("\u2007", " ")
    assert "12/12" in html and "it/s" in html


def test_progress_widget_turns_red_and_names_the_error(executed):
    cells, state = executed
    [data] = _displays(cells["error"])
    assert "caught ValueError" in _stream(cells["error"], "stdout")
    assert data["text/plain"].endswith("(error: ValueError: three is bad)"), data["text/plain"]
    [bar] = _bars(state, data)
    assert bar["bar_style"] == "danger"
    assert bar["value"] < bar["max"] == 8.0
    assert "three is bad" in _html(state, data).replace("\u2007", " ")


def test_progress_widget_shows_an_interrupted_map(executed):
    cells, state = executed
    [data] = _displays(cells["closed_early"])
    assert data["text/plain"].endswith("(interrupted)"), data["text/plain"]
    [bar] = _bars(state, data)
    assert bar["bar_style"] == "warning"


def test_worker_prints_and_logging_reach_the_cell_under_every_start_method(executed):
    cells, _ = executed
    stdout = _stream(cells["prints"], "stdout")
    stderr = _stream(cells["prints"], "stderr")
    for method in ("forkserver", "spawn", "fork", "threading"):
        for i in range(3):
            assert f"hello from {method} {i}\n" in stdout, stdout
            assert f"logged from {method} {i}\n" in stderr, stderr


def _lines_of(stdout: str, tag: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(f"{tag} ")]


def test_a_flood_of_worker_prints_arrives_whole_in_few_stream_messages(executed):
    """The notebook's process flushes its stream a few times a second, not once a line:
    10,000 lines used to make 10,000 iopub messages (and a map 30 times slower)."""
    cells, _ = executed
    cell = cells["flood"]
    streams = [o for o in cell.outputs if o["output_type"] == "stream"]
    assert len(streams) < 200, len(streams)
    stdout = _stream(cell, "stdout")
    for tag in ("a", "b"):
        assert _lines_of(stdout, tag) == [f"{tag} {i}" for i in range(5000)]
    assert stdout.endswith("map returned\n")  # all of it before the map returned


def test_what_a_worker_printed_before_it_was_killed_still_shows(executed):
    """Killed for its task_timeout, a worker has sent every line it printed before: the
    parent shows them all."""
    cells, _ = executed
    stdout = _stream(cells["flood_then_timeout"], "stdout")
    for tag in ("c", "d"):
        assert _lines_of(stdout, tag) == [f"{tag} {i}" for i in range(1000)]
    assert stdout.endswith("timed out\n")


def test_what_a_worker_printed_before_it_died_without_a_word_still_shows(executed):
    """A worker that ends with os._exit (or SIGKILL, or a crash in C code): the parent reads
    what it sent before it died, and shows every line."""
    cells, _ = executed
    stdout = _stream(cells["flood_then_exit"], "stdout")
    assert _lines_of(stdout, "e") == [f"e {i}" for i in range(1000)]
    assert stdout.endswith("died: WorkerDiedError\n")


def test_nested_pools_show_their_bars_under_the_parent_bar(executed):
    cells, state = executed
    [data] = _displays(cells["nested"])
    lines = data["text/plain"].splitlines()
    assert lines[0] == "100% 6/6 (done)"
    # one row per progress_bar_position (1 and 2), each showing its last nested map done
    assert lines[1:] == ["  100% 10/10 (done)", "  100% 10/10 (done)"], lines
    bars = _bars(state, data)
    assert len(bars) == 3
    assert all(b["bar_style"] == "success" and b["value"] == b["max"] for b in bars)


def test_nested_bars_without_a_parent_bar_keep_their_final_text(executed):
    """The saved output (what nbval and GitHub show) is the bars' final state, not the
    empty view displayed before the first report."""
    cells, state = executed
    [data] = _displays(cells["nested_without_parent_bar"])
    assert data["text/plain"].splitlines() == ["  100% 10/10 (done)", "  100% 10/10 (done)"]
    assert len(_bars(state, data)) == 2


def test_workers_and_insights_widgets_show_the_final_state(executed):
    cells, state = executed
    workers, insights = _displays(cells["workers"])
    # the workers view's text form was refreshed after terminate(): both dead, 30 tasks
    lines = workers["text/plain"].splitlines()
    assert len(lines) == 2 and all(": dead, " in line for line in lines), lines
    assert sum(int(line.split(", ")[1].split()[0]) for line in lines) == 30
    html = _html(state, workers)
    assert html.count("class='nbpool-worker-row'") == 2
    assert "count=" in html
    assert insights["text/plain"] == "nbpool insights: 2 workers, 30 tasks completed"
    assert "30 tasks completed" in _html(state, insights)
    assert "Top 5 longest tasks" in _html(state, insights)


def test_views_shown_during_an_imap_keep_its_final_state(executed):
    cells, state = executed
    workers, insights = _displays(cells["shown_during_imap"])
    lines = workers["text/plain"].splitlines()
    assert [line.split(",")[0] for line in lines] == ["Worker 0: stopped", "Worker 1: stopped"]
    assert sum(int(line.split(", ")[1].split()[0]) for line in lines) == 20
    assert all(", 0 restarts, pid " in line for line in lines), lines
    assert insights["text/plain"] == "nbpool insights: 2 workers, 20 tasks completed"
    html = _html(state, insights)
    assert "20 tasks completed" in html and ">restarts</th>" in html


def test_nested_bars_of_worker_threads_show_under_the_parent_bar(executed):
    """Worker threads must not draw widgets themselves: their nested pools' bars go to the
    thread that runs the cell, as those of worker processes do."""
    cells, state = executed
    [data] = _displays(cells["nested_in_threads"])
    lines = data["text/plain"].splitlines()
    assert lines == ["100% 4/4 (done)", "  100% 10/10 (done)", "  100% 10/10 (done)"], lines
    assert len(_bars(state, data)) == 3


def test_nested_bars_of_apply_tasks_keep_their_final_text(executed):
    """No map closes the view of pools nested in ``apply_async`` tasks: its text form must
    still end with the nested maps done."""
    cells, state = executed
    [data] = _displays(cells["nested_in_apply"])
    # both nested maps ran at position 1 (worker id 0), so they share one row
    assert data["text/plain"].splitlines() == ["  100% 10/10 (done)"], data["text/plain"]
    [bar] = _bars(state, data)
    assert bar["bar_style"] == "success" and bar["value"] == bar["max"] == 10


def test_widget_styles_in_a_kernel(executed):
    """'widget' and 'notebook' draw the widget bar; 'std' writes tqdm's text to stderr."""
    cells, state = executed
    cell = cells["styles"]
    assert [d["text/plain"] for d in _displays(cell)] == [
        "widget: 100% 5/5 (done)", "notebook: 100% 5/5 (done)"]
    for data in _displays(cell):
        [bar] = _bars(state, data)
        assert bar["bar_style"] == "success"
    stderr = _stream(cell, "stderr")
    assert "std: 100%" in stderr and "5/5" in stderr, stderr


def test_apply_async_batch_shows_one_bar_that_ends_at_the_total(executed):
    cells, state = executed
    [data] = _displays(cells["apply_batch"])
    assert "counted 10 10 0" in _stream(cells["apply_batch"], "stdout")
    assert data["text/plain"] == "applies: 100% 10/10 (done)"
    [bar] = _bars(state, data)
    assert (bar["value"], bar["max"], bar["bar_style"]) == (10.0, 10.0, "success")


def test_disabled_bar_shows_nothing_and_colour_reaches_the_widget(executed):
    cells, state = executed
    [data] = _displays(cells["disabled_and_coloured"])  # the disabled map showed none
    assert data["text/plain"] == "100% 4/4 (done)"
    [bar] = _bars(state, data)
    assert bar["fill"] == "green"


def test_nbpool_progress_text_gives_text_bars_in_a_kernel(executed):
    cells, _ = executed
    cell = cells["text_by_environment"]
    assert "nbpool.tqdm is a widget bar: True" in _stream(cell, "stdout")
    assert _displays(cell) == []
    assert "6/6" in _stream(cell, "stderr")


def test_a_bar_the_user_closed_mid_map_does_not_break_it(executed):
    cells, state = executed
    cell = cells["closed_by_user"]
    assert [o for o in cell.outputs if o["output_type"] == "error"] == []
    assert "finished True" in _stream(cell, "stdout")
    first, second = _displays(cell)
    # the closed bar keeps the form it was shown in; nothing was drawn after the close
    assert first["text/plain"].endswith("/30 (running)"), first["text/plain"]
    assert second["text/plain"] == "100% 4/4 (done)"
    [bar] = _bars(state, second)
    assert bar["bar_style"] == "success"
