"""The core API under every start method: errors, timeouts, pickling, restarts, numpy,
insights, apply, argument unpacking, worker ids, a single worker's order (the reference page's
examples, progress bars on every map function and nested pools run under every start method in
test_reference_page.py); plus pinning (cpu_ids), use_dill, the messages a map costs, how often a
function is pickled, and keep_alive's restart warning.

Timeouts here are hang bounds (0.3 s against tasks that stall for 30 s), not speed checks.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import Counter

import numpy as np
import pytest

import matrix_tasks as mt
from nbpool import TaskPicklingError, WorkerPool
from nbpool.utils import make_single_arguments

pytestmark = pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning")

METHODS = ["fork", "forkserver", "spawn", "threading"]
PROCESS_METHODS = ["fork", "forkserver", "spawn"]
SHORT = 0.3  # seconds: a timeout that must fire long before a stalled task would end
HANG_GUARD = 60


@pytest.fixture
def release_stalled_threads():
    """Worker threads cannot be killed: a stalled one is released when the test ends."""
    mt.RELEASE.clear()
    yield
    mt.RELEASE.set()


def _note_text(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", [])) + str(exc.__cause__)


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", METHODS)
def test_errors_pickling_restarts_numpy_and_insights(method):
    with WorkerPool(n_jobs=2, start_method=method, keep_alive=True) as pool:
        # insights count every task (a fresh pool: the counters start at zero)
        assert pool.map(mt.identity, range(30), chunk_size=4,
                        enable_insights=True) == list(range(30))
        insights = pool.get_insights()
        assert sum(insights["n_completed_tasks"]) == 30, insights
        assert len(insights["n_completed_tasks"]) == 2

        # a numpy array is cut into row blocks, and the blocks' results joined again
        array = np.arange(40).reshape(20, 2)
        doubled = pool.map(mt.double_block, array, chunk_size=5)
        assert isinstance(doubled, np.ndarray)
        assert np.array_equal(doubled, array * 2)
        assert pool.map(mt.block_rows, array, chunk_size=5) == [5, 5, 5, 5]

        # worker_lifespan=2: no worker runs more than 2 tasks, so 12 tasks take at least 6
        # workers. A kept-alive worker counts the tasks of earlier maps too: one that ran a
        # single task before (the maps above may split unevenly) runs one here, then retires
        who = pool.map(mt.worker_token, range(12), chunk_size=1, worker_lifespan=2)
        per_worker = Counter(who)  # (pid, token): one per worker, a thread too
        assert max(per_worker.values()) <= 2 and len(per_worker) >= 6, who
        if method != "threading":
            assert len({pid for pid, _ in who}) == len(per_worker), who  # a process each

        # a task's exception: same type, same args, and the failing task's arguments named
        with pytest.raises(mt.TaskFailed) as info:
            pool.map(mt.fail_on_7, range(20), chunk_size=3)
        assert info.value.args == ("task failed", 7)
        assert "Arg 0: 7" in _note_text(info.value)

        # arguments and results that cannot be pickled name their task (worker threads get
        # their messages pickled too: they go through the same sockets)
        with pytest.raises(TaskPicklingError, match=r"arguments of task 2\b"):
            pool.map(mt.identity, [0, 1, threading.Lock(), 3], chunk_size=1)
        with pytest.raises(TaskPicklingError, match=r"result of task 3\b") as info:
            pool.map(mt.lock_on_3, range(6), chunk_size=1)
        assert "Arg 0: 3" in _note_text(info.value)

        assert pool.map(mt.square, range(5)) == [0, 1, 4, 9, 16]  # still usable
        assert pool.start_method == method


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", METHODS)
def test_timeouts_fire(method, release_stalled_threads):
    with WorkerPool(n_jobs=2, start_method=method, keep_alive=True) as pool:
        with pytest.raises(TimeoutError, match=r"task timed out \(timeout=0.3\)"):
            pool.map(mt.stall_task, range(4), chunk_size=1, task_timeout=SHORT)
        with pytest.raises(TimeoutError, match=r"worker_init timed out"):
            pool.map(mt.square, range(4), worker_init=mt.stall, worker_init_timeout=SHORT)
        # worker_exit runs when the kept-alive workers stop
        assert pool.map(mt.square, range(4), chunk_size=1, worker_exit=mt.stall,
                        worker_exit_timeout=SHORT) == [0, 1, 4, 9]
        with pytest.raises(TimeoutError, match=r"worker_exit timed out"):
            pool.stop_and_join()

        # apply: only that task fails, through error_callback too; the pool works on
        errors: list = []
        stalled = pool.apply_async(mt.stall_task, (1,), task_timeout=SHORT,
                                   error_callback=errors.append)
        with pytest.raises(TimeoutError, match="timed out"):
            stalled.get(timeout=HANG_GUARD)
        assert len(errors) == 1 and isinstance(errors[0], TimeoutError)
        with pytest.raises(TimeoutError, match="timed out"):
            pool.apply(mt.stall_task, (2,), task_timeout=SHORT)
        assert pool.apply(mt.square, (3,)) == 9
        assert pool.apply_async(mt.square, (4,)).get(timeout=HANG_GUARD) == 16


# -- how arguments reach the function, worker ids, a single worker's order --------------------
MAP_FUNCTIONS = ["map", "map_unordered", "imap", "imap_unordered"]
UNPACKING = [  # an element of the iterable, and the (args, kwargs) that follow the worker id
    ((1, 2), ((1, 2), {})),  # a tuple: positional arguments
    ({"y": 2, "x": 1}, ((), {"x": 1, "y": 2})),  # a dict: keyword arguments
    ([3, 4], ((3, 4), {})),  # other iterables are unpacked too
    ("abc", (("abc",), {})),  # but not str
    (5, ((5,), {})),  # not iterable: passed whole
    (({"k": 1},), (({"k": 1},), {})),  # a 1-tuple passes anything whole
]


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", METHODS)
def test_arguments_are_unpacked_and_worker_ids_passed(method):
    inputs = [element for element, _ in UNPACKING]
    # order_tasks: chunk i goes to worker i % 2, so every task's worker id is known
    expected = [((i % 2, *args), kwargs) for i, (_, (args, kwargs)) in enumerate(UNPACKING)]
    dicts = [{"x": i, "y": 10 + i} for i in range(4)]
    with WorkerPool(n_jobs=2, pass_worker_id=True, order_tasks=True, start_method=method,
                    keep_alive=True) as pool:
        for name in MAP_FUNCTIONS:
            got = list(getattr(pool, name)(mt.received, inputs, chunk_size=1))
            if "unordered" in name:
                got, want = sorted(got, key=repr), sorted(expected, key=repr)
            else:
                want = expected
            assert got == want, name
        # make_single_arguments: every dict whole (a generator needs iterable_len)
        whole = [((i % 2, d), {}) for i, d in enumerate(dicts)]
        assert pool.map(mt.received, make_single_arguments(dicts, generator=False),
                        chunk_size=1) == whole
        assert list(pool.imap(mt.received, make_single_arguments(dicts), iterable_len=4,
                              chunk_size=1)) == whole
        # apply unpacks args and kwargs as given, after the worker id
        worker_id, *args = pool.apply(mt.received, (1, [2]), {"k": 3})[0]
        assert worker_id in (0, 1) and args == [1, [2]]
        assert pool.apply_async(mt.received, ({"y": 1},)).get(timeout=HANG_GUARD)[1] == {}

    # one worker: the unordered functions return the ordered results, although the early tasks
    # take longest
    with WorkerPool(n_jobs=1, start_method=method, keep_alive=True) as pool:
        assert pool.map_unordered(mt.slower_first, range(20), chunk_size=3) == list(range(20))
        assert list(pool.imap_unordered(mt.slower_first, range(20), chunk_size=1,
                                        max_tasks_active=4)) == list(range(20))


# -- cpu_ids and use_dill -----------------------------------------------------------------------
@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
@pytest.mark.parametrize("method", PROCESS_METHODS)
def test_cpu_ids_pin_each_worker_and_use_dill_runs(method):
    cpus = sorted(os.sched_getaffinity(0))
    cpu_ids = [[cpus[0]], [cpus[-1]]]  # two different CPUs where there are two
    with WorkerPool(n_jobs=2, cpu_ids=cpu_ids, pass_worker_id=True, start_method=method,
                    use_dill=True, keep_alive=True) as pool:
        seen = pool.map(mt.worker_affinity, range(8), chunk_size=1)
        assert {worker_id for worker_id, _ in seen} <= {0, 1}
        for worker_id, affinity in seen:
            assert affinity == cpu_ids[worker_id], seen
        # use_dill=True is accepted; cloudpickle carries what dill would (a lambda, a closure)
        offset = 10
        assert pool.map(lambda worker_id, x: x + offset, range(3)) == [10, 11, 12]


# -- messages -----------------------------------------------------------------------------------
def _frames(pool) -> tuple[int, int]:
    slots = pool._engine.live_slots()
    return (sum(s.channel.frames_sent for s in slots),
            sum(s.channel.frames_received for s in slots))


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("options", [
    {}, {"progress_bar": True}, {"enable_insights": True}, {"task_timeout": 30},
    {"progress_bar": True, "enable_insights": True, "task_timeout": 30},
], ids=["plain", "progress_bar", "insights", "task_timeout", "all"])
def test_one_message_per_chunk_each_way(options):
    """2,000 tasks in 20 chunks: 20 chunks out (and the function once per worker), 20 replies
    back. Progress and insights travel in the shared stats block, never in messages."""
    with WorkerPool(n_jobs=2, start_method="threading", keep_alive=True) as pool:
        pool.map(mt.square, range(4), chunk_size=1)  # the workers are up, READY is counted
        sent, received = _frames(pool)
        assert pool.map(mt.square, range(2000), chunk_size=100, **options) == [
            x * x for x in range(2000)]
        sent, received = (now - before for now, before in zip(_frames(pool), (sent, received)))
        assert 20 + 1 <= sent <= 20 + 2  # the chunks, and the map's function once per worker
        assert received == 20
        # the counters count: one-task chunks cost one message each
        before = _frames(pool)[1]
        pool.map(mt.square, range(40), chunk_size=1, **options)
        assert _frames(pool)[1] - before == 40


# -- how often the function is pickled ---------------------------------------------------------
@pytest.mark.timeout(HANG_GUARD)
def test_map_pickles_its_function_once_and_apply_once_per_call():
    function = mt.CountingSquare()
    with WorkerPool(n_jobs=2, start_method="threading", keep_alive=True) as pool:
        mt.CountingSquare.pickles = 0
        assert pool.map(function, range(200), chunk_size=1) == [x * x for x in range(200)]
        assert mt.CountingSquare.pickles == 1
        # restarted workers get the map's function again, from the same pickle
        pool.map(function, range(40), chunk_size=1, worker_lifespan=5)
        assert mt.CountingSquare.pickles == 2
    with WorkerPool(n_jobs=2, start_method="threading") as pool:
        # apply_async pickles the function with each call (see the next test for why)
        mt.CountingSquare.pickles = 0
        results = [pool.apply_async(function, (i,)) for i in range(50)]
        assert [r.get(timeout=HANG_GUARD) for r in results] == [i * i for i in range(50)]
        assert mt.CountingSquare.pickles == 50


@pytest.mark.timeout(HANG_GUARD)
def test_apply_sees_the_functions_globals_as_they_are_at_each_call():
    """Why apply does not cache the pickled function: a notebook function travels by value,
    with the globals it uses; a cached copy would keep computing with the old values."""
    state = {"factor": 2}

    def scaled(x):  # a local function: pickled by value, with ``state``
        return x * state["factor"]

    with WorkerPool(n_jobs=1, start_method="threading") as pool:
        assert pool.apply(scaled, (5,)) == 10
        state["factor"] = 3
        assert pool.apply(scaled, (5,)) == 15
        pool.stop_and_join()


# -- keep_alive, join ---------------------------------------------------------------------------
@pytest.mark.timeout(HANG_GUARD)
def test_keep_alive_warns_when_a_new_worker_init_or_exit_restarts_the_workers():
    with WorkerPool(n_jobs=2, start_method="threading", keep_alive=True) as pool:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pool.map(mt.square, range(4), worker_init=mt.init_a)
            pool.map(mt.square, range(4), worker_init=mt.init_a)  # the same: kept
        with pytest.warns(UserWarning, match=r"keep_alive=True, but worker_init differs"):
            pool.map(mt.square, range(4), worker_init=mt.init_b)
        with pytest.warns(UserWarning, match=r"worker_init and worker_exit differ"):
            pool.map(mt.square, range(4), worker_exit=mt.exit_returning_1)


@pytest.mark.timeout(HANG_GUARD)
def test_join_is_stop_and_join():
    with WorkerPool(n_jobs=1, start_method="threading") as pool:
        results = [pool.apply_async(mt.square, (i,), worker_exit=mt.exit_returning_1)
                   for i in range(5)]
        pool.join(keep_alive=True)  # waits for the tasks, keeps the worker
        assert [r.get(timeout=0) for r in results] == [0, 1, 4, 9, 16]
        assert pool._engine.running
        pool.join()  # stops the worker, after its exit function
        assert not pool._engine.running
        assert pool.get_exit_results() == [1]


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_a_nested_forkserver_pool_in_a_worker_of_a_process_that_runs_a_forkserver(method):
    """A forked worker inherited its parent's forkserver pid, not its own child: a nested
    forkserver pool failed with ChildProcessError. Workers now forget inherited forkservers."""
    with WorkerPool(n_jobs=1, start_method="forkserver") as pool:  # this process runs one now
        assert pool.map(mt.square, range(3)) == [0, 1, 4]
    with WorkerPool(n_jobs=2, start_method=method, daemon=False) as pool:
        sums = pool.map(mt.sum_of_squares_in_a_forkserver_pool, [3, 4], chunk_size=1)
    assert sums == [5, 14]
