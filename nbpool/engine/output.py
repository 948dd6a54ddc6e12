"""Worker ``print`` and logging, carried to the parent so they show in the notebook cell.

In a worker whose root process is a Jupyter kernel, ``sys.stdout``/``sys.stderr`` become
``RelayStream``s: each finished line goes to the parent as one ``OUTPUT`` message and the parent
writes it to its own stream, from the thread that runs the cell. Output written straight to
file descriptors 1 and 2 (C extensions, subprocesses) is not seen here.
"""

from __future__ import annotations

import io
import sys
from typing import Callable

from .protocol import OUTPUT

FLUSH_BYTES = 64 * 1024  # a long line without a newline is still sent in pieces


class RelayStream(io.TextIOBase):
    """A text stream whose lines are sent to the parent process."""

    def __init__(self, name: str, send: Callable[[tuple], None], fd: int | None = None):
        super().__init__()
        self.stream_name = name
        self._send = send
        self._fd = fd
        self._buffer: list[str] = []
        self._size = 0

    @property
    def name(self) -> str:
        return f"<nbpool relayed {self.stream_name}>"

    @property
    def encoding(self) -> str:
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        """The original descriptor, for code that needs one (e.g. ``faulthandler``); what is
        written to it directly is not relayed."""
        if self._fd is None:
            raise io.UnsupportedOperation("this relayed stream has no file descriptor")
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self._buffer.append(text)
            self._size += len(text)
            if "\n" in text or self._size >= FLUSH_BYTES:
                self.flush()
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            text = "".join(self._buffer)
            self._buffer.clear()
            self._size = 0
            self._send((OUTPUT, self.stream_name, text))


def _fd_of(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


_replaced: dict[str, object] = {}  # the streams ``install`` replaced


def install(send: Callable[[tuple], None]) -> None:
    """Route this process's ``sys.stdout`` and ``sys.stderr`` to the parent."""
    _replaced.update(stdout=sys.stdout, stderr=sys.stderr)
    sys.stdout = RelayStream("stdout", send, _fd_of(sys.stdout))
    sys.stderr = RelayStream("stderr", send, _fd_of(sys.stderr))


def uninstall() -> None:
    """Put the streams back (before the connection to the parent closes)."""
    for name, stream in _replaced.items():
        if isinstance(getattr(sys, name), RelayStream):
            setattr(sys, name, stream)
    _replaced.clear()


def flush() -> None:
    """Send what is buffered (before a reply, so output arrives ahead of the result)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, RelayStream):
            stream.flush()


def write_to_parent_stream(stream_name: str, text: str) -> None:
    """The parent's side: write relayed text into this process's own stream. It is not flushed
    here: the engine calls ``flush_parent_streams`` at most every ``OUTPUT_FLUSH_SECONDS``
    while output arrives, and as a map ends or the pool stops, so that ipykernel sends many
    lines as one stream message (a flush per line made one iopub message per line)."""
    target = sys.stderr if stream_name == "stderr" else sys.stdout
    if target is None:
        return
    target.write(text)


def flush_parent_streams() -> None:
    """Flush the streams relayed text went to (in a worker that relays them further up, a
    nested pool's, that sends what they hold)."""
    for target in (sys.stdout, sys.stderr):
        if target is None:
            continue
        try:
            target.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more to do
            pass
