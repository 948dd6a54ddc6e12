"""``shared_objects`` for workers that do not fork: one copy in shared memory for all of them.

A forked worker inherits the parent's objects copy-on-write, at no cost. Spawned and
forkserver workers get them pickled; here the large buffers inside (numpy arrays) are written
once per pool to one shared-memory segment, which every worker maps copy-on-write instead of
unpickling its own copy. The segment's descriptor reaches each new process the way
multiprocessing passes the worker's connection (``reduction.DupFd``).
"""

from __future__ import annotations

from multiprocessing import context, reduction
from typing import Any

from . import codec, shm


def _as_is(value: Any) -> Any:
    return value


def _load(dup_fd, payload: bytes) -> Any:
    fd = dup_fd.detach()
    shm.adopt([fd])
    incoming = codec.decode(payload, [fd])
    incoming.mapped.detach()  # the objects keep the mapping; no descriptor is needed
    return incoming.message


class SharedObjects:
    """Wraps ``shared_objects`` in a worker's setup; unpickles as the objects themselves."""

    def __init__(self, value: Any):
        self.value = value
        self._encoded: codec.Outgoing | None = None
        self._failed = False

    def _encode(self) -> codec.Outgoing | None:
        if self._encoded is None and not self._failed:
            encoded = codec.encode(self.value, shm.SegmentPool(keep=0))
            if encoded.fds:
                self._encoded = encoded
            else:
                self._failed = True  # nothing large enough, or no memory: pickle in-band
        return self._encoded

    def __reduce__(self):
        if context.get_spawning_popen() is None:  # not a process start: plain pickling
            return (_as_is, (self.value,))
        encoded = self._encode()
        if encoded is None:
            return (_as_is, (self.value,))
        return (_load, (reduction.DupFd(encoded.fds[0]), encoded.payload))

    def close(self) -> None:
        if self._encoded is not None:
            shm.close_all(self._encoded.fds)
            self._encoded = None
