"""Shared-memory segments: large buffers cross between processes without going through a pipe.

A segment is an anonymous memory file (``memfd_create``). It has no name, so nothing can be
left behind in /dev/shm, and the kernel frees it when the last descriptor and the last mapping
are gone, whatever ends the processes (an error, SIGKILL, ``terminate()``). Its descriptor
travels with the message that uses it (SCM_RIGHTS on the worker's Unix socket).

Ownership moves with the descriptor. The sender writes and gives it away; the receiver maps it
copy-on-write (zero-copy reads, private writes) and gives it back once no view of it is left,
so that the sender can reuse it: fresh shared pages cost more to allocate than to fill again.
Where ``memfd_create`` is missing (macOS, Windows), nbpool pickles through the pipe instead.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import weakref
from typing import Iterable

ALIGN = 64  # every buffer starts on a 64-byte boundary (SIMD loads, any dtype's alignment)
MIN_BYTES = 64 * 1024  # smaller buffers are cheaper inside the pickle
_MFD_NOEXEC_SEAL = 0x0008  # Linux >= 6.3; older kernels reject it and we retry without

_owned: set[int] = set()  # segment descriptors this process holds (closed in forked children)


def supported() -> bool:
    """Whether this platform can move buffers through shared memory."""
    return hasattr(os, "memfd_create") and hasattr(socket.socket, "sendmsg")


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def create(size: int) -> int:
    """A new owner-only segment of ``size`` bytes; returns its descriptor."""
    flags = os.MFD_CLOEXEC
    try:
        fd = os.memfd_create("nbpool", flags | _MFD_NOEXEC_SEAL)
    except OSError:
        fd = os.memfd_create("nbpool", flags)
    try:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    _owned.add(fd)
    return fd


def adopt(fds: Iterable[int]) -> None:
    """Take ownership of descriptors received from another process."""
    _owned.update(fds)


def close(fd: int) -> None:
    _owned.discard(fd)
    try:
        os.close(fd)
    except OSError:
        pass


def close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        close(fd)


def _close_inherited() -> None:
    """A forked child owns none of its parent's segments: holding them would keep them alive."""
    close_all(list(_owned))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited)


def _write_at(fd: int, buffer: memoryview, offset: int) -> None:
    while len(buffer):
        written = os.pwrite(fd, buffer, offset)
        buffer = buffer[written:]
        offset += written


class SegmentPool:
    """The free segments of one process: reused before a new one is made."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._free: dict[int, int] = {}  # descriptor -> capacity in bytes

    def __len__(self) -> int:
        return len(self._free)

    def write(self, buffers: list[memoryview]) -> tuple[int, list[tuple[int, int]]]:
        """Copies ``buffers`` into one segment; returns its descriptor (now the caller's to
        give away) and each buffer's ``(offset, length)``. Raises OSError when memory is short."""
        layout = []
        end = 0
        for buffer in buffers:
            start = _align(end)
            layout.append((start, buffer.nbytes))
            end = start + buffer.nbytes
        fd = self._take(end)
        try:
            for buffer, (offset, _) in zip(buffers, layout):
                _write_at(fd, buffer, offset)
        except BaseException:
            close(fd)
            raise
        return fd, layout

    def _take(self, size: int) -> int:
        fits = [fd for fd, cap in self._free.items() if cap >= size]
        if fits:
            fd = min(fits, key=self._free.__getitem__)
            del self._free[fd]
            return fd
        if self._free:  # grow the largest: its pages are already there
            fd = max(self._free, key=self._free.__getitem__)
            del self._free[fd]
            try:
                os.ftruncate(fd, size)
            except BaseException:
                close(fd)
                raise
            return fd
        return create(size)

    def give_back(self, fd: int) -> None:
        """A segment that nothing maps any more, ready to be written again."""
        if len(self._free) >= self.keep:
            close(fd)
            return
        try:
            self._free[fd] = os.fstat(fd).st_size
        except OSError:
            close(fd)

    def clear(self) -> None:
        close_all(list(self._free))
        self._free.clear()


def take_back(segments: SegmentPool | None, fds: Iterable[int]) -> None:
    """Segments the other side gave back: kept for reuse, or closed if this side sends none."""
    for fd in fds:
        if segments is not None:
            segments.give_back(fd)
        else:
            close(fd)


_libc = None


def _map_private(fd: int, length: int):
    """Maps ``length`` bytes of a segment copy-on-write, as a buffer that unmaps itself when
    the last view of it is gone. (Python's ``mmap`` would hold a duplicate descriptor for as
    long as the mapping lives: one per result a caller keeps, until the process runs out.)"""
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_ssize_t]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = libc
    address = _libc.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE,
                         fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    memory = (ctypes.c_ubyte * length).from_address(address)
    weakref.finalize(memory, _libc.munmap, address, length)
    return memory


class Mapped:
    """A received segment mapped copy-on-write, with one view per buffer for ``pickle.loads``.

    The objects rebuilt on the views keep the mapping alive on their own, without a
    descriptor. ``release`` gives the descriptor back for reuse once no view is left, or else
    lets go of it (the mapping then lives exactly as long as the last object using it).
    """

    __slots__ = ("fd", "views", "_memory")

    def __init__(self, fd: int, layout: list[tuple[int, int]]):
        end = max(offset + length for offset, length in layout)
        memory = _map_private(fd, end)
        self.fd = fd
        self._memory = weakref.ref(memory)
        whole = memoryview(memory).cast("B")
        self.views = [whole[offset : offset + length] for offset, length in layout]

    def release(self) -> int | None:
        """The descriptor if nothing views the segment any more (it is unmapped), else None."""
        fd, self.fd = self.fd, -1
        self.views = None
        if fd < 0:
            return None
        if self._memory() is not None:  # still in use: it stays mapped, we keep nothing
            close(fd)
            return None
        return fd

    def detach(self) -> None:
        """Leave the mapping to whoever uses it, and hold no descriptor."""
        fd, self.fd = self.fd, -1
        self.views = None
        if fd >= 0:
            close(fd)
