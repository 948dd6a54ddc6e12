"""The parent's end of a worker connection: non-blocking, framed like ``Connection``.

The worker uses a plain blocking ``multiprocessing.connection.Connection``; the parent writes
and reads the same frames (a 4-byte big-endian length, or -1 and an 8-byte length) without
ever blocking. That is what rules out the classic deadlock where the parent blocks sending a
big chunk to a worker that is itself blocked sending a big result back.
"""

from __future__ import annotations

import os
import struct
from collections import deque

from .lifeline import forget_parent_end, register_parent_end

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")
_READ_SIZE = 1 << 18


def _frame_header(n: int) -> bytes:
    if n > 0x7FFFFFFF:
        return _SHORT.pack(-1) + _LONG.pack(n)
    return _SHORT.pack(n)


class Channel:
    """Buffers outgoing frames and assembles incoming ones on a non-blocking socket."""

    def __init__(self, conn):
        self.conn = conn
        self.fd = conn.fileno()
        os.set_blocking(self.fd, False)
        register_parent_end(conn)  # forked workers close their copies of it
        self._out: deque[memoryview] = deque()
        self._header = bytearray()
        self._body: bytearray | None = None
        self._body_got = 0
        self.eof = False

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def queue(self, payload: bytes) -> None:
        header = _frame_header(len(payload))
        if len(payload) < 65536:
            self._out.append(memoryview(header + payload))
        else:
            self._out.append(memoryview(header))
            self._out.append(memoryview(payload))

    def flush(self) -> None:
        """Writes as much as the socket takes now. Raises BrokenPipeError if the peer is gone."""
        out = self._out
        while out:
            view = out[0]
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                return
            if written < len(view):
                out[0] = view[written:]
                return
            out.popleft()

    def read(self) -> list[bytes]:
        """Complete frames that have arrived; sets ``eof`` once the peer has closed."""
        frames = []
        while True:
            if self._body is None:
                need = 4 if len(self._header) < 4 else 12
                if len(self._header) == 4 and _SHORT.unpack(self._header)[0] != -1:
                    self._start_body(_SHORT.unpack(self._header)[0])
                    continue
                if len(self._header) == 12:
                    self._start_body(_LONG.unpack(self._header[4:])[0])
                    continue
                try:
                    data = os.read(self.fd, need - len(self._header))
                except BlockingIOError:
                    return frames
                except (ConnectionResetError, OSError):
                    self.eof = True
                    return frames
                if not data:
                    self.eof = True
                    return frames
                self._header += data
                continue
            if self._body_got == len(self._body):
                frames.append(bytes(self._body) if len(self._body) < 65536 else self._body)
                self._body = None
                self._header = bytearray()
                continue
            try:
                got = os.readv(self.fd, [memoryview(self._body)[self._body_got :]])
            except BlockingIOError:
                return frames
            except (ConnectionResetError, OSError):
                self.eof = True
                return frames
            if got == 0:
                self.eof = True
                return frames
            self._body_got += got

    def _start_body(self, size: int) -> None:
        self._body = bytearray(size)
        self._body_got = 0

    def close(self) -> None:
        forget_parent_end(self.conn)
        try:
            self.conn.close()
        except OSError:
            pass
