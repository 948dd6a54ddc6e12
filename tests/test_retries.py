"""``task_retries``: the chunk of a worker that died runs again on a fresh worker.

Tasks die "the first time they see an argument": a marker file in ``tmp_path`` records that
the death already happened, so the re-run succeeds.
"""

from __future__ import annotations

import os
import re
import time
from functools import partial
from pathlib import Path

import pytest

from nbpool import WorkerPool
from nbpool.engine.errors import WorkerDiedError
from nbpool.engine.stats import Field
from procs import all_text, assert_nothing_left, children, sigkill_when_pid_written

pytestmark = pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning")

METHODS = ["fork", "forkserver", "spawn"]
HANG_GUARD = 60
ERROR_DEADLINE = 1.0


def die_once_at(marker_dir, targets, x):
    """``os._exit`` the first time one of ``targets`` is seen; the square otherwise."""
    if x in targets:
        marker = Path(marker_dir) / f"died-{x}"
        if not marker.exists():
            marker.write_text(repr(time.monotonic()))
            os._exit(7)
    return x * x


def always_die_at(marker_dir, target, x):
    if x == target:
        Path(marker_dir, "fault-time").write_text(repr(time.monotonic()))
        os._exit(7)
    return x * x


def sleep_once_at(marker_dir, target, x):
    """The first run of ``target`` publishes its pid and waits to be killed from outside."""
    if x == target:
        marker = Path(marker_dir) / "pid"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(60)
    return x * x


def squares(n):
    return [x * x for x in range(n)]


def _restarts(pool: WorkerPool) -> int:
    return int(pool._engine.stats.total(Field.RESTARTS))


def _tasks_done(pool: WorkerPool) -> int:
    return pool._engine.tasks_done()


# -- the chunk is re-run and the results are complete -------------------------------------------
@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", METHODS)
def test_a_death_is_retried_and_results_stay_complete_and_ordered(method, tmp_path):
    before = children()
    with WorkerPool(n_jobs=2, start_method=method, enable_insights=True) as pool:
        results = pool.map(partial(die_once_at, str(tmp_path), {13}), range(60),
                           task_retries=1)
        assert results == squares(60)
        assert (tmp_path / "died-13").exists()  # the fault really happened
        assert _restarts(pool) >= 1
        raw = pool.insights().raw()
        assert sum(raw["n_restarts"]) >= 1
        assert sum(raw["n_completed_tasks"]) == 60  # the re-run is not counted twice
        assert "Worker restarts" in pool.insights().report()
    assert_nothing_left(before)


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("function", ["map", "map_unordered", "imap", "imap_unordered"])
@pytest.mark.parametrize("chunk_size", [1, 7])
def test_several_deaths_in_every_map_function(function, chunk_size, tmp_path):
    targets = {3, 20, 21, 44, 90}
    func = partial(die_once_at, str(tmp_path), targets)
    with WorkerPool(n_jobs=3) as pool:
        results = list(getattr(pool, function)(func, range(100), chunk_size=chunk_size,
                                               task_retries=1))
        if function in ("map", "imap"):
            assert results == squares(100)
        else:
            assert sorted(results) == squares(100)
        assert _tasks_done(pool) == 100
        assert _restarts(pool) >= 1
    assert {p.name for p in tmp_path.iterdir()} == {f"died-{x}" for x in targets}


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("options", [
    {"max_tasks_active": 3, "chunk_size": 2},
    {"max_tasks_active": 1},
    {"worker_lifespan": 5},
    {"n_splits": 4},
    {"iterable_len": 50, "chunk_size": 3},
], ids=["max_tasks_active", "max_tasks_active1", "lifespan", "n_splits", "generator"])
def test_retries_with_other_options(options, tmp_path):
    func = partial(die_once_at, str(tmp_path), {7, 33})
    args = (x for x in range(50)) if "iterable_len" in options else range(50)
    with WorkerPool(n_jobs=2) as pool:
        assert pool.map(func, args, task_retries=2, **options) == squares(50)


@pytest.mark.timeout(HANG_GUARD)
def test_retries_with_order_tasks_run_on_the_replacement_in_the_same_slot(tmp_path):
    with WorkerPool(n_jobs=2, order_tasks=True, pass_worker_id=True) as pool:
        results = pool.map(lambda worker_id, x: (worker_id, die_once_at(str(tmp_path), {5}, x)),
                           range(20), chunk_size=1, task_retries=1)
    assert [r[1] for r in results] == squares(20)
    assert [r[0] for r in results] == [x % 2 for x in range(20)]


@pytest.mark.timeout(HANG_GUARD)
def test_retry_after_sigkill_from_outside(tmp_path):
    """The OOM killer case: the map survives a SIGKILL and loses nothing."""
    pid_file = tmp_path / "pid"
    with sigkill_when_pid_written(pid_file), WorkerPool(n_jobs=2, keep_alive=True) as pool:
        results = pool.map(partial(sleep_once_at, str(tmp_path), 30), range(80),
                           chunk_size=4, task_retries=1)
        assert results == squares(80)
        assert _restarts(pool) >= 1
        assert pool.map(abs, range(-5, 5)) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]


# -- the error surfaces once the retries are used up ------------------------------------------
@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("retries", [0, 2])
def test_error_once_retries_are_used_up(method, retries, tmp_path):
    before = children()
    with WorkerPool(n_jobs=2, start_method=method) as pool:
        with pytest.raises(WorkerDiedError) as info:
            pool.map(partial(always_die_at, str(tmp_path), 13), range(40), task_retries=retries)
        elapsed = time.monotonic() - float((tmp_path / "fault-time").read_text())
        text = all_text(info.value)
        assert re.search(r"Worker-\d", text) and "task 13" in text, text
        if retries:
            assert f"after {retries} retries (task_retries={retries})" in text, text
        else:
            assert "Gave up" not in text, text
        assert elapsed < ERROR_DEADLINE, f"{elapsed:.3f} s after the last death"
        assert pool.map(abs, range(-3, 3)) == [3, 2, 1, 0, 1, 2]
    assert_nothing_left(before)


def test_task_exceptions_are_not_retried(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()

    def fail_on_3(x):
        if x == 3:
            (calls / f"{os.getpid()}-{time.monotonic()}").write_text("")
            raise ValueError("a task error is not a death")
        return x

    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(ValueError):
            pool.map(fail_on_3, range(10), task_retries=3)
    assert len(list(calls.iterdir())) == 1


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, error", [
    (-1, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError), (None, TypeError),
])
@pytest.mark.parametrize("function", ["map", "map_unordered", "imap", "imap_unordered"])
def test_task_retries_is_validated(function, value, error):
    with WorkerPool(n_jobs=1) as pool:
        with pytest.raises(error, match="task_retries"):
            getattr(pool, function)(abs, range(3), task_retries=value)


@pytest.mark.parametrize("function", ["map", "map_unordered", "imap", "imap_unordered"])
def test_task_retries_is_the_last_parameter_and_defaults_to_zero(function):
    import inspect

    params = list(inspect.signature(getattr(WorkerPool, function)).parameters.values())
    assert params[-1].name == "task_retries"
    assert params[-1].default == 0
