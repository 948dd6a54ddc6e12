"""Shutdown speed: after an exception, ``map`` returns the error within 1 s with 16 workers,
whatever is still queued or running."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import psutil
import pytest

from nbpool import WorkerPool
from procs import assert_nothing_left, children

pytestmark = pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning")

N_JOBS = 16
ERROR_DEADLINE = 1.0
HANG_GUARD = 120


def _stamp_and_raise(marker_dir):
    Path(marker_dir, "fault-time").write_text(repr(time.monotonic()))
    raise ValueError("the task that stops the map")


def fail_at(marker_dir, target, x):
    """Many tiny tasks; one fails."""
    if x == target:
        _stamp_and_raise(marker_dir)
    return x


def fail_when_all_busy(marker_dir, busy, x):
    """Task 0 fails once every other worker is inside a task that does not end by itself:
    ``busy`` is 'sleep' (a signal interrupts it) or 'c_loop' (one long C call that no
    Python signal handler can interrupt: what numpy or a C extension does)."""
    if x == 0:
        deadline = time.monotonic() + 60
        while len(os.listdir(marker_dir)) < N_JOBS - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        _stamp_and_raise(marker_dir)
    Path(marker_dir, f"busy-{os.getpid()}").write_text("")
    if busy == "sleep":
        time.sleep(600)
    else:
        sum(range(10**12))
    return x


def big_args_fail_at(marker_dir, target, blob):
    if blob[0] == target:
        _stamp_and_raise(marker_dir)
    return len(blob)


def _error_time(run, marker_dir) -> float:
    with pytest.raises(ValueError, match="the task that stops the map"):
        run()
    return time.monotonic() - float(Path(marker_dir, "fault-time").read_text())


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.parametrize("queued", ["tiny_tasks", "busy_sleep", "busy_c_loop", "big_args"])
def test_error_returns_within_a_second_with_16_workers(method, queued, tmp_path):
    if method == "spawn" and queued != "busy_c_loop":
        pytest.skip("spawn only changes how workers start; one case covers it")
    before = children()
    with WorkerPool(n_jobs=N_JOBS, start_method=method) as pool:
        if queued == "tiny_tasks":
            def run():
                pool.map(partial(fail_at, str(tmp_path), 5000), range(10**6), chunk_size=1)
        elif queued == "big_args":
            blobs = (bytes([i % 256]) + bytes(2**20) for i in range(400))
            def run():
                pool.map(partial(big_args_fail_at, str(tmp_path), 40), blobs, chunk_size=1,
                         iterable_len=400)
        else:
            busy = queued.removeprefix("busy_")
            def run():
                pool.map(partial(fail_when_all_busy, str(tmp_path), busy), range(10**4),
                         chunk_size=1)
        elapsed = _error_time(run, tmp_path)
        print(f"16 workers, {queued}, {method}: error after {elapsed:.3f} s")
        assert elapsed < ERROR_DEADLINE, f"the error took {elapsed:.3f} s"
        assert pool.map(abs, range(-3, 3)) == [3, 2, 1, 0, 1, 2]
    assert_nothing_left(before)


def nested_sleeper(marker_dir, x):
    """Outer task: runs a nested pool of sleepers; outer task 1 fails once they all run."""
    if x == 1:
        _wait_for_files(marker_dir, "inner-*", 4)
        _stamp_and_raise(marker_dir)
    with WorkerPool(n_jobs=2) as inner:
        return inner.map(partial(inner_sleeper, marker_dir), range(4), chunk_size=1)


def inner_sleeper(marker_dir, y):
    Path(marker_dir, f"inner-{os.getpid()}").write_text("")
    time.sleep(600)


def sleeper_with_cleanup(marker_dir, x):
    """Task 1 fails once the others sleep; they clean up (for 0.1 s) when terminated."""
    if x == 1:
        _wait_for_files(marker_dir, "asleep-*", 2)
        _stamp_and_raise(marker_dir)
    try:
        Path(marker_dir, f"asleep-{x}").write_text("")
        time.sleep(600)
    finally:
        time.sleep(0.1)
        Path(marker_dir, f"cleaned-{x}").write_text("")


def _wait_for_files(marker_dir, pattern, count):
    deadline = time.monotonic() + 60
    while len(list(Path(marker_dir).glob(pattern))) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_a_terminated_task_gets_time_for_its_finally_blocks(method, tmp_path):
    """Workers that react to SIGTERM are not killed with the ones stuck in C code."""
    with WorkerPool(n_jobs=3, start_method=method) as pool:
        elapsed = _error_time(
            lambda: pool.map(partial(sleeper_with_cleanup, str(tmp_path)), [0, 1, 2],
                             chunk_size=1),
            tmp_path)
        assert elapsed < ERROR_DEADLINE, f"the error took {elapsed:.3f} s"
    assert {p.name for p in tmp_path.glob("cleaned-*")} == {"cleaned-0", "cleaned-2"}


@pytest.mark.timeout(HANG_GUARD)
def test_terminating_a_worker_with_a_nested_pool_stops_the_nested_workers(tmp_path):
    """The nested pool's __exit__ runs in the terminated worker and stops its workers."""
    before = children()
    with WorkerPool(n_jobs=3, daemon=False) as pool:
        elapsed = _error_time(
            lambda: pool.map(partial(nested_sleeper, str(tmp_path)), [0, 1, 2], chunk_size=1),
            tmp_path)
        assert elapsed < ERROR_DEADLINE, f"the error took {elapsed:.3f} s"
    assert_nothing_left(before)
    # an orphaned nested worker is no longer our descendant: look for each one by its pid
    nested = [int(p.name.split("-")[1]) for p in tmp_path.glob("inner-*")]
    assert len(nested) == 4
    deadline = time.monotonic() + 1.0
    while (alive := [pid for pid in nested if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in alive:  # do not let them sleep on for ten minutes
        os.kill(pid, 9)
    assert not alive, f"nested workers outlived their pool: {alive}"


def test_an_abandoned_imap_is_closed_quietly_at_interpreter_exit():
    """An imap left unfinished in a global is closed while the interpreter shuts down, when
    the SIGINT handler it put back reads None: no 'Exception ignored' noise, exit code 0."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import itertools
        from nbpool import WorkerPool
        def square(x):
            return x * x
        with WorkerPool(n_jobs=2) as pool:
            it = pool.imap(square, range(10**9), iterable_len=10**9, chunk_size=1000,
                           max_tasks_active=4)
            got = list(itertools.islice(it, 100))
        with WorkerPool(n_jobs=2) as pool:
            pool.map(square, range(100), progress_bar=True)
        print("done", got[-1])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=HANG_GUARD)
    assert proc.returncode == 0 and proc.stdout == "done 9801\n", proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
