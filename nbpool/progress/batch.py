"""One progress bar for a batch of ``apply_async`` tasks (``WorkerPool.progress()``).

The batch only counts: the pool tells it which tasks were submitted inside the block and which
finished, and pushes the count to an ordinary progress view whenever it drives its event loop.
The view throttles its redraws, as it does for a map.
"""

from __future__ import annotations

from ..engine.errors import describe_exception


class BatchProgress:
    """The tasks submitted inside one ``with pool.progress():`` block, and their bar.

    ``submitted``, ``finished`` and ``failed`` count them; ``total`` is the number given to
    ``progress()``, or None to count against the tasks submitted so far."""

    def __init__(self, view, total: int | None):
        self.view = view  # None when the bar is disabled
        self.total = total
        self.submitted = 0
        self.finished = 0
        self.failed = 0
        self._pending: set[int] = set()
        self._first_error: BaseException | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def task_submitted(self, job_id: int) -> None:
        self._pending.add(job_id)
        self.submitted += 1
        if self.total is None and self.view is not None:
            self.view.set_total(self.submitted)

    def task_finished(self, job_id: int, error: BaseException | None) -> None:
        """Called for every apply task that ends; counts only this batch's."""
        if job_id not in self._pending:
            return
        self._pending.discard(job_id)
        self.finished += 1
        if error is not None:
            self.failed += 1
            if self._first_error is None:
                self._first_error = error

    def refresh(self) -> None:
        if self.view is not None:
            self.view.update(self.finished)

    def close(self, exc: BaseException | None = None) -> None:
        """The final state: interrupted or error when the block raised ``exc``, error when a
        task failed, done otherwise."""
        if self.view is None:
            return
        self.view.update(self.finished)
        if isinstance(exc, KeyboardInterrupt):
            self.view.close("interrupted")
        elif exc is not None:
            self.view.close("error", describe_exception(exc))
        elif self._first_error is not None:
            first = self._first_error
            self.view.close("error", f"{self.failed} of {self.submitted} tasks failed, first: "
                                     f"{describe_exception(first)}")
        else:
            self.view.close("done")
