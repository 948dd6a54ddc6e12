"""Worker ``print`` and logging, carried to the parent so they show in the notebook cell.

In a worker whose root process is a Jupyter kernel, ``sys.stdout``/``sys.stderr`` become
``RelayStream``s: each finished line goes to the parent as one ``OUTPUT`` message and the parent
writes it to its own stream, from the thread that runs the cell. Output written straight to
file descriptors 1 and 2 (C extensions, subprocesses) is not seen here.

Threading workers share the process's streams; while any runs, those become ``ThreadLines``,
which write each worker thread's lines whole (see ``track_worker_thread``).
"""

from __future__ import annotations

import io
import sys
import threading
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
            if self._size >= FLUSH_BYTES:
                self.flush()
            elif "\n" in text:
                self._send_finished_lines()
        return len(text)

    def _send_finished_lines(self) -> None:
        """Sends up to the last line end; the unfinished rest waits for its own ('a\nb' sent
        whole would let another writer's text follow 'b' before its newline)."""
        text = "".join(self._buffer)
        end = text.rfind("\n") + 1
        self._buffer.clear()
        if end < len(text):
            self._buffer.append(text[end:])
        self._size = len(text) - end
        self._send((OUTPUT, self.stream_name, text[:end]))

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


# -- threading workers ------------------------------------------------------------------------
class ThreadLines:
    """``sys.stdout``/``sys.stderr`` while threading workers run.

    ``print`` writes its text and its newline in two calls, so two worker threads printing at
    once could mix within a line ('hello 0hello 1'). Each worker thread writes through a
    ``RelayStream`` of its own, which holds its text until a line ends and then hands it over
    whole; other threads write straight through. Everything else is the wrapped stream's
    (ipykernel's, a terminal's).
    """

    def __init__(self, target):
        self.target = target
        self._relays: dict[int, RelayStream] = {}  # worker thread -> its line buffer
        self._lock = threading.Lock()

    def _write_whole(self, message: tuple) -> None:
        _, _, text = message
        with self._lock:
            self.target.write(text)

    def track(self, ident: int) -> None:
        self._relays[ident] = RelayStream("thread", self._write_whole)

    def untrack(self, ident: int) -> None:
        """Writes the thread's unfinished line and forgets the thread."""
        relay = self._relays.pop(ident, None)
        if relay is not None:
            relay.flush()

    def write(self, text: str) -> int:
        relay = self._relays.get(threading.get_ident())
        if relay is None:
            return self.target.write(text)
        return relay.write(text)

    def flush(self) -> None:
        relay = self._relays.get(threading.get_ident())
        if relay is not None:
            relay.flush()
        self.target.flush()

    def __getattr__(self, name: str):
        return getattr(self.target, name)


_threads_lock = threading.Lock()
_thread_streams: dict[str, ThreadLines] = {}  # stream name -> the ThreadLines installed


def track_worker_thread() -> None:
    """Called by a threading worker as it starts: its lines are written whole from now on."""
    ident = threading.get_ident()
    with _threads_lock:
        for name in ("stdout", "stderr"):
            stream = _thread_streams.get(name)
            if stream is None or getattr(sys, name) is not stream:
                current = getattr(sys, name)
                if current is None:
                    continue
                stream = _thread_streams[name] = ThreadLines(current)
                setattr(sys, name, stream)
            stream.track(ident)


def untrack_worker_thread() -> None:
    """Called by a threading worker as it ends: writes its unfinished line, and puts the
    streams back once no worker thread is left (unless someone replaced them meanwhile)."""
    ident = threading.get_ident()
    with _threads_lock:
        for name, stream in list(_thread_streams.items()):
            stream.untrack(ident)
            if not stream._relays:
                del _thread_streams[name]
                if getattr(sys, name) is stream:
                    setattr(sys, name, stream.target)
