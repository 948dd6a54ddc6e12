"""The line from a worker up to its parent, for what must reach the root process.

A worker of a pool started from a notebook cannot draw widgets or print into the cell itself
(a forked child's messages are dropped by the kernel; a spawned child has no kernel; a worker
thread must not make widgets, which belong to the thread that runs the cell). So such a worker
sends its output and the progress of pools nested inside it up its connection, and every level
forwards what it receives until it reaches the process that owns the cell.

A worker process says so for the whole process; a worker thread (``start_method='threading'``)
for itself only, since the thread that runs the cell shares its process.
"""

from __future__ import annotations

import threading
from typing import Callable

_process: dict = {"worker": False, "send": None}
_thread = threading.local()


def become_worker(send: Callable[[tuple], None] | None, in_thread: bool = False) -> None:
    """Called once in a worker; ``send`` is set when its nested progress goes to the parent."""
    state = _thread.__dict__ if in_thread else _process
    state["worker"] = True
    state["send"] = send


def in_worker() -> bool:
    return _process["worker"] or getattr(_thread, "worker", False)


def _sender() -> Callable[[tuple], None] | None:
    return getattr(_thread, "send", None) or _process["send"]


def relaying() -> bool:
    """True in a worker whose output and nested progress go up to its parent."""
    return _sender() is not None


def send(message: tuple) -> None:
    _sender()(message)
