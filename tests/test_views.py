"""Insights and worker views with real workers: what they show, and that they stay live.

The widget views are tested outside a kernel (``widgets_available`` forced on: ipywidgets
works without a frontend); test_widgets_kernel.py draws them in a real kernel.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from functools import partial
from pathlib import Path

import pytest
from procs import wait_for

from nbpool import WorkerPool
from nbpool.insights import PHASES
from nbpool.widgets import render


def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# -- insights --------------------------------------------------------------------------------
def test_top_tasks_add_up_over_maps_with_keep_alive():
    """Each map numbers its tasks from 0: the second map's quick task 3 must not replace the
    first map's slow task 3."""
    with WorkerPool(2, enable_insights=True, keep_alive=True) as pool:
        pool.map(pause, [0.3 if i == 3 else 0.0 for i in range(10)], chunk_size=1)
        pool.map(pause, [0.0] * 10, chunk_size=1)
        raw = pool.insights().raw()
        report = pool.insights().report()
    assert sum(raw["n_completed_tasks"]) == 20
    assert raw["top_5_max_task_durations"][0] >= 0.3, raw["top_5_max_task_durations"]
    assert "0.3" in raw["top_5_max_task_args"][0], raw["top_5_max_task_args"]
    assert len(raw["top_5_max_task_durations"]) == 5
    assert "(task 3) Arg 0: 0.3" in report, report


def test_insights_raw_report_and_html_show_every_figure(capsys):
    with WorkerPool(2, enable_insights=True) as pool:
        pool.map(pause, [0.05 if i % 4 == 0 else 0.0 for i in range(20)], chunk_size=2)
        insights = pool.insights()
        pool.print_insights()
    raw = insights.raw()
    # numbers, not strings: seconds and ratios are floats, counts ints
    for key, value in raw.items():
        if key in ("n_completed_tasks", "n_restarts"):
            assert all(type(v) is int for v in value), key
        elif key == "top_5_max_task_args":
            assert len(value) == 5 and all(isinstance(v, str) for v in value), value
        elif isinstance(value, list):
            assert value and all(type(v) is float for v in value), key
        else:
            assert type(value) is float, key
    assert set(raw) >= {f"{p}_{s}" for p in PHASES for s in ("time", "ratio")}
    assert set(raw) >= {f"total_{p}_time" for p in PHASES} | {"total_time"}
    assert sum(raw[f"{p}_ratio"] for p in PHASES) == pytest.approx(1.0)
    assert raw["total_time"] == pytest.approx(sum(raw[f"total_{p}_time"] for p in PHASES))

    report = capsys.readouterr().out
    lines = report.splitlines()
    assert lines[:3] == ["WorkerPool insights", "-------------------",
                         "Total number of tasks completed: 20"]
    assert lines[4].split() == ["Worker", "Tasks", "Restarts", "start", "up", "init",
                                "waiting", "working", "exit"]
    assert [line.split()[:3] for line in lines[5:7]] == [
        ["0", str(raw["n_completed_tasks"][0]), "0"], ["1", str(raw["n_completed_tasks"][1]), "0"]]
    assert any(line.startswith("Total time: 0:00:0") for line in lines)
    for phase in PHASES:
        assert f"  {phase.replace('_', ' ')} time: " in report
        assert f"({raw[f'{phase}_ratio']:.1%})" in report
    top = lines[lines.index("Top 5 longest tasks:") + 1:]
    assert [line.split(".")[0].strip() for line in top] == ["1", "2", "3", "4", "5"]
    assert all("Arg 0: 0.05" in line for line in top[:5]), top

    html = insights._repr_html_()
    table = _table(html, "nbpool-insights-row")
    assert [row["worker"] for row in table] == ["0", "1"]
    assert [int(row["tasks"]) for row in table] == raw["n_completed_tasks"]
    assert [row["restarts"] for row in table] == ["0", "0"]
    # per worker a stacked bar, its parts in the phases' colours, titled with their share
    for row in re.findall(r"<tr class='nbpool-insights-row'>.*?</tr>", html):
        parts = re.findall(r"<div title='(\w[\w ]*): [^']*\((\d+)%\)' style='[^']*width:"
                           r"([\d.]+)px;background:(#\w+)'>", row)
        assert "working" in [name for name, *_ in parts], row
        assert all(render.PHASE_COLOURS[name.replace(" ", "_")] == colour
                   for name, _, _, colour in parts)
        assert sum(int(share) for _, share, _, _ in parts) == pytest.approx(100, abs=len(parts))
    for phase in PHASES:  # the legend gives each phase's share of all the time
        assert f"{phase.replace('_', ' ')} {raw[f'{phase}_ratio']:.1%}" in html
    assert html.count("<b>Top 5 longest tasks</b>") == 1


def sleep_in_init():
    time.sleep(0.1)


def sleep_in_exit():
    time.sleep(0.15)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_insights_measure_each_phase(start_method):
    """The figures, not only their format: each worker's init and exit time covers its
    worker_init and worker_exit, working time covers its tasks, start-up is counted."""
    with WorkerPool(2, enable_insights=True, start_method=start_method) as pool:
        pool.map(pause, [0.05] * 6, chunk_size=1, worker_init=sleep_in_init,
                 worker_exit=sleep_in_exit)
        pool.stop_and_join()  # the exit functions have run
        raw = pool.insights().raw()
        formatted = pool.get_insights()
    assert sum(raw["n_completed_tasks"]) == 6, raw
    assert all(0 < s for s in raw["start_up_time"]), raw["start_up_time"]
    assert all(s >= 0.1 for s in raw["init_time"]), raw["init_time"]
    assert all(s >= 0.15 for s in raw["exit_time"]), raw["exit_time"]
    for worker, tasks in enumerate(raw["n_completed_tasks"]):
        assert raw["working_time"][worker] >= 0.05 * tasks, raw
    assert all(s >= 0 for s in raw["waiting_time"]), raw["waiting_time"]
    assert raw["total_working_time"] >= 0.3 and raw["total_init_time"] >= 0.2
    # the formatted figures are the same numbers
    assert formatted["total_init_time"] >= "0:00:00.200", formatted["total_init_time"]
    assert all(t >= "0:00:00.150" for t in formatted["exit_time"]), formatted["exit_time"]


def test_insights_off_say_so(capsys):
    with WorkerPool(2) as pool:
        pool.map(abs, range(4))
        assert pool.get_insights() == {}
        assert pool.insights() is None
        pool.print_insights()
        pool.show_insights()  # no kernel: the same text
    out = capsys.readouterr().out
    message = ("No profiling stats available. Try to run a function first with insights "
               "enabled.\n")
    assert out == message * 2


# -- HTML tables -----------------------------------------------------------------------------
def _table(html: str, row_class: str) -> list[dict]:
    """The rows of the table whose rows have ``row_class``, as {header: cell text}."""
    start = html.rindex("<table", 0, html.index(f"class='{row_class}'"))
    table = html[start:html.index("</table>", start)]
    headers = [re.sub("<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>(.*?)</th>", table)]
    rows = []
    for row in re.findall(rf"<tr class='{row_class}'>(.*?)</tr>", table):
        cells = [re.sub("<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        rows.append(dict(zip(headers, cells, strict=True)))
    return rows


# -- worker status ---------------------------------------------------------------------------
def wait_for_file(path: str, x: int) -> int:
    while x > 0 and not os.path.exists(path):
        time.sleep(0.005)
    return x


def test_workers_before_any_map_read_not_started(capsys):
    pool = WorkerPool(2)
    rows = pool.worker_status()
    assert [(r["status"], r["pid"], r["rss_bytes"]) for r in rows] == [
        ("not started", None, None)] * 2
    pool.show_workers()
    assert capsys.readouterr().out.splitlines() == [
        "Worker 0: not started, 0 tasks done, 0 restarts",
        "Worker 1: not started, 0 tasks done, 0 restarts"]


def test_a_retired_worker_reads_restarting_until_the_pool_stops():
    pool = WorkerPool(1, keep_alive=True)
    try:
        results = pool.imap(abs, range(3), worker_lifespan=1, chunk_size=1)
        assert next(results) == 0
        # its one task done, the worker was told to retire; a fresh one takes the next task
        [row] = pool.worker_status()
        assert (row["status"], row["restarts"]) == ("restarting", 0), row
        assert list(results) == [1, 2]
        [row] = pool.worker_status()  # retired again; the next map starts its replacement
        assert (row["status"], row["restarts"]) == ("restarting", 2), row
        pool.map(abs, range(2))
        [row] = pool.worker_status()
        assert (row["status"], row["restarts"]) == ("idle", 3), row
    finally:
        pool.stop_and_join()
    [row] = pool.worker_status()
    assert row["status"] == "stopped"


def test_a_killed_worker_reads_dead_until_replaced():
    pool = WorkerPool(2, keep_alive=True)
    try:
        pool.map(abs, range(4))
        victim = pool.worker_status()[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        # nothing drives the pool between maps: the row finds out by itself
        rows = wait_for(lambda: (rows := pool.worker_status())[0]["status"] == "dead" and rows)
        assert rows[1]["status"] == "idle"
        assert rows[0]["rss_bytes"] is None and rows[0]["pid"] == victim
        assert "Worker 0: dead, " in render.workers_text(rows)
        assert pool.map(abs, range(4)) == [0, 1, 2, 3]
        rows = pool.worker_status()
        assert [(r["status"], r["restarts"]) for r in rows] == [("idle", 1), ("idle", 0)]
        assert rows[0]["pid"] != victim
    finally:
        pool.terminate()


def _spin(x):
    began = time.monotonic()
    while time.monotonic() - began < 0.0002:
        pass
    return x


def test_running_for_is_never_negative_while_tasks_begin():
    """Workers start a new task every fraction of a millisecond; a row read meanwhile must not
    count from a phase that began after its clock was read (this made CI flaky once)."""
    seen = []
    with WorkerPool(2) as pool:
        for _ in pool.imap(_spin, range(5000), chunk_size=1):
            seen.extend(r["running_for"] for r in pool.worker_status())
    timed = [t for t in seen if t is not None]
    assert timed, "no row was read while a task ran"
    assert min(timed) >= 0, sorted(timed)[:5]


def _init(worker_state):
    time.sleep(0.15)


def _exit(worker_state):
    time.sleep(0.15)


def _task(worker_state, x):
    time.sleep(0.02)
    return x


def test_statuses_seen_during_a_run_with_init_exit_and_lifespan():
    """Watched from another thread, as a notebook's view would be between redraws: only known
    statuses appear, and every phase of a worker's life shows."""
    from nbpool.engine.status import STATUSES

    pool = WorkerPool(2, use_worker_state=True)
    seen, done = [], threading.Event()

    def watch():
        while True:
            finished = done.is_set()
            seen.extend(r["status"] for r in pool.worker_status())
            if finished:  # that last look was after the map had returned
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        pool.map(_task, range(8), worker_init=_init, worker_exit=_exit, worker_lifespan=2,
                 chunk_size=1)
    finally:
        done.set()
        watcher.join()
        pool.terminate()
    assert set(seen) <= set(STATUSES), set(seen)
    # init and exit last 0.15 s each, and run 4 times per slot: long enough to be seen
    assert {"starting", "init", "working", "exiting"} <= set(seen), set(seen)
    assert "dead" not in seen
    assert seen[-2:] == ["stopped", "stopped"]


def die_once(marker_dir: str, x: int) -> int:
    marker = Path(marker_dir) / f"died-{x}"
    if x == 5 and not marker.exists():
        marker.write_text("")
        os._exit(7)
    return x


def test_a_restart_after_a_death_shows_in_insights_and_workers(tmp_path):
    with WorkerPool(2, enable_insights=True, keep_alive=True) as pool:
        assert pool.map(partial(die_once, str(tmp_path)), range(12), chunk_size=1,
                        task_retries=1) == list(range(12))
        insights = pool.insights()
        rows = pool.worker_status()
    assert sum(insights.raw()["n_restarts"]) == 1
    table = _table(insights._repr_html_(), "nbpool-insights-row")
    assert sorted(row["restarts"] for row in table) == ["0", "1"]
    assert "1 worker restart (retired or died)" in insights._repr_html_()
    lines = render.workers_text(rows).splitlines()
    assert sorted(line.split(", ")[2] for line in lines) == ["0 restarts", "1 restart"], lines
    widget_rows = _table(render.workers_html(rows), "nbpool-worker-row")
    assert sorted(row["restarts"] for row in widget_rows) == ["0", "1"], widget_rows
    assert all(re.search(r", pid \d+, [\d.]+ MB$", line) for line in lines), lines


# -- live widget views -----------------------------------------------------------------------
@pytest.fixture
def shown_views(monkeypatch):
    """Forces the widget views on (ipywidgets works without a frontend); lists those shown."""
    pytest.importorskip("ipywidgets")
    from nbpool import frontend
    from nbpool.widgets import views

    monkeypatch.setattr(frontend, "widgets_available", lambda: True)
    shown = []
    original_show = views.LiveHTMLView.show

    def recording_show(self):
        shown.append(self)
        return original_show(self)

    monkeypatch.setattr(views.LiveHTMLView, "show", recording_show)
    return shown


def _recording(monkeypatch, pool, name: str) -> list:
    """Records every snapshot a view takes through ``pool.<name>()``."""
    taken = []
    read = getattr(pool, name)

    def snapshot():
        value = read()
        taken.append(value)
        return value

    monkeypatch.setattr(pool, name, snapshot)
    return taken


def _open_when(condition, gate: Path, met: list) -> None:
    try:
        wait_for(condition, timeout=10.0)
        met.append(True)
    except AssertionError:
        met.append(False)
    gate.touch()  # in any case: the imap must end


@pytest.mark.parametrize("show, source", [("show_workers", "worker_status"),
                                          ("show_insights", "insights")])
def test_a_view_shown_during_an_imap_updates_while_it_runs(monkeypatch, tmp_path, shown_views,
                                                           show, source):
    gate = tmp_path / "go"
    pool = WorkerPool(2, enable_insights=True)
    try:
        results = pool.imap(partial(wait_for_file, str(gate)), range(6), chunk_size=1)
        assert next(results) == 0  # the map runs; the other tasks wait for the gate
        wait_for(lambda: all(r["status"] == "working" for r in pool.worker_status()))
        snapshots = _recording(monkeypatch, pool, source)
        getattr(pool, show)()
        [view] = shown_views
        assert len(snapshots) == 1  # drawn once when shown
        if show == "show_workers":
            # the table as drawn: pid, memory and how long each has been at its task
            table = _table(view.value, "nbpool-worker-row")
            assert [row["pid"] for row in table] == [str(r["pid"]) for r in snapshots[0]]
            assert all(row["status"] == "working" for row in table)
            assert all(re.fullmatch(r"[\d.]+ MB", row["memory"]) for row in table), table
            assert all(re.fullmatch(r"0:00:0\d(\.\d+)?", row["for"]) for row in table), table
            assert all(row["task"].startswith("task ") for row in table), table
        # the gate opens only after three more redraws: the tasks wait for it, so the view
        # must be refreshed while the imap waits for their results
        met: list = []
        opener = threading.Thread(target=_open_when,
                                  args=(lambda: len(snapshots) >= 4, gate, met))
        opener.start()
        assert list(results) == [1, 2, 3, 4, 5]
        opener.join()
        assert met == [True]
    finally:
        pool.terminate()
    if show == "show_workers":
        assert all(r["status"] == "working" for r in snapshots[1])
        assert view.text_form().splitlines()[0].startswith("Worker 0: stopped, ")  # the end
    else:
        assert view.text_form() == "nbpool insights: 2 workers, 6 tasks completed"


def test_insights_shown_before_any_map_with_insights_fill_in_live(monkeypatch, shown_views):
    from nbpool.widgets.render import NO_INSIGHTS_TEXT

    with WorkerPool(2, keep_alive=True) as pool:
        pool.map(abs, range(4))  # no insights yet
        snapshots = _recording(monkeypatch, pool, "insights")
        pool.show_insights()
        [view] = shown_views
        assert view.text_form() == NO_INSIGHTS_TEXT
        assert "enable_insights=True" in view.value
        pool.map(pause, [0.02] * 30, chunk_size=1, enable_insights=True)
        assert view.text_form() == "nbpool insights: 2 workers, 34 tasks completed"
        assert "Top 5 longest tasks" in view.value
    assert snapshots[0] is None and snapshots[-1] is not None
    # refreshed during the map too: some snapshot saw it half done
    partial_counts = {sum(s.n_completed_tasks) for s in snapshots[1:-1] if s is not None}
    assert partial_counts - {4, 34}, partial_counts
