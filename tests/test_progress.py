"""Progress views, worker status and output relaying, outside a kernel (see
test_widgets_kernel.py for the same in a real Jupyter kernel)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from nbpool import WorkerPool
from nbpool.engine.output import RelayStream
from nbpool.engine.protocol import OUTPUT
from nbpool.progress import resolve_style
from nbpool.progress.model import ProgressModel, format_duration


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the model -------------------------------------------------------------------------------
def test_model_allows_one_redraw_per_interval():
    clock = FakeClock()
    model = ProgressModel(1000, clock=clock, min_interval=0.1)
    allowed = 0
    for step in range(1000):  # 1,000 updates over 1 second
        clock.now += 0.001
        model.set_count(step + 1)
        allowed += model.due()
    assert 9 <= allowed <= 11


def test_model_figures_and_text_forms():
    clock = FakeClock()
    model = ProgressModel(20, desc="squares", unit="task", clock=clock)
    clock.now += 4.0
    model.set_count(5)
    assert model.fraction == 0.25
    assert model.rate == pytest.approx(1.25)
    assert model.remaining == pytest.approx(12.0)
    assert model.summary() == "squares: 25% 5/20 (running)"
    assert model.timing_text() == "[00:04<00:12, 1.25 task/s]"
    model.finish("error", "ValueError: bad")
    assert model.summary() == "squares: 25% 5/20 (error: ValueError: bad)"
    assert model.timing_text() == "[00:04, 1.25 task/s]"


def test_model_with_unknown_total_counts():
    model = ProgressModel(None)
    model.set_count(7)
    assert model.fraction is None and model.remaining is None
    assert model.summary() == "7 it (running)"


def test_model_rejects_an_unknown_outcome():
    with pytest.raises(ValueError, match="unknown progress outcome 'finished'"):
        ProgressModel(3).finish("finished")


@pytest.mark.parametrize("seconds, text", [(None, "?"), (0, "00:00"), (65.4, "01:05"),
                                           (3723, "1:02:03"), (float("inf"), "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# -- choosing a view -------------------------------------------------------------------------
def test_a_plain_process_gets_the_text_bar():
    assert resolve_style(None) == "std"
    assert resolve_style("auto") == "std"
    assert resolve_style("std") == "std"


def test_a_terminal_ipython_gets_the_text_bar():
    pytest.importorskip("IPython")
    code = "from nbpool.progress import resolve_style; print('STYLE', resolve_style(None))"
    proc = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert "STYLE std" in proc.stdout, proc.stdout + proc.stderr


def test_asking_for_a_widget_outside_a_kernel_warns_and_uses_text():
    with pytest.warns(RuntimeWarning, match="needs a Jupyter kernel"):
        assert resolve_style("notebook") == "std"


# -- terminal bars, in a real script ---------------------------------------------------------
def _run_script(body: str) -> subprocess.CompletedProcess:
    script = "import time\nfrom nbpool import WorkerPool\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)


def test_terminal_bar_shows_count_and_description_on_stderr():
    proc = _run_script("""
        with WorkerPool(2) as pool:
            pool.map(abs, range(20), progress_bar=True, progress_bar_options={"desc": "absolute"})
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    last = proc.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("absolute: 100%") and "20/20" in last, proc.stderr


def test_terminal_bar_names_the_error():
    proc = _run_script("""
        def bad(x):
            if x == 2:
                raise KeyError("missing")
            return x
        with WorkerPool(2) as pool:
            try:
                pool.map(bad, range(10), progress_bar=True)
            except KeyError:
                pass
        """)
    assert proc.returncode == 0, proc.stderr
    assert "Error: KeyError: 'missing'" in proc.stderr, proc.stderr


def test_terminal_bar_says_interrupted_when_an_imap_is_closed_early():
    proc = _run_script("""
        with WorkerPool(2) as pool:
            it = pool.imap(time.sleep, [0.01] * 40, progress_bar=True)
            next(it)
            it.close()
        """)
    assert proc.returncode == 0, proc.stderr
    assert "Interrupted" in proc.stderr, proc.stderr


# -- the widget view, throttled, on a real map ----------------------------------------------
def test_widget_updates_are_throttled_whatever_the_task_count(monkeypatch, capsys):
    pytest.importorskip("ipywidgets")
    from nbpool import frontend
    from nbpool.progress import widget

    monkeypatch.setattr(frontend, "widgets_available", lambda: True)
    views, draws = [], []
    original_init, original_draw = widget.WidgetProgress.__init__, widget.BarRow.draw

    def recording_init(self, *args, **kwargs):
        views.append(self)
        original_init(self, *args, **kwargs)

    def counting_draw(self):
        draws.append(time.monotonic())
        original_draw(self)

    monkeypatch.setattr(widget.WidgetProgress, "__init__", recording_init)
    monkeypatch.setattr(widget.BarRow, "draw", counting_draw)
    n = 300_000
    started = time.monotonic()
    with WorkerPool(2) as pool:
        assert pool.map(abs, range(n), progress_bar=True, chunk_size=100) == list(range(n))
    elapsed = time.monotonic() - started
    [view] = views
    # 3,000 chunks came back; the bar was drawn about ten times a second, plus first and last
    assert len(draws) <= elapsed / 0.1 + 3, (len(draws), elapsed)
    assert view.row.bar.value == view.row.bar.max == n
    assert view.row.bar.bar_style == "success"
    assert repr(view.widget) == f"100% {n}/{n} (done)"


# -- worker status ----------------------------------------------------------------------------
def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_worker_status_follows_the_workers(tmp_path):
    gate = tmp_path / "go"

    def wait_for_gate(x):
        while x > 0 and not gate.exists():
            time.sleep(0.005)
        return x

    pool = WorkerPool(2, keep_alive=True)
    try:
        it = pool.imap(wait_for_gate, range(4), chunk_size=1)
        assert next(it) == 0  # the other tasks are with the workers now, waiting for the gate

        def both_working():
            rows = pool.worker_status()
            return rows if all(r["status"] == "working" for r in rows) else None

        rows = _wait_for(both_working)  # read from shared memory: nothing needs to drive
        tasks = [r["task"] for r in rows]
        assert len(set(tasks)) == 2, tasks
        for text in tasks:
            index = int(text.split(":")[0].split()[1])
            assert text == f"task {index}: Arg 0: {index}" and index in (1, 2, 3), tasks
        assert all(r["running_for"] >= 0 and r["pid"] for r in rows)
        assert all(r["rss_bytes"] and r["rss_bytes"] > 1_000_000 for r in rows)
        gate.touch()
        assert list(it) == [1, 2, 3]
        rows = pool.worker_status()
        assert [r["status"] for r in rows] == ["idle", "idle"]
        assert sum(r["tasks_done"] for r in rows) == 4
        assert all(r["task"] is None and r["running_for"] is None for r in rows)
    finally:
        pool.terminate()
    assert [r["status"] for r in pool.worker_status()] == ["dead", "dead"]


def test_worker_status_shows_worker_state_and_restarts():
    def init(state):
        state["seen"] = []

    def remember(state, x):
        state["seen"].append(x)
        return x

    with WorkerPool(1, use_worker_state=True) as pool:
        pool.map(remember, range(6), worker_init=init, worker_lifespan=3, chunk_size=3)
        [row] = pool.worker_status()
    assert row["status"] == "stopped"
    assert row["restarts"] == 1
    assert row["state"] == {"seen": "[3, 4, 5]"}


def test_show_workers_prints_a_table_in_a_terminal(capsys):
    with WorkerPool(2, keep_alive=True) as pool:
        pool.map(abs, range(10))
        pool.show_workers()
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(",")[0] for line in lines] == ["Worker 0: idle", "Worker 1: idle"]
    assert sum(int(line.split(", ")[1].split()[0]) for line in lines) == 10


# -- output relaying --------------------------------------------------------------------------
def test_relay_stream_sends_whole_lines():
    sent = []
    stream = RelayStream("stdout", sent.append)
    print("hello", "world", file=stream)
    stream.write("partial")
    assert sent == [(OUTPUT, "stdout", "hello world\n")]
    stream.flush()
    assert sent[-1] == (OUTPUT, "stdout", "partial")
    with pytest.raises(TypeError, match="must be str, not bytes"):
        stream.write(b"raw")
    with pytest.raises(OSError, match="no file descriptor"):
        stream.fileno()
    assert RelayStream("stderr", sent.append, fd=2).fileno() == 2


def test_widget_text_form_is_not_cut_at_110_characters(capsys):
    """ipywidgets cuts a widget's text/plain at 110 characters; nbpool's views keep all of it."""
    pytest.importorskip("ipywidgets")
    from nbpool.progress.widget import WidgetProgress

    view = WidgetProgress(10, {"desc": "a long description " * 4})
    view.close("error", "ValueError: " + "x" * 120)
    text = view.widget._repr_mimebundle_()["text/plain"]
    assert text == repr(view.widget) and len(text) > 200
    assert text.endswith("x" * 120 + ")")
