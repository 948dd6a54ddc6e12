"""nbpool's ``WorkerPool`` API against mpire's: signatures, how arguments reach the function,
the pool options and their setters, the apply family, parameter validation, and a small sweep
of chunking / back-pressure combinations."""

from __future__ import annotations

import inspect
import itertools
import os
import sys
import threading
import time
import uuid
import warnings
from collections import defaultdict

import numpy as np
import pytest

import nbpool
from nbpool import WorkerPool

pytestmark = pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning")

START_METHODS = ["fork", "forkserver", "spawn", "threading", "auto"]
EMPTY = inspect.Parameter.empty


# ---- task functions (module level: picklable by reference under every start method) -----------
def _double(x):
    return x * 2


def _add(x, y):
    return x + y


def _received(*args, **kwargs):
    """Reports exactly what the worker passed in."""
    return args, kwargs


def _wid(worker_id, x):
    return worker_id


def _wid_and_x(worker_id, x):
    return worker_id, x


def _pid(x):
    return os.getpid()


class CustomError(Exception):
    pass


def _raise_value_error(message):
    raise ValueError(message)


def _raise_custom(message):
    raise CustomError(message)


def _raise_on_7(x):
    if x == 7:
        raise ValueError(f"bad task {x}")
    return x


_GATE = threading.Event()


def _wait_for_gate(x):
    # used with start_method='threading' only: the worker thread shares this module's Event
    if not _GATE.wait(30):
        raise RuntimeError("gate never opened")
    return x * 2


def _shared_probe(shared, i):
    return float(shared[i]), shared.shape, shared.__array_interface__["data"][0]


def _state_counter(worker_id, worker_state, x):
    worker_state["n"] = worker_state.get("n", 0) + 1
    return worker_id, worker_state["n"], x


def _token_init(worker_state):
    worker_state["token"] = uuid.uuid4().hex
    worker_state["inits"] = worker_state.get("inits", 0) + 1


def _token_task(worker_state, x):
    return os.getpid(), worker_state["token"], worker_state["inits"], x * 2


def _token_exit(worker_state):
    return worker_state["inits"]


def _count_init(worker_state):
    worker_state["n"] = 0


def _count_pid_task(worker_state, x):
    worker_state["n"] += 1
    return os.getpid()


def _count_exit(worker_state):
    return worker_state["n"]


# ---- signatures -------------------------------------------------------------------------------
INIT_PARAMS = [
    ("n_jobs", None),
    ("daemon", True),
    ("cpu_ids", None),
    ("shared_objects", None),
    ("pass_worker_id", False),
    ("use_worker_state", False),
    # mpire's default is 'fork'; nbpool's documented default is 'auto' (picks a safe method)
    ("start_method", "auto"),
    ("keep_alive", False),
    ("use_dill", False),
    ("enable_insights", False),
    ("order_tasks", False),
]

MAP_PARAMS = [
    ("func", EMPTY),
    ("iterable_of_args", EMPTY),
    ("iterable_len", None),
    ("max_tasks_active", None),
    ("chunk_size", None),
    ("n_splits", None),
    ("worker_lifespan", None),
    ("progress_bar", False),
    ("concatenate_numpy_output", True),
    ("worker_init", None),
    ("worker_exit", None),
    ("task_timeout", None),
    ("worker_init_timeout", None),
    ("worker_exit_timeout", None),
    ("progress_bar_options", None),
    ("progress_bar_style", None),
]
UNORDERED_PARAMS = [p for p in MAP_PARAMS if p[0] != "concatenate_numpy_output"]

APPLY_PARAMS = [
    ("func", EMPTY),
    ("args", ()),
    ("kwargs", None),
    ("callback", None),
    ("error_callback", None),
    ("worker_init", None),
    ("worker_exit", None),
    ("task_timeout", None),
    ("worker_init_timeout", None),
    ("worker_exit_timeout", None),
]


def _params(method):
    return [p for p in inspect.signature(method).parameters.values() if p.name != "self"]


def _check_prefix(method, expected):
    params = _params(method)
    got = [(p.name, p.default) for p in params[: len(expected)]]
    assert got == expected
    for p in params[: len(expected)]:
        assert p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD, p.name
    # anything nbpool adds comes after mpire's parameters and is optional
    for extra in params[len(expected):]:
        assert extra.default is not EMPTY or extra.kind in (
            inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD), extra.name


def test_constructor_signature():
    params = _params(WorkerPool.__init__)
    mpire_params = params[: len(INIT_PARAMS)]
    assert [(p.name, p.default) for p in mpire_params] == INIT_PARAMS
    assert all(p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD for p in mpire_params)
    # nbpool's own options follow, keyword-only, so mpire's positional calls mean the same
    extras = [(p.name, p.default, p.kind) for p in params[len(INIT_PARAMS):]]
    assert extras == [("use_shared_memory", True, inspect.Parameter.KEYWORD_ONLY)]


def test_map_signature():
    _check_prefix(WorkerPool.map, MAP_PARAMS)


@pytest.mark.parametrize("name", ["map_unordered", "imap", "imap_unordered"])
def test_other_map_functions_signature(name):
    _check_prefix(getattr(WorkerPool, name), UNORDERED_PARAMS)


@pytest.mark.parametrize("name", ["apply", "apply_async"])
def test_apply_signature(name):
    _check_prefix(getattr(WorkerPool, name), APPLY_PARAMS)


@pytest.mark.parametrize("name, expected", [
    ("pass_on_worker_id", [("pass_on", True)]),
    ("set_shared_objects", [("shared_objects", None)]),
    ("set_use_worker_state", [("use_worker_state", True)]),
    ("set_keep_alive", [("keep_alive", True)]),
    ("set_order_tasks", [("order_tasks", True)]),
    ("stop_and_join", [("keep_alive", False)]),
    ("terminate", []),
    ("get_exit_results", []),
    ("get_insights", []),
    ("print_insights", []),
])
def test_other_methods_signature(name, expected):
    _check_prefix(getattr(WorkerPool, name), expected)


def test_signatures_match_installed_mpire():
    mpire = pytest.importorskip("mpire")
    for name in ("__init__", "map", "map_unordered", "imap", "imap_unordered", "apply",
                 "apply_async", "stop_and_join", "pass_on_worker_id", "set_shared_objects",
                 "set_use_worker_state", "set_keep_alive", "set_order_tasks"):
        theirs = _params(getattr(mpire.WorkerPool, name))
        ours = _params(getattr(WorkerPool, name))[: len(theirs)]
        assert [p.name for p in ours] == [p.name for p in theirs], name
        for mine, their in zip(ours, theirs):
            if name == "__init__" and mine.name == "start_method":
                continue  # deliberate: 'auto' instead of 'fork'
            assert mine.default == their.default, (name, mine.name)


def test_map_positional_arguments_follow_mpire_order():
    # map(func, iterable_of_args, iterable_len, max_tasks_active, chunk_size, ...)
    with WorkerPool(n_jobs=2, pass_worker_id=True, order_tasks=True) as pool:
        assert pool.map(_wid, range(12), None, None, 3) == [0, 0, 0, 1, 1, 1] * 2


def test_public_imports():
    from nbpool import WorkerPool as WP, cpu_count, tqdm

    from tqdm.std import tqdm as std_tqdm

    assert WP is WorkerPool
    # not instantiated here: the first tqdm bar of a process starts tqdm's monitor thread
    assert isinstance(tqdm, type) and issubclass(tqdm, std_tqdm)
    n = cpu_count()
    assert isinstance(n, int)
    assert 1 <= n <= (os.cpu_count() or 1)
    assert nbpool.cpu_count is cpu_count


# ---- how arguments reach the function ---------------------------------------------------------
UNPACKING_CASES = [
    ((1, 2), ((1, 2), {})),                      # tuple -> *args
    ({"a": 1, "b": 2}, ((), {"a": 1, "b": 2})),  # dict -> **kwargs
    ("abc", (("abc",), {})),                     # str passed whole
    (b"xy", ((b"xy",), {})),                     # bytes passed whole
    ([3, 4], ((3, 4), {})),                      # list unpacked
    (range(3), ((0, 1, 2), {})),                 # any other iterable unpacked
    (5, ((5,), {})),                             # not iterable: passed whole
    ((7,), ((7,), {})),                          # 1-tuple: the way to pass anything whole
    (({"k": 1},), (({"k": 1},), {})),            # a dict passed whole
    (np.int64(3), ((np.int64(3),), {})),         # numpy scalar passed whole
]


def _check_received(got, expected_args, expected_kwargs):
    args, kwargs = got
    assert kwargs == expected_kwargs
    assert len(args) == len(expected_args)
    for a, e in zip(args, expected_args):
        assert type(a) is type(e)
        assert a == e


@pytest.mark.parametrize("map_kwargs", [{}, {"chunk_size": 1}, {"chunk_size": 100},
                                        {"enable_insights": True}, {"task_timeout": 30}],
                         ids=["default", "chunk1", "onechunk", "insights", "task_timeout"])
def test_argument_unpacking_rules(map_kwargs):
    array = np.array([1.5, 2.5, 3.5])
    inputs = [case[0] for case in UNPACKING_CASES] + [array]
    with WorkerPool(n_jobs=2) as pool:
        out = pool.map(_received, inputs, **map_kwargs)
    for got, (_, (exp_args, exp_kwargs)) in zip(out, UNPACKING_CASES):
        _check_received(got, exp_args, exp_kwargs)
    # np.ndarray passed whole
    args, kwargs = out[-1]
    assert kwargs == {} and len(args) == 1
    assert isinstance(args[0], np.ndarray)
    np.testing.assert_array_equal(args[0], array)


@pytest.mark.parametrize("inputs, expected", [
    ([(i, i + 1) for i in range(20)], [((i, i + 1), {}) for i in range(20)]),
    (["ab", "cd"] * 10, [(("ab",), {}), (("cd",), {})] * 10),
    ([{"x": i} for i in range(20)], [((), {"x": i}) for i in range(20)]),
    ([[i, i] for i in range(20)], [((i, i), {}) for i in range(20)]),
], ids=["tuples", "strings", "dicts", "lists"])
def test_argument_unpacking_homogeneous_chunks(inputs, expected):
    with WorkerPool(n_jobs=2) as pool:
        assert pool.map(_received, inputs, chunk_size=7) == expected
        assert sorted(pool.map_unordered(_received, inputs, chunk_size=7), key=repr) == sorted(
            expected, key=repr)


def test_list_of_numpy_arrays_each_passed_whole():
    rows = [np.arange(3) + i for i in range(10)]
    with WorkerPool(n_jobs=2) as pool:
        out = pool.map(_received, rows, concatenate_numpy_output=False)
    for row, (args, kwargs) in zip(rows, out):
        assert kwargs == {} and len(args) == 1
        np.testing.assert_array_equal(args[0], row)


# ---- pass_worker_id, order_tasks, unordered ---------------------------------------------------
def test_pass_worker_id():
    with WorkerPool(n_jobs=3, pass_worker_id=True) as pool:
        out = pool.map(_wid_and_x, range(30), chunk_size=1)
    assert [x for _, x in out] == list(range(30))
    assert {w for w, _ in out} <= {0, 1, 2}


def test_order_tasks_chunk_size_3():
    with WorkerPool(n_jobs=2, pass_worker_id=True, order_tasks=True) as pool:
        assert pool.map(_wid, range(12), chunk_size=3) == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]
        assert pool.map(_wid, range(7), chunk_size=3) == [0, 0, 0, 1, 1, 1, 0]


def test_order_tasks_three_workers():
    with WorkerPool(n_jobs=3, pass_worker_id=True, order_tasks=True) as pool:
        out = list(pool.imap(_wid, range(12), chunk_size=2))
    assert out == [0, 0, 1, 1, 2, 2] * 2


def test_unordered_returns_same_multiset():
    expected = sorted(x * 2 for x in range(300))
    with WorkerPool(n_jobs=2) as pool:
        assert sorted(pool.map_unordered(_double, range(300), chunk_size=3)) == expected
        assert sorted(pool.imap_unordered(_double, range(300), chunk_size=3)) == expected
        assert sorted(pool.map_unordered(_double, list(range(300)))) == expected


def test_single_worker_unordered_equals_ordered():
    with WorkerPool(n_jobs=1) as pool:
        ordered = pool.map(_double, range(100), chunk_size=3)
        assert pool.map_unordered(_double, range(100), chunk_size=3) == ordered
        assert list(pool.imap_unordered(_double, range(100), chunk_size=3)) == ordered
        assert list(pool.imap(_double, range(100), chunk_size=3)) == ordered
    assert ordered == [x * 2 for x in range(100)]


def test_task_exception_reraised_with_same_type():
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(ValueError, match="bad task 7") as info:
            pool.map(_raise_on_7, range(20), chunk_size=3)
    assert type(info.value) is ValueError


# ---- start-method sensitive behaviour ---------------------------------------------------------
def _count_into(shared, x):
    counter, lock, totals = shared
    with lock:
        counter.value += 1
        totals[x % 4] += x  # read and write again: two workers may share a slot
    return x


@pytest.mark.startmethod
@pytest.mark.parametrize("start_method", START_METHODS)
def test_multiprocessing_values_arrays_and_locks_as_shared_objects(start_method):
    """mpire's docs share Value/Array/Lock through shared_objects; they must work under spawn
    and forkserver too (multiprocessing's own reducers are used when a worker starts).
    Locks made by a spawn context work with every start method (a fork context's do not
    reach spawn or forkserver children: multiprocessing refuses that)."""
    import multiprocessing as mp

    context = mp.get_context("spawn")
    counter = context.Value("i", 0)
    lock = context.Lock()
    totals = context.Array("d", 4)
    with WorkerPool(n_jobs=2, shared_objects=(counter, lock, totals),
                    start_method=start_method) as pool:
        assert pool.map(_count_into, range(40), chunk_size=3) == list(range(40))
    assert counter.value == 40
    assert list(totals) == [float(sum(x for x in range(40) if x % 4 == r)) for r in range(4)]


@pytest.mark.startmethod
@pytest.mark.parametrize("start_method", START_METHODS)
def test_shared_objects_reach_every_task(start_method):
    big = np.arange(1_000_000, dtype=np.float64) * 0.5
    indices = list(range(0, 1_000_000, 50_000))
    with WorkerPool(n_jobs=2, shared_objects=big, start_method=start_method) as pool:
        out = pool.map(_shared_probe, indices, chunk_size=1)
        used = pool.start_method
    assert [value for value, _, _ in out] == [float(big[i]) for i in indices]
    assert all(shape == big.shape for _, shape, _ in out)
    if used in ("fork", "threading"):
        # inherited (fork: copy-on-write) or shared (threads): the very same buffer, not a copy
        assert {address for _, _, address in out} == {big.__array_interface__["data"][0]}


NOTEBOOK_CELL = '''
import math

OFFSET = 3

class Point:
    def __init__(self, x):
        self.x = x

def helper(x):
    return x + OFFSET

def task(x):
    return Point(helper(x) * math.factorial(3))
'''


@pytest.mark.startmethod
@pytest.mark.parametrize("start_method", START_METHODS)
def test_notebook_like_functions(start_method):
    # defined in a "__main__" namespace, as in a notebook cell: only picklable by value
    cell = {"__name__": "__main__"}
    exec(NOTEBOOK_CELL, cell)
    factor = 7
    scale = lambda x: x * factor  # noqa: E731

    def closure(x):
        return scale(x) + factor

    def init(worker_state):
        worker_state["factor"] = factor

    def with_state(worker_state, x):
        return x * worker_state["factor"]

    with WorkerPool(n_jobs=2, start_method=start_method, keep_alive=True) as pool:
        assert pool.map(scale, range(10)) == [x * 7 for x in range(10)]
        assert pool.map(closure, range(10)) == [x * 7 + 7 for x in range(10)]
        assert pool.apply(lambda: factor * 6) == 42
        points = pool.map(cell["task"], range(5))
        assert [type(p).__name__ for p in points] == ["Point"] * 5
        assert [p.x for p in points] == [(x + 3) * 6 for x in range(5)]
        pool.set_use_worker_state(True)
        assert pool.map(with_state, range(10), worker_init=init) == [x * 7 for x in range(10)]
        # apply on those workers gets the worker state too, as a map task does
        assert pool.apply(lambda worker_state: worker_state["factor"] * 6) == 42


@pytest.mark.startmethod
@pytest.mark.parametrize("start_method", START_METHODS)
def test_worker_state_persists_across_tasks(start_method):
    with WorkerPool(n_jobs=2, pass_worker_id=True, use_worker_state=True,
                    start_method=start_method) as pool:
        out = pool.map(_state_counter, range(30), chunk_size=1)
    assert [x for _, _, x in out] == list(range(30))
    counts = defaultdict(list)
    for worker_id, n, _ in out:
        counts[worker_id].append(n)
    assert set(counts) <= {0, 1}
    for worker_id, seen in counts.items():
        assert sorted(seen) == list(range(1, len(seen) + 1)), worker_id
    assert sum(len(seen) for seen in counts.values()) == 30


@pytest.mark.startmethod
@pytest.mark.parametrize("start_method", START_METHODS)
def test_keep_alive_reuses_workers_and_runs_init_once(start_method):
    with WorkerPool(n_jobs=2, use_worker_state=True, keep_alive=True,
                    start_method=start_method) as pool:
        first = pool.map(_token_task, range(20), chunk_size=1, worker_init=_token_init,
                         worker_exit=_token_exit)
        second = pool.map(_token_task, range(20), chunk_size=1, worker_init=_token_init,
                          worker_exit=_token_exit)
        assert pool.get_exit_results() == []  # nobody has exited yet
        pool.stop_and_join()
        exits = pool.get_exit_results()
    for out in (first, second):
        assert [r for *_, r in out] == [x * 2 for x in range(20)]
        assert all(inits == 1 for _, _, inits, _ in out)
    tokens_1 = {token for _, token, _, _ in first}
    tokens_2 = {token for _, token, _, _ in second}
    assert len(tokens_1) == 2  # both workers took tasks
    assert tokens_2 == tokens_1  # the same two workers, never re-initialised
    assert {pid for pid, *_ in second} == {pid for pid, *_ in first}
    assert exits == [1, 1]


@pytest.mark.startmethod
def test_threading_workers_stop_cleanly_every_time():
    # many short-lived thread pools: stopping a worker thread must never fail
    for _ in range(100):
        with WorkerPool(n_jobs=2, start_method="threading") as pool:
            assert pool.map(_double, range(10)) == [x * 2 for x in range(10)]


def _print_lines(worker_id, n):
    for k in range(n):
        print(f"line {worker_id} {k}")
    print("unfinished", end="")
    return worker_id


@pytest.mark.startmethod
def test_threading_workers_print_whole_lines(capsys):
    """Threads share sys.stdout, and print writes a line's text and its newline separately:
    two workers printing at once used to give 'line 0 5line 1 7'. Each worker thread's lines
    are now written whole, the streams are put back afterwards, and a last unfinished line
    is written when the worker ends."""
    stdout_before = sys.stdout
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often, as under load: lines would mix
    try:
        with WorkerPool(n_jobs=4, start_method="threading", pass_worker_id=True) as pool:
            pool.map(_print_lines, [300] * 8, chunk_size=1)
    finally:
        sys.setswitchinterval(switch_interval)
    assert sys.stdout is stdout_before
    out = capsys.readouterr().out
    lines = out.replace("unfinished", "").splitlines()
    assert all(line.startswith("line ") and len(line.split()) == 3 for line in lines), [
        line for line in lines if not (line.startswith("line ") and len(line.split()) == 3)][:5]
    assert len(lines) == 8 * 300
    assert out.count("unfinished") == 8


# ---- setters ----------------------------------------------------------------------------------
def test_pass_on_worker_id_setter():
    with WorkerPool(n_jobs=2) as pool:
        pool.pass_on_worker_id()
        assert set(pool.map(_wid, range(20), chunk_size=1)) <= {0, 1}
        pool.pass_on_worker_id(False)
        assert pool.map(_double, range(5)) == [0, 2, 4, 6, 8]
        pool.pass_on_worker_id(True)
        assert set(pool.map(_wid, range(5))) <= {0, 1}


def test_set_shared_objects_numpy_array():
    # mpire crashes here (truth value of an array); nbpool must not
    shared = np.arange(100) * 3
    with WorkerPool(n_jobs=2) as pool:
        pool.set_shared_objects(shared)
        out = pool.map(_shared_probe, range(100))
        assert [value for value, _, _ in out] == [float(v) for v in shared]
        pool.set_shared_objects()  # back to None: the function gets no shared argument
        assert pool.map(_double, range(3)) == [0, 2, 4]


def test_set_shared_objects_between_keep_alive_maps():
    with WorkerPool(n_jobs=2, keep_alive=True) as pool:
        pool.set_shared_objects(np.arange(10))
        assert [v for v, _, _ in pool.map(_shared_probe, range(10))] == list(range(10))
        pool.set_shared_objects(np.arange(10) + 100)
        assert [v for v, _, _ in pool.map(_shared_probe, range(10))] == list(range(100, 110))


def test_set_use_worker_state_setter():
    with WorkerPool(n_jobs=2, pass_worker_id=True) as pool:
        pool.set_use_worker_state()
        out = pool.map(_state_counter, range(20), chunk_size=1)
    counts = defaultdict(list)
    for worker_id, n, _ in out:
        counts[worker_id].append(n)
    for seen in counts.values():
        assert sorted(seen) == list(range(1, len(seen) + 1))


def test_set_keep_alive_setter():
    with WorkerPool(n_jobs=2, use_worker_state=True) as pool:
        pool.set_keep_alive()
        first = pool.map(_token_task, range(20), chunk_size=1, worker_init=_token_init)
        second = pool.map(_token_task, range(20), chunk_size=1, worker_init=_token_init)
        pool.set_keep_alive(False)
        third = pool.map(_token_task, range(20), chunk_size=1, worker_init=_token_init)
    tokens = [{token for _, token, _, _ in out} for out in (first, second, third)]
    assert tokens[0] == tokens[1]
    assert len(tokens[0]) == 2
    # the third map still runs on the kept-alive workers; they are stopped after it
    assert tokens[2] == tokens[0]


def test_keep_alive_off_restarts_workers_for_every_map():
    with WorkerPool(n_jobs=2, use_worker_state=True) as pool:
        first = pool.map(_token_task, range(20), chunk_size=1, worker_init=_token_init)
        second = pool.map(_token_task, range(20), chunk_size=1, worker_init=_token_init)
    tokens_1 = {token for _, token, _, _ in first}
    tokens_2 = {token for _, token, _, _ in second}
    assert not tokens_1 & tokens_2


def test_set_order_tasks_setter():
    with WorkerPool(n_jobs=2, pass_worker_id=True) as pool:
        pool.set_order_tasks()
        assert pool.map(_wid, range(12), chunk_size=3) == [0, 0, 0, 1, 1, 1] * 2


# ---- apply / apply_async ----------------------------------------------------------------------
def test_apply_calls_function_with_args():
    with WorkerPool(n_jobs=1) as pool:
        assert pool.apply(_received, 42) == ((42,), {})
        assert pool.apply(_received, (1, 2)) == ((1, 2), {})
        assert pool.apply(_received, (1,), {"b": 2}) == ((1,), {"b": 2})
        assert pool.apply(_received, "abc") == (("abc",), {})
        assert pool.apply(_received) == ((), {})
        assert pool.apply(_add, kwargs={"x": 1, "y": 2}) == 3


def test_apply_unpacks_a_list_like_mpire():
    with WorkerPool(n_jobs=1) as pool:
        assert pool.apply(_received, [1, 2]) == ((1, 2), {})
        assert pool.apply(_received, [1, 2], {"z": 3}) == ((1, 2), {"z": 3})


def test_apply_async_ready_successful_wait_and_get_timeout():
    _GATE.clear()
    with WorkerPool(n_jobs=1, start_method="threading") as pool:
        result = pool.apply_async(_wait_for_gate, (21,))
        try:
            assert result.ready() is False
            with pytest.raises(ValueError):
                result.successful()
            assert result.wait(timeout=0.01) is None
            assert result.ready() is False
            with pytest.raises(TimeoutError):
                result.get(timeout=0.01)
        finally:
            _GATE.set()
        result.wait()
        assert result.ready() is True
        assert result.successful() is True
        assert result.get() == 42
        assert result.get(timeout=1) == 42


def test_apply_async_callbacks():
    got, errors = [], []
    with WorkerPool(n_jobs=2) as pool:
        ok = pool.apply_async(_add, (1, 2), callback=got.append, error_callback=errors.append)
        bad = pool.apply_async(_raise_value_error, ("boom",), callback=got.append,
                               error_callback=errors.append)
        assert ok.get() == 3
        with pytest.raises(ValueError, match="boom"):
            bad.get()
        assert ok.successful() is True
        assert bad.successful() is False
    assert got == [3]
    assert len(errors) == 1
    assert type(errors[0]) is ValueError


def _failing_callback(value):
    raise RuntimeError(f"callback failed on {value!r}")


@pytest.mark.parametrize("start_method", ["fork", "threading"])
def test_a_failing_callback_is_logged_and_breaks_nothing(caplog, start_method):
    """Callbacks run in whatever call drives the pool: their errors must not come out of the
    next apply_async or another result's get, nor lose that call's work."""
    with WorkerPool(n_jobs=2, start_method=start_method) as pool:
        first = pool.apply_async(_add, (1, 2), callback=_failing_callback)
        failed = pool.apply_async(_raise_value_error, ("boom",),
                                  error_callback=_failing_callback)
        second = pool.apply_async(_add, (3, 4))
        assert second.get(timeout=30) == 7
        assert first.get(timeout=30) == 3 and first.successful()
        with pytest.raises(ValueError, match="boom"):
            failed.get(timeout=30)
        assert pool.map(_add, [(1, 1), (2, 2)]) == [2, 4]
    messages = [r.getMessage() for r in caplog.records if r.name == "nbpool"]
    assert sorted(messages) == sorted([
        f"exception in the callback of apply_async task {first.job_id}",
        f"exception in the error_callback of apply_async task {failed.job_id}"]), messages
    assert all(r.exc_info and "callback failed on" in str(r.exc_info[1])
               for r in caplog.records if r.name == "nbpool")


def test_apply_exceptions_keep_their_type():
    with WorkerPool(n_jobs=1) as pool:
        with pytest.raises(CustomError, match="custom") as info:
            pool.apply(_raise_custom, ("custom",))
        assert type(info.value) is CustomError
        with pytest.raises(ValueError) as info:
            pool.apply(_raise_value_error, "plain")
        assert type(info.value) is ValueError
        # the pool still works afterwards
        assert pool.apply(_add, (2, 3)) == 5


def test_many_apply_async():
    with WorkerPool(n_jobs=2) as pool:
        results = [pool.apply_async(_add, (i, i)) for i in range(30)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(30)]


def test_async_result_after_terminate_raises_runtime_error():
    with WorkerPool(n_jobs=1) as pool:
        running = pool.apply_async(time.sleep, (60,))
        queued = pool.apply_async(_add, (1, 2))
        pool.terminate()
        for result in (running, queued):
            with pytest.raises(RuntimeError):
                result.get(timeout=10)
            assert result.ready() is True
            assert result.successful() is False


# ---- parameter validation ---------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, name", [
    ({"n_jobs": 0}, ValueError, "n_jobs"),
    ({"n_jobs": -1}, ValueError, "n_jobs"),
    ({"start_method": "bogus"}, ValueError, "start_method"),
    ({"n_jobs": "2"}, TypeError, "n_jobs"),
])
def test_constructor_validation(kwargs, error, name):
    with pytest.raises(error, match=name):
        WorkerPool(**kwargs)


MAP_VALIDATION = [
    ("chunk_size", 0, ValueError),
    ("chunk_size", -2, ValueError),
    ("n_splits", 0, ValueError),
    ("max_tasks_active", 0, ValueError),
    ("worker_lifespan", 0, ValueError),
    ("task_timeout", 0, ValueError),
    ("chunk_size", "x", TypeError),
    ("progress_bar_options", [1], TypeError),
]


@pytest.mark.parametrize("method", ["map", "map_unordered", "imap", "imap_unordered"])
@pytest.mark.parametrize("name, value, error", MAP_VALIDATION,
                         ids=[f"{n}={v!r}" for n, v, _ in MAP_VALIDATION])
def test_map_validation(method, name, value, error):
    with WorkerPool(n_jobs=1) as pool:
        with pytest.raises(error, match=name):
            list(getattr(pool, method)(_double, range(10), **{name: value}))
        # the pool is still usable
        assert pool.map(_double, range(3)) == [0, 2, 4]


@pytest.mark.parametrize("method", ["map", "map_unordered", "imap", "imap_unordered"])
def test_map_validation_of_func_and_iterable(method):
    with WorkerPool(n_jobs=1) as pool:
        with pytest.raises(TypeError, match="func"):
            list(getattr(pool, method)(5, range(10)))
        with pytest.raises(TypeError, match="iterable_of_args"):
            list(getattr(pool, method)(_double, 5))


def test_apply_validation():
    with WorkerPool(n_jobs=1) as pool:
        with pytest.raises(ValueError, match="task_timeout"):
            pool.apply_async(_double, (1,), task_timeout=0)
        with pytest.raises(TypeError, match="func"):
            pool.apply_async(5, (1,))


# ---- max_tasks_active, worker_lifespan --------------------------------------------------------
@pytest.mark.timeout(10)
def test_max_tasks_active_smaller_than_chunk_size_completes():
    # mpire deadlocks here
    with WorkerPool(n_jobs=2) as pool:
        assert pool.map(_double, range(1000), chunk_size=100, max_tasks_active=3) == [
            x * 2 for x in range(1000)]


@pytest.mark.timeout(10)
def test_max_tasks_active_one():
    with WorkerPool(n_jobs=2) as pool:
        assert pool.map(_double, range(10), chunk_size=1, max_tasks_active=1) == [
            x * 2 for x in range(10)]


def test_worker_lifespan_restarts_workers():
    # fork: a restarted worker would otherwise re-import this module (and pytest) every time
    with WorkerPool(n_jobs=2, use_worker_state=True, start_method="fork") as pool:
        pids = pool.map(_count_pid_task, range(20), worker_lifespan=2, chunk_size=1,
                        worker_init=_count_init, worker_exit=_count_exit)
        exits = pool.get_exit_results()
    assert len(set(pids)) > 2
    assert sum(exits) == 20
    assert len(exits) > 2
    assert all(1 <= n <= 2 for n in exits)


def test_worker_lifespan_without_exit_function():
    with WorkerPool(n_jobs=2, start_method="fork") as pool:
        pids = pool.map(_pid, range(12), worker_lifespan=3, chunk_size=1)
    assert len(pids) == 12
    assert len(set(pids)) > 2


# ---- sweep ------------------------------------------------------------------------------------
N = 41
CHUNKING = [
    {},
    {"chunk_size": 1},
    {"chunk_size": 2.5},
    {"chunk_size": 7},
    {"chunk_size": 1000},
    {"n_splits": 3},
    {"n_splits": 3, "chunk_size": 2.5},
]
INPUTS = ["list", "generator", "numpy", "range"]


def _make_input(kind, chunking):
    """The input and any extra map kwargs it needs."""
    if kind == "list":
        return list(range(N)), {}
    if kind == "range":
        return range(N), {}
    if kind == "numpy":
        return np.arange(N), {}
    # a generator has no length: give it one unless a chunk_size makes that unnecessary
    extra = {} if "chunk_size" in chunking else {"iterable_len": N}
    return (x for x in range(N)), extra


def _flatten_output(kind, out):
    if kind == "numpy":
        if isinstance(out, np.ndarray):
            return out.tolist()
        return np.concatenate(list(out)).tolist()
    return list(out)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
@pytest.mark.parametrize("max_tasks_active", [None, 1, 5])
def test_sweep(max_tasks_active, ordered):
    expected = [x * 2 for x in range(N)]
    methods = ("map", "imap") if ordered else ("map_unordered", "imap_unordered")
    failures = []
    with WorkerPool(n_jobs=2, keep_alive=True) as pool:
        for kind, chunking, method in itertools.product(INPUTS, CHUNKING, methods):
            iterable, extra = _make_input(kind, chunking)
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                out = getattr(pool, method)(_double, iterable, max_tasks_active=max_tasks_active,
                                            **chunking, **extra)
                got = _flatten_output(kind, out)
            if not ordered:
                got = sorted(got)
            case = f"{method}({kind}, {chunking}, max_tasks_active={max_tasks_active})"
            if got != expected:
                failures.append(f"{case}: {got}")
            if method == "map" and kind == "numpy" and not isinstance(out, np.ndarray):
                failures.append(f"{case}: numpy output not concatenated ({type(out).__name__})")
            stray = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
            if stray:
                failures.append(f"{case}: unexpected warnings {stray}")
    assert not failures, "\n".join(failures)


def test_error_classes_are_importable_from_the_package():
    import nbpool
    from nbpool.engine import errors

    for name in ("WorkerDiedError", "WorkerStartError", "TaskPicklingError", "TaskExitError",
                 "RemoteTraceback"):
        assert getattr(nbpool, name) is getattr(errors, name)
        assert name in dir(nbpool)


def test_warnings_point_at_the_callers_line():
    """Through imap's generator and nbpool's helpers, the warning still names this file."""
    with pytest.warns(RuntimeWarning, match="Failed to obtain the length") as record:
        with WorkerPool(n_jobs=1) as pool:
            assert list(pool.imap(abs, (x for x in range(3)))) == [0, 1, 2]
    assert [w.filename for w in record] == [__file__]


def _private_memory_growth_of_a_full_collection() -> int:
    import gc

    import psutil

    before = psutil.Process().memory_full_info().uss
    gc.collect()
    return psutil.Process().memory_full_info().uss - before


@pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning")
def test_a_forked_worker_collecting_garbage_does_not_copy_the_parents_heap():
    """A full collection visits every object it tracks. In a forked worker that would write
    to (and so copy) every page of the parent's heap it inherited: ~50 MB here."""
    heap = [{"n": i, "items": [i]} for i in range(200_000)]
    with WorkerPool(n_jobs=1, start_method="fork") as pool:
        grown = pool.apply(_private_memory_growth_of_a_full_collection)
    assert len(heap) == 200_000
    assert grown < 10 * 2**20, f"the worker's private memory grew by {grown / 2**20:.0f} MB"
