"""Every example of mpire's "Map family" page (/work/shared/reference/map-family.txt), run with
``nbpool`` in place of ``mpire``, asserting the behaviour the page describes.

Sizes are kept small where the page's own sizes would only cost time; the two "never run this
to completion" examples (``range(int(1e30))`` and ``range(int(1e300))``) are streamed with
``imap`` and abandoned after the first results.
"""

from __future__ import annotations

import inspect
import itertools
import re
import warnings

import numpy as np
import pytest

from nbpool import WorkerPool
from nbpool.utils import chunk_tasks, make_single_arguments
# the page's functions: a module of their own, which spawn and forkserver workers import fast
from page_tasks import (
    add_five,
    dispatcher,
    dispatcher_with_option,
    exit_func,
    init_func,
    multiply,
    multiply_dict,
    sleep_and_square,
    square,
    square_and_count_even,
    wid_and_square,
)

pytestmark = pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning")

DURATION = re.compile(r"^\d+:\d\d:\d\d(\.\d{3})?$")

INSIGHTS_KEYS = {
    "n_completed_tasks",
    "total_start_up_time",
    "total_init_time",
    "total_waiting_time",
    "total_working_time",
    "total_exit_time",
    "total_time",
    "start_up_time",
    "start_up_time_mean",
    "start_up_time_std",
    "start_up_ratio",
    "init_time",
    "init_time_mean",
    "init_time_std",
    "init_ratio",
    "waiting_time",
    "waiting_time_mean",
    "waiting_time_std",
    "waiting_ratio",
    "working_time",
    "working_time_mean",
    "working_time_std",
    "working_ratio",
    "exit_time",
    "exit_time_mean",
    "exit_time_std",
    "exit_ratio",
    "top_5_max_task_durations",
    "top_5_max_task_args",
}
PHASES = ("start_up", "init", "waiting", "working", "exit")


# ---- helpers ----------------------------------------------------------------------------------
def observed_chunk_sizes(iterable, n_jobs=4, pool=None, **map_kwargs):
    """Run ``square`` with ``order_tasks`` (chunk i goes to worker i % n_jobs) and read the chunk
    boundaries back from the worker ids: consecutive chunks land on different workers, so every
    run of equal worker ids is exactly one chunk. ``pool``: one made with ``pass_worker_id``
    and ``order_tasks``, instead of a new one."""
    if pool is None:
        with WorkerPool(n_jobs=n_jobs, pass_worker_id=True, order_tasks=True) as pool:
            out = pool.map(wid_and_square, iterable, **map_kwargs)
    else:
        out = pool.map(wid_and_square, iterable, **map_kwargs)
    sizes = [len(list(run)) for _, run in itertools.groupby(w for w, _ in out)]
    return [r for _, r in out], sizes


def runtime_warnings(record):
    return [w for w in record if issubclass(w.category, RuntimeWarning)]


def check_insights(insights, n_jobs, n_tasks):
    assert set(insights) == INSIGHTS_KEYS
    assert len(insights["n_completed_tasks"]) == n_jobs
    assert all(isinstance(n, int) for n in insights["n_completed_tasks"])
    assert sum(insights["n_completed_tasks"]) == n_tasks
    for phase in PHASES:
        per_worker = insights[f"{phase}_time"]
        assert isinstance(per_worker, list) and len(per_worker) == n_jobs
        for text in per_worker:
            assert DURATION.match(text), (phase, text)
        for key in (f"total_{phase}_time", f"{phase}_time_mean", f"{phase}_time_std"):
            assert isinstance(insights[key], str) and DURATION.match(insights[key]), key
        ratio = insights[f"{phase}_ratio"]
        assert isinstance(ratio, float), (phase, ratio)
        assert 0.0 <= ratio <= 1.0
    assert DURATION.match(insights["total_time"])
    # the ratios are each part's share of the total time
    assert sum(insights[f"{phase}_ratio"] for phase in PHASES) == pytest.approx(1.0, abs=1e-6)
    durations = insights["top_5_max_task_durations"]
    args = insights["top_5_max_task_args"]
    assert len(durations) == len(args) == min(5, n_tasks)
    for text in durations:
        assert DURATION.match(text), text
    for text in args:
        match = re.match(r"^Arg 0: (\d+)$", text)
        assert match, text
        assert 0 <= int(match.group(1)) < n_tasks


def _as_seconds(text):
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


# ---- map family of functions ------------------------------------------------------------------
def test_example_1_square_range():
    with WorkerPool(n_jobs=4) as pool:
        # 1. Square the numbers, results should be: [0, 1, 4, 9, 16, 25, ...]
        results = pool.map(square, range(100))
    assert results[:6] == [0, 1, 4, 9, 16, 25]
    assert results == [x * x for x in range(100)]


@pytest.mark.timeout(60)
def test_example_2_huge_range_with_iterable_len_streams():
    # the page says "don't execute this": len(range(int(1e30))) overflows, so iterable_len is
    # needed. Take the first results lazily and leave; the pool must not try to read it all.
    with pytest.raises(OverflowError):
        len(range(int(1e30)))
    with WorkerPool(n_jobs=4) as pool:
        results = pool.imap(square, range(int(1e30)), iterable_len=int(1e30), chunk_size=1)
        first = list(itertools.islice(results, 25))
        assert first[:6] == [0, 1, 4, 9, 16, 25]
        assert first == [x * x for x in range(25)]
    # leaving the with block terminated the pool; closing the abandoned generator is harmless
    results.close()


@pytest.mark.timeout(60)
def test_example_2_break_out_of_for_loop():
    with WorkerPool(n_jobs=4) as pool:
        seen = []
        for result in pool.imap(square, range(int(1e30)), iterable_len=int(1e30), chunk_size=1):
            seen.append(result)
            if len(seen) == 10:
                break
    assert seen == [x * x for x in range(10)]


def test_example_3_multiple_arguments_zip():
    with WorkerPool(n_jobs=4) as pool:
        # 3. Multiply the numbers, results should be [0, 101, 204, 309, 416, ...]
        results = []
        for result in pool.imap(multiply, zip(range(100), range(100, 200)), iterable_len=100):
            results.append(result)
    assert results[:5] == [0, 101, 204, 309, 416]
    assert results == [x * (x + 100) for x in range(100)]


def test_example_4_dicts_are_unpacked_as_kwargs():
    # keys in either order: they are passed by name
    args = [{"x": i, "y": 100 + i} if i % 2 == 0 else {"y": 100 + i, "x": i} for i in range(30)]
    with WorkerPool(n_jobs=4) as pool:
        # 4. Multiply the numbers, results should be [0, 101, ...]
        results = [result for result in pool.imap(multiply, args)]
    assert results[:2] == [0, 101]
    assert results == [i * (100 + i) for i in range(30)]


def test_example_4_ordered_dicts():
    from collections import OrderedDict

    args = [OrderedDict([("y", 100 + i), ("x", i)]) for i in range(10)]
    with WorkerPool(n_jobs=2) as pool:
        assert pool.map(multiply, args) == [i * (100 + i) for i in range(10)]


def _dict_args(n):
    return [{"x": i, "y": 100 + i} if i % 2 == 0 else {"y": 100 + i, "x": i} for i in range(n)]


def test_dicts_passed_whole_as_single_argument_tuples():
    with WorkerPool(n_jobs=4) as pool:
        # Multiply the numbers, results should be [0, 101, ...]
        results = list(pool.imap(multiply_dict, [(d,) for d in _dict_args(20)]))
    assert results[:2] == [0, 101]
    assert results == [i * (100 + i) for i in range(20)]


def test_make_single_arguments_list():
    dicts = _dict_args(20)
    wrapped = make_single_arguments(dicts, generator=False)
    assert isinstance(wrapped, list)
    assert wrapped == [(d,) for d in dicts]
    with WorkerPool(n_jobs=4) as pool:
        results = [r for r in pool.imap(multiply_dict,
                                        make_single_arguments(dicts, generator=False))]
    assert results == [i * (100 + i) for i in range(20)]


def test_make_single_arguments_generator():
    dicts = _dict_args(20)
    wrapped = make_single_arguments(dicts, generator=True)
    assert inspect.isgenerator(wrapped)
    assert list(wrapped) == [(d,) for d in dicts]
    # "If we would like to return a generator we would need to pass on the iterable length"
    with WorkerPool(n_jobs=4) as pool:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            results = list(pool.imap(multiply_dict, make_single_arguments(dicts, generator=True),
                                     iterable_len=len(dicts)))
    assert runtime_warnings(record) == []
    assert results == [i * (100 + i) for i in range(20)]


def test_make_single_arguments_default_is_generator():
    assert inspect.isgenerator(make_single_arguments([1, 2, 3]))


# ---- task chunking ----------------------------------------------------------------------------
def test_task_chunking_examples():
    expected = [x * x for x in range(1000)]
    with WorkerPool(n_jobs=4) as pool:
        # 1. This will issue a warning and sets the chunk size to 1
        with pytest.warns(RuntimeWarning):
            results = pool.map(square, ((x,) for x in range(1000)))
        assert results == expected

        # 2. This will issue a warning as well and sets the chunk size to 1
        with pytest.warns(RuntimeWarning):
            results = pool.map(square, ((x,) for x in range(1000)), n_splits=4)
        assert results == expected

        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            # 3. Square the numbers using a generator using a specific number of splits
            results = pool.map(square, ((x,) for x in range(1000)), iterable_len=1000, n_splits=4)
            assert results == expected
            # 4. Square the numbers using a generator using automatic chunking
            results = pool.map(square, ((x,) for x in range(1000)), iterable_len=1000)
            assert results == expected
            # 5. Square the numbers using a generator using a fixed chunk size
            results = pool.map(square, ((x,) for x in range(1000)), chunk_size=4)
            assert results == expected
        assert runtime_warnings(record) == []


def test_unknown_length_warns_for_every_map_function():
    with WorkerPool(n_jobs=2) as pool:
        for name in ("map", "map_unordered", "imap", "imap_unordered"):
            with pytest.warns(RuntimeWarning):
                out = getattr(pool, name)(square, ((x,) for x in range(20)))
                out = list(out)
            assert sorted(out) == [x * x for x in range(20)], name


def test_task_chunking_unknown_length_uses_chunk_size_1():
    with pytest.warns(RuntimeWarning):
        results, sizes = observed_chunk_sizes(((x,) for x in range(1000)))
    assert results == [x * x for x in range(1000)]
    assert sizes == [1] * 1000
    with pytest.warns(RuntimeWarning):
        results, sizes = observed_chunk_sizes(((x,) for x in range(1000)), n_splits=4)
    assert sizes == [1] * 1000


def test_task_chunking_n_splits_4_gives_4_chunks():
    results, sizes = observed_chunk_sizes(((x,) for x in range(1000)), iterable_len=1000,
                                          n_splits=4)
    assert results == [x * x for x in range(1000)]
    assert sizes == [250] * 4


def test_task_chunking_default_is_64_chunks_per_worker():
    # "The fourth example uses 256 chunks (the default 64 times the number of workers)".
    # Chunk boundaries are visible here through order_tasks, which keeps the documented plan
    # exactly (nbpool adapts automatic chunk sizes only where no boundary can be observed).
    results, sizes = observed_chunk_sizes(((x,) for x in range(1000)), iterable_len=1000)
    assert results == [x * x for x in range(1000)]
    assert sum(sizes) == 1000
    assert len(sizes) == 256
    assert set(sizes) <= {3, 4}


def test_task_chunking_fixed_chunk_size():
    results, sizes = observed_chunk_sizes(((x,) for x in range(1000)), chunk_size=4)
    assert results == [x * x for x in range(1000)]
    assert sizes == [4] * 250


def test_chunk_tasks_outputs_as_printed():
    # Convert to list because chunk_tasks returns a generator
    assert inspect.isgenerator(chunk_tasks(range(10), n_splits=3))
    assert list(chunk_tasks(range(10), n_splits=3)) == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]
    assert list(chunk_tasks(range(10), chunk_size=2.5)) == [(0, 1, 2), (3, 4), (5, 6, 7), (8, 9)]
    assert list(chunk_tasks((x for x in range(10)), iterable_len=10, n_splits=6)) == [
        (0, 1), (2, 3), (4,), (5, 6), (7, 8), (9,)
    ]
    # the printed form, character for character
    assert str(list(chunk_tasks(range(10), n_splits=3))) == "[(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]"
    assert str(list(chunk_tasks(range(10), chunk_size=2.5))) == (
        "[(0, 1, 2), (3, 4), (5, 6, 7), (8, 9)]")
    assert str(list(chunk_tasks((x for x in range(10)), iterable_len=10, n_splits=6))) == (
        "[(0, 1), (2, 3), (4,), (5, 6), (7, 8), (9,)]"
    )


# ---- numpy arrays -----------------------------------------------------------------------------
@pytest.fixture
def arr():
    # Create random array
    return np.random.default_rng(1234).random((10, 3))


def test_numpy_chunking_gives_row_blocks(arr):
    chunk_size = 3
    # naive islice chunking would give lists of 1-D rows ...
    arr_iter = iter(arr)
    naive = list(itertools.islice(arr_iter, chunk_size))
    assert isinstance(naive, list) and naive[0].shape == (3,)
    # ... chunk_tasks slices the array instead
    chunks = list(chunk_tasks(arr, chunk_size=chunk_size))
    assert len(chunks) == 4
    for chunk in chunks:
        assert isinstance(chunk, np.ndarray)
        assert chunk.ndim == 2
    assert [c.shape for c in chunks] == [(3, 3), (3, 3), (3, 3), (1, 3)]
    for i, chunk in enumerate(chunks):
        np.testing.assert_array_equal(chunk, arr[3 * i : 3 * i + 3])
    np.testing.assert_array_equal(np.concatenate(chunks), arr)


def test_numpy_map_concatenates_output(arr):
    chunk_size = 3
    with WorkerPool(n_jobs=4) as pool:
        results = pool.map(add_five, arr, chunk_size=chunk_size)
    assert isinstance(results, np.ndarray)
    assert results.shape == (10, 3)
    np.testing.assert_array_equal(results, arr + 5)


def test_numpy_map_concatenate_numpy_output_false(arr):
    chunk_size = 3
    with WorkerPool(n_jobs=4) as pool:
        results = pool.map(add_five, arr, chunk_size=chunk_size, concatenate_numpy_output=False)
    assert isinstance(results, list)
    assert len(results) == 4
    assert all(isinstance(r, np.ndarray) for r in results)
    assert [r.shape for r in results] == [(3, 3), (3, 3), (3, 3), (1, 3)]
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r, arr[3 * i : 3 * i + 3] + 5)


def test_numpy_map_default_chunking_concatenates(arr):
    with WorkerPool(n_jobs=2) as pool:
        results = pool.map(add_five, arr)
    assert results.shape == (10, 3)
    np.testing.assert_array_equal(results, arr + 5)


# ---- maximum number of active tasks -----------------------------------------------------------
@pytest.mark.timeout(30)
def test_max_tasks_active_huge_range_streams():
    n_take = 300_000
    with WorkerPool(n_jobs=4) as pool:
        # Square the numbers using a generator
        results = pool.imap(square, range(int(1e300)), iterable_len=int(1e300),
                            chunk_size=int(1e5), max_tasks_active=2 * 4)
        taken = list(itertools.islice(results, n_take))
    assert len(taken) == n_take
    assert taken == [x * x for x in range(n_take)]
    results.close()


@pytest.mark.timeout(20)
def test_max_tasks_active_bounds_how_far_the_input_is_read():
    """The generator of tasks is only iterated to keep max_tasks_active tasks active."""
    pulled = 0

    def tasks():
        nonlocal pulled
        for x in range(200):
            pulled += 1
            yield x

    max_active, chunk_size = 8, 1
    with WorkerPool(n_jobs=4) as pool:
        consumed = 0
        worst = 0
        for result in pool.imap(square, tasks(), iterable_len=200, chunk_size=chunk_size,
                                max_tasks_active=max_active):
            assert result == consumed * consumed
            consumed += 1
            worst = max(worst, pulled - consumed)
    assert consumed == 200
    # at most max_tasks_active tasks out, plus one chunk read ahead
    assert worst <= max_active + chunk_size


# ---- worker lifespan --------------------------------------------------------------------------
# Every new worker process started by a forkserver imports this test module (and with it
# pytest, ~0.15 s); the tests that restart workers dozens of times fork instead, so that a
# restart costs milliseconds. The behaviour under test does not depend on the start method.
LIFESPAN_START_METHOD = "fork"


def test_worker_lifespan_example():
    with WorkerPool(n_jobs=4, start_method=LIFESPAN_START_METHOD) as pool:
        results = pool.map(square, range(100), worker_lifespan=1, chunk_size=1)
    assert results == [x * x for x in range(100)]


def _count_init(worker_state):
    worker_state["n"] = 0


def _count_square(worker_state, x):
    worker_state["n"] += 1
    return x * x


def _count_exit(worker_state):
    return worker_state["n"]


def _tasks_per_life(n_jobs: int, chunk_size: int) -> list[int]:
    """With worker_lifespan=1, each exit result counts the tasks of one worker's life."""
    with WorkerPool(n_jobs=n_jobs, use_worker_state=True,
                    start_method=LIFESPAN_START_METHOD) as pool:
        results = pool.map(_count_square, range(40), worker_lifespan=1, chunk_size=chunk_size,
                           worker_init=_count_init, worker_exit=_count_exit)
        exits = pool.get_exit_results()
    assert results == [x * x for x in range(40)]
    return exits


def test_worker_lifespan_1_restarts_after_every_task():
    # "each worker is restarted after finishing a single task": one exit per task, each after 1
    assert _tasks_per_life(n_jobs=4, chunk_size=1) == [1] * 40


def test_worker_lifespan_finishes_the_current_chunk():
    # "a worker will finish the current chunk of tasks before restarting"
    assert _tasks_per_life(n_jobs=2, chunk_size=4) == [4] * 10


# ---- progress bar -----------------------------------------------------------------------------
def test_progress_bar(capfd):
    with WorkerPool(n_jobs=4) as pool:
        results = pool.map(square, range(100), progress_bar=True)
    assert results == [x * x for x in range(100)]
    err = capfd.readouterr().err
    assert "100/100" in err


def test_progress_bar_every_map_function(capfd):
    with WorkerPool(n_jobs=2) as pool:
        for name in ("map_unordered", "imap", "imap_unordered"):
            out = list(getattr(pool, name)(square, range(50), progress_bar=True))
            assert sorted(out) == [x * x for x in range(50)]
            err = capfd.readouterr().err
            assert "50/50" in err, name


def test_nbpool_exports_tqdm():
    from tqdm.std import tqdm as std_tqdm

    from nbpool import tqdm

    # (not instantiated: the first tqdm bar of a process starts tqdm's monitor thread)
    assert isinstance(tqdm, type) and issubclass(tqdm, std_tqdm)


# a bar drawn at terminal row p is followed by tqdm's p cursor-up codes (ESC [ A)
_BAR_AND_MOVES_UP = re.compile(r"\r[^\r\n\x1b]*\d+%\|[^\r\n\x1b]*((?:\x1b\[A)*)")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("nested", ["progress_bar_position", "progress_bar_options"])
def test_nested_pools_with_progress_bar_positions(capfd, nested):
    task = dispatcher if nested == "progress_bar_position" else dispatcher_with_option

    def main():
        # spawn: workers of a forkserver started by an earlier test would write to the stderr
        # that test captured
        with WorkerPool(n_jobs=2, daemon=False, pass_worker_id=True,
                        start_method="spawn") as pool:
            return pool.map(task, ((range(x, x + 20),) for x in range(8)), iterable_len=8,
                            n_splits=2, progress_bar=True)

    results = main()
    assert results == [[y * y for y in range(x, x + 20)] for x in range(8)]
    err = capfd.readouterr().err
    assert "8/8" in err
    # the main bar at row 0, the nested bars at rows 1 and 2 (worker_id + 1); the two nested
    # pools write to the same stderr, so a display may be split, and the moves up of two
    # displays that land back to back merge (1 + 2 reads as 3): some display of each row
    rows = {len(moves) // len("\x1b[A") for moves in _BAR_AND_MOVES_UP.findall(err)}
    assert {0, 1, 2} <= rows <= {0, 1, 2, 3, 4}, repr(err)


# ---- worker init and exit ---------------------------------------------------------------------
def test_worker_init_and_exit_example():
    n_jobs = 2
    with WorkerPool(n_jobs=n_jobs, use_worker_state=True, enable_insights=True) as pool:
        results = pool.map(square_and_count_even, range(100), worker_init=init_func,
                           worker_exit=exit_func)
        exit_results = pool.get_exit_results()
        workers_that_ran = sum(1 for n in pool.get_insights()["n_completed_tasks"] if n > 0)
    assert results == [x**x for x in range(100)]
    assert sum(exit_results) == 50
    assert 1 <= workers_that_ran <= n_jobs
    assert len(exit_results) == workers_that_ran


def test_worker_init_and_exit_example_four_workers():
    with WorkerPool(n_jobs=4, use_worker_state=True) as pool:
        pool.map(square_and_count_even, range(100), worker_init=init_func, worker_exit=exit_func)
        exit_results = pool.get_exit_results()
    assert sum(exit_results) == 50  # Output: 50
    assert 1 <= len(exit_results) <= 4


def _full_init(worker_id, shared, worker_state):
    worker_state["wid"] = worker_id
    worker_state["k"] = shared["k"]
    worker_state["n"] = 0


def _full_task(worker_id, shared, worker_state, x):
    assert worker_state["wid"] == worker_id
    worker_state["n"] += 1
    return x + shared["k"]


def _full_exit(worker_id, shared, worker_state):
    return worker_id, worker_state["wid"], worker_state["n"], shared["k"]


def test_init_and_exit_receive_worker_id_shared_objects_and_state():
    # "Both init and exit functions receive the worker ID, shared objects, and worker state in
    # the same way as the task function does"
    with WorkerPool(n_jobs=2, pass_worker_id=True, shared_objects={"k": 10},
                    use_worker_state=True) as pool:
        results = pool.map(_full_task, range(20), worker_init=_full_init, worker_exit=_full_exit)
        exits = pool.get_exit_results()
    assert results == [x + 10 for x in range(20)]
    assert sum(n for _, _, n, _ in exits) == 20
    for worker_id, state_wid, _, k in exits:
        assert worker_id == state_wid
        assert worker_id in (0, 1)
        assert k == 10


def test_keep_alive_exit_functions_run_only_at_stop_and_join():
    with WorkerPool(n_jobs=2, use_worker_state=True, keep_alive=True) as pool:
        pool.map(square_and_count_even, range(100), worker_init=init_func, worker_exit=exit_func)
        assert pool.get_exit_results() == []
        # the same workers (and their state) serve the next map
        pool.map(square_and_count_even, range(100), worker_init=init_func, worker_exit=exit_func)
        assert pool.get_exit_results() == []
        pool.stop_and_join()
        exit_results = pool.get_exit_results()
    assert 1 <= len(exit_results) <= 2
    assert sum(exit_results) == 100


# ---- worker insights --------------------------------------------------------------------------
def test_insights_enabled_in_map():
    with WorkerPool(n_jobs=4) as pool:
        pool.map(sleep_and_square, range(100), enable_insights=True)
        insights = pool.get_insights()
    check_insights(insights, n_jobs=4, n_tasks=100)
    # sorted on task duration (desc); index i of args belongs to index i of durations
    durations = [_as_seconds(t) for t in insights["top_5_max_task_durations"]]
    assert durations == sorted(durations, reverse=True)
    assert len(set(insights["top_5_max_task_args"])) == 5


def test_insights_enabled_in_constructor():
    with WorkerPool(n_jobs=4, enable_insights=True) as pool:
        results = pool.map(square, range(100))
        insights = pool.get_insights()
    assert results == [x * x for x in range(100)]
    check_insights(insights, n_jobs=4, n_tasks=100)


def test_print_insights(capsys):
    with WorkerPool(n_jobs=2) as pool:
        pool.map(square, range(100), enable_insights=True)
        capsys.readouterr()
        pool.print_insights()
    out = capsys.readouterr().out
    assert out.strip() != ""


def test_insights_during_imap(capsys):
    with WorkerPool(n_jobs=2, enable_insights=True) as pool:
        seen = 0
        during = None
        for i, result in enumerate(pool.imap(square, range(100), chunk_size=5)):
            assert result == i * i
            seen += 1
            if i == 50:
                during = pool.get_insights()
                capsys.readouterr()
                pool.print_insights()
                printed = capsys.readouterr().out
        after = pool.get_insights()
    assert seen == 100
    assert set(during) == INSIGHTS_KEYS
    assert 51 <= sum(during["n_completed_tasks"]) <= 100
    assert printed.strip() != ""
    check_insights(after, n_jobs=2, n_tasks=100)


# ---- the page under every start method --------------------------------------------------------
START_METHODS = ["fork", "forkserver", "spawn", "threading"]


@pytest.mark.startmethod
@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", START_METHODS)
def test_the_page_under_every_start_method(method, capfd):
    """The tests above run the page as it is written: the default start method (forkserver
    under pytest, whose process has numpy's threads; fork for the lifespan examples, spawn for
    the nested pools). This runs its examples again under each start method, with two workers,
    smaller inputs and as few pools as the examples allow (a spawn pool takes ~0.4 s to start).
    """
    expected = [x * x for x in range(100)]
    dicts = _dict_args(20)
    products = [i * (100 + i) for i in range(20)]
    with WorkerPool(n_jobs=2, start_method=method, keep_alive=True) as pool:
        # the map family: a range; tuples are positional arguments, dicts keyword arguments;
        # make_single_arguments passes each dict whole
        assert pool.map(square, range(100)) == expected
        assert list(pool.imap(multiply, zip(range(20), range(100, 120)),
                              iterable_len=20)) == products
        assert list(pool.imap(multiply, dicts)) == products
        assert list(pool.imap(multiply_dict, [(d,) for d in dicts])) == products
        assert list(pool.imap(multiply_dict,
                              make_single_arguments(dicts, generator=False))) == products
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            assert list(pool.imap(multiply_dict, make_single_arguments(dicts),
                                  iterable_len=20)) == products
            # task chunking: a generator with its length, with n_splits, a fixed chunk size
            generator = ((x,) for x in range(100))
            assert pool.map(square, generator, iterable_len=100, n_splits=4) == expected
            assert pool.map(square, ((x,) for x in range(100)), chunk_size=4) == expected
        assert runtime_warnings(record) == []
        with pytest.warns(RuntimeWarning):  # no length known: a warning, and chunk size 1
            assert pool.map(square, ((x,) for x in range(100)), n_splits=4) == expected

        # numpy arrays: row blocks, concatenated unless told not to
        arr = np.random.default_rng(1234).random((10, 3))
        np.testing.assert_array_equal(pool.map(add_five, arr, chunk_size=3), arr + 5)
        blocks = pool.map(add_five, arr, chunk_size=3, concatenate_numpy_output=False)
        assert [b.shape for b in blocks] == [(3, 3), (3, 3), (3, 3), (1, 3)]
        np.testing.assert_array_equal(np.concatenate(blocks), arr + 5)

        # a progress bar on stderr, for every map function
        capfd.readouterr()
        for name in ("map", "map_unordered", "imap", "imap_unordered"):
            out = list(getattr(pool, name)(square, range(50), progress_bar=True))
            assert sorted(out) == expected[:50], name
            assert "50/50" in capfd.readouterr().err, name

        # the never-ending inputs, streamed and left; max_tasks_active (8) is smaller than the
        # chunk size, where mpire deadlocks. Last: the workers may still be busy afterwards.
        for i, result in enumerate(pool.imap(square, range(int(1e30)), iterable_len=int(1e30),
                                             chunk_size=1)):
            assert result == i * i
            if i == 10:
                break
        streamed = pool.imap(square, range(int(1e300)), iterable_len=int(1e300),
                             chunk_size=int(1e5), max_tasks_active=2 * 4)
        assert list(itertools.islice(streamed, 1000)) == [x * x for x in range(1000)]
        streamed.close()

    # worker_init and worker_exit with worker state, insights, worker_lifespan, keep_alive
    with WorkerPool(n_jobs=2, use_worker_state=True, enable_insights=True,
                    start_method=method) as pool:
        results = pool.map(square_and_count_even, range(100), worker_init=init_func,
                           worker_exit=exit_func)
        assert results == [x**x for x in range(100)]
        assert sum(pool.get_exit_results()) == 50
        check_insights(pool.get_insights(), n_jobs=2, n_tasks=100)
        capfd.readouterr()
        pool.print_insights()
        assert capfd.readouterr().out.strip() != ""
        # worker_lifespan=1: a worker finishes its chunk (one even number in each), then exits
        pool.map(square_and_count_even, range(8), worker_lifespan=1, chunk_size=2,
                 worker_init=init_func, worker_exit=exit_func)
        assert pool.get_exit_results() == [1] * 4
        # keep_alive: the exit functions run at stop_and_join only
        pool.set_keep_alive(True)
        for _ in range(2):
            pool.map(square_and_count_even, range(100), worker_init=init_func,
                     worker_exit=exit_func)
            assert pool.get_exit_results() == []
        pool.stop_and_join()
        assert sum(pool.get_exit_results()) == 100

    # the chunk sizes, read back from the worker ids (see observed_chunk_sizes)
    with WorkerPool(n_jobs=2, pass_worker_id=True, order_tasks=True, keep_alive=True,
                    start_method=method) as pool:
        def sizes(iterable, **map_kwargs):
            results, sizes = observed_chunk_sizes(iterable, pool=pool, **map_kwargs)
            assert results == [x * x for x in range(len(results))]
            return sizes

        assert sizes(((x,) for x in range(1000)), iterable_len=1000, n_splits=4) == [250] * 4
        assert sizes(range(1000), chunk_size=4) == [4] * 250
        automatic = sizes(((x,) for x in range(1000)), iterable_len=1000)
        assert len(automatic) == 64 * 2 and set(automatic) <= {7, 8}
        with pytest.warns(RuntimeWarning):
            assert sizes(((x,) for x in range(50))) == [1] * 50

    # nested pools (daemon=False), their bars at worker_id + 1
    capfd.readouterr()
    with WorkerPool(n_jobs=2, daemon=False, pass_worker_id=True, order_tasks=True,
                    start_method=method) as pool:
        results = pool.map(dispatcher, ((range(x, x + 10),) for x in range(4)),
                           iterable_len=4, n_splits=2, progress_bar=True)
    assert results == [[y * y for y in range(x, x + 10)] for x in range(4)]
    err = capfd.readouterr().err
    assert "4/4" in err
    if method != "forkserver":  # a forkserver's workers write to the stderr it started with
        rows = {len(moves) // len("\x1b[A") for moves in _BAR_AND_MOVES_UP.findall(err)}
        assert {0, 1, 2} <= rows, repr(err)
