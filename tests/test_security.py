"""Security: nbpool opens no network port, and what carries tasks is private to the user.

While a map runs (with a progress bar and insights, the features a dashboard would serve),
every process of the pool - the parent, its workers, a forkserver and multiprocessing's
resource tracker - is inspected:
- no internet socket at all, listening or not;
- unix sockets are unnamed socket pairs (the worker connections), except the forkserver's
  listener, whose directory only the user can enter;
- shared memory (the stats block: multiprocessing's heap file in /dev/shm) is owner-only
  and unlinked at once, so nothing is left in /dev/shm, even if a process is killed.
"""

from __future__ import annotations

import os
import stat
import time

import psutil
import pytest

from nbpool import WorkerPool
from procs import pool_processes

pytestmark = pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning")


def slow_identity(x):
    time.sleep(0.005)
    return x


def _processes_of_this_pool() -> list[psutil.Process]:
    helpers = [p for p in psutil.Process().children()
               if "forkserver" in " ".join(p.cmdline()) or "resource_tracker" in " ".join(
                   p.cmdline())]
    return [psutil.Process(), *pool_processes(set()), *helpers]


def _is_forkserver(proc: psutil.Process) -> bool:
    return "multiprocessing.forkserver" in " ".join(proc.cmdline()) and proc.ppid() == os.getpid()


def _check_private_directory(path: str) -> None:
    info = os.stat(os.path.dirname(path))
    assert info.st_uid == os.getuid(), f"{path}: directory owned by uid {info.st_uid}"
    assert stat.S_IMODE(info.st_mode) & 0o077 == 0, (
        f"{path}: directory mode {oct(stat.S_IMODE(info.st_mode))} lets others in")


def _shared_memory_fds(proc: psutil.Process) -> list[tuple[str, int]]:
    found = []
    fd_dir = f"/proc/{proc.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            mode = os.stat(f"{fd_dir}/{fd}").st_mode
        except OSError:
            continue  # closed meanwhile
        if target.startswith("/dev/shm/"):
            found.append((target, mode))
    return found


@pytest.mark.startmethod
@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_no_network_port_and_only_private_channels(method, capsys):
    with WorkerPool(n_jobs=2, start_method=method) as pool:
        results = pool.imap(slow_identity, range(200), chunk_size=2, progress_bar=True,
                            enable_insights=True)
        assert next(results) == 0  # the map is running: workers, bar, insights
        processes = _processes_of_this_pool()
        assert len(processes) >= 3
        shm_seen = 0
        for proc in processes:
            who = f"pid {proc.pid} ({' '.join(proc.cmdline())[:60]})"
            inet = proc.net_connections(kind="inet")
            assert not inet, f"{who} has internet sockets: {inet}"
            for conn in proc.net_connections(kind="unix"):
                if not conn.laddr:
                    continue  # an unnamed socket pair: a worker connection
                assert _is_forkserver(proc), f"{who} has a named unix socket {conn.laddr}"
                _check_private_directory(conn.laddr)
            for target, mode in _shared_memory_fds(proc):
                shm_seen += 1
                assert stat.S_IMODE(mode) & 0o077 == 0, f"{who}: {target} is {oct(mode)}"
                assert target.endswith("(deleted)"), f"{who}: {target} is still in /dev/shm"
        assert shm_seen >= 1  # the stats block really is shared memory
        assert list(results) == list(range(1, 200))
    capsys.readouterr()  # the progress bar's output


@pytest.mark.timeout(60)
def test_nothing_of_the_pool_remains_in_dev_shm():
    before = set(os.listdir("/dev/shm"))
    with WorkerPool(n_jobs=2) as pool:
        pool.map(slow_identity, range(50))
        pids = {os.getpid(), *(p.pid for p in pool_processes(set()))}
        during = set(os.listdir("/dev/shm")) - before
    after = set(os.listdir("/dev/shm")) - before
    ours = {name for name in during | after if any(f"-{pid}-" in name for pid in pids)}
    assert not ours, ours
