"""A worker must never outlive the process it works for.

A worker learns that its parent is gone when its connection reports EOF, but only between
tasks, and only if no process holds a copy of the parent's end of that connection. So:

- a forked worker closes the copies of the parent's connection ends it inherited (its own,
  and those of the other workers); with them open, a parent killed by the OOM killer or
  ``kill -9`` left its forked workers waiting for work forever. It also closes the child
  ends of the workers forked after it in the same batch (the parent makes every connection
  before the first fork), which would otherwise keep their connections open past their
  deaths;
- on Linux the kernel kills a worker when its parent dies (``PR_SET_PDEATHSIG``), even in
  the middle of a task.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import weakref

_PR_SET_PDEATHSIG = 1
# the parent's ends of worker connections (Connection and socket objects), and the child
# ends of workers about to be forked
_ends_for_forked_workers: "weakref.WeakSet" = weakref.WeakSet()


def close_in_forked_workers(conn) -> None:
    _ends_for_forked_workers.add(conn)


def forget_end(conn) -> None:
    _ends_for_forked_workers.discard(conn)


def close_inherited_ends(keep) -> None:
    """In a forked worker: close the copies of the connection ends that are not its own
    (``keep``).

    Closed through their Connection objects, which this process inherited too: closing
    the bare fds would let those objects close the numbers again later, by then perhaps
    another file's.
    """
    for conn in list(_ends_for_forked_workers):
        if conn is keep:
            continue
        try:
            conn.close()
        except OSError:
            pass
    _ends_for_forked_workers.clear()  # a nested pool in this worker starts its own list


def release_forkserver() -> None:
    """In a worker process: forget the forkserver this process inherited.

    - A forkserver's child holds a copy of the parent's end of the pipe whose EOF tells the
      forkserver that its parent is gone. While busy workers held it, a killed parent (the
      kernel, ``kill -9``) left the forkserver running, and so those workers, whose death
      signal follows the forkserver.
    - A forked child of a process that runs a forkserver inherits that server's pid, which
      is not its child: a nested forkserver pool then failed with ChildProcessError.

    A nested forkserver pool in a worker starts a forkserver of its own instead.
    """
    # Present wherever a forkserver was used; importing it anywhere else would cost ms.
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server = getattr(forkserver, "_forkserver", None)
    if server is None:
        return
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    server._forkserver_alive_fd = None
    server._forkserver_address = None
    server._forkserver_pid = None


def _load_prctl():
    """libc's ``prctl``, looked up once here: a forked worker inherits it ready to call.
    Looking it up in each new worker cost 0.2 ms of copy-on-write page faults per worker,
    5% of a pool's start-up and shut-down."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies.

    The signal follows the parent *thread* that started this process, so the parent only
    asks for it from its main thread (or a forkserver, which is single-threaded).
    ``parent_pid`` (0: unknown) catches a parent that died before the request was made.
    """
    if _prctl is None or _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)  # the parent is already gone
