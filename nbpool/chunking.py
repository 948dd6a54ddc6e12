"""Task source: turns ``iterable_of_args`` into chunks, lazily.

Chunks are read from the input only when the dispatcher asks for the next one, so a
generator (or a ``range(int(1e300))``) is never materialised. A ``range`` is chunked into
smaller ranges and a numpy array into row slices: both are cheap to pickle and cheap to cut.

Automatic chunking (no ``chunk_size``, no ``n_splits``) adapts the sizes while the map runs
(``adaptive_sizes``): the first chunks hold 1, 2, 4, ... tasks, so the first results come
back after one task instead of a whole chunk; chunks then grow to ~0.1 s of work, so that
each is worth its message and the parent's wakeup; and the last ones shrink as the work runs
out, so that the workers finish together. Explicit sizes, numpy blocks and ``order_tasks``
(where chunk boundaries are visible) keep the documented sizes exactly.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from typing import Any, Iterable, Iterator, NamedTuple

from .warn import warn_user

DEFAULT_CHUNKS_PER_WORKER = 64
DEFAULT_NUMPY_CHUNKS_PER_WORKER = 4
UNKNOWN_LENGTH_CHUNK_SIZE = 1
TAIL_CHUNKS_PER_WORKER = 2  # near the end a chunk holds at most 1/(this * n_jobs) of the rest
# Work per chunk. Each chunk costs a reply, a parent wakeup and a refill: ~35 us of the
# parent's time on an idle machine, but 0.3-0.6 ms of wall time when every core is busy with
# workers (the parent then preempts one, and both come back to cold caches). A chunk holds
# ~TARGET_CHUNK_SECONDS of work (2,000 tasks of 1 ms on 2 workers: 35 chunks instead of 139,
# and 2-5% less time), and only the shrinking tail goes down to MIN_CHUNK_SECONDS.
TARGET_CHUNK_SECONDS = 0.1
MIN_CHUNK_SECONDS = 0.002
MAX_CHUNK_BYTES = 16 * 1024 * 1024  # ... but chunks grow no bigger than this


def _is_numpy_array(obj: Any) -> bool:
    module = type(obj).__module__
    return module == "numpy" and type(obj).__name__ == "ndarray"


def known_length(iterable: Any, iterable_len: int | None) -> int | None:
    """The number of tasks, or None when it cannot be known without consuming the input."""
    if iterable_len is not None:
        try:
            return min(iterable_len, len(iterable))
        except (TypeError, OverflowError):
            return iterable_len
    try:
        return len(iterable)
    except (TypeError, OverflowError):
        return None


def _split_sizes(chunk_size: Fraction) -> Iterator[int]:
    """Sizes of consecutive chunks for a possibly fractional chunk size.

    The fractional part is carried over, so ``2.5`` gives 3, 2, 3, 2, ... exactly as
    mpire's documentation shows. Fractions keep this exact (no float drift).
    """
    current = chunk_size
    while True:
        size = max(1, math.ceil(current))
        yield size
        current = current + chunk_size - size


class WorkMeter:
    """What a map's tasks cost so far: the workers' time on the tasks finished (as their
    replies report it), the bytes of their results, and the bytes of the tasks sent.
    ``adaptive_sizes`` sizes chunks by it."""

    __slots__ = ("tasks", "seconds", "result_bytes", "tasks_sent", "bytes_sent")

    def __init__(self) -> None:
        self.tasks = 0
        self.seconds = 0.0
        self.result_bytes = 0
        self.tasks_sent = 0
        self.bytes_sent = 0

    def add(self, tasks: int, seconds: float, result_bytes: int = 0) -> None:
        self.tasks += tasks
        self.seconds += seconds
        self.result_bytes += result_bytes

    def bytes_per_task(self) -> float:
        """The larger of a task's arguments and its result, in bytes (0 before any news)."""
        sent = self.bytes_sent / self.tasks_sent if self.tasks_sent else 0.0
        returned = self.result_bytes / self.tasks if self.tasks else 0.0
        return max(sent, returned)

    def sent(self, tasks: int, nbytes: int) -> None:
        self.tasks_sent += tasks
        self.bytes_sent += nbytes


def adaptive_sizes(
    chunk_size: Fraction,
    n_tasks: int,
    n_jobs: int,
    meter: WorkMeter,
    most: int | None = None,
) -> Iterator[int]:
    """Chunk sizes that start small, grow for cheap tasks and shrink as the work runs out.

    First 1, 2, 4, ... tasks up to ``chunk_size`` (an early first result), then the regular
    sizes, each capped at the remaining tasks' share per worker (guided scheduling). Once
    ``meter`` knows what a task costs, a chunk grows to ``TARGET_CHUNK_SECONDS`` of work but
    no further than that share, so the tail still shrinks and the workers finish together;
    and no chunk, not even in the tail, holds less than ``MIN_CHUNK_SECONDS`` of work (a
    million tiny tasks need few messages). Neither growth goes beyond an even split of the
    tasks not yet done, ``most``, or ``MAX_CHUNK_BYTES`` of arguments or results (the
    larger). A map whose plan is one task per chunk (at most 64 tasks per worker) does not
    grow: it costs a few milliseconds at most, and a worker that dies in a one-task chunk is
    reported with its exact task. Sizes are drawn one at a time, just before each chunk is
    sent, so they always see the latest measurements.
    """
    regular = _split_sizes(chunk_size)
    ramp = 1
    given = 0
    may_grow = chunk_size > 1
    while True:
        if ramp < chunk_size:
            size = ramp
            ramp *= 2
        else:
            size = next(regular)
        if meter.tasks and may_grow:
            seconds_per_task = max(meter.seconds / meter.tasks, 1e-9)
            share = math.ceil((n_tasks - given) / (TAIL_CHUNKS_PER_WORKER * n_jobs))
            even = math.ceil(max(0, n_tasks - meter.tasks) / n_jobs)
            cap = min(even, most) if most is not None else even
            task_bytes = meter.bytes_per_task()
            if task_bytes:  # big arguments or results: no huge segment for a grown chunk
                cap = min(cap, max(1, int(MAX_CHUNK_BYTES // task_bytes)))
            target = min(cap, math.ceil(round(TARGET_CHUNK_SECONDS / seconds_per_task, 6)))
            floor = min(cap, math.ceil(round(MIN_CHUNK_SECONDS / seconds_per_task, 6)))
            size = max(1, min(max(size, target), share), floor)
        given += size
        yield size


def _as_fraction(value: float | int) -> Fraction:
    return Fraction(value) if isinstance(value, int) else Fraction(value).limit_denominator(10**9)


def resolve_chunk_size(
    n_tasks: int | None,
    n_jobs: int,
    chunk_size: float | None,
    n_splits: int | None,
    is_numpy: bool = False,
    warn: bool = True,
) -> Fraction:
    """The (possibly fractional) chunk size a map will use."""
    if chunk_size is not None:
        return _as_fraction(chunk_size)
    if n_tasks is None:
        if warn:
            warn_user(
                "Failed to obtain the length of iterable_of_args: pass iterable_len or "
                f"chunk_size. The chunk size is set to {UNKNOWN_LENGTH_CHUNK_SIZE}."
            )
        return Fraction(UNKNOWN_LENGTH_CHUNK_SIZE)
    if n_splits is None:
        per_worker = DEFAULT_NUMPY_CHUNKS_PER_WORKER if is_numpy else DEFAULT_CHUNKS_PER_WORKER
        n_splits = n_jobs * per_worker
    return max(Fraction(1), Fraction(n_tasks, n_splits)) if n_tasks else Fraction(1)


class Chunk(NamedTuple):
    """One unit of dispatch. ``args`` is a tuple, a ``range`` or a numpy block."""

    index: int  # position of the chunk in the map
    start: int  # index of its first task in the input
    args: Any
    size: int
    kind: str  # 'items' (each element is one task), 'range' or 'numpy' (one task: the block)


def iter_chunks(
    iterable_of_args: Iterable,
    n_tasks: int | None,
    chunk_size: Fraction,
    iterable_len: int | None = None,
    sizes: Iterator[int] | None = None,
) -> Iterator[Chunk]:
    """Yield chunks lazily. ``n_tasks`` truncates the input when it is known. ``sizes``
    overrides the sizes ``chunk_size`` gives (see ``adaptive_sizes``; not for numpy)."""
    if sizes is None or _is_numpy_array(iterable_of_args):
        sizes = _split_sizes(chunk_size)
    if _is_numpy_array(iterable_of_args):
        array = iterable_of_args if n_tasks is None else iterable_of_args[:n_tasks]
        start = 0
        for index, size in enumerate(sizes):
            if start >= len(array):
                return
            block = array[start : start + size]
            yield Chunk(index, start, block, 1, "numpy")
            start += size
        return
    if isinstance(iterable_of_args, range) and n_tasks is not None:
        whole = iterable_of_args
        start = 0
        for index, size in enumerate(sizes):
            if start >= n_tasks:
                return
            end = min(start + size, n_tasks)
            yield Chunk(index, start, whole[start:end], end - start, "range")
            start = end
        return
    iterator = iter(iterable_of_args)
    if iterable_len is not None:
        iterator = itertools.islice(iterator, iterable_len)
    start = 0
    for index, size in enumerate(sizes):
        items = tuple(itertools.islice(iterator, size))
        if not items:
            return
        yield Chunk(index, start, items, len(items), "items")
        start += len(items)
