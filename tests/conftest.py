"""Shared fixtures: every test must leave no worker process and no extra thread behind."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

LEAK_GRACE_SECONDS = 2.0
_POLL = 0.05


def _ignored(proc: psutil.Process) -> bool:
    """multiprocessing's long-lived helpers are not leaks: they outlive every pool by design.

    Only our direct children can be those helpers: a forkserver's workers carry the
    forkserver's command line too, and they are leaks like any other worker.
    """
    try:
        cmdline = " ".join(proc.cmdline())
        parent = proc.ppid()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    helper = "forkserver" in cmdline or "resource_tracker" in cmdline
    return helper and parent == os.getpid()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _children() -> dict[int, psutil.Process]:
    try:
        return {p.pid: p for p in psutil.Process().children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}


def _describe(proc: psutil.Process) -> str:
    try:
        cmdline = " ".join(proc.cmdline()) or proc.name()
        status = proc.status()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        cmdline, status = "?", "gone"
    return f"pid {proc.pid} [{status}]: {cmdline[:300]}"


def _leftover_processes(before: set[int]) -> list[psutil.Process]:
    return [
        proc
        for pid, proc in _children().items()
        if pid not in before and _alive(proc) and not _ignored(proc)
    ]


@pytest.fixture(autouse=True)
def no_leftover_workers():
    """Fails a test that leaves a new child process alive or more threads than it found."""
    before_pids = set(_children())
    before_threads = threading.active_count()
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    while True:
        leftovers = _leftover_processes(before_pids)
        threads = threading.active_count()
        if (not leftovers and threads <= before_threads) or time.monotonic() > deadline:
            break
        time.sleep(_POLL)
    problems = []
    if leftovers:
        problems.append(
            "child processes still alive after the test:\n  "
            + "\n  ".join(_describe(p) for p in leftovers)
        )
    if threads > before_threads:
        names = ", ".join(sorted(t.name for t in threading.enumerate()))
        problems.append(
            f"{threads - before_threads} more thread(s) than before the test "
            f"({before_threads} -> {threads}): {names}"
        )
    for proc in leftovers:  # do not let one leaky test break the ones after it
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert not problems, "\n".join(problems)


@pytest.fixture
def current_python_kernel(tmp_path, monkeypatch):
    """A 'python3' kernelspec that runs this interpreter, found first via JUPYTER_PATH."""
    from kernel_helpers import write_kernelspec

    monkeypatch.setenv("JUPYTER_PATH", str(write_kernelspec(tmp_path)))
    monkeypatch.setenv("PYTHONWARNINGS", "default::DeprecationWarning")
    return "python3"
