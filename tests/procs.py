"""Helpers shared by the reliability tests: which processes a pool left, what an error says,
and a SIGKILL from outside."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager

import psutil

GONE_DEADLINE = 1.0  # seconds after a pool closes for its processes to be gone


def children() -> set[int]:
    """Pids of every descendant of this process (a forkserver's workers included)."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


def pool_processes(before: set[int], root: int | None = None) -> list[psutil.Process]:
    """Live processes below ``root`` (default: this process) that are not in ``before``,
    except multiprocessing's long-lived helpers (forkserver, resource tracker)."""
    root = os.getpid() if root is None else root
    found = []
    try:
        descendants = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for proc in descendants:
        if proc.pid in before:
            continue
        try:
            cmdline = " ".join(proc.cmdline())
            parent = proc.ppid()
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        helper = "forkserver" in cmdline or "resource_tracker" in cmdline
        if helper and parent == root:  # a forkserver's workers carry its command line too
            continue
        found.append(proc)
    return found


def wait_gone(before: set[int], timeout: float, root: int | None = None) -> list[psutil.Process]:
    """What is still alive of the processes started since ``before`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := pool_processes(before, root)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def assert_nothing_left(before: set[int], timeout: float = GONE_DEADLINE) -> None:
    left = wait_gone(before, timeout)
    assert not left, [(p.pid, p.cmdline()) for p in left]


def worker_threads() -> list[threading.Thread]:
    """The live worker threads of every pool (``start_method='threading'``) in this process."""
    return [t for t in threading.enumerate() if t.name.startswith("nbpool-Worker-")]


def assert_no_worker_threads(timeout: float = GONE_DEADLINE) -> None:
    """The threading counterpart of ``assert_nothing_left``: no pool's worker thread runs."""
    deadline = time.monotonic() + timeout
    while (left := worker_threads()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, [t.name for t in left]


def wait_dead(proc: psutil.Process, timeout: float = 5.0) -> None:
    """Waits without reaping (psutil's wait() would reap our child behind the pool's back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {proc.pid} did not die")


@contextmanager
def sigkill_when_pid_written(pid_file, just_before=None):
    """SIGKILLs, from another thread, the process whose pid a task writes to ``pid_file``: what
    the OOM killer does to a busy worker. ``just_before`` runs right before the kill."""

    def kill():
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        if just_before is not None:
            just_before()
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield
    finally:
        killer.join()


def all_text(exc: BaseException) -> str:
    """What a user sees of an error: its type, message, remote traceback and notes."""
    try:
        parts = [type(exc).__name__, str(exc)]
    except Exception:  # an exception whose __str__ fails (one of the faults)
        parts = [type(exc).__name__]
    if exc.__cause__ is not None:
        parts.append(str(exc.__cause__))
    parts.extend(getattr(exc, "__notes__", []))
    return "\n".join(parts)


def wait_for(predicate, timeout: float = 20.0):
    """Polls until ``predicate()`` is true and returns its value; the timeout only catches a
    hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")
