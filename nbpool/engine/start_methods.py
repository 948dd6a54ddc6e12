"""Choosing how workers start, so that notebook code works and nothing forks unsafely.

``'auto'`` forks only a process that has a single thread (a plain script). A Jupyter kernel
always has several threads, and forking one can deadlock (Python 3.12+ warns about it), so
there ``'auto'`` uses a forkserver that has nbpool (and numpy) preloaded, or spawn where no
forkserver exists. Functions travel by value (cloudpickle), so every method runs notebook code.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import warnings

from ..warn import warn_user

START_METHODS = ("auto", "fork", "forkserver", "spawn", "threading")
_PRELOAD = ["nbpool.engine.worker", "multiprocessing.popen_forkserver"]


def available_methods() -> list[str]:
    return multiprocessing.get_all_start_methods()


def thread_count() -> int:
    """Threads of this process, including ones started from C (Linux reads /proc)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _in_kernel() -> bool:
    return "ipykernel" in sys.modules


def resolve(start_method: str) -> str:
    """The concrete start method for a worker started now."""
    if start_method != "auto":
        return start_method
    methods = available_methods()
    fork_is_safe = (
        "fork" in methods
        and sys.platform != "darwin"  # macOS system libraries break after fork
        and not _in_kernel()
        and thread_count() == 1
    )
    if fork_is_safe:
        return "fork"
    if "forkserver" in methods:
        return "forkserver"
    return "spawn"


def get_context(method: str):
    """The multiprocessing context for a concrete method (None for threads)."""
    if method == "threading":
        return None
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        preload = list(_PRELOAD)
        if "numpy" in sys.modules:
            preload.append("numpy")
        context.set_forkserver_preload(preload)
    return context


# -- multiprocessing's helper processes that die as they start --------------------------------
# A forkserver and the resource tracker are new Python interpreters, started on first use. In
# an environment where no new interpreter can run (a sitecustomize.py that exits, a broken
# PYTHONPATH) they die at once. multiprocessing then leaves them as zombies until it next
# needs them, and reports the forkserver's death as a bare ``EOFError``. The helpers below
# notice such a death, reap the process and forget it, so that the next start launches a
# fresh one (without the resource tracker's "died unexpectedly" warning).

HELPER_DEATH_WAIT = 1.0  # seconds a helper that is known to be ending has to be reapable


def tracker_pid() -> int | None:
    """The pid of this process's resource tracker, if it started one."""
    resource_tracker = sys.modules.get("multiprocessing.resource_tracker")
    return getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None)


def bury_dead_forkserver() -> int | None:
    """After a forkserver start failed: if the forkserver has ended, reap and forget it.

    Returns its exit code (negative: the signal that killed it), or None if it still runs
    (or is not this process's child). The failure (EOF on its socket) comes as it closes its
    files, a moment before it can be reaped: wait up to ``HELPER_DEATH_WAIT`` for that.
    """
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server = getattr(forkserver, "_forkserver", None)
    lock = getattr(server, "_lock", None)
    if server is None or lock is None:
        return None
    with lock:
        pid = getattr(server, "_forkserver_pid", None)
        if pid is None:
            return None
        status = _reap(pid, HELPER_DEATH_WAIT)
        if status is None:
            return None
        fd = server._forkserver_alive_fd
        address = server._forkserver_address
        server._forkserver_alive_fd = None
        server._forkserver_address = None
        server._forkserver_pid = None
        if hasattr(server, "_forkserver_authkey"):  # Python 3.14+
            server._forkserver_authkey = None
        if fd is not None:
            _close(fd)
        from multiprocessing import util  # loaded by the forkserver already

        if address and not util.is_abstract_socket_namespace(address):
            try:  # a filesystem socket (not Linux's abstract namespace) stays behind
                os.unlink(address)
            except OSError:
                pass
    return os.waitstatus_to_exitcode(status)


def bury_dead_tracker(pid: int | None, wait: float = 0.0) -> None:
    """Reap and forget the resource tracker ``pid`` if it has ended (within ``wait``
    seconds). Nothing happens if another tracker has replaced it, or it still runs."""
    resource_tracker = sys.modules.get("multiprocessing.resource_tracker")
    if pid is None or resource_tracker is None:
        return
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    lock = getattr(tracker, "_lock", None)
    if tracker is None or lock is None:
        return
    with lock:
        if getattr(tracker, "_pid", None) != pid or _reap(pid, wait) is None:
            return
        fd = tracker._fd
        tracker._fd = None
        tracker._pid = None
        if hasattr(tracker, "_exitcode"):  # Python 3.13+
            tracker._exitcode = None
        if fd is not None:
            _close(fd)


def _reap(pid: int, wait: float) -> int | None:
    """Reaps our child ``pid`` if it ends within ``wait`` seconds: its wait status, or
    None if it still runs (or is not our child)."""
    deadline = time.monotonic() + wait
    delay = 0.001
    while True:
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not ours, or reaped by someone else
            return None
        if reaped:
            return status
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class quiet_fork:
    """Silences CPython's fork-with-threads DeprecationWarning around a deliberate fork.

    'auto' never forks a threaded process; an explicit ``start_method='fork'`` is the user's
    choice, which they are told about once with a RuntimeWarning instead.
    """

    _told = False

    def __init__(self, method: str, explicit: bool):
        self.method = method
        self.explicit = explicit
        self._catcher = warnings.catch_warnings()

    def __enter__(self):
        if self.method == "fork" and self.explicit and not quiet_fork._told and thread_count() > 1:
            quiet_fork._told = True
            warn_user(
                "start_method='fork' in a multi-threaded process (such as a Jupyter kernel) "
                "can deadlock; start_method='auto' avoids this."
            )
        self._catcher.__enter__()
        if self.method == "fork":
            warnings.filterwarnings(
                "ignore", message=r".*use of fork\(\) may lead to deadlocks.*",
                category=DeprecationWarning,
            )
        return self

    def __exit__(self, *exc_info):
        return self._catcher.__exit__(*exc_info)


class hide_main:
    """Keeps spawn/forkserver children from running the parent's main script again.

    multiprocessing imports the parent's ``__main__`` (a script by path, ``python -m`` by
    name) in every spawn child and in a forkserver, so unguarded top-level code runs again
    in each of them. That can even start pools inside workers. It also fails for code piped on
    stdin (``__file__ == '<stdin>'``). nbpool sends functions and classes from ``__main__`` by
    value, so no child needs that module: hide it while a child starts.
    """

    _HIDDEN = ("__file__", "__spec__")

    def __init__(self, method: str):
        self.main = sys.modules.get("__main__")
        self.active = method in ("spawn", "forkserver") and self.main is not None
        self.saved: dict = {}

    def __enter__(self):
        if self.active:
            namespace = vars(self.main)
            self.saved = {name: namespace[name] for name in self._HIDDEN if name in namespace}
            namespace.pop("__file__", None)
            if "__spec__" in self.saved:
                namespace["__spec__"] = None
        return self

    def __exit__(self, *exc_info):
        if self.active:
            vars(self.main).update(self.saved)
