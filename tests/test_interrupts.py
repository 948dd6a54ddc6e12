"""Interrupts: SIGINT to the parent (a script, and a real Jupyter kernel's 'interrupt kernel')
during map, imap iteration, worker_init and ``AsyncResult.get()``.

Each case: every worker has gone within ``STOP_DEADLINE`` seconds of the signal although the
pool object still exists (as a notebook variable would), ``KeyboardInterrupt`` reaches the
caller, and a new pool (and the interrupted one) work at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from procs import wait_gone

STOP_DEADLINE = 2.0  # the bound: seconds from the signal until no worker is left
HANG_GUARD = 90
READ_TIMEOUT = 60  # seconds to wait for the script to get where it is interrupted
CASES = ["map", "imap", "imap_body", "worker_init", "apply_get"]

SCRIPT = r'''
import json, os, signal, sys, time
from nbpool import WorkerPool

# Ctrl-C must raise KeyboardInterrupt here even when the test runs in a background job,
# whose children start with SIGINT ignored
signal.signal(signal.SIGINT, signal.default_int_handler)

def say(text):
    os.write(1, (text + "\n").encode())  # one write per line: lines of processes never mix

def slow(x):
    say(f"busy {os.getpid()}")
    time.sleep(600)
    return x

def slow_after_2(x):
    return x if x < 2 else slow(x)

def stuck_in_c(x):
    say(f"busy {os.getpid()}")
    return sum(range(10**13))  # one C call: no Python signal handler runs until it returns

def slow_init():
    say(f"busy {os.getpid()}")
    time.sleep(600)

def double(x):
    return 2 * x

def interrupted_call(pool, case):
    if case == "map":
        pool.map(slow, range(8), chunk_size=1)
    elif case == "imap":  # the interrupt arrives while imap waits for the next result
        for result in pool.imap(slow_after_2, range(8), chunk_size=1):
            say(f"result {result}")
    elif case == "imap_body":  # ... or in the loop body, while the workers keep working
        for result in pool.imap(slow_after_2, range(8), chunk_size=1):
            time.sleep(600)
    elif case == "worker_init":
        pool.map(double, range(8), worker_init=slow_init)
    elif case == "apply_get":
        results = [pool.apply_async(slow, (x,)) for x in range(2)]
        results[0].get()
    elif case == "stuck_in_c":
        pool.map(stuck_in_c, range(8), chunk_size=1)

if __name__ == "__main__":
    method, case = sys.argv[1], sys.argv[2]
    pool = WorkerPool(n_jobs=2, start_method=method)  # no with: it lives on, like a notebook's
    say("ready")
    try:
        interrupted_call(pool, case)
    except KeyboardInterrupt:
        say("interrupted")
    else:
        say("not interrupted")
        sys.exit(3)
    # what the pools return is checked by the test (an assert here would vanish under -O)
    with WorkerPool(n_jobs=2, start_method=method) as fresh:
        say("new pool " + json.dumps(fresh.map(double, range(20))))
    say("same pool " + json.dumps(pool.map(double, range(20))))
    pool.terminate()
    say("done")
'''
DOUBLED = [2 * x for x in range(20)]  # what the script's pools must map after the interrupt


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_pids_gone(pids: set[int], since: float, timeout: float) -> tuple[float, set[int]]:
    """Seconds from ``since`` until no pid of ``pids`` runs, and those still running."""
    deadline = since + timeout
    while (alive := {pid for pid in pids if _running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.01)
    return time.monotonic() - since, alive


class Script:
    """The script above in its own session (so that a group signal reaches only it)."""

    def __init__(self, method: str, case: str):
        cwd = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SCRIPT), method, case],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
            start_new_session=True,
        )
        self.lines: list[str] = []

    def read_until(self, predicate, what: str) -> None:
        deadline = time.monotonic() + READ_TIMEOUT
        while not predicate(self.lines):
            assert time.monotonic() < deadline, f"no {what} within {READ_TIMEOUT} s: {self.lines}"
            line = self.proc.stdout.readline()
            assert line, f"script ended before {what}: {self.lines}\n{self.proc.stderr.read()}"
            self.lines.append(line.strip())

    def mapped(self, label: str):
        """The results the script printed after ``label`` (``'new pool'``, ``'same pool'``)."""
        found = [line[len(label):] for line in self.lines if line.startswith(label + " ")]
        assert found, f"no {label!r} line: {self.lines}"
        return json.loads(found[0])

    def busy_pids(self) -> set[int]:
        return {int(line.split()[1]) for line in self.lines if line.startswith("busy")}

    def descendants(self) -> set[int]:
        return {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.communicate()


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("target", ["process", "group"], ids=["sigint", "ctrl_c"])
def test_sigint_stops_all_work(method, case, target):
    """``sigint``: SIGINT to the parent only; ``ctrl_c``: to its process group, as a terminal's
    Ctrl-C does (the workers get it too and must ignore it)."""
    if target == "group" and method != "forkserver":
        pytest.skip("the group signal is what a forkserver's helpers see; one method covers it")
    script = Script(method, case)
    try:
        script.read_until(lambda lines: len([x for x in lines if x.startswith("busy")]) >= 2,
                          "two busy workers")
        workers = script.busy_pids() | script.descendants()
        if target == "group":
            os.killpg(script.proc.pid, signal.SIGINT)
        else:
            script.proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        took, alive = _wait_pids_gone(script.busy_pids(), sent, STOP_DEADLINE + 3)
        script.read_until(lambda lines: "interrupted" in lines or "not interrupted" in lines,
                          "KeyboardInterrupt")
        assert "interrupted" in script.lines
        print(f"SIGINT ({target}, {case}, {method}): workers gone after {took:.3f} s")
        assert not alive, f"workers still running {took:.2f} s after SIGINT: {alive}"
        assert took < STOP_DEADLINE, f"the workers took {took:.2f} s to stop"
        script.read_until(lambda lines: "done" in lines, "the pools working again")
        # a new pool, started right after the interrupt, maps correctly; so does the old one
        assert script.mapped("new pool") == DOUBLED, script.lines
        assert script.mapped("same pool") == DOUBLED, script.lines
        script.proc.wait(READ_TIMEOUT)
        assert script.proc.returncode == 0, script.proc.stderr.read()
        _, left = _wait_pids_gone(workers, time.monotonic(), 2.0)
        assert not left, f"processes outlived the script: {left}"
    finally:
        script.cleanup()


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_repeated_ctrl_c_while_workers_are_stuck_in_c(method):
    """An impatient user presses Ctrl-C again while the pool is stopping workers that only
    SIGKILL can stop: the second interrupt must not leave them running."""
    script = Script(method, "stuck_in_c")
    try:
        script.read_until(lambda lines: len([x for x in lines if x.startswith("busy")]) >= 2,
                          "two busy workers")
        workers = script.busy_pids()
        sent = time.monotonic()
        for _ in range(4):
            os.killpg(script.proc.pid, signal.SIGINT)
            time.sleep(0.015)
        took, alive = _wait_pids_gone(workers, sent, STOP_DEADLINE + 3)
        print(f"Ctrl-C burst, workers in C ({method}): workers gone after {took:.3f} s")
        assert not alive, f"workers still running {took:.2f} s after Ctrl-C: {alive}"
        assert took < STOP_DEADLINE, f"the workers took {took:.2f} s to stop"
        # the later interrupts may end the script itself; its helpers must go with it
        script.proc.wait(READ_TIMEOUT)
        _, left = _wait_pids_gone(workers, time.monotonic(), 2.0)
        assert not left
    finally:
        script.cleanup()


# -- a real Jupyter kernel --------------------------------------------------------------------
@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel running this interpreter (and this worktree's nbpool), with a client."""
    jupyter_client = pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test interpreter)", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    root = str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get(
        "PYTHONPATH")])))
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _reply(client, msg_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "no execute_reply in time"
        reply = client.get_shell_msg(timeout=remaining)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def _run_cell(client, code: str, timeout: float = 60) -> dict:
    for _ in range(5):
        reply = _reply(client, client.execute(code), timeout)
        # ipykernel aborts requests that reach it while it is still handling an error
        if reply["status"] != "aborted":
            return reply
        time.sleep(0.1)
    return reply


KERNEL_SETUP = textwrap.dedent(r'''
    import os, time
    from pathlib import Path
    from nbpool import WorkerPool

    MARKERS = Path({markers!r})

    def slow(x):
        Path(MARKERS, f"busy-{{os.getpid()}}").write_text("")
        time.sleep(600)
        return x

    def slow_after_2(x):
        return x if x < 2 else slow(x)

    def slow_init():
        slow(None)

    pool = WorkerPool(n_jobs=2)
''')

KERNEL_CELLS = {
    "map": "pool.map(slow, range(8), chunk_size=1)",
    "imap": "for r in pool.imap(slow_after_2, range(8), chunk_size=1):\n    print(r)",
    "imap_body": "for r in pool.imap(slow_after_2, range(8), chunk_size=1):\n"
                 "    time.sleep(600)",
    "worker_init": "pool.map(abs, range(8), worker_init=slow_init)",
    "apply_get": "results = [pool.apply_async(slow, (x,)) for x in range(2)]\nresults[0].get()",
}


@pytest.mark.notebook
@pytest.mark.timeout(HANG_GUARD + 60)
@pytest.mark.parametrize("case", CASES)
def test_interrupt_kernel_stops_all_work(kernel, case, tmp_path):
    manager, client = kernel
    markers = tmp_path / "markers"
    markers.mkdir()
    setup = _run_cell(client, KERNEL_SETUP.format(markers=str(markers)))
    assert setup["status"] == "ok", setup
    msg_id = client.execute(KERNEL_CELLS[case])
    deadline = time.monotonic() + READ_TIMEOUT
    while len(list(markers.glob("busy-*"))) < 2:
        assert time.monotonic() < deadline, "the workers never got busy"
        time.sleep(0.02)
    workers = {int(p.name.split("-")[1]) for p in markers.glob("busy-*")}
    manager.interrupt_kernel()
    sent = time.monotonic()
    reply = _reply(client, msg_id, READ_TIMEOUT)
    answered = time.monotonic() - sent
    took, alive = _wait_pids_gone(workers, sent, STOP_DEADLINE + 3)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    print(f"interrupt kernel ({case}): cell answered after {answered:.3f} s, "
          f"workers gone after {took:.3f} s")
    assert not alive, f"workers still running {took:.2f} s after the interrupt: {alive}"
    assert took < STOP_DEADLINE, f"the workers took {took:.2f} s to stop"
    assert answered < STOP_DEADLINE, f"the cell took {answered:.2f} s to stop"
    kernel_pid = manager.provisioner.process.pid
    # the next cell: a new pool at once, and the interrupted one too
    started = time.monotonic()
    fresh = _run_cell(client, "with WorkerPool(n_jobs=2) as fresh:\n"
                              "    assert fresh.map(abs, range(-5, 5)) == [5,4,3,2,1,0,1,2,3,4]")
    assert fresh["status"] == "ok", fresh
    again = _run_cell(client, "assert pool.map(abs, range(-3, 3)) == [3, 2, 1, 0, 1, 2]\n"
                              "pool.terminate()")
    assert again["status"] == "ok", again
    print(f"interrupt kernel ({case}): next cells (new pool, old pool) took "
          f"{time.monotonic() - started:.3f} s")
    assert time.monotonic() - started < 30
    left = wait_gone(set(), 2.0, root=kernel_pid)  # only the forkserver may remain
    assert not left, [(p.pid, p.cmdline()) for p in left]



def _iopub_until(client, msg_id: str, timeout: float, last) -> list[dict]:
    """The iopub messages a cell sent, up to the first for which ``last(msg)`` is true."""
    deadline = time.monotonic() + timeout
    messages = []
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no such message in time: {messages}"
        msg = client.get_iopub_msg(timeout=remaining)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if last(msg):
            return messages


def _is_idle(msg) -> bool:
    return msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"


@pytest.mark.notebook
@pytest.mark.timeout(HANG_GUARD + 60)
def test_interrupt_kernel_leaves_the_progress_bar_interrupted(kernel, tmp_path):
    """What the person sees after 'interrupt kernel': the widget bar, drawn while the tasks
    ran, says interrupted."""
    manager, client = kernel
    markers = tmp_path / "markers"
    markers.mkdir()
    setup = _run_cell(client, KERNEL_SETUP.format(markers=str(markers)))
    assert setup["status"] == "ok", setup
    msg_id = client.execute("pool.map(slow, range(8), chunk_size=1, progress_bar=True)")
    # the bar shows while the workers sleep (the pool wakes up to draw it)
    shown = _iopub_until(client, msg_id, READ_TIMEOUT,
                         lambda msg: msg["msg_type"] == "display_data")
    assert shown[-1]["content"]["data"]["text/plain"] == "0% 0/8 (running)"
    manager.interrupt_kernel()
    messages = _iopub_until(client, msg_id, READ_TIMEOUT, _is_idle)
    texts = [m["content"]["data"]["text/plain"] for m in messages
             if m["msg_type"] == "update_display_data"]
    assert texts and texts[-1].startswith("0% 0/8 "), texts
    assert texts[-1].endswith("(interrupted)"), texts
    [error] = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert error["ename"] == "KeyboardInterrupt"
    assert _run_cell(client, "pool.terminate()")["status"] == "ok"
