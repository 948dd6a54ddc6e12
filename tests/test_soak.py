"""Long runs: nothing may leak, whether pools are reused, re-created, failing or dropped.

Marked ``soak`` (select with ``-m soak``); they run in the normal suite too, sized to take
well under a minute each here. Each compares, after a warm-up and after the run: open file
descriptors (the shared-memory segments large numpy buffers travel in are descriptors too),
threads (Python's and the OS's), child processes, /dev/shm entries of this process and its
workers, semaphores and named shared memory created, and RSS.

/dev/shm is shared with every other process on the machine, so only entries that belong
to this test can be compared: multiprocessing names its heap files after the creating pid.
nbpool's segments are anonymous (memfd), and it creates no semaphore and no named shared
memory; the tests count creations.
"""

from __future__ import annotations

import gc
import multiprocessing.shared_memory
import multiprocessing.synchronize
import os
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from nbpool import WorkerPool
from nbpool.engine.errors import WorkerDiedError
from procs import pool_processes
from tasks import exit_on_7, fail_on_7, scale_block, square

BLOCKS = None  # a numpy array whose row blocks (> 64 KB) travel in shared memory segments

pytestmark = [
    pytest.mark.soak,
    pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning"),
]

RSS_NOISE_MB = 8.0  # what the allocator may keep after a run; a leak per map or pool is more


@dataclass
class Snapshot:
    fds: int
    threads: int
    os_threads: int
    processes: list
    shm: set
    rss_mb: float

    @classmethod
    def take(cls, seen_pids: set[int]) -> "Snapshot":
        gc.collect()
        names = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
        ours = {name for name in names
                if any(f"-{pid}-" in name for pid in seen_pids | {os.getpid()})}
        # named POSIX semaphores (multiprocessing's are sem.mp-...), made by any process:
        # a worker's leak shows here, where the creation counter only sees this process
        ours |= {name for name in names if name.startswith("sem.")}
        return cls(
            fds=len(os.listdir("/proc/self/fd")),
            threads=threading.active_count(),
            os_threads=len(os.listdir("/proc/self/task")),
            processes=pool_processes(set()),
            shm=ours,
            rss_mb=psutil.Process().memory_info().rss / 2**20,
        )


class CreationCounter:
    """Counts semaphores and shared memory segments created in this process."""

    def __init__(self, monkeypatch):
        self.created: list[str] = []
        for owner, name in ((multiprocessing.synchronize.SemLock, "semaphore"),
                            (multiprocessing.shared_memory.SharedMemory, "shared memory")):
            original = owner.__init__

            def counting(obj, *args, _original=original, _name=name, **kwargs):
                self.created.append(_name)
                _original(obj, *args, **kwargs)

            monkeypatch.setattr(owner, "__init__", counting)


def _worker_pids() -> set[int]:
    return {p.pid for p in pool_processes(set())}


def _compare(before: Snapshot, after: Snapshot, counter: CreationCounter, what: str) -> str:
    report = (f"{what}: fds {before.fds}->{after.fds}, threads {before.threads}->"
              f"{after.threads} (OS {before.os_threads}->{after.os_threads}), RSS "
              f"{before.rss_mb:.1f}->{after.rss_mb:.1f} MB")
    print(report)
    # a leak grows; fewer is fine (a transient thread of the warm-up may just have ended)
    assert after.fds <= before.fds, report
    assert after.threads <= before.threads, report
    assert after.os_threads <= before.os_threads, report
    assert not after.processes, [(p.pid, p.cmdline()) for p in after.processes]
    assert after.shm <= before.shm, f"/dev/shm entries left: {after.shm - before.shm}"
    assert not counter.created, counter.created
    assert after.rss_mb - before.rss_mb < RSS_NOISE_MB, report
    return report


def _one_map(pool: WorkerPool, index: int) -> None:
    """Every map function, an apply now and then, numpy blocks in shared memory, and a
    failing map every 50th time."""
    global BLOCKS
    if index % 50 == 25:
        with pytest.raises(ValueError):
            pool.map(fail_on_7, range(50))
        return
    if index % 10 == 7:
        import numpy as np

        if BLOCKS is None:
            BLOCKS = np.arange(16 * 20_000, dtype=np.float64).reshape(16, 20_000)
        assert (pool.map(scale_block, BLOCKS, chunk_size=2) == BLOCKS * 2).all()
        return
    kind = index % 5
    if kind == 0:
        assert pool.map(square, range(100)) == [x * x for x in range(100)]
    elif kind == 1:
        assert sorted(pool.map_unordered(square, range(100))) == [x * x for x in range(100)]
    elif kind == 2:
        assert list(pool.imap(square, range(100))) == [x * x for x in range(100)]
    elif kind == 3:
        assert sorted(pool.imap_unordered(square, range(100))) == [x * x for x in range(100)]
    else:
        assert pool.apply(square, (index,)) == index * index


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_500_maps_on_one_keep_alive_pool(method, monkeypatch):
    with WorkerPool(n_jobs=2, start_method=method) as warm_up:  # heap, helpers, numpy
        for index in range(20):
            _one_map(warm_up, index)
    del warm_up
    closed_before = Snapshot.take(set())
    with WorkerPool(n_jobs=2, start_method=method, keep_alive=True) as pool:
        for index in range(20):  # warm-up: workers, caches
            _one_map(pool, index)
        pids = _worker_pids()
        before = Snapshot.take(pids)
        counter = CreationCounter(monkeypatch)
        started = time.monotonic()
        for index in range(500):
            _one_map(pool, index)
            if index % 50 == 0:
                pids |= _worker_pids()
        took = time.monotonic() - started
        after = Snapshot.take(pids)
        # the workers restart after each failing map: as many, not the same ones
        assert len(after.processes) == len(before.processes) == 2
        before.processes = after.processes = []
        _compare(before, after, counter, f"500 maps ({method}, {took:.1f} s)")
    del pool  # a terminated pool keeps its (reusable) event loop until it is dropped
    _compare(closed_before, Snapshot.take(pids), counter, "and once the pool is closed")


def _one_pool(method: str, index: int) -> None:
    """Created and closed in every way a user does it; some fail, some are just dropped."""
    kind = index % 6
    if kind == 0:
        with WorkerPool(n_jobs=2, start_method=method) as pool:
            assert pool.map(square, range(50)) == [x * x for x in range(50)]
    elif kind == 1:
        with WorkerPool(n_jobs=2, start_method=method) as pool:
            with pytest.raises(ValueError):
                pool.map(fail_on_7, range(50))
    elif kind == 2:
        with WorkerPool(n_jobs=2, start_method=method) as pool:
            with pytest.raises(WorkerDiedError):
                pool.map(exit_on_7, range(50))
    elif kind == 3:
        pool = WorkerPool(n_jobs=2, start_method=method, keep_alive=True)
        pool.map(square, range(50))
        assert pool.apply(square, (3,)) == 9
        pool.stop_and_join()
    elif kind == 4:
        pool = WorkerPool(n_jobs=2, start_method=method, keep_alive=True)
        assert list(pool.imap(square, range(50))) == [x * x for x in range(50)]
        del pool  # never closed: dropping it must stop its workers
    else:
        pool = WorkerPool(n_jobs=2, start_method=method)
        iterator = pool.imap(square, range(1000), chunk_size=1)
        assert next(iterator) == 0
        del iterator, pool  # an abandoned imap


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method, n_pools", [("fork", 200), ("forkserver", 200), ("spawn", 200)])
def test_pools_created_and_closed_in_a_loop(method, n_pools, monkeypatch):
    for index in range(6):
        _one_pool(method, index)
    before = Snapshot.take(set())
    counter = CreationCounter(monkeypatch)
    pids: set[int] = set()
    started = time.monotonic()
    for index in range(n_pools):
        _one_pool(method, index)
        if index % 20 == 0:
            pids |= _worker_pids()
    took = time.monotonic() - started
    after = Snapshot.take(pids)
    _compare(before, after, counter, f"{n_pools} pools ({method}, {took:.1f} s)")


@pytest.mark.parametrize("use", ["map", "apply", "progress_bar", "failed_map"])
def test_a_dropped_pool_stops_its_workers_at_once(use, capsys):
    """No garbage collector run needed: reference cycles (pool <-> engine callbacks, a map's
    job <-> its owner, a failed map's error <-> its traceback) kept them for a while."""
    gc.disable()
    try:
        pool = WorkerPool(n_jobs=2, keep_alive=True)
        if use == "map":
            pool.map(square, range(10))
        elif use == "apply":
            pool.apply(square, (2,))
        elif use == "progress_bar":
            pool.map(square, range(10), progress_bar=True)
        else:
            with pytest.raises(ValueError):
                pool.map(fail_on_7, range(10))
            pool.map(square, range(10))
        assert pool_processes(set())
        del pool
        assert not pool_processes(set()), "the workers of a dropped pool are still running"
    finally:
        gc.enable()
    capsys.readouterr()


# -- streaming ----------------------------------------------------------------------------------
STREAM_SCRIPT = r'''
import sys, time
from nbpool import WorkerPool

def peak_rss_mb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, from the forked pytest
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024

def size(item):
    return len(item)

def items(n):
    for i in range(n):
        yield i.to_bytes(8, "little") * 128  # ~1 KB, a new object each time

if __name__ == "__main__":
    n = int(sys.argv[1])
    with WorkerPool(n_jobs=2) as pool:
        baseline = peak_rss_mb()
        started = time.monotonic()
        count = total = 0
        for result in pool.imap(size, items(n), iterable_len=n, chunk_size=1000,
                                max_tasks_active=10000):
            count += 1
            total += result
        took = time.monotonic() - started
    peak = peak_rss_mb()
    assert count == n and total == n * 1024, (count, total)
    print(baseline, peak, f"{took:.2f}")
'''
STREAM_ITEMS = int(os.environ.get("NBPOOL_SOAK_ITEMS", "10000000"))  # the issue: 10 million
PEAK_RSS_LIMIT_MB = 300  # the bound
STREAM_GROWTH_LIMIT_MB = 60


def _stream(n: int) -> tuple[int, int, float]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STREAM_SCRIPT), str(n)],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    baseline, peak, took = result.stdout.split()
    return int(baseline), int(peak), float(took)


@pytest.mark.timeout(660)
def test_streaming_imap_keeps_the_parents_memory_bounded():
    small = _stream(STREAM_ITEMS // 10)
    large = _stream(STREAM_ITEMS)
    print(f"imap over {STREAM_ITEMS} items of 1 KB: {large[2]:.1f} s, peak RSS {large[1]} MB "
          f"(baseline {large[0]} MB; {STREAM_ITEMS // 10} items: peak {small[1]} MB)")
    assert large[1] < PEAK_RSS_LIMIT_MB
    assert large[1] - large[0] < STREAM_GROWTH_LIMIT_MB
    # bounded: ten times the items, not more memory (beyond noise)
    assert large[1] - small[1] < 10, (small, large)
