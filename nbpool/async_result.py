"""``AsyncResult``: the handle ``apply_async`` returns.

There is no background thread: waiting on a result drives the pool's event loop, and so do
``ready()``, further ``apply_async`` calls and ``stop_and_join``. Callbacks run in the thread
that drives the loop, right after the result arrives.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from . import frontend

_PENDING = object()
_log = logging.getLogger("nbpool")


class AsyncResult:
    def __init__(self, pool, callback: Callable | None, error_callback: Callable | None):
        self._pool = pool
        self._callback = callback
        self._error_callback = error_callback
        self._value: Any = _PENDING
        self._error: BaseException | None = None
        self.job_id: int | None = None

    # called by the engine
    def _set_result(self, index: int, results: list, top, seconds: float, nbytes: int) -> None:
        self._value = results[0]
        self._pool._apply_done(self)
        if self._callback is not None:
            self._run_callback(self._callback, self._value)

    def _set_error(self, exc: BaseException) -> None:
        if self._value is not _PENDING or self._error is not None:
            return
        frontend.name_cells_in_worker_tracebacks(exc)
        self._error = exc
        self._pool._apply_done(self)
        if self._error_callback is not None:
            self._run_callback(self._error_callback, exc)

    def _run_callback(self, callback: Callable, value: Any) -> None:
        """A callback runs in whatever call drives the pool (``get`` of another result, the
        next ``apply_async``, a map): its exception would come out of that call and lose what
        that call was doing. So it is logged, as concurrent.futures does, and the pool goes on."""
        try:
            callback(value)
        except Exception:
            _log.exception("exception in the %s of apply_async task %s",
                           "error_callback" if callback is self._error_callback else "callback",
                           self.job_id)

    def _done(self) -> bool:
        return self._value is not _PENDING or self._error is not None

    def ready(self) -> bool:
        """Whether the task has finished (successfully or not)."""
        if not self._done():
            self._pool._drive(0)
        return self._done()

    def successful(self) -> bool:
        """Whether it finished without error. ValueError if it has not finished yet."""
        if not self.ready():
            raise ValueError(f"Result of job {self.job_id} is not ready yet")
        return self._error is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the task has finished, or ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._pool._terminated_on_interrupt():  # Ctrl-C here stops the pool's work
            while not self._done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                self._pool._drive(remaining)

    def get(self, timeout: float | None = None) -> Any:
        """The task's return value; re-raises its exception; TimeoutError if not ready in time."""
        self.wait(timeout)
        if not self._done():
            raise TimeoutError(f"Result of job {self.job_id} not ready within {timeout} seconds")
        if self._error is not None:
            raise self._error
        return self._value
