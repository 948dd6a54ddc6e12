"""Public helpers, named and behaving as ``mpire.utils``' documented ones."""

from __future__ import annotations

from typing import Any, Generator, Iterable

from . import params
from .chunking import _is_numpy_array, iter_chunks, known_length, resolve_chunk_size

__all__ = ["chunk_tasks", "make_single_arguments"]


def chunk_tasks(
    iterable_of_args: Iterable,
    iterable_len: int | None = None,
    chunk_size: float | None = None,
    n_splits: int | None = None,
) -> Generator[Any, None, None]:
    """Split ``iterable_of_args`` into chunks: tuples, or row blocks for a numpy array.

    ``chunk_size`` may be fractional: the remainder carries over to the next chunk. The
    arguments are checked at the call, not when the first chunk is drawn.
    """
    params.iterable(iterable_of_args)
    iterable_len = params.positive_int("iterable_len", iterable_len, minimum=0)
    chunk_size = params.chunk_size(chunk_size)
    n_splits = params.positive_int("n_splits", n_splits)
    if chunk_size is None and n_splits is None:
        raise ValueError("chunk_tasks needs chunk_size or n_splits")
    n_tasks = known_length(iterable_of_args, iterable_len)
    if chunk_size is None and n_tasks is None:
        raise ValueError(
            "chunk_tasks needs the length of iterable_of_args to split it into n_splits "
            "chunks: pass iterable_len"
        )
    size = resolve_chunk_size(n_tasks, 1, chunk_size, n_splits, warn=False)
    return _chunks(iterable_of_args, n_tasks, size, iterable_len)


def _chunks(iterable_of_args, n_tasks, size, iterable_len) -> Generator[Any, None, None]:
    is_numpy = _is_numpy_array(iterable_of_args)
    for chunk in iter_chunks(iterable_of_args, n_tasks, size, iterable_len):
        yield chunk.args if is_numpy else tuple(chunk.args)


def make_single_arguments(
    iterable_of_args: Iterable, generator: bool = True
) -> Generator[tuple, None, None] | list[tuple]:
    """Wrap every element in a 1-tuple so that a map passes it whole (not unpacked)."""
    wrapped = ((arg,) for arg in iterable_of_args)
    return wrapped if generator else list(wrapped)
