"""Messages to frames and back: a pickle, with large buffers in a shared-memory segment.

Pickle protocol 5 hands every large contiguous buffer (numpy arrays, bytearrays, ...) to us
instead of copying it into the stream. Those buffers are written into one segment whose
descriptor travels with the frame; the receiver rebuilds the objects on views of the mapped
segment, so a worker sees its numpy arguments without a copy.

A frame that uses a segment starts with ``SEGMENT_MARK`` and the buffers' layout:

    b"S" | n_buffers (u32) | n_buffers * (offset u64, length u64) | pickle stream

Descriptors attached to a frame beyond the one its layout uses are segments given back for
reuse (see ``shm``); any frame may carry them.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, Callable, NamedTuple

from . import shm
from .serialization import dumps, loads

SEGMENT_MARK = b"S"
_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct("<QQ")


class Outgoing(NamedTuple):
    payload: bytes
    fds: list  # descriptors to send with the frame; the sender gives them away
    nbytes: int  # the data it moves: the pickle and the buffers in its segment


class Incoming(NamedTuple):
    message: Any
    mapped: "shm.Mapped | None"  # the segment the message's buffers live in
    returned: list  # descriptors given back for reuse
    nbytes: int  # the data it moved: the pickle and the buffers in its segment


def large_buffers_into(buffers: list) -> Callable[[pickle.PickleBuffer], bool]:
    """A pickle ``buffer_callback`` that keeps large contiguous buffers out of the stream,
    collecting them in ``buffers``; small ones stay in the stream."""

    def keep_large_out_of_band(buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: stays in the stream
            return True
        if raw.nbytes < shm.MIN_BYTES:
            return True
        buffers.append(raw)
        return False

    return keep_large_out_of_band


def with_layout(stream: bytes, layout: list) -> bytes:
    """The payload of a frame whose buffers lie in a segment at ``layout``."""
    head = [SEGMENT_MARK, _COUNT.pack(len(layout))]
    head.extend(_ENTRY.pack(offset, length) for offset, length in layout)
    return b"".join(head) + stream


def encode(message: Any, segments: "shm.SegmentPool | None", dump=dumps) -> Outgoing:
    """Pickles ``message`` (with ``dump``); with ``segments``, its large buffers go to shared
    memory."""
    if segments is None:
        return _in_stream(dump(message))
    buffers: list[memoryview] = []
    stream = dump(message, buffer_callback=large_buffers_into(buffers))
    if not buffers:
        return _in_stream(stream)
    try:
        fd, layout = segments.write(buffers)
    except OSError:  # no shared memory to be had: the pipe still works
        return _in_stream(dump(message))
    payload = with_layout(stream, layout)
    return Outgoing(payload, [fd], len(payload) + sum(length for _, length in layout))


def _in_stream(payload: bytes) -> Outgoing:
    return Outgoing(payload, [], len(payload))


def _layout_of(payload) -> tuple[list, int]:
    """The ``(offset, length)`` of each buffer of a segment frame, and where its pickle starts."""
    (count,) = _COUNT.unpack_from(payload, 1)
    position = 1 + _COUNT.size
    layout = []
    for _ in range(count):
        layout.append(_ENTRY.unpack_from(payload, position))
        position += _ENTRY.size
    return layout, position


def decode(payload, fds: list) -> Incoming:
    """The message of a frame; its buffers are views of the mapped segment, if it has one."""
    if payload[:1] != SEGMENT_MARK:
        try:
            return Incoming(loads(payload), None, list(fds), len(payload))
        except BaseException:
            shm.close_all(fds)
            raise
    if not fds:
        raise ConnectionError("a frame lost its shared-memory segment on the way")
    layout, position = _layout_of(payload)
    mapped = None
    try:
        mapped = shm.Mapped(fds[0], layout)
        message = pickle.loads(memoryview(payload)[position:], buffers=mapped.views)
    except BaseException:
        if mapped is not None:
            mapped.detach()
        else:
            shm.close(fds[0])
        shm.close_all(fds[1:])
        raise
    mapped.views = None  # the rebuilt objects hold what they use
    nbytes = len(payload) + sum(length for _, length in layout)
    return Incoming(message, mapped, list(fds[1:]), nbytes)
