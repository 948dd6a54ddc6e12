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
