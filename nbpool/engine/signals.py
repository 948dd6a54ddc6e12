"""Holding back Ctrl-C while the pool stops its workers.

An impatient second Ctrl-C (or a second 'interrupt kernel') that lands while the pool is
killing its workers would abandon them half-stopped: sent SIGTERM, never SIGKILL, never
joined; a worker stuck in C code would keep running. So while workers are being stopped,
SIGINT is only recorded, and raised once they are gone.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def interrupts_deferred():
    """Within the block a SIGINT is held back; on leaving, it is delivered as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs Python signal handlers
        return
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except (ValueError, OSError):  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        # None: the handler was not set from Python (so it cannot be put back), as seen
        # while the interpreter shuts down; Python's own handler is the one to have then
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)  # default_int_handler raises KeyboardInterrupt
