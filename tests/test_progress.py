"""Progress views, worker status and output relaying, outside a kernel (see
test_widgets_kernel.py for the same in a real Jupyter kernel)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from procs import wait_for

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
def _run_script(body: str, env: dict | None = None) -> subprocess.CompletedProcess:
    script = "import time\nfrom nbpool import WorkerPool\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=None if env is None else {**os.environ, **env})


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
    original_init, original_draw = widget.WidgetProgress.__init__, widget.WidgetProgress.redraw

    def recording_init(self, *args, **kwargs):
        views.append(self)
        original_init(self, *args, **kwargs)

    def counting_draw(self):
        draws.append(time.monotonic())
        original_draw(self)

    monkeypatch.setattr(widget.WidgetProgress, "__init__", recording_init)
    monkeypatch.setattr(widget.WidgetProgress, "redraw", counting_draw)
    n = 300_000
    started = time.monotonic()
    with WorkerPool(2) as pool:
        assert pool.map(abs, range(n), progress_bar=True, chunk_size=100) == list(range(n))
    elapsed = time.monotonic() - started
    [view] = views
    # 3,000 chunks came back; the bar was drawn about ten times a second, plus first and last
    assert len(draws) <= elapsed / 0.1 + 3, (len(draws), elapsed)
    assert f'data-bar-style="success" data-value="{n}" data-max="{n}"' in view.widget.value
    assert 'class="nbpool-progress-fill nbpool-progress-success" style="width:100.0%' in (
        view.widget.value)
    assert repr(view.widget) == f"100% {n}/{n} (done)"


# -- worker status ----------------------------------------------------------------------------
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

        rows = wait_for(both_working)  # read from shared memory: nothing needs to drive
        tasks = [r["task"] for r in rows]
        assert len(set(tasks)) == 2, tasks
        for text in tasks:
            index = int(text.split(":")[0].split()[1])
            assert text == f"task {index}: Arg 0: {index}" and index in (1, 2, 3), tasks
        assert all(r["running_for"] >= 0 and r["pid"] for r in rows), rows
        assert all(r["rss_bytes"] and r["rss_bytes"] > 1_000_000 for r in rows), rows
        gate.touch()
        assert list(it) == [1, 2, 3]
        rows = pool.worker_status()
        assert [r["status"] for r in rows] == ["idle", "idle"], rows
        assert sum(r["tasks_done"] for r in rows) == 4, rows
        assert all(r["task"] is None and r["running_for"] is None for r in rows), rows
    finally:
        pool.terminate()
    rows = pool.worker_status()
    assert [r["status"] for r in rows] == ["dead", "dead"], rows


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


def test_widget_of_a_short_map_is_drawn_once_in_its_final_state(capsys):
    """A bar shows after SHOW_AFTER_SECONDS of work; a map over sooner displays it once, as it
    ends, with the final state as its first and only form (what nbval and GitHub show)."""
    pytest.importorskip("ipywidgets")
    from nbpool.progress.widget import SHOW_AFTER_SECONDS, WidgetProgress

    clock = FakeClock()
    view = WidgetProgress(10, {"desc": "quick"}, clock=clock)
    clock.now += SHOW_AFTER_SECONDS / 2
    view.update(7)
    assert view.widget is None and capsys.readouterr().out == ""
    view.update(10)
    view.close("done")
    assert capsys.readouterr().out == "quick: 100% 10/10 (done)\n"  # one display
    assert 'data-bar-style="success" data-value="10" data-max="10"' in view.widget.value


def test_widget_of_a_longer_map_shows_while_it_runs(capsys):
    pytest.importorskip("ipywidgets")
    from nbpool.progress.widget import SHOW_AFTER_SECONDS, WidgetProgress

    clock = FakeClock()
    view = WidgetProgress(10, {}, clock=clock)
    clock.now += SHOW_AFTER_SECONDS
    view.update(4)
    assert capsys.readouterr().out == "40% 4/10 (running)\n"
    assert 'data-bar-style="" data-value="4" data-max="10"' in view.widget.value
    clock.now += 1.0
    view.update(6)
    assert 'data-value="6"' in view.widget.value  # redrawn (throttled to ten a second)
    view.close("error", "ValueError: bad")
    assert 'data-bar-style="danger" data-value="6"' in view.widget.value
    # the display is updated with the final text form (outside IPython: printed again)
    assert capsys.readouterr().out == "60% 6/10 (error: ValueError: bad)\n"


def test_bars_share_one_layout_and_style_until_someone_closes_them(capsys):
    """Each widget would make a Layout and a style widget of its own: two more comm messages
    per bar. A shared one that was closed (``Widget.close_all()``) is made again."""
    pytest.importorskip("ipywidgets")
    from nbpool.progress.widget import WidgetProgress

    first, second = (WidgetProgress(3, {}, show_after=0) for _ in range(2))
    assert first.widget.layout is second.widget.layout
    assert first.widget.style is second.widget.style
    first.widget.layout.close()
    third = WidgetProgress(3, {}, show_after=0)
    assert third.widget.layout is not first.widget.layout
    assert third.widget.layout.comm is not None
    assert third.widget.style is first.widget.style


# -- progress_bar_options and progress_bar_style, checked before any worker starts ------------
BAD_PROGRESS_SETTINGS = [
    ({"progress_bar_options": {"nonsense": 1}}, ValueError,
     r"progress_bar_options has an unknown key 'nonsense'"),
    ({"progress_bar_options": {"position": "x"}}, TypeError,
     r"progress_bar_options\['position'\] must be an int >= 0, got str 'x'"),
    ({"progress_bar_options": {"position": 2.5}}, TypeError,
     r"progress_bar_options\['position'\] must be an int >= 0, got float 2.5"),
    ({"progress_bar_options": {"position": -3}}, ValueError,
     r"progress_bar_options\['position'\] must be >= 0"),
    ({"progress_bar_options": {"colour": "greenish"}}, ValueError,
     r"progress_bar_options\['colour'\] must be one of"),
    ({"progress_bar_options": {"disable": "yes"}}, TypeError,
     r"progress_bar_options\['disable'\] must be True, False or None"),
    ({"progress_bar_options": {"desc": 3}}, TypeError, r"progress_bar_options\['desc'\]"),
    ({"progress_bar_style": "dashboard"}, ValueError,
     r"nbpool does not have.*show_workers\(\) and pool.show_insights\(\)"),
]


@pytest.mark.parametrize("method", ["map", "imap"])
@pytest.mark.parametrize("settings, error, message", BAD_PROGRESS_SETTINGS,
                         ids=[str(s) for s, _, _ in BAD_PROGRESS_SETTINGS])
def test_bad_progress_settings_fail_before_any_worker_starts(method, settings, error, message):
    with WorkerPool(2) as pool:
        with pytest.raises(error, match=message):
            getattr(pool, method)(abs, range(5), progress_bar=True, **settings)  # imap: at once
        assert not pool._engine.running


def test_rich_style_without_rich_fails_before_any_worker_starts(monkeypatch):
    find_spec = importlib.util.find_spec  # rich is installed for the tests: hide it
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "rich" else find_spec(name, *args))
    with WorkerPool(2) as pool:
        with pytest.raises(ImportError, match="progress_bar_style='rich' needs the 'rich'"):
            pool.imap(abs, range(5), progress_bar=True, progress_bar_style="rich")
        assert not pool._engine.running
        # without a bar the style does not matter
        assert pool.map(abs, [-1], progress_bar_style="rich") == [1]


def test_disabled_bar_draws_nothing_in_a_terminal():
    proc = _run_script("""
        with WorkerPool(2) as pool:
            pool.map(abs, range(20), progress_bar=True, progress_bar_options={"disable": True})
        """)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_disabled_bar_shows_no_widget(monkeypatch, capsys):
    pytest.importorskip("ipywidgets")
    from nbpool import frontend
    from nbpool.progress import widget

    monkeypatch.setattr(frontend, "widgets_available", lambda: True)
    created = []
    monkeypatch.setattr(widget.WidgetProgress, "__init__", lambda *a, **k: created.append(a))
    with WorkerPool(2) as pool:
        pool.map(abs, range(5), progress_bar=True, progress_bar_options={"disable": True})
    assert created == []


# -- rich: no thread outlives the bar -----------------------------------------------------------
def test_rich_bar_leaves_no_thread_and_the_next_pool_still_forks():
    pytest.importorskip("rich")
    proc = _run_script("""
        import threading
        with WorkerPool(2) as pool:
            pool.map(time.sleep, [0.01] * 60, progress_bar=True, progress_bar_style="rich",
                     progress_bar_options={"desc": "richly"})
        print("threads", threading.active_count())
        with WorkerPool(2) as pool:
            pool.map(abs, range(4))
            print("method", pool.start_method)
        """)
    assert proc.returncode == 0, proc.stderr
    assert "threads 1" in proc.stdout and "method fork" in proc.stdout, proc.stdout
    assert "richly" in proc.stderr and "60/60" in proc.stderr, proc.stderr


def test_rich_bar_turns_red_and_names_the_error():
    pytest.importorskip("rich")
    proc = _run_script("""
        def bad(x):
            if x == 5:
                raise KeyError("missing")
            return x
        with WorkerPool(2) as pool:
            try:
                pool.map(bad, range(10), progress_bar=True, progress_bar_style="rich",
                         chunk_size=1)
            except KeyError:
                print("caught")
        """, env={"FORCE_COLOR": "1"})  # rich draws colours into a pipe only when forced
    assert proc.returncode == 0 and proc.stdout == "caught\n", proc.stderr
    final = proc.stderr.split("\r")[-1]
    assert "Error: KeyError: 'missing'" in final, final
    red_bar = "\x1b[31m\u2501"  # rich draws its bar with heavy horizontal lines
    assert red_bar in final and red_bar not in proc.stderr.split("Error:")[0], proc.stderr


# -- terminal bars: outcomes shown once, the user's description kept ----------------------------
def test_terminal_bar_keeps_the_description_beside_the_error():
    proc = _run_script("""
        def bad(x):
            if x == 2:
                raise KeyError("missing")
            return x
        with WorkerPool(2) as pool:
            try:
                pool.map(bad, range(10), progress_bar=True, progress_bar_options={"desc": "lookup"})
            except KeyError:
                pass
        """)
    assert proc.returncode == 0, proc.stderr
    assert "lookup - Error: KeyError: 'missing'" in proc.stderr, proc.stderr


def test_ctrl_c_during_a_terminal_map_shows_interrupted_once():
    script = textwrap.dedent("""
        import time
        from nbpool import WorkerPool
        with WorkerPool(2) as pool:
            try:
                pool.map(time.sleep, [0.05] * 400, progress_bar=True,
                         progress_bar_options={"desc": "sleepy"})
            except KeyboardInterrupt:
                print("caught")
        """)
    # its own session, so that Ctrl-C can be sent to the whole group, as a terminal does
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        seen = ""
        while "sleepy:" not in seen:  # the bar is drawn once the map has started
            char = proc.stderr.read(1)
            assert char, "the script ended before drawing its bar"
            seen += char
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = seen + err
    assert proc.returncode == 0 and out == "caught\n", (out, err)
    assert err.count("Interrupted") == 1, repr(err)
    assert "sleepy - Interrupted:" in err


# -- the nested bars' view, throttled at the root -----------------------------------------------
def _nested_report(map_id: str, n: int, outcome: str = "running") -> dict:
    return {"id": map_id, "position": None, "desc": "", "unit": "it", "colour": None,
            "n": n, "total": 100, "elapsed": 1.0, "outcome": outcome, "message": ""}


def test_nested_bars_are_redrawn_about_ten_times_a_second_however_many_report(
        monkeypatch, capsys):
    pytest.importorskip("ipywidgets")
    from nbpool.progress import widget

    clock = FakeClock()
    view = widget.WidgetProgress(None, {}, show_main=False, clock=clock)
    draws = []
    original_draw = widget.WidgetProgress.redraw

    def counting_draw(self):
        draws.append([row.model.n for row in self.nested.values()])
        original_draw(self)

    monkeypatch.setattr(widget.WidgetProgress, "redraw", counting_draw)
    for step in range(1, 101):  # 8 nested maps report every 10 ms for one second
        clock.now += 0.01
        for map_id in range(8):
            view.show_nested(_nested_report(str(map_id), step))
    # all eight rows are drawn together, about ten times in that second
    assert 9 <= len(draws) <= 11, len(draws)
    draws.clear()
    view.show_nested(_nested_report("0", 100, "done"))  # a final state is drawn at once
    assert len(draws) == 1
    view.close("done")  # and closing draws what the throttle held back
    assert draws[-1] == [100] * 8
    assert view.widget.value.count('data-value="100"') == 8
    assert view.widget.value.count('data-bar-style="success"') == 1  # the one that ended


# -- one bar for a batch of apply_async tasks ----------------------------------------------------
def test_apply_async_batch_bar_in_a_terminal():
    proc = _run_script("""
        import threading
        from nbpool import tqdm

        def fail_on_three(x):
            if x == 3:
                raise ValueError("three")
            return x

        for _ in tqdm(range(3)):  # nbpool.tqdm starts no monitor thread
            pass
        with WorkerPool(2) as pool:
            with pool.progress(total=20, desc="applies") as batch:
                pending = [pool.apply_async(abs, (-x,)) for x in range(20)]
            print("done", batch.finished, [r.get() for r in pending][-1], pool.start_method)
            with pool.progress(desc="failing") as batch:
                pending = [pool.apply_async(fail_on_three, (x,)) for x in range(5)]
            print("failed", batch.failed, batch.finished)
        print("threads", threading.active_count())
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["done 20 19 fork", "failed 1 5", "threads 1"], proc.stdout
    lines = proc.stderr.replace("\r", "\n").splitlines()
    assert any(line.startswith("applies: 100%") and "20/20" in line for line in lines), lines
    assert any(line.startswith("failing - Error: 1 of 5 tasks failed, first: ValueError: three")
               and "5/5" in line for line in lines), lines


def test_apply_async_batch_ends_interrupted_when_its_block_is_interrupted(capsys):
    with WorkerPool(1) as pool:
        with pytest.raises(KeyboardInterrupt):
            with pool.progress(desc="stopped") as batch:
                pool.apply_async(time.sleep, (0.01,))
                raise KeyboardInterrupt
        assert batch.submitted == 1
        assert pool._batch is None
        with pytest.raises(ValueError, match="progress_bar_options has an unknown key 'bogus'"):
            with pool.progress(bogus=1):
                pass
    assert "stopped - Interrupted" in capsys.readouterr().err


# -- which frontends get widgets --------------------------------------------------------------
@pytest.mark.parametrize("environment, started_with, expected", [
    ({}, set(), True),
    ({}, {"QT_API"}, False),  # a kernel started by qtconsole
    ({"NBPOOL_PROGRESS": "widget"}, {"QT_API"}, True),
    ({"NBPOOL_PROGRESS": "text"}, set(), False),  # e.g. jupyter console
    ({"NBPOOL_PROGRESS": " Auto "}, set(), True),
])
def test_frontend_choice_in_a_kernel(monkeypatch, environment, started_with, expected):
    from nbpool import frontend

    monkeypatch.setattr(frontend, "in_kernel", lambda: True)
    monkeypatch.setattr(frontend, "_environment_at_start", lambda: frozenset(started_with))
    monkeypatch.delenv("NBPOOL_PROGRESS", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert frontend.widgets_available() is expected


def test_a_bad_nbpool_progress_value_is_named(monkeypatch):
    from nbpool import frontend

    monkeypatch.setenv("NBPOOL_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="NBPOOL_PROGRESS='fancy' must be one of auto, text"):
        frontend.widgets_available()
