"""Both ends of a worker connection: framed like ``Connection``, able to carry descriptors.

Frames are a 4-byte big-endian length (or -1 and an 8-byte length) and the payload, as
``multiprocessing.connection`` writes them. A frame may carry file descriptors (shared-memory
segments, see ``shm``): they ride on the frame's first bytes as SCM_RIGHTS, and whoever
sends them gives them away.

The parent's end (``Channel``) never blocks: that rules out the classic deadlock where the
parent blocks sending a big chunk to a worker that is itself blocked sending a big result
back. The worker's end (``Link``) blocks, as a worker has nothing else to do.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from collections import deque

from . import shm
from .lifeline import close_in_forked_workers, forget_end

_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")
_READ_SIZE = 1 << 18
_SMALL = 65536  # payloads below this are joined to their header in one write
MAX_FDS = 32  # descriptors per frame
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * 4) if hasattr(socket, "CMSG_SPACE") else 0


def _frame_header(n: int) -> bytes:
    if n > 0x7FFFFFFF:
        return _SHORT.pack(-1) + _LONG.pack(n)
    return _SHORT.pack(n)


def _rights(fds: list[int]) -> list:
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]


def _received_fds(ancdata) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
            fds.extend(received)
    shm.adopt(fds)
    return fds


def _socket_of(conn) -> socket.socket | None:
    """A socket object on a duplicate of ``conn``'s descriptor, for sendmsg/recvmsg."""
    try:
        return socket.socket(fileno=os.dup(conn.fileno()))
    except OSError:  # not a socket (no descriptor passing here)
        return None


def _close_quietly(*objs) -> None:
    """Ignores OSError: one end that fails to close must not keep the others open."""
    for obj in objs:
        if obj is None:
            continue
        try:
            obj.close()
        except OSError:
            pass


class Channel:
    """The parent's end: buffers outgoing frames and assembles incoming ones, non-blocking."""

    def __init__(self, conn):
        self.conn = conn
        self.fd = conn.fileno()
        os.set_blocking(self.fd, False)
        close_in_forked_workers(conn)  # forked workers close their copies of it
        self.sock = _socket_of(conn)
        if self.sock is not None:
            self.sock.setblocking(False)
            close_in_forked_workers(self.sock)  # a second descriptor of the same end
        self._out: deque[list] = deque()  # [memoryview, descriptors to send with it]
        self._header = bytearray()
        self._header_fds: list[int] = []
        self._body: bytearray | None = None
        self._body_got = 0
        self.eof = False
        # frames each way: cheap to keep, and how tests check "one message per chunk"
        self.frames_sent = 0
        self.frames_received = 0

    @property
    def can_pass_fds(self) -> bool:
        return self.sock is not None

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def queue(self, payload: bytes, fds: list[int] = ()) -> None:
        """Queues one frame; the channel owns ``fds`` from now on."""
        fds = list(fds)
        self.frames_sent += 1
        header = _frame_header(len(payload))
        if len(payload) < _SMALL:
            self._out.append([memoryview(header + payload), fds])
        else:
            self._out.append([memoryview(header), fds])
            self._out.append([memoryview(payload), []])

    def flush(self) -> None:
        """Writes as much as the socket takes now. Raises BrokenPipeError if the peer is gone."""
        out = self._out
        while out:
            view, fds = out[0]
            try:
                if fds:
                    written = self.sock.sendmsg([view], _rights(fds))
                else:
                    written = os.write(self.fd, view)
            except BlockingIOError:
                return
            if fds:  # they travel with the first byte: the peer has them now
                shm.close_all(fds)
                out[0][1] = []
            if written < len(view):
                out[0][0] = view[written:]
                return
            out.popleft()

    def _read_header(self, count: int) -> bytes | None:
        """Up to ``count`` header bytes, collecting descriptors; b'' on EOF, None if none yet."""
        try:
            if self.sock is None:
                return os.read(self.fd, count)
            data, ancdata, _flags, _addr = self.sock.recvmsg(count, _ANCILLARY)
        except BlockingIOError:
            return None
        except (ConnectionResetError, OSError):
            return b""
        if ancdata:
            self._header_fds.extend(_received_fds(ancdata))
        return data

    def read(self) -> list[tuple]:
        """Complete ``(payload, fds)`` frames that have arrived; sets ``eof`` once the peer
        has closed."""
        frames = []
        while True:
            if self._body is None:
                if len(self._header) == 4 and _SHORT.unpack(self._header)[0] != -1:
                    self._start_body(_SHORT.unpack(self._header)[0])
                    continue
                if len(self._header) == 12:
                    self._start_body(_LONG.unpack(self._header[4:])[0])
                    continue
                need = 4 if len(self._header) < 4 else 12
                data = self._read_header(need - len(self._header))
                if data is None:
                    return frames
                if not data:
                    self.eof = True
                    return frames
                self._header += data
                continue
            if self._body_got == len(self._body):
                body = bytes(self._body) if len(self._body) < _SMALL else self._body
                frames.append((body, self._header_fds))
                self.frames_received += 1
                self._body = None
                self._header = bytearray()
                self._header_fds = []
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
        forget_end(self.conn)
        if self.sock is not None:
            forget_end(self.sock)
        for _view, fds in self._out:
            shm.close_all(fds)
        self._out.clear()
        shm.close_all(self._header_fds)
        self._header_fds = []
        _close_quietly(self.sock, self.conn)


class Link:
    """The worker's end: blocking reads and writes of the same frames."""

    def __init__(self, conn):
        self.conn = conn
        self.sock = _socket_of(conn)
        if self.sock is not None:
            self.sock.setblocking(True)

    @property
    def can_pass_fds(self) -> bool:
        return self.sock is not None

    def send(self, payload: bytes, fds: list[int] = ()) -> None:
        """Sends one frame; ``fds`` are given away (closed here once sent)."""
        header = _frame_header(len(payload))
        if not fds:
            if len(payload) < _SMALL:
                self.conn.send_bytes(payload)  # one write, header included
            else:
                self._send_all(header)
                self._send_all(payload)
            return
        try:
            first = header + payload if len(payload) < _SMALL else header
            sent = self.sock.sendmsg([first], _rights(list(fds)))
        finally:
            shm.close_all(fds)
        self._send_all(memoryview(first)[sent:])
        if len(payload) >= _SMALL:
            self._send_all(payload)

    def _send_all(self, data) -> None:
        if self.sock is not None:
            self.sock.sendall(data)
        else:
            view = memoryview(data)
            while len(view):
                view = view[os.write(self.conn.fileno(), view):]

    def recv(self) -> tuple:
        """The next ``(payload, fds)`` frame. Raises EOFError when the parent has closed."""
        if self.sock is None:
            return self.conn.recv_bytes(), []
        fds: list[int] = []
        try:
            header = self._recv_header(4, fds)
            size = _SHORT.unpack(header)[0]
            if size == -1:
                size = _LONG.unpack(self._recv_header(8, fds))[0]
            body = bytearray(size)
            view = memoryview(body)
            got = 0
            while got < size:
                n = self.sock.recv_into(view[got:], size - got)
                if n == 0:
                    raise EOFError
                got += n
        except BaseException:
            shm.close_all(fds)
            raise
        return body, fds

    def _recv_header(self, count: int, fds: list[int]) -> bytes:
        data = b""
        while len(data) < count:
            chunk, ancdata, _flags, _addr = self.sock.recvmsg(count - len(data), _ANCILLARY)
            if ancdata:
                fds.extend(_received_fds(ancdata))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def close(self) -> None:
        _close_quietly(self.sock, self.conn)
