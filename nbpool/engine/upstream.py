"""The line from a worker process up to its parent, for what must reach the root process.

A worker of a pool started from a notebook cannot draw widgets or print into the cell itself
(a forked child's messages are dropped by the kernel; a spawned child has no kernel). So such a
worker sends its output and the progress of pools nested inside it up its connection, and every
level forwards what it receives until it reaches the process that owns the cell.
"""

from __future__ import annotations

from typing import Callable

_state: dict = {"worker": False, "send": None}


def become_worker(send: Callable[[tuple], None] | None) -> None:
    """Called once in a worker process; ``send`` is set when output goes to the parent."""
    _state["worker"] = True
    _state["send"] = send


def in_worker() -> bool:
    return _state["worker"]


def relaying() -> bool:
    """True in a worker whose output and nested progress go up to its parent."""
    return _state["send"] is not None


def send(message: tuple) -> None:
    _state["send"](message)
