"""What a spawned or forkserver worker receives when it starts, with large buffers shared.

A forked worker inherits the parent's objects copy-on-write, at no cost. Spawned and
forkserver workers get their start data (stats block, setup with ``shared_objects`` and the
init/exit functions) pickled. Here the large buffers in it (numpy arrays in ``shared_objects``,
arrays captured by ``worker_init``) go to one shared-memory segment, written once for all the
workers started together, which each of them maps copy-on-write instead of unpickling its own
copy. The segment's descriptor reaches the new process the way multiprocessing passes the
worker's connection (``reduction.DupFd``).

The pickle itself is made for each worker, in one piece, with multiprocessing's reducers: its
own objects (Value, Array, Lock, the stats block's arena) must be passed to each child anew,
and only once per child.
"""

from __future__ import annotations

from multiprocessing import context, reduction
from typing import Any

from . import codec, shm
from .serialization import ByValue, Unloadable, _rebuild_by_value, dumps_at_start


def _load(dup_fd, payload: bytes) -> Any:
    fd = dup_fd.detach()
    shm.adopt([fd])
    try:
        incoming = codec.decode(payload, [fd])
    except Exception as exc:  # the worker reports it (see worker_main)
        return Unloadable(exc)
    incoming.mapped.detach()  # the objects keep the mapping; no descriptor is needed
    return incoming.message


class SharedStartSegment:
    """The segment of the start data's buffers, reused by workers started with the same data."""

    def __init__(self):
        self.fd: int | None = None
        self.layout: list | None = None

    def holding(self, buffers: list) -> tuple[int, list] | None:
        """The segment with ``buffers`` in it: the one written before if they have the same
        sizes (the same objects, started moments apart), else a new one."""
        if self.layout is None or [n for _, n in self.layout] != [b.nbytes for b in buffers]:
            self.refresh()
            try:
                self.fd, self.layout = shm.SegmentPool(keep=0).write(buffers)
            except OSError:
                return None
        return self.fd, self.layout

    def refresh(self) -> None:
        """Forget the written copy: the next worker gets the objects as they are then."""
        if self.fd is not None:
            shm.close(self.fd)
        self.fd = self.layout = None

    close = refresh


class StartPayload(ByValue):
    """``ByValue`` whose large buffers travel in ``segment`` (unpickles as the value itself)."""

    __slots__ = ("segment",)

    def __init__(self, value: Any, segment: SharedStartSegment):
        super().__init__(value)
        self.segment = segment

    def __reduce__(self):
        if context.get_spawning_popen() is None:  # not a process start
            return super().__reduce__()
        buffers: list = []
        stream = dumps_at_start(self.value, buffer_callback=codec.large_buffers_into(buffers))
        held = self.segment.holding(buffers) if buffers else None
        if held is None:
            if buffers:  # no shared memory to be had: everything in the pickle
                stream = dumps_at_start(self.value)
            return (_rebuild_by_value, (stream,))  # pickled once: each DupFd once per child
        fd, layout = held
        return (_load, (reduction.DupFd(fd), codec.with_layout(stream, layout)))
