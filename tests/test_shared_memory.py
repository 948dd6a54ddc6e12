"""Numpy data through shared memory: the same results as the pickled path, and nothing left.

Every comparison runs the same call twice, with ``use_shared_memory`` on and off, on real
worker processes. The leak checks count this process's shared-memory descriptors and mappings
(nbpool's segments are anonymous memory files named "nbpool") and the entries in /dev/shm.
"""

from __future__ import annotations

import copy
import gc
import os
import signal
import time

import numpy as np
import pytest

from nbpool import WorkerPool
from nbpool.engine import shm
from nbpool.engine.errors import WorkerDiedError

pytestmark = [
    pytest.mark.skipif(not shm.supported(), reason="no memfd_create on this platform"),
    pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning"),
]

LARGE = 20_000  # float64 elements: 160 KB, above the shared-memory threshold
HANG_GUARD = 60


# ---- helpers ----------------------------------------------------------------------------------
def segment_fds() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if "memfd:nbpool" in os.readlink(f"/proc/self/fd/{name}"):
                count += 1
        except OSError:
            pass
    return count


def segment_mappings() -> int:
    with open("/proc/self/maps") as maps:
        return sum("memfd:nbpool" in line for line in maps)


def dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


class NoSegmentLeft:
    """Asserts that a block leaves no segment descriptor, mapping or /dev/shm entry behind."""

    def __enter__(self):
        gc.collect()
        self.fds, self.maps, self.shm = segment_fds(), segment_mappings(), dev_shm()
        return self

    def __exit__(self, *exc_info):
        gc.collect()
        assert segment_fds() == self.fds
        assert segment_mappings() == self.maps
        assert dev_shm() <= self.shm
        return False


def root_of(array) -> str:
    """Where an array's memory lives: 'segment' for a mapping of an nbpool shared-memory
    segment, else the type of the object that owns it (e.g. 'bytearray' for a pickle)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "memfd:nbpool" in line:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if start <= address < end:
                    return "segment"
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    if isinstance(array, memoryview):
        array = array.obj
    return type(array).__name__


def arrays(n: int, size: int = LARGE, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(size) for _ in range(n)]


def both(call):
    """``call(pool)`` with shared memory on and off; returns both outcomes (as private
    copies: the originals, and with them every segment, are gone when this returns)."""
    out = []
    for enabled in (True, False):
        with NoSegmentLeft():
            with WorkerPool(n_jobs=2, use_shared_memory=enabled) as pool:
                outcome = call(pool)
            out.append(copy.deepcopy(outcome))
            del outcome
    return out


def assert_same(a, b) -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


# ---- task functions ---------------------------------------------------------------------------
def total(a):
    return float(a.sum())


def double(a):
    return a * 2


def where_is(a):
    return root_of(a), a.flags.writeable


def where_is_result(a):
    return a.copy()


def pair(a, b):
    return a + b, float(b.sum())


def grow(a):
    """Results of another length and dtype than the input: the output cannot be guessed."""
    return np.arange(int(a[0] * 10) + 1, dtype=np.int32 if a[0] < 0.5 else np.int64)


def scribble(a):
    a[:] = -1.0  # copy-on-write: the parent's array must not change
    return float(a.sum())


def keep_view(worker_state, a):
    """Keeps a view of the first argument it sees and checks it never changes."""
    if "kept" not in worker_state:
        worker_state["kept"] = a[:100]
        worker_state["expected"] = a[:100].copy()
    intact = bool(np.array_equal(worker_state["kept"], worker_state["expected"]))
    return intact, float(a.sum())


def slow_first(a):
    if a[0] == 0:
        time.sleep(0.5)
    return a + 1


def kill_on_third(a):
    if a[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return a * 2


def fail_on_third(a):
    if a[0] == 3:
        raise ValueError("third")
    return a * 2


def sleepy_double(a):
    time.sleep(0.05)
    return a * 2


def use_shared(shared, i):
    big = shared["big"]
    return root_of(big), float(big[i]), float(big.sum())


def numbered(n: int) -> list[np.ndarray]:
    return [np.full(LARGE, float(i)) for i in range(n)]


# ---- the fast path is taken, and only when enabled --------------------------------------------
def test_workers_see_shared_memory_views_only_when_enabled():
    on, off = both(lambda pool: pool.map(where_is, arrays(4), chunk_size=1))
    assert on == [("segment", True)] * 4  # zero-copy, and writable like a private copy
    assert [root for root, _ in off] == ["bytearray"] * 4
    assert all(writable for _, writable in off)


def test_results_arrive_as_shared_memory_views_only_when_enabled():
    on, off = both(lambda pool: [root_of(r) for r in pool.imap(where_is_result, arrays(3))])
    assert on == ["segment"] * 3
    assert off == ["bytearray"] * 3


def test_small_arrays_stay_in_the_pickle():
    on, _ = both(lambda pool: pool.map(where_is, arrays(3, size=100), chunk_size=1))
    assert [root for root, _ in on] == ["bytearray"] * 3


# ---- same results as the pickled path ---------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_map_numpy_arguments_and_results(chunk_size):
    data = arrays(17)
    sums = both(lambda pool: pool.map(total, data, chunk_size=chunk_size))
    assert_same(*sums)
    assert sums[0] == [float(a.sum()) for a in data]
    doubled = both(lambda pool: pool.map(double, data, chunk_size=chunk_size))
    assert_same(*doubled)
    assert_same(doubled[0], np.concatenate([a * 2 for a in data]))


def test_map_numpy_array_input_blocks():
    data = np.random.default_rng(3).random((5000, 40))
    on, off = both(lambda pool: pool.map(double, data))
    assert_same(on, off)
    assert_same(on, data * 2)
    on, off = both(lambda pool: pool.map(double, data, concatenate_numpy_output=False,
                                         chunk_size=700))
    assert_same(on, off)
    assert [len(block) for block in on] == [700] * 7 + [100]


def test_imap_and_unordered_keep_order_and_content():
    data = arrays(12)
    on, off = both(lambda pool: list(pool.imap(double, data, chunk_size=2)))
    assert_same(on, off)
    assert_same(on, [a * 2 for a in data])
    on, off = both(lambda pool: sorted(pool.map_unordered(total, data), key=float))
    assert on == off == sorted(float(a.sum()) for a in data)


def test_ordered_results_that_arrive_out_of_order():
    data = numbered(150)  # chunk 0 is slow: every later chunk waits for it, in shared memory
    on, off = both(lambda pool: list(pool.imap(slow_first, data, chunk_size=1)))
    assert_same(on, off)
    assert_same(on, [a + 1 for a in data])


def test_tuple_arguments_and_tuple_results():
    left, right = arrays(6, seed=1), arrays(6, seed=2)
    on, off = both(lambda pool: pool.map(pair, list(zip(left, right))))
    assert_same(on, off)
    assert_same(on, [(a + b, float(b.sum())) for a, b in zip(left, right)])


def test_results_of_varying_length_and_dtype_concatenate_like_numpy():
    data = [np.full(LARGE, v) for v in (0.9, 0.2, 0.7, 0.1, 2.5)]
    on, off = both(lambda pool: pool.map(grow, data))
    expected = np.concatenate([grow(a) for a in data])
    assert_same(on, off)
    assert_same(on, expected)


def test_non_contiguous_and_read_only_arguments():
    matrix = np.random.default_rng(4).random((LARGE, 4))
    columns = [matrix[:, i] for i in range(4)]  # strided: pickled in-band
    frozen = arrays(3)
    for a in frozen:
        a.flags.writeable = False
    on, off = both(lambda pool: pool.map(total, columns + frozen))
    assert on == off == [float(a.sum()) for a in columns + frozen]
    on, off = both(lambda pool: pool.map(where_is, frozen, chunk_size=1))
    assert on == [("segment", False)] * 3  # read-only stays read-only
    assert [writable for _, writable in off] == [False] * 3


def test_workers_write_to_their_copy_only():
    data = arrays(4)
    before = [a.copy() for a in data]
    on, off = both(lambda pool: pool.map(scribble, data, chunk_size=1))
    assert on == off == [-float(LARGE)] * 4
    for a, b in zip(data, before):
        np.testing.assert_array_equal(a, b)


def test_a_view_kept_by_a_task_is_never_overwritten():
    data = arrays(40)
    for enabled in (True, False):
        with NoSegmentLeft(), WorkerPool(n_jobs=2, use_worker_state=True,
                                         use_shared_memory=enabled) as pool:
            out = pool.map(keep_view, data, chunk_size=1)
        assert all(intact for intact, _ in out)
        assert [s for _, s in out] == [float(a.sum()) for a in data]


def test_apply_with_numpy_arguments_and_results():
    data = arrays(2)
    on, off = both(lambda pool: pool.apply(pair, (data[0], data[1])))
    assert_same(on, off)
    assert_same(on, (data[0] + data[1], float(data[1].sum())))


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_shared_objects_arrays(start_method):
    shared = {"big": np.arange(LARGE, dtype=float)}
    outcomes = []
    for enabled in (True, False):
        with NoSegmentLeft(), WorkerPool(n_jobs=2, shared_objects=shared,
                                         start_method=start_method,
                                         use_shared_memory=enabled) as pool:
            outcomes.append(pool.map(use_shared, [1, 5, LARGE - 1], chunk_size=1))
    on, off = outcomes
    assert [v[1:] for v in on] == [v[1:] for v in off] == [
        (1.0, float(shared["big"].sum())), (5.0, float(shared["big"].sum())),
        (float(LARGE - 1), float(shared["big"].sum()))]
    if start_method == "fork":
        assert {v[0] for v in on} == {"ndarray"}  # inherited copy-on-write, nothing to send
    else:
        assert {v[0] for v in on} == {"segment"}
        assert {v[0] for v in off} == {"bytearray"}


@pytest.mark.parametrize("start_method", ["forkserver", "threading"])
def test_other_start_methods(start_method):
    data = arrays(5)
    outcomes = []
    for enabled in (True, False):
        with NoSegmentLeft(), WorkerPool(n_jobs=2, start_method=start_method,
                                         use_shared_memory=enabled) as pool:
            outcomes.append((pool.map(double, data), pool.map(total, data)))
    assert_same(*outcomes)
    assert_same(outcomes[0][0], np.concatenate([a * 2 for a in data]))


def test_keep_alive_pool_reuses_segments_across_maps():
    data = arrays(8)
    with NoSegmentLeft():
        with WorkerPool(n_jobs=2, keep_alive=True) as pool:
            for _ in range(5):
                assert_same(pool.map(double, data), np.concatenate([a * 2 for a in data]))
            pool.stop_and_join()


# ---- nothing is left behind -------------------------------------------------------------------
def test_results_kept_by_the_caller_keep_their_memory_until_dropped():
    with NoSegmentLeft():
        with WorkerPool(n_jobs=2) as pool:
            kept = list(pool.imap(double, arrays(6)))
        assert segment_mappings() > 0  # the results still live in their segments ...
        del kept  # ... and the memory goes with the last result


@pytest.mark.timeout(HANG_GUARD)
def test_no_leak_after_a_task_error():
    with NoSegmentLeft():
        with WorkerPool(n_jobs=2) as pool:
            with pytest.raises(ValueError, match="third"):
                pool.map(fail_on_third, numbered(20), chunk_size=1)
            assert_same(pool.map(double, arrays(3)), np.concatenate([a * 2 for a in arrays(3)]))


@pytest.mark.timeout(HANG_GUARD)
def test_no_leak_after_a_killed_worker():
    with NoSegmentLeft():
        with WorkerPool(n_jobs=2) as pool:
            with pytest.raises(WorkerDiedError):
                pool.map(kill_on_third, numbered(20), chunk_size=1)


@pytest.mark.timeout(HANG_GUARD)
def test_no_leak_after_terminate_mid_imap():
    with NoSegmentLeft():
        pool = WorkerPool(n_jobs=2)
        results = pool.imap(sleepy_double, numbered(40), chunk_size=1)
        first = next(results)
        pool.terminate()
        results.close()
        del results
        np.testing.assert_array_equal(first, np.zeros(LARGE))
        del first


@pytest.mark.timeout(HANG_GUARD)
def test_no_leak_after_keyboard_interrupt():
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with NoSegmentLeft():
            with WorkerPool(n_jobs=2) as pool:
                signal.setitimer(signal.ITIMER_REAL, 0.3)  # Ctrl-C while the map waits
                with pytest.raises(KeyboardInterrupt):
                    pool.map(sleepy_double, numbered(100), chunk_size=1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---- the output array of map ------------------------------------------------------------------
@pytest.mark.parametrize("parts", [
    [[np.ones(3), np.zeros(3)], [np.arange(3.0)]],  # uniform
    [[np.ones(3)], [np.zeros(5)], [np.arange(2.0)]],  # lengths vary
    [[np.ones((2, 3))], [np.zeros((2, 3))]],  # 2-D rows
    [[np.ones(3)], [np.zeros(3, dtype=np.int64)]],  # dtype changes: numpy promotes
    [[np.ones(3)], [np.zeros((3, 1))]],  # row shape changes: numpy raises
    [[np.asfortranarray(np.ones((3, 2)))], [np.ones((3, 2))]],  # layout numpy may keep
    [[np.float64(1.0)], [np.float64(2.0)]],  # numpy scalars are no arrays
    [[np.array(1.0)], [np.array(2.0)]],  # 0-d: numpy raises
    [[np.ones(3)], [[1.0, 2.0]]],  # a list among arrays
    [[]],
    [[], [np.ones(3)], [np.zeros(3)]],  # an empty part first
])
@pytest.mark.parametrize("expected_results", ["exact", "more", "fewer", None])
def test_map_output_equals_numpy_concatenate(parts, expected_results):
    from nbpool.map_output import MapOutput

    flat = [value for part in parts for value in part]
    expected = {"exact": len(flat), "more": len(flat) + 3, "fewer": max(0, len(flat) - 1),
                None: None}[expected_results]
    try:
        reference = np.concatenate(flat) if flat and type(flat[0]) is np.ndarray else flat
    except ValueError as exc:
        reference = exc
    output = MapOutput(True, expected)
    for part in parts:
        output.add(part)
    if isinstance(reference, ValueError):
        with pytest.raises(ValueError):
            output.result()
        return
    got = output.result()
    if isinstance(reference, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.dtype == reference.dtype and got.shape == reference.shape
        np.testing.assert_array_equal(got, reference)
    else:
        assert got == reference
    plain = MapOutput(False, expected)
    for part in parts:
        plain.add(part)
    assert len(plain.result()) == len(flat)
