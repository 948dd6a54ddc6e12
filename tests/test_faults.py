"""Faults, with real worker processes under every start method, and worker threads
(``start_method='threading'``) where the fault can happen to a thread.

Each fault test checks the same three things:
1. the parent gets a clear error that names the worker and the task (by its index, or by
   its arguments: ``Arg 0: 13``) within ``ERROR_DEADLINE`` seconds of the fault (the fault
   function stamps ``time.monotonic()``, one clock for every process on Linux, into a file
   just before it strikes);
2. no process (and no worker thread) outlives the pool;
3. the same pool, and a new one, work on the next call.

A worker thread runs in the test's own process: a fault that ends or limits the process
(SIGKILL, ``os._exit``, a segfault, an ``RLIMIT_AS``) would end or limit pytest itself, and a
module cannot be missing in a worker that shares the parent's ``sys.modules``. Those tests list
'threading' as a skipped case, with the reason, so that the report shows what is not tested
under threads rather than leaving it out in silence.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import signal
import sys
import threading
import time
import types
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from nbpool import WorkerPool
from nbpool.engine.errors import (RemoteTraceback, TaskPicklingError, WorkerDiedError,
                                  WorkerStartError)
from nbpool.engine.stats import Field
from procs import (all_text, assert_no_worker_threads, assert_nothing_left, children,
                   pool_processes, sigkill_when_pid_written, wait_dead)

pytestmark = [
    pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

METHODS = ["fork", "forkserver", "spawn"]
ERROR_DEADLINE = 1.0  # seconds from the fault to the error in the parent (the bound)
HANG_GUARD = 60  # only there so that a hang fails the test instead of blocking the run
BIG = 4 * 2**20  # bytes; far more than a socket buffer (about 200 KB on Linux)
# why a fault cannot be made to happen to a worker thread (see the module's docstring)
KILLS_THE_PROCESS = "the fault ends the worker's process, which under threading is pytest's"
LIMITS_THE_PROCESS = "an RLIMIT_AS set by a worker thread would limit pytest's own process"
SHARES_SYS_MODULES = "a worker thread shares the parent's sys.modules: no module is missing"


def and_threads(not_for_threads: str | None = None) -> list:
    """``METHODS`` and 'threading', the latter skipped for ``not_for_threads`` if given."""
    marks = [pytest.mark.skip(reason=f"threading: {not_for_threads}")] if not_for_threads else []
    return [*METHODS, pytest.param("threading", marks=marks)]


# -- fault functions (module level, so that every start method can import them) ---------------
def stamp(path: str) -> None:
    """Records when the fault strikes first (several workers may fault at once).

    Written to a private file and linked into place: a reader never sees it half-written,
    and a later fault does not overwrite the first one's time.
    """
    now = time.monotonic()
    private = f"{path}.{os.getpid()}.{threading.get_ident()}"  # threading workers share a pid
    Path(private).write_text(repr(now))
    try:
        os.link(private, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(private)


def fault_time(path) -> float:
    return float(Path(path).read_text())


def square(x):
    return x * x


def exit_at(path, target, x):
    if x == target:
        stamp(path)
        os._exit(3)
    return x


def segfault_at(path, target, x):
    if x == target:
        stamp(path)
        ctypes.string_at(0)
    return x


def sleep_at(path, target, x):
    """Task ``target`` tells the test its pid and sleeps until it is killed."""
    if x == target:
        Path(path).write_text(str(os.getpid()))
        time.sleep(60)
    return x


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def limit_memory():
    """worker_init: this worker may use 256 MB more address space than it has now."""
    limit = _address_space() + 256 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


def hog_memory_at(path, target, x):
    if x == target:
        stamp(path)
        hoard = []
        while True:
            hoard.append(bytearray(16 * 2**20))
    return x


def big_result_at(path, target, x):
    if x == target:
        stamp(path)
        return bytearray(200 * 2**20)  # fits under limit_memory; its pickled copy does not
    return x


def failing_init(path):
    stamp(path)
    raise ValueError("worker_init refused to start")


def exiting_init(path):
    stamp(path)
    os._exit(4)


def failing_exit(path):
    stamp(path)
    raise ValueError("worker_exit could not clean up")


def exiting_exit(path):
    stamp(path)
    os._exit(5)


def big_result_or_raise_at(path, target, x):
    if x == target:
        stamp(path)
        raise ValueError(f"task {x} failed among big results")
    return bytes(BIG)


def echo_length(blob):
    return len(blob), bytes(BIG)


def lock_at(path, target, x):
    if x == target:
        stamp(path)
        return threading.Lock()
    return x


class ErrorWithLock(Exception):
    """Cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class ErrorThatBreaksEverything(Exception):
    """Neither pickles nor turns into a string."""

    def __reduce__(self):
        raise RuntimeError("this exception refuses to be pickled")

    def __str__(self):
        raise RuntimeError("this exception refuses to be printed")


def raise_unpicklable_at(path, target, exc_type, x):
    if x == target:
        stamp(path)
        raise exc_type(f"unpicklable error from task {x}")
    return x


# Set by the task in the thread that runs it: a worker process, or a worker thread (in the
# test's own process, where an environment variable would have leaked to the parent).
_IN_WORKER = threading.local()


def _fail_in_parent():
    if getattr(_IN_WORKER, "flag", False):
        return "fine"
    raise RuntimeError("this result cannot be rebuilt in the parent")


class ParentCannotLoad:
    def __reduce__(self):
        return (_fail_in_parent, ())


def unloadable_at(path, target, x):
    if x == target:
        _IN_WORKER.flag = True
        stamp(path)
        return ParentCannotLoad()
    return x


class WorkerCannotLoad:
    """Pickles in the parent; rebuilding it (in a worker) raises."""

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"WorkerCannotLoad({self.value})"

    def __setstate__(self, state):
        raise ValueError(f"WorkerCannotLoad({state['value']}) refuses to be rebuilt")


def with_unloadable_at(path, target, values):
    """The map's input, with an argument that no worker can unpickle at ``target``."""
    stamp(path)  # the fault strikes as soon as the worker gets that chunk
    return [WorkerCannotLoad(x) if x == target else x for x in values]


@contextmanager
def parent_only_module():
    """A module that exists only in this process's sys.modules: a function pickled by
    reference to it, or one that uses it, cannot be unpickled in a worker started before."""
    name = f"nbpool_parent_only_{os.getpid()}"
    module = types.ModuleType(name)

    def triple(x):
        return 3 * x

    triple.__module__ = name
    triple.__qualname__ = "triple"
    module.triple = triple
    sys.modules[name] = module
    try:
        yield module
    finally:
        del sys.modules[name]


# -- checks -----------------------------------------------------------------------------------
def _assert_works(pool: WorkerPool) -> None:
    assert pool.map(square, range(20)) == [x * x for x in range(20)]


def _check_error(exc: BaseException, elapsed: float, *expected: str) -> str:
    text = all_text(exc)
    assert re.search(r"Worker-\d", text), text
    for piece in expected:
        assert piece in text, f"{piece!r} not in:\n{text}"
    assert elapsed < ERROR_DEADLINE, f"the error took {elapsed:.3f} s to arrive:\n{text}"
    return text


def run_fault(method, expected_type, run, stamp_path, *expected_text, **pool_options):
    """Runs ``run(pool)``, which must fail with ``expected_type``; checks the three points."""
    before = children()
    with WorkerPool(n_jobs=2, start_method=method, **pool_options) as pool:
        with pytest.raises(expected_type) as info:
            run(pool)
        elapsed = time.monotonic() - fault_time(stamp_path)
        _check_error(info.value, elapsed, *expected_text)
        _assert_works(pool)
    assert_nothing_left(before)
    assert_no_worker_threads()
    with WorkerPool(n_jobs=1, start_method=method) as fresh:
        _assert_works(fresh)
    assert_nothing_left(before)
    assert_no_worker_threads()
    return info.value


@pytest.fixture
def clock(tmp_path) -> str:
    return str(tmp_path / "fault-time")


# -- worker deaths ----------------------------------------------------------------------------
@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", and_threads(KILLS_THE_PROCESS))
def test_sigkill_from_outside_in_the_middle_of_a_map(method, tmp_path, clock):
    """What the OOM killer does: SIGKILL to a busy worker, from another process."""
    pid_file = tmp_path / "pid"
    with sigkill_when_pid_written(pid_file, just_before=partial(stamp, clock)):  # task 40 writes it
        run_fault(method, WorkerDiedError,
                  lambda pool: pool.map(partial(sleep_at, str(pid_file), 40), range(200),
                                        chunk_size=1),
                  clock, "SIGKILL", "task 40", "Arg 0: 40")


def _faulting_at_13(fault, **options):
    """The usual run: ``fault`` strikes at task 13 of 40 (the 13 that the errors must name)."""
    return lambda pool, clock: pool.map(partial(fault, clock, 13), range(40), **options)


# Faults in a map that differ only by the call and the error. A case: what the map runs (given
# the pool and the clock path), the error type, the pieces of text the error must contain, and
# why the fault cannot happen to a worker thread (None: it runs under threading too).
MAP_FAULTS = [
    pytest.param(_faulting_at_13(exit_at), WorkerDiedError,
                 ["exited with code 3", "task 13", "Arg 0: 13"], KILLS_THE_PROCESS,
                 id="task_calls_os_exit"),
    pytest.param(_faulting_at_13(segfault_at), WorkerDiedError,
                 ["SIGSEGV", "task 13", "Arg 0: 13"], KILLS_THE_PROCESS,
                 id="task_segfaults"),
    pytest.param(_faulting_at_13(hog_memory_at, worker_init=limit_memory), MemoryError,
                 ["Arg 0: 13"], LIMITS_THE_PROCESS, id="task_runs_into_the_memory_limit"),
    # the MemoryError has no message: the error must still say it was one
    pytest.param(_faulting_at_13(big_result_at, worker_init=limit_memory, chunk_size=1),
                 TaskPicklingError,
                 ["Arg 0: 13", "the result of task 13 could not be pickled: MemoryError"],
                 LIMITS_THE_PROCESS, id="result_too_big_to_pickle_under_the_memory_limit"),
    # worker_init and worker_exit
    pytest.param(lambda pool, clock: pool.map(square, range(40),
                                              worker_init=partial(failing_init, clock)),
                 ValueError, ["worker_init", "refused to start"],
                 None, id="exception_in_worker_init"),
    # not retried (it would die again): a start error that says worker_init
    pytest.param(lambda pool, clock: pool.map(square, range(40),
                                              worker_init=partial(exiting_init, clock),
                                              task_retries=3),
                 WorkerStartError, ["died while running worker_init", "exited with code 4"],
                 KILLS_THE_PROCESS, id="worker_init_kills_the_worker"),
    pytest.param(lambda pool, clock: pool.map(square, range(40),
                                              worker_exit=partial(failing_exit, clock)),
                 ValueError, ["worker_exit", "could not clean up"],
                 None, id="exception_in_worker_exit"),
    # raised by the map that ran the exit (keep_alive=False)
    pytest.param(lambda pool, clock: pool.map(square, range(40),
                                              worker_exit=partial(exiting_exit, clock)),
                 WorkerDiedError, ["died while running worker_exit", "exited with code 5"],
                 KILLS_THE_PROCESS, id="worker_exit_kills_the_worker"),
    # big messages
    pytest.param(_faulting_at_13(big_result_or_raise_at, chunk_size=1), ValueError,
                 ["task 13", "Arg 0: 13", "failed among big results"],
                 None, id="error_while_big_results_are_on_their_way"),
    # pickling
    pytest.param(_faulting_at_13(lock_at), TaskPicklingError,
                 ["task 13", "Arg 0: 13", "could not be pickled"], None, id="unpicklable_result"),
    pytest.param(_faulting_at_13(unloadable_at, chunk_size=1), TaskPicklingError,
                 ["task 13", "could not be unpickled in the parent", "cannot be rebuilt"],
                 None, id="result_that_cannot_be_rebuilt_in_the_parent"),
    # an error at once, not a death: retries would fail the same way
    pytest.param(lambda pool, clock: pool.map(square, with_unloadable_at(clock, 13, range(40)),
                                              task_retries=2),
                 TaskPicklingError,
                 ["could not unpickle the arguments of task", "WorkerCannotLoad(13)",
                  "ValueError: WorkerCannotLoad(13) refuses to be rebuilt"],
                 None, id="argument_that_cannot_be_rebuilt_in_the_worker"),
]


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", [*METHODS, "threading"])
@pytest.mark.parametrize("run, expected_type, expected_text, not_for_threads", MAP_FAULTS)
def test_fault_in_a_map(method, run, expected_type, expected_text, not_for_threads, clock):
    if method == "threading" and not_for_threads:
        pytest.skip(f"threading: {not_for_threads}")
    run_fault(method, expected_type, partial(run, clock=clock), clock, *expected_text)


@pytest.mark.timeout(HANG_GUARD)
def test_argument_that_cannot_be_rebuilt_carries_the_workers_exception():
    with WorkerPool(n_jobs=2, start_method="fork") as pool:
        with pytest.raises(TaskPicklingError) as info:
            pool.map(square, [1, WorkerCannotLoad(2), 3], chunk_size=1, task_retries=2)
        assert "Arg 0: WorkerCannotLoad(2)" in str(info.value)
        original = info.value.__cause__
        assert isinstance(original, ValueError), repr(original)
        assert isinstance(original.__cause__, RemoteTraceback)
        assert "in __setstate__" in str(original.__cause__)  # the worker's traceback
        assert int(pool._engine.stats.total(Field.RESTARTS)) == 0  # no worker died
        # the worker carries on: an apply runs in the same process
        with pytest.raises(TaskPicklingError, match="could not unpickle an apply task"):
            pool.apply(square, (WorkerCannotLoad(4),))
        assert pool.apply(square, (4,)) == 16


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", and_threads(SHARES_SYS_MODULES))
def test_function_that_cannot_be_loaded_in_the_worker(method, clock):
    def run(pool):
        _assert_works(pool)  # the workers start before the module exists
        with parent_only_module() as module:
            stamp(clock)
            pool.map(lambda x: module.triple(x) + 1, range(10))  # the module by reference

    exc = run_fault(method, TaskPicklingError, run, clock, "could not be loaded in Worker-",
                    "ModuleNotFoundError: No module named 'nbpool_parent_only_",
                    keep_alive=True)
    assert isinstance(exc.__cause__, ModuleNotFoundError)
    assert isinstance(exc.__cause__.__cause__, RemoteTraceback)


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", [  # a forked worker is not sent it
    "forkserver", "spawn",
    pytest.param("threading", marks=pytest.mark.skip(reason=f"threading: {SHARES_SYS_MODULES}"))])
def test_worker_init_that_cannot_be_loaded_in_the_worker(method, clock):
    def run(pool):
        with parent_only_module() as module:
            stamp(clock)
            pool.map(square, range(10), worker_init=partial(module.triple, 1))

    exc = run_fault(method, WorkerStartError, run, clock, "could not start",
                    "could not unpickle its start data",
                    "ModuleNotFoundError: No module named 'nbpool_parent_only_")
    assert isinstance(exc.__cause__, ModuleNotFoundError)


# -- unpicklable functions --------------------------------------------------------------------
@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", and_threads())
def test_unpicklable_function_and_worker_init_are_named(method):
    lock = threading.Lock()

    def holds_lock(x):
        return lock.locked() or x

    def init_holding_lock():
        lock.locked()

    with WorkerPool(n_jobs=2, start_method=method) as pool:
        with pytest.raises(TaskPicklingError, match="the function .*holds_lock could not be "
                           "pickled .*cannot pickle '_thread.lock' object") as info:
            pool.map(holds_lock, range(4))
        assert isinstance(info.value.__cause__, TypeError)
        with pytest.raises(TaskPicklingError, match="the function .*holds_lock could not be"):
            pool.apply(holds_lock, (1,))
        if method in ("fork", "threading"):  # the worker inherits or shares worker_init:
            # nothing is pickled
            assert pool.map(square, range(3), worker_init=init_holding_lock) == [0, 1, 4]
        else:
            with pytest.raises(TaskPicklingError, match=r"worker_init \(.*init_holding_lock\) "
                               "could not be pickled to start Worker-0") as info:
                pool.map(square, range(3), worker_init=init_holding_lock)
            assert isinstance(info.value.__cause__, TypeError)
        _assert_works(pool)


# -- deaths among fast tasks, which run in batches -------------------------------------------
@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", and_threads(KILLS_THE_PROCESS))
def test_death_among_many_fast_tasks_names_a_range_then_the_exact_task(method, clock):
    """Default chunking runs fast tasks in batches that record only where they start: the
    error names the batch and how to find the task; a re-run goes task by task and names it."""
    target = 7777
    with WorkerPool(n_jobs=2, start_method=method) as pool:
        with pytest.raises(WorkerDiedError) as info:
            pool.map(partial(exit_at, clock, target), range(12_000))
        text = str(info.value)
        batch = re.search(r"one of tasks (\d+)\.\.(\d+), run as one batch \(task (\d+): "
                          r"Arg 0: (\d+); task (\d+): Arg 0: (\d+)\)", text)
        if batch:  # a batch of one names the task itself
            first, last = int(batch[1]), int(batch[2])
            assert first <= target <= last, text
            assert [int(n) for n in batch.groups()[2:]] == [first, first, last, last], text
            assert "task_retries=1" in text and "chunk_size=1" in text, text
        else:
            assert f"task {target} (Arg 0: {target})" in text, text

        with pytest.raises(WorkerDiedError) as info:
            pool.map(partial(exit_at, clock, target), range(12_000), task_retries=1)
        text = str(info.value)
        assert f"while running task {target} (Arg 0: {target}): it exited with code 3" in text
        assert "Gave up after 1 retries" in text, text
        _assert_works(pool)


# -- a death in worker_exit -------------------------------------------------------------------
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", [  # every method: MAP_FAULTS
    "fork",
    pytest.param("threading", marks=pytest.mark.skip(reason=f"threading: {KILLS_THE_PROCESS}"))])
def test_worker_exit_that_kills_the_worker_fails_stop_and_join(method, clock):
    before = children()
    pool = WorkerPool(n_jobs=2, start_method=method)
    assert pool.apply(square, (3,), worker_exit=partial(exiting_exit, clock)) == 9
    with pytest.raises(WorkerDiedError, match=r"Worker-\d \(pid \d+\) died while running "
                                              "worker_exit: it exited with code 5"):
        pool.stop_and_join()
    assert_nothing_left(before)
    # a worker_exit that ends normally: workers asked to stop end without an error
    pool = WorkerPool(n_jobs=2, start_method=method)
    assert pool.apply(square, (3,), worker_exit=os.getpid) == 9
    pool.stop_and_join()
    assert len(pool.get_exit_results()) == 1  # only the worker that ran a task runs it
    assert_nothing_left(before)


# -- big messages -----------------------------------------------------------------------------
@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", and_threads())
def test_results_and_arguments_larger_than_the_socket_buffer(method):
    before = children()
    blobs = [bytes([i]) * BIG for i in range(8)]
    with WorkerPool(n_jobs=2, start_method=method) as pool:
        results = pool.map(echo_length, blobs, chunk_size=1)
        assert [length for length, _ in results] == [BIG] * 8
        assert all(len(blob) == BIG for _, blob in results)
        _assert_works(pool)
    assert_nothing_left(before)
    assert_no_worker_threads()


# -- pickling ---------------------------------------------------------------------------------
@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", and_threads())
def test_unpicklable_argument(method, clock):
    def run(pool):
        stamp(clock)  # the fault is in the parent: the clock starts with the call
        pool.map(square, [0, 1, 2, threading.Lock(), 4, 5])

    exc = run_fault(method, TaskPicklingError, run, clock, "task 3", "could not be pickled")
    assert isinstance(exc, TypeError)


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", and_threads())
@pytest.mark.parametrize("exc_type", [ErrorWithLock, ErrorThatBreaksEverything],
                         ids=lambda t: t.__name__)
def test_exception_whose_own_pickling_fails(method, exc_type, clock):
    exc = run_fault(method, exc_type,
                    lambda pool: pool.map(partial(raise_unpicklable_at, clock, 13, exc_type),
                                          range(40)),
                    clock, "Arg 0: 13")
    if exc_type is ErrorWithLock:
        assert "unpicklable error from task 13" in str(exc)


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", and_threads(KILLS_THE_PROCESS))
def test_idle_worker_killed_between_maps_of_a_keep_alive_pool(method):
    """An idle worker that dies (OOM killer) lost no work: the next map must simply run."""
    before = children()
    with WorkerPool(n_jobs=2, start_method=method, keep_alive=True) as pool:
        _assert_works(pool)
        victim = pool_processes(before)[0]
        victim.kill()
        wait_dead(victim)
        _assert_works(pool)
        assert victim.pid not in {p.pid for p in pool_processes(before)}
    assert_nothing_left(before)


# -- the parent itself dies -------------------------------------------------------------------
ORPHAN_SCRIPT = r'''
import os, sys, time
from nbpool import WorkerPool

def pid(x):
    time.sleep(0.1)
    return os.getpid()

if __name__ == "__main__":
    method, state = sys.argv[1], sys.argv[2]
    pool = WorkerPool(n_jobs=2, start_method=method, keep_alive=True)
    pids = sorted(set(pool.map(pid, range(6), chunk_size=1)))
    os.write(1, (" ".join(map(str, pids)) + "\n").encode())
    if state == "busy":
        pool.map(time.sleep, [600, 600], chunk_size=1)
    time.sleep(600)
'''


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method, state", [
    ("fork", "idle"), ("fork", "busy"), ("spawn", "idle"), ("spawn", "busy"),
    ("forkserver", "idle"), ("forkserver", "busy"),
])
def test_workers_do_not_outlive_a_parent_killed_with_sigkill(method, state):
    """The kernel killed by the OOM killer, or ``kill -9``: its workers must go too, busy or
    not. (A forkserver's workers go with the forkserver, which ends with the parent only if
    the workers let go of the parent's "alive" pipe: ``lifeline.release_forkserver``.)"""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, method, state],
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=Path(__file__).resolve().parent.parent)
    workers = []
    try:
        workers = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(workers) == 2
        time.sleep(0.3)  # busy: both workers are inside their long task
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        while (alive := [pid for pid in workers if _running(pid)]) and \
                time.monotonic() - killed < 2.0:
            time.sleep(0.02)
        assert not alive, f"workers outlived their parent: {alive}"
    finally:
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()



def _socket_inodes(_):
    """The unix sockets this worker holds (by inode; each end of a connection has its own)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            inodes.add(target)
    return os.getpid(), sorted(inodes)


@pytest.mark.startmethod
def test_forked_workers_hold_no_connection_of_another_worker():
    """Every worker's connection is made before the first fork, so the workers forked first
    inherit the child ends of those forked after them. They close them: a worker holding
    another's end would keep that connection open after the other one died."""
    with WorkerPool(n_jobs=3, start_method="fork") as pool:  # one chunk to each idle worker
        held = dict(pool.map(_socket_inodes, range(3), chunk_size=1))
    assert len(held) == 3, held
    owners: dict[str, list[int]] = {}
    for pid, inodes in held.items():
        for inode in inodes:
            owners.setdefault(inode, []).append(pid)
    assert all(len(pids) == 1 for pids in owners.values()), owners

def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- no new interpreter can start -------------------------------------------------------------
NO_INTERPRETER_SCRIPT = r'''
import json, os, sys, time, warnings
import psutil
from nbpool import WorkerPool
from nbpool.engine.errors import WorkerStartError

def same(x):
    return x

warnings.simplefilter("always")
caught = warnings.catch_warnings(record=True)
seen = caught.__enter__()  # e.g. "resource_tracker: process died unexpectedly, relaunching"
method, broken = sys.argv[1], sys.argv[2]
sane = os.environ.get("PYTHONPATH", "")
os.environ["PYTHONPATH"] = broken  # every new interpreter dies in its sitecustomize
report = {}
started = time.monotonic()
try:  # several workers: each start launches a resource tracker, which dies too
    with WorkerPool(n_jobs=4, start_method=method) as pool:
        pool.map(same, range(4))
except WorkerStartError as exc:
    report["error"] = str(exc)
except BaseException as exc:
    report["error"] = f"{type(exc).__name__}: {exc}"
report["seconds"] = time.monotonic() - started
# zombies and multiprocessing's helpers too: nothing this process started may be left
report["left"] = [(p.pid, p.name(), p.status())
                  for p in psutil.Process().children(recursive=True)]
os.environ["PYTHONPATH"] = sane
with WorkerPool(n_jobs=2, start_method=method) as pool:
    report["next"] = pool.map(same, range(4))
report["warnings"] = [str(w.message) for w in seen]
print(json.dumps(report))
'''


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method, expected", [
    ("forkserver", "the forkserver that starts the workers ended: it exited with code 7"),
    ("spawn", "exited with code 7"),
])
def test_no_new_interpreter_can_start(method, expected, tmp_path):
    """A sitecustomize.py that exits kills every new interpreter: the forkserver (and the
    resource tracker) die before any worker exists. The error must name the worker and the
    exit code, come at once, and leave no process behind, not even a zombie; the next pool,
    in a sane environment, must work."""
    import json
    import subprocess

    broken = tmp_path / "broken_site"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text("import os; os._exit(7)\n")
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run([sys.executable, "-c", NO_INTERPRETER_SCRIPT, method, str(broken)],
                          capture_output=True, text=True, cwd=root, env=env,
                          timeout=HANG_GUARD - 5)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    text = report.get("error", "no error")
    assert re.search(r"Worker-\d( \(pid \?\))? could not start", text), text
    assert expected in text, text
    assert report["seconds"] < ERROR_DEADLINE + 1.0, report  # + a new interpreter's start
    assert report["left"] == [], report["left"]
    assert report["next"] == [0, 1, 2, 3]
    assert report["warnings"] == []


# -- in a notebook ----------------------------------------------------------------------------
KERNEL_CELLS = {
    "pool": """
import sys, types
from nbpool import WorkerPool
pool = WorkerPool(n_jobs=2, keep_alive=True)
pool.map(abs, range(4))  # the workers start before the module exists
helpers = types.ModuleType("nbpool_kernel_only_module")
helpers.offset = 10
sys.modules[helpers.__name__] = helpers
""",
    "map": "pool.map(lambda x: x + helpers.offset, range(4))",
    "after": "print(pool.map(abs, range(-2, 2)))\npool.terminate()",
}


@pytest.mark.notebook
@pytest.mark.timeout(180)
def test_a_notebook_cell_names_the_module_a_worker_cannot_import(tmp_path):
    """The cell shows the worker's real error, not a worker death and stderr noise."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from kernel_helpers import run_cells

    cells, _ = run_cells(KERNEL_CELLS, tmp_path, allow_errors=True)
    (error,) = [out for out in cells["map"].outputs if out["output_type"] == "error"]
    assert error["ename"] == "TaskPicklingError", error["evalue"]
    assert "No module named 'nbpool_kernel_only_module'" in error["evalue"]
    streams = "".join(out.get("text", "") for cell in cells.values() for out in cell.outputs)
    assert "handle is closed" not in streams and "lost sys.stderr" not in streams, streams
    assert "[2, 1, 0, 1]" in streams
