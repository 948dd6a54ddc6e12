"""What ``map`` returns: the list of results, or their numpy concatenation.

mpire concatenates numpy results at the end (``np.concatenate(results)``), which holds every
result and the output at once. Here each result is copied into one preallocated output array
as it arrives, so a result that came through shared memory is read exactly once and its
segment can go back to the worker straight away. The output is sized from the first result
(its rows times the number of results to come); anything that does not fit the guess (another
dtype or row shape, a different count) falls back to ``np.concatenate`` on the same values,
so the outcome is always what ``np.concatenate(results)`` gives.
"""

from __future__ import annotations

from typing import Any


def _is_ndarray(value: Any) -> bool:
    return type(value).__name__ == "ndarray" and type(value).__module__ == "numpy"


class MapOutput:
    """Collects ``map``'s results, chunk by chunk, in input order."""

    def __init__(self, concatenate_numpy: bool, expected_results: int | None):
        self.concatenate_numpy = concatenate_numpy
        self.expected_results = expected_results
        self.items: list = []  # results when not filling ``out`` (and whatever comes after)
        self.out = None  # the preallocated output array
        self.rows = 0  # rows of ``out`` filled so far
        self.first = True

    def add(self, part: list) -> None:
        """Takes one chunk's results; keeps no reference to the numpy ones it copies."""
        if self.first and part:
            self.first = False
            self._maybe_preallocate(part[0])
        if self.out is None or self.items:  # a plain list: no look at each value (A: 10^6)
            self.items.extend(part)
            return
        for index, value in enumerate(part):
            if not self._fits(value):
                self.items.extend(part[index:])
                return
            self._copy_in(value)

    def _maybe_preallocate(self, value: Any) -> None:
        if not (self.concatenate_numpy and self.expected_results and _is_ndarray(value)):
            return
        if value.ndim == 0 or not value.flags.c_contiguous:
            return  # np.concatenate raises on 0-d; it keeps other layouts: let it do both
        import numpy as np

        rows = value.shape[0] * self.expected_results
        self.out = np.empty((rows,) + value.shape[1:], dtype=value.dtype)

    def _fits(self, value: Any) -> bool:
        out = self.out
        return (
            _is_ndarray(value)
            and value.dtype == out.dtype
            and value.shape[1:] == out.shape[1:]
            and self.rows + value.shape[0] <= out.shape[0]
        )

    def _copy_in(self, value) -> None:
        end = self.rows + value.shape[0]
        self.out[self.rows : end] = value
        self.rows = end

    def result(self) -> Any:
        out = self.out
        if out is None:
            items = self.items
            if self.concatenate_numpy and items and _is_ndarray(items[0]):
                import numpy as np

                return np.concatenate(items)
            return items
        if self.items:  # the guess did not hold: the filled part stands for the results so far
            import numpy as np

            return np.concatenate([out[: self.rows]] + self.items)
        if self.rows < out.shape[0]:
            out.resize((self.rows,) + out.shape[1:], refcheck=False)  # nothing else views it
        return out
