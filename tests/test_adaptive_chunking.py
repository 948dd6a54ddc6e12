"""Adaptive chunk sizes: where they apply, what sizes they give, and that results do not change.

Chunk boundaries are read back through worker_lifespan=1 with one worker: the worker restarts
after every chunk and its worker_exit reports how many tasks that chunk held, in order.
"""

from __future__ import annotations

import itertools
import math
import time
from fractions import Fraction

import numpy as np
import pytest

from nbpool import WorkerPool
from nbpool.chunking import WorkMeter, adaptive_sizes, iter_chunks, resolve_chunk_size

pytestmark = pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning")


def square(x):
    return x * x


def _count_init(worker_state):
    worker_state["n"] = 0


def _count_square(worker_state, x):
    worker_state["n"] += 1
    return x * x


def _count_slow_square(worker_state, x):
    time.sleep(0.002)  # enough work per task that a one-task chunk is worth sending
    return _count_square(worker_state, x)


def _count_exit(worker_state):
    return worker_state["n"]


def chunk_sizes(n_tasks: int, func=_count_square, **map_kwargs) -> list[int]:
    """The sizes of the chunks a map over range(n_tasks) sent, in order."""
    # fork: a restart costs milliseconds (a forkserver child would import pytest again)
    with WorkerPool(n_jobs=1, use_worker_state=True, start_method="fork",
                    order_tasks=map_kwargs.pop("order_tasks", False)) as pool:
        results = pool.map(func, list(range(n_tasks)), worker_lifespan=1,
                           worker_init=_count_init, worker_exit=_count_exit, **map_kwargs)
        sizes = pool.get_exit_results()
    assert results == [x * x for x in range(n_tasks)]
    return sizes


def regular_plan(n_tasks: int, n_jobs: int) -> list[int]:
    size = resolve_chunk_size(n_tasks, n_jobs, None, None)
    return [chunk.size for chunk in iter_chunks(range(n_tasks), n_tasks, size)]


def test_automatic_chunks_start_with_one_task_and_shrink_at_the_end():
    sizes = chunk_sizes(400, _count_slow_square)  # regular size: 400 / 64 = 6.25
    assert sum(sizes) == 400
    assert sizes[:3] == [1, 2, 4]
    assert max(sizes) == 7
    assert sizes[-1] == 1 and sizes[-2] <= 2  # the last ones hold what is left, halved
    assert regular_plan(400, 1)[-2:] != sizes[-2:]


@pytest.mark.parametrize("map_kwargs, expected", [
    ({"chunk_size": 40}, [40] * 25),
    ({"n_splits": 8}, [125] * 8),
    ({"order_tasks": True}, regular_plan(1000, 1)),
])
def test_explicit_or_observable_chunking_keeps_the_plan(map_kwargs, expected):
    assert chunk_sizes(1000, **map_kwargs) == expected


def test_adaptive_sizes_cover_the_input_and_follow_the_measurements():
    meter = WorkMeter()
    sizes = adaptive_sizes(Fraction(50), 10_000, 4, meter)
    first = list(itertools.islice(sizes, 6))
    assert first == [1, 2, 4, 8, 16, 32]
    given = sum(first)
    # nothing measured yet: no shrinking, regular sizes until the input is used up
    while given < 9_000:
        size = next(sizes)
        assert size == 50
        given += size
    # one task took 10 s: the tail shrinks towards one task per chunk
    meter.add(1, 10.0)
    tail = []
    while given < 10_000:
        tail.append(next(sizes))
        given += tail[-1]
    assert tail[0] == 50 and tail[-1] == 1
    assert tail == sorted(tail, reverse=True)
    assert given == 10_000


def _draw_the_rest(sizes, given: int, n_tasks: int) -> list[int]:
    """The sizes drawn after ``given`` tasks until all ``n_tasks`` are covered."""
    drawn = []
    while given < n_tasks:
        drawn.append(next(sizes))
        given += drawn[-1]
    return drawn


def test_adaptive_sizes_keep_enough_work_per_chunk_for_tiny_tasks():
    meter = WorkMeter()
    sizes = adaptive_sizes(Fraction(1000), 100_000, 2, meter)
    ramp = list(itertools.islice(sizes, 10))
    assert ramp == [2**i for i in range(10)]
    # 1000 tasks took 1 ms of the workers' time: chunks take a quarter of what is left
    # (TARGET_CHUNK_SECONDS would be 100,000 tasks), but never less than the 2,000 tasks
    # that make MIN_CHUNK_SECONDS (2 ms), not even at the very end
    meter.add(1000, 0.001)
    grown = _draw_the_rest(sizes, sum(ramp), 100_000)
    assert grown[0] == math.ceil((100_000 - sum(ramp)) / 4)
    assert grown == sorted(grown, reverse=True)
    assert grown[-3:] == [2000] * 3
    assert len(grown) < 20


def test_adaptive_chunks_of_millisecond_tasks_hold_a_tenth_of_a_second_then_shrink():
    """Each chunk costs the busy workers ~0.5 ms of wall time: 1 ms tasks go 100 to a chunk
    (not the regular 16), yet the last chunks still shrink for an even finish."""
    meter = WorkMeter()
    sizes = adaptive_sizes(Fraction(2000, 128), 2000, 2, meter)
    ramp = list(itertools.islice(sizes, 4))
    assert ramp == [1, 2, 4, 8]
    meter.add(7, 0.007)
    drawn = _draw_the_rest(sizes, sum(ramp), 2000)
    assert drawn[:5] == [100] * 5
    assert drawn == sorted(drawn, reverse=True)
    assert drawn[-1] == 2  # MIN_CHUNK_SECONDS
    assert len(drawn) < 45  # the regular plan: 128 chunks


def test_adaptive_chunks_of_cheap_tasks_grow_to_an_even_split_of_what_is_left():
    meter = WorkMeter()
    sizes = adaptive_sizes(Fraction(1000, 128), 1000, 2, meter)
    assert list(itertools.islice(sizes, 3)) == [1, 2, 4]
    meter.add(3, 3e-6)  # a microsecond a task: the 997 not done are not worth splitting more
    assert next(sizes) == 499
    assert next(sizes) == 499  # the second worker's half (iter_chunks cuts it to the 494 left)


def test_adaptive_chunks_grow_no_larger_than_the_limits_allow():
    meter = WorkMeter()
    sizes = adaptive_sizes(Fraction(1000, 128), 1000, 2, meter, most=50)
    next(sizes)
    meter.add(1, 1e-6)
    assert next(sizes) == 50


@pytest.mark.parametrize("make_input", [
    lambda n: range(n),
    lambda n: list(range(n)),
    lambda n: (x for x in range(n)),
], ids=["range", "list", "generator"])
def test_adaptive_chunks_give_the_same_results_in_the_same_order(make_input):
    n = 5000
    expected = [x * x for x in range(n)]
    with WorkerPool(n_jobs=2) as pool:
        assert pool.map(square, make_input(n), iterable_len=n) == expected
        assert list(pool.imap(square, make_input(n), iterable_len=n)) == expected
        assert sorted(pool.map_unordered(square, make_input(n), iterable_len=n)) == expected
        assert sorted(pool.imap_unordered(square, make_input(n), iterable_len=n)) == expected
        assert pool.map(square, make_input(n), iterable_len=n, chunk_size=7) == expected


def test_the_regular_plan_is_64_chunks_per_worker():
    assert len(regular_plan(1000, 1)) == 64
    assert len(regular_plan(1000, 4)) == 256
    assert set(regular_plan(1000, 4)) == {3, 4}


def test_one_task_per_chunk_plans_do_not_grow():
    """Small maps keep one task per chunk, so that a worker dying names its exact task."""
    meter = WorkMeter()
    sizes = adaptive_sizes(Fraction(1), 100, 2, meter)
    meter.add(1, 1e-6)
    assert list(itertools.islice(sizes, 20)) == [1] * 20


def test_adaptive_chunks_of_big_arguments_grow_no_larger_than_a_segment_should_be():
    meter = WorkMeter()
    sizes = adaptive_sizes(Fraction(100), 100_000, 2, meter)
    next(sizes)
    meter.sent(1, 8 * 1024 * 1024)  # an 8 MB array per task
    meter.add(1, 1e-6)  # that takes a microsecond
    assert next(sizes) == 2  # 16 MB, not the thousands of tasks 2 ms of work would hold


def test_adaptive_chunks_of_big_results_grow_no_larger_than_a_segment_should_be():
    meter = WorkMeter()
    sizes = adaptive_sizes(Fraction(100), 100_000, 2, meter)
    next(sizes)
    meter.sent(1, 100)  # a small argument
    meter.add(1, 1e-6, 4 * 1024 * 1024)  # that makes a 4 MB result in a microsecond
    assert next(sizes) == 4


def numbered_block(x):
    block = np.empty(25_000)  # a 200 KB result in microseconds (nothing is written to it)
    block[0] = x
    return block


@pytest.fixture
def drawn_sizes(monkeypatch):
    """The chunk sizes a pool's automatic chunking draws, in order."""
    import nbpool.pool

    drawn: list[int] = []
    real = nbpool.pool.adaptive_sizes

    def recording(*args, **kwargs):
        for size in real(*args, **kwargs):
            drawn.append(size)
            yield size

    monkeypatch.setattr(nbpool.pool, "adaptive_sizes", recording)
    return drawn


def test_a_map_of_cheap_tasks_is_sent_in_few_chunks(drawn_sizes):
    with WorkerPool(n_jobs=2) as pool:
        assert pool.map(square, range(20_000)) == [x * x for x in range(20_000)]
    assert sum(drawn_sizes) >= 20_000
    assert len(drawn_sizes) < 40  # the regular plan: 128 chunks, after a ramp of 8


def test_a_map_of_cheap_tasks_with_big_results_keeps_its_chunks_small(drawn_sizes):
    """2 ms of these tasks would make chunks of ~2000 results (400 MB in one message); they
    stay within MAX_CHUNK_BYTES (16 MB: 83 results of 200 KB and a little pickle)."""
    with WorkerPool(n_jobs=2) as pool:
        numbers = [int(block[0]) for block in pool.imap(numbered_block, range(4000))]
    assert numbers == list(range(4000))
    assert max(drawn_sizes) <= 84
    assert max(drawn_sizes) > 32  # the regular size (4000 / 128): they did grow
