"""Errors: task exceptions, worker deaths, workers that cannot start, pickling failures,
timeouts, Ctrl-C, and start methods (including code that lives in ``__main__``)."""

from __future__ import annotations

import re

import ctypes
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from functools import partial

import psutil
import pytest

from nbpool import WorkerPool
from nbpool.engine.errors import (RemoteTraceback, TaskExitError, TaskPicklingError,
                                  WorkerDiedError, WorkerStartError, describe_exception)
from tasks import square

HANG_GUARD = 30  # seconds; only there so that a hang fails instead of blocking the run
SHORT_HANG_GUARD = 15  # for tests whose failure mode is waiting on a 30 s task or init/exit
SUBPROCESS_TIMEOUT = 60
CONCRETE_METHODS = {"fork", "forkserver", "spawn", "threading"}

# a worker thread that dies with an exception (start_method='threading') is a bug too
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


# -- task functions (module level, so that every start method can import them) -----------
class CustomError(Exception):
    pass


def raise_value_error_on_13(x):
    if x == 13:
        raise ValueError(f"value error from task {x}")
    return x


def raise_custom_error_on_13(x):
    if x == 13:
        raise CustomError(f"custom error from task {x}")
    return x


def raise_key_error_on_13(x):
    if x == 13:
        raise KeyError(f"key error from task {x}")
    return x


RAISERS = {
    ValueError: (raise_value_error_on_13, "raise ValueError("),
    CustomError: (raise_custom_error_on_13, "raise CustomError("),
    KeyError: (raise_key_error_on_13, "raise KeyError("),
}


def system_exit_on_7(x):
    if x == 7:
        sys.exit(5)
    return x


def keyboard_interrupt_on(target, x):
    if x == target:
        raise KeyboardInterrupt("raised by the task itself")
    return x


class TwoArgError(Exception):
    """Pickles, but cannot be rebuilt: ``args`` holds only ``a``, ``__init__`` needs two."""

    def __init__(self, a, b):
        super().__init__(a)
        self.b = b


def raise_two_arg_error_on_7(x):
    if x == 7:
        raise TwoArgError(f"two-arg error from task {x}", "extra")
    return x


def exit_on_13(x):
    if x == 13:
        os._exit(3)
    return x


def exit_on_14(x):
    if x == 14:
        os._exit(3)
    return x


def sigkill_on_13(x):
    if x == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def segfault_on_13(x):
    if x == 13:
        ctypes.string_at(0)
    return x


def failing_init():
    raise ValueError("worker_init refused to start")


def identity(x):
    return x


def lock_on_2(x):
    if x == 2:
        return threading.Lock()
    return x


class SilentError(Exception):
    """Raised with no message, as a ``MemoryError`` is: ``str()`` of it is empty."""


class PicklesWithASilentError:
    def __repr__(self):
        return "PicklesWithASilentError()"

    def __reduce__(self):
        raise SilentError()


def silent_on_2(x):
    if x == 2:
        return PicklesWithASilentError()
    return x


def sleep_30(x):
    time.sleep(30)
    return x


def slow_init():
    time.sleep(30)


def slow_exit():
    time.sleep(30)


def _cause_text(exc: BaseException) -> str:
    assert exc.__cause__ is not None, f"{type(exc).__name__} has no __cause__ (remote traceback)"
    return str(exc.__cause__)


def _all_text(exc: BaseException) -> str:
    parts = [str(exc)]
    if exc.__cause__ is not None:
        parts.append(str(exc.__cause__))
    parts.extend(getattr(exc, "__notes__", []))
    return "\n".join(parts)


def _assert_pool_works(pool: WorkerPool) -> None:
    assert pool.map(square, range(10)) == [x * x for x in range(10)]


# -- (1) exceptions raised by tasks ---------------------------------------------------------
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("keep_alive", [False, True], ids=["fresh", "keep_alive"])
@pytest.mark.parametrize("exc_type", [ValueError, CustomError, KeyError],
                         ids=lambda t: t.__name__)
def test_task_exception_reraised_with_type_args_and_source(exc_type, keep_alive):
    func, source_line = RAISERS[exc_type]
    with WorkerPool(n_jobs=2, keep_alive=keep_alive) as pool:
        with pytest.raises(exc_type) as info:
            pool.map(func, range(30))
        exc = info.value
        assert type(exc) is exc_type
        assert "from task 13" in str(exc)
        cause = _cause_text(exc)
        assert "Arg 0: 13" in cause
        assert "Worker-" in cause
        assert func.__name__ in cause
        assert source_line in cause
        assert "test_errors.py" in cause
        # the same pool object keeps working
        _assert_pool_works(pool)
        assert pool.map(func, range(13)) == list(range(13))


@pytest.mark.timeout(HANG_GUARD)
def test_task_exception_in_imap_and_apply():
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(ValueError) as info:
            list(pool.imap(raise_value_error_on_13, range(20)))
        assert "Arg 0: 13" in _cause_text(info.value)
        with pytest.raises(ValueError) as info:
            pool.apply(raise_value_error_on_13, (13,))
        assert "Arg 0: 13" in _cause_text(info.value)
        _assert_pool_works(pool)


@pytest.mark.timeout(HANG_GUARD)
def test_system_exit_in_a_task_is_a_task_error_not_the_end_of_the_program():
    # Re-raised as it is, sys.exit(0) in a task would end the user's script quietly, with
    # exit code 0.
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(TaskExitError) as info:
            pool.map(system_exit_on_7, range(20))
        exc = info.value
        assert isinstance(exc, RuntimeError)
        assert "task 7 (Arg 0: 7) raised SystemExit(5)" in str(exc)
        assert re.search(r"Worker-\d", str(exc))
        assert isinstance(exc.original, SystemExit) and exc.original.code == 5
        assert isinstance(exc.__cause__, RemoteTraceback)
        assert "in system_exit_on_7" in _cause_text(exc)  # the worker's traceback
        _assert_pool_works(pool)


def exit_in_init():
    sys.exit(3)


def exit_in_exit():
    sys.exit(4)


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("where", ["worker_init", "worker_exit"])
def test_system_exit_in_worker_init_or_exit_is_their_error(where):
    """Not a dead worker 'before it started task 0': the error says what raised what."""
    functions = {where: exit_in_init if where == "worker_init" else exit_in_exit}
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(TaskExitError) as info:
            pool.map(square, range(10), **functions)
        assert f"{where} raised SystemExit({3 if where == 'worker_init' else 4})" in str(
            info.value), str(info.value)
        assert re.search(r"Worker-\d", str(info.value))
        _assert_pool_works(pool)


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_keyboard_interrupt_raised_by_a_task_is_not_taken_for_ctrl_c(start_method):
    with WorkerPool(n_jobs=2, start_method=start_method) as pool:
        with pytest.raises(TaskExitError) as info:
            pool.map(partial(keyboard_interrupt_on, 11), range(20))
        assert "task 11 (Arg 0: 11) raised KeyboardInterrupt" in str(info.value)
        assert "raised by the task itself" in str(info.value)
        assert "in keyboard_interrupt_on" in _cause_text(info.value)
        with pytest.raises(TaskExitError, match=r"a task \(Arg 0: 3; Arg 1: 3\) raised Keyb"):
            pool.apply(keyboard_interrupt_on, (3, 3))
        _assert_pool_works(pool)


@pytest.mark.timeout(HANG_GUARD)
def test_exception_that_cannot_be_rebuilt_still_names_the_task():
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(Exception) as info:
            pool.map(raise_two_arg_error_on_7, range(20))
        exc = info.value
        text = _all_text(exc)
        assert "TwoArgError" in type(exc).__name__ + text
        assert "Arg 0: 7" in text
        assert "two-arg error from task 7" in text
        _assert_pool_works(pool)


# -- (2) worker death -----------------------------------------------------------------------
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize(
    "func, how",
    [(exit_on_13, "code 3"), (sigkill_on_13, "SIGKILL"), (segfault_on_13, "SIGSEGV")],
    ids=["os_exit", "sigkill", "segfault"],
)
def test_worker_death_raises_worker_died_error(func, how):
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(WorkerDiedError) as info:
            pool.map(func, range(30))
        exc = info.value
        assert isinstance(exc, RuntimeError)
        message = str(exc)
        assert "Worker-" in message
        assert "Arg 0: 13" in message
        assert how in message
        _assert_pool_works(pool)


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_worker_death_other_start_methods(start_method):
    with WorkerPool(n_jobs=2, start_method=start_method) as pool:
        with pytest.raises(WorkerDiedError) as info:
            pool.map(exit_on_13, range(30))
        assert "Worker-" in str(info.value)
        assert "Arg 0: 13" in str(info.value)
        _assert_pool_works(pool)


@pytest.mark.timeout(HANG_GUARD)
def test_worker_death_names_the_task_inside_a_larger_chunk():
    # Fast tasks run in growing batches inside a chunk (the worker publishes where it is once
    # per batch, not per task, to stay cheap): the death names task 14 or the batch holding it.
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(WorkerDiedError) as info:
            pool.map(exit_on_14, range(20), chunk_size=10)
        message = str(info.value)
        assert "Worker-" in message
        exact = "Arg 0: 14" in message
        batch = re.search(r"one of tasks (\d+)\.\.(\d+)", message)
        assert exact or (batch and int(batch[1]) <= 14 <= int(batch[2])), message
        _assert_pool_works(pool)


@pytest.mark.timeout(HANG_GUARD)
def test_worker_death_in_apply():
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(WorkerDiedError) as info:
            pool.apply(exit_on_13, (13,))
        assert "Worker-" in str(info.value)
        assert "Arg 0: 13" in str(info.value)
        assert pool.apply(square, (4,)) == 16
        pool.stop_and_join()


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("ending", ["timeout", "death"])
def test_apply_tasks_queued_behind_a_lost_worker_still_run(ending):
    """With one worker, the tasks queued behind one that timed out (its worker is killed)
    or killed its worker never started: they go to a fresh worker instead of failing with
    "Pool was terminated" (or, after a timeout, waiting forever)."""
    with WorkerPool(n_jobs=1) as pool:
        if ending == "timeout":
            first = pool.apply_async(sleep_30, (1,), task_timeout=0.3)
        else:
            first = pool.apply_async(exit_on_13, (13,))
        queued = [pool.apply_async(square, (x,)) for x in range(3)]
        with pytest.raises(TimeoutError if ending == "timeout" else WorkerDiedError):
            first.get()
        assert [r.get(timeout=HANG_GUARD) for r in queued] == [0, 1, 4]
        assert pool.apply(square, (5,)) == 25


@pytest.mark.timeout(HANG_GUARD)
def test_apply_after_a_map_whose_workers_retired():
    """worker_lifespan retires the workers at the end of the map; an apply that follows on
    the kept-alive pool gets fresh workers."""
    with WorkerPool(n_jobs=2, keep_alive=True) as pool:
        assert pool.map(square, range(6), worker_lifespan=1, chunk_size=1) == [
            x * x for x in range(6)]
        assert pool.apply(square, (7,)) == 49


@pytest.mark.timeout(HANG_GUARD)
def test_every_apply_on_a_worker_whose_init_failed_gets_the_init_error():
    """The second apply used to get no answer at all: get() waited forever."""
    with WorkerPool(n_jobs=1) as pool:
        for _ in range(3):
            pending = pool.apply_async(square, (3,), worker_init=failing_init)
            with pytest.raises(ValueError, match="worker_init refused to start"):
                pending.get(timeout=HANG_GUARD)


# -- (3) workers that cannot start ----------------------------------------------------------
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("start_method", ["auto", "spawn", "threading"])
def test_worker_init_exception_surfaces(start_method):
    with WorkerPool(n_jobs=2, start_method=start_method) as pool:
        with pytest.raises(ValueError) as info:
            pool.map(square, range(10), worker_init=failing_init)
        assert "worker_init refused to start" in str(info.value)
        assert "worker_init" in _cause_text(info.value)
        _assert_pool_works(pool)


@pytest.fixture
def vanishing_module(tmp_path):
    """A module that the parent has imported but that no new process can import."""
    name = f"nbpool_vanishing_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        def triple(x):
            return x * 3

        def init():
            pass
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
    (tmp_path / f"{name}.py").unlink()
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    importlib.invalidate_caches()
    try:
        yield module
    finally:
        sys.modules.pop(name, None)


@pytest.mark.timeout(HANG_GUARD)
def test_spawn_worker_that_cannot_import_the_function(vanishing_module):
    assert vanishing_module.triple(2) == 6  # fine in the parent
    with WorkerPool(n_jobs=2, start_method="spawn") as pool:
        with pytest.raises(TaskPicklingError) as info:
            pool.map(vanishing_module.triple, range(10))
        text = _all_text(info.value)
        assert "could not be loaded in Worker-" in text, text
        assert f"No module named '{vanishing_module.__name__}'" in text, text
        assert isinstance(info.value.__cause__, ModuleNotFoundError)
        _assert_pool_works(pool)


@pytest.mark.timeout(HANG_GUARD)
def test_spawn_worker_that_cannot_import_its_worker_init(vanishing_module):
    with WorkerPool(n_jobs=2, start_method="spawn") as pool:
        with pytest.raises(WorkerStartError) as info:
            pool.map(square, range(10), worker_init=vanishing_module.init)
        assert "Worker-" in str(info.value)
        assert "could not start" in str(info.value)
        # the worker sends the reason before it exits
        assert f"No module named '{vanishing_module.__name__}'" in str(info.value)
        assert isinstance(info.value.__cause__, ModuleNotFoundError)
        _assert_pool_works(pool)


# -- (4) pickling failures -----------------------------------------------------------------
@pytest.mark.timeout(HANG_GUARD)
def test_unpicklable_argument_names_the_task():
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(TaskPicklingError) as info:
            pool.map(identity, [0, 1, 2, threading.Lock(), 4, 5])
        assert isinstance(info.value, TypeError)
        assert "task 3" in str(info.value)
        _assert_pool_works(pool)


@pytest.mark.timeout(HANG_GUARD)
def test_unpicklable_result_names_the_task():
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(TaskPicklingError) as info:
            pool.map(lock_on_2, range(6))
        assert isinstance(info.value, TypeError)
        text = _all_text(info.value)
        assert "task 2" in text
        assert "Arg 0: 2" in text
        _assert_pool_works(pool)


class _BrokenStr(Exception):
    def __str__(self):
        raise RuntimeError("no text")


def test_describe_exception_names_the_type_even_without_a_message():
    assert describe_exception(ValueError("bad value")) == "ValueError: bad value"
    assert describe_exception(MemoryError()) == "MemoryError"
    assert describe_exception(SilentError()) == "SilentError"
    assert describe_exception(_BrokenStr()).startswith("_BrokenStr: <_BrokenStr.__str__ failed")


def raise_broken_str_on_2(x):
    if x == 2:
        raise _BrokenStr()
    return x


@pytest.mark.timeout(HANG_GUARD)
def test_a_progress_bar_does_not_replace_an_error_whose_str_fails():
    """The bar's final text describes the error; that must not raise instead of it."""
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(_BrokenStr):
            pool.map(raise_broken_str_on_2, range(6), progress_bar=True)
        _assert_pool_works(pool)


# An argument or result whose pickling raises an exception with an empty message (as a
# MemoryError does): the error must still say why, not end with a bare colon.
SILENT_PICKLING = [
    pytest.param(lambda pool: pool.map(silent_on_2, range(6)),
                 "the result of task 2 could not be pickled: SilentError", id="map_result"),
    pytest.param(lambda pool: pool.apply(silent_on_2, (2,)),
                 "the result of the task could not be pickled: SilentError", id="apply_result"),
    pytest.param(lambda pool: pool.map(identity, [0, 1, PicklesWithASilentError(), 3]),
                 "(Arg 0: PicklesWithASilentError()): SilentError", id="map_argument"),
    pytest.param(lambda pool: pool.apply(identity, (PicklesWithASilentError(),)),
                 "the apply task could not be pickled (Arg 0: PicklesWithASilentError()): "
                 "SilentError", id="apply_argument"),
]


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("run, expected", SILENT_PICKLING)
def test_pickling_error_with_an_empty_message_names_its_type(run, expected):
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(TaskPicklingError) as info:
            run(pool)
        assert expected in str(info.value), str(info.value)
        assert not str(info.value).rstrip().endswith(":"), str(info.value)
        _assert_pool_works(pool)


@pytest.mark.timeout(SHORT_HANG_GUARD)
def test_unpicklable_apply_argument():
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(TypeError):
            pool.apply(identity, (threading.Lock(),))
        assert pool.apply(square, (3,)) == 9
        pool.stop_and_join()  # the failed submission must not leave a result to wait for


@pytest.mark.timeout(HANG_GUARD)
def test_unpicklable_apply_result():
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(TaskPicklingError):
            pool.apply(lock_on_2, (2,))
        assert pool.apply(square, (3,)) == 9
        pool.stop_and_join()


# -- (5) timeouts --------------------------------------------------------------------------
@pytest.mark.timeout(SHORT_HANG_GUARD)
@pytest.mark.parametrize("func, n_tasks, options, names", [
    pytest.param(sleep_30, 4, {"task_timeout": 0.5}, ["task_timeout", "timed out"],
                 id="task_timeout"),
    pytest.param(square, 4, {"worker_init": slow_init, "worker_init_timeout": 0.5},
                 ["worker_init"], id="worker_init_timeout"),
    pytest.param(square, 20, {"worker_exit": slow_exit, "worker_exit_timeout": 0.5},
                 ["worker_exit"], id="worker_exit_timeout"),
])
def test_timeout_raised_by_map(func, n_tasks, options, names):
    """The error must say which timeout struck: it names at least one of ``names``."""
    with WorkerPool(n_jobs=2) as pool:
        with pytest.raises(TimeoutError) as info:
            pool.map(func, range(n_tasks), **options)
        assert "Worker-" in str(info.value)
        assert any(name in str(info.value) for name in names), str(info.value)
        _assert_pool_works(pool)


@pytest.mark.timeout(SHORT_HANG_GUARD)
def test_worker_exit_timeout_raised_by_stop_and_join():
    with WorkerPool(n_jobs=2, keep_alive=True) as pool:
        assert pool.map(square, range(20), worker_exit=slow_exit,
                        worker_exit_timeout=0.5) == [x * x for x in range(20)]
        with pytest.raises(TimeoutError) as info:
            pool.stop_and_join()
        assert "worker_exit" in str(info.value)
        _assert_pool_works(pool)
        pool.stop_and_join()


# -- helpers for scripts run in a fresh interpreter ------------------------------------------
def _run_script(code: str, *args: str, stdin: bool = False, python_flags=(),
                timeout: float = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    code = textwrap.dedent(code)
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if stdin:
        cmd = [sys.executable, *python_flags, "-", *args]
        return subprocess.run(cmd, input=code, capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)
    cmd = [sys.executable, *python_flags, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (
        f"exit code {result.returncode}\n--- stdout ---\n{result.stdout}\n"
        f"--- stderr ---\n{result.stderr}"
    )
    return result.stdout


UNPICKLABLE_GLOBAL_SCRIPT = """
import sys, threading
from nbpool import WorkerPool
from nbpool.engine.errors import TaskPicklingError

lock = threading.Lock()

def holds_lock(x):
    with lock:
        return x

def calls_it(x):
    return holds_lock(x) + 1

with WorkerPool(2, start_method=sys.argv[1]) as pool:
    for func in (holds_lock, calls_it):
        try:
            pool.map(func, range(4))
        except TaskPicklingError as exc:
            print(exc)
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_an_unpicklable_global_is_named(start_method):
    """A function of __main__ (a notebook cell, a script) travels with the globals it uses:
    the error names the one that cannot be pickled, and the function that uses it."""
    lines = _check(_run_script(UNPICKLABLE_GLOBAL_SCRIPT, start_method)).splitlines()
    assert lines == [
        "the function __main__.holds_lock could not be pickled to send it to the workers: it "
        "uses the global variable 'lock', which cannot be pickled: TypeError: cannot pickle "
        "'_thread.lock' object",
        "the function __main__.calls_it could not be pickled to send it to the workers: it "
        "uses the global variable 'lock' (through holds_lock), which cannot be pickled: "
        "TypeError: cannot pickle '_thread.lock' object",
    ], lines


# -- (6) KeyboardInterrupt -----------------------------------------------------------------
INTERRUPT_SCRIPT = """
import os, sys, time
from nbpool import WorkerPool

def slow(x):
    # one write(2) per line: two workers' print() calls can interleave on the shared pipe
    os.write(1, f"task {x}\\n".encode())
    time.sleep(60)
    return x

if __name__ == "__main__":
    method = sys.argv[1]
    with WorkerPool(n_jobs=2, start_method=method) as pool:
        print("started", flush=True)
        pool.map(slow, range(8))
    print("map returned", flush=True)
"""


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("start_method", ["auto", "forkserver"])
def test_keyboard_interrupt_stops_map_and_workers(start_method):
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(INTERRUPT_SCRIPT), start_method],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    children: list[psutil.Process] = []
    try:
        lines = []
        while sum(line.startswith("task") for line in lines) < 2:  # both workers are busy
            line = proc.stdout.readline()
            assert line, f"script ended early: {lines} {proc.stderr.read()}"
            lines.append(line)
        assert lines[0].strip() == "started"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftover = _wait_gone(children, timeout=5)
        for child in leftover:
            try:
                child.kill()
            except psutil.Error:
                pass
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err, err
    assert "map returned" not in out
    assert not leftover, [(p.pid, p.cmdline()) for p in leftover if p.is_running()]


# -- (7) start methods ---------------------------------------------------------------------
@pytest.mark.startmethod
def test_bogus_start_method():
    with pytest.raises(ValueError):
        WorkerPool(start_method="bogus")


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn", "threading", "auto"])
def test_start_method_is_concrete_after_map(start_method):
    with WorkerPool(n_jobs=2, start_method=start_method) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert pool.start_method in CONCRETE_METHODS
        if start_method != "auto":
            assert pool.start_method == start_method


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
def test_threading_pool_terminate_leaves_worker_threads_quiet():
    with WorkerPool(n_jobs=2, start_method="threading", keep_alive=True) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
    # leaving the with block terminates the idle worker threads: they must end cleanly


@pytest.mark.startmethod
@pytest.mark.timeout(HANG_GUARD)
def test_threading_pool_error_then_terminate_is_clean(monkeypatch):
    """Terminating busy worker threads after a task error must raise the task's error, and
    the threads must end without an exception of their own (each trial is a race)."""
    thread_errors = []
    monkeypatch.setattr(threading, "excepthook",
                        lambda hook_args: thread_errors.append(repr(hook_args.exc_value)))
    raised = []
    for _ in range(10):
        try:
            with WorkerPool(n_jobs=2, start_method="threading") as pool:
                pool.map(raise_value_error_on_13, range(2000), chunk_size=1)
        except BaseException as exc:  # noqa: BLE001 - what is raised is the point
            raised.append(repr(exc)[:120])
        else:
            raised.append("nothing raised")
        for thread in threading.enumerate():
            if thread.name.startswith("nbpool-Worker"):
                thread.join(timeout=5)
    assert all(text.startswith("ValueError") for text in raised), raised
    assert not thread_errors, thread_errors


MAIN_MODULE_SCRIPT = """
import sys
from nbpool import WorkerPool

OFFSET = 5

def plain(x):
    return x + OFFSET

def make_closure(k):
    def inner(x):
        return x * k + OFFSET
    return inner

class Box:
    def __init__(self, value):
        self.value = value

def boxed(x):
    return Box(x * 2)

if __name__ == "__main__":
    method = sys.argv[1]
    with WorkerPool(n_jobs=2, start_method=method, keep_alive=True) as pool:
        assert pool.map(lambda x: x * 10, range(12)) == [x * 10 for x in range(12)]
        assert pool.map(make_closure(3), range(12)) == [x * 3 + 5 for x in range(12)]
        assert pool.map(plain, range(12)) == [x + 5 for x in range(12)]
        boxes = pool.map(boxed, range(6))
        assert all(type(b) is Box for b in boxes), [type(b) for b in boxes]
        assert [b.value for b in boxes] == [x * 2 for x in range(6)]
        assert pool.apply(lambda a, b: a * b, (6, 7)) == 42
        print("OK", pool.start_method)
"""


@pytest.mark.startmethod
@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 10)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver", "fork", "auto"])
def test_main_module_functions_via_dash_c(start_method):
    out = _check(_run_script(MAIN_MODULE_SCRIPT, start_method))
    used = out.split("OK", 1)[1].split()[0]
    assert used in CONCRETE_METHODS
    if start_method != "auto":
        assert used == start_method


@pytest.mark.startmethod
@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 10)
@pytest.mark.parametrize("start_method", ["forkserver", "auto", "spawn"])
def test_main_module_functions_via_stdin(start_method):
    out = _check(_run_script(MAIN_MODULE_SCRIPT, start_method, stdin=True))
    used = out.split("OK", 1)[1].split()[0]
    assert used in CONCRETE_METHODS
    if start_method != "auto":
        assert used == start_method


UNGUARDED_SCRIPT = """
import sys
print("BODY", flush=True)
from nbpool import WorkerPool

def double(x):
    return x * 2

with WorkerPool(2, start_method=sys.argv[1]) as pool:
    print("RESULT", pool.map(double, range(4)), flush=True)
"""


@pytest.mark.startmethod
@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 10)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
@pytest.mark.parametrize("how", ["file", "module"])
def test_a_script_without_a_main_guard_runs_once(start_method, how, tmp_path):
    """multiprocessing would run the script again in every spawn child and in the forkserver;
    nbpool hides ``__main__`` from them (functions travel by value)."""
    (tmp_path / "unguarded.py").write_text(textwrap.dedent(UNGUARDED_SCRIPT))
    target = ["-m", "unguarded"] if how == "module" else [str(tmp_path / "unguarded.py")]
    result = subprocess.run([sys.executable, *target, start_method], capture_output=True,
                            text=True, timeout=SUBPROCESS_TIMEOUT, cwd=tmp_path)
    out = _check(result)
    assert out.count("BODY") == 1, out
    assert "RESULT [0, 2, 4, 6]" in out, out


THREADED_SCRIPT = """
import threading, time, warnings
from nbpool import WorkerPool

def cube(x):
    return x ** 3

if __name__ == "__main__":
    threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with WorkerPool(n_jobs=2) as pool:
            assert pool.map(cube, range(10)) == [x ** 3 for x in range(10)]
            print("METHOD", pool.start_method)
    bad = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert not bad, bad
"""


@pytest.mark.startmethod
@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 10)
@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="fork-with-threads DeprecationWarning exists from Python 3.12")
def test_auto_does_not_fork_a_threaded_process():
    result = _run_script(THREADED_SCRIPT, python_flags=("-W", "error::DeprecationWarning"))
    out = _check(result)
    assert "DeprecationWarning" not in result.stderr
    method = out.split("METHOD", 1)[1].split()[0]
    assert method != "fork"


MIXED_METHODS_SCRIPT = """
import json, os, signal, sys, threading, time
from nbpool import WorkerPool

def parent_of_worker(x):
    time.sleep(0.01)  # so that every worker takes a task
    return os.getppid(), os.getpid()

if __name__ == "__main__":
    how = sys.argv[1]
    report = {}
    with WorkerPool(n_jobs=2, keep_alive=True) as pool:  # 'auto', single-threaded: fork
        first = pool.map(parent_of_worker, range(8), chunk_size=1)
        report["first"] = pool.start_method
        report["first_forked"] = {ppid for ppid, _ in first} == {os.getpid()}
        done = threading.Event()
        thread = threading.Thread(target=done.wait)  # now forking would be unsafe
        thread.start()
        try:
            if how == "lifespan":
                after = pool.map(parent_of_worker, range(8), chunk_size=1, worker_lifespan=1)
            else:  # a worker dies between maps; the next map replaces it
                victim = first[0][1]
                os.kill(victim, signal.SIGKILL)
                while open(f"/proc/{victim}/stat").read().split()[2] != "Z":
                    time.sleep(0.01)
                after = pool.map(parent_of_worker, range(8), chunk_size=1)
            report["after"] = pool.start_method
            # a forkserver's child: its parent is the forkserver, not this process
            report["replacement_from_forkserver"] = any(
                ppid != os.getpid() for ppid, _ in after)
        finally:
            done.set()
            thread.join()
    print("REPORT", json.dumps(report))
"""


@pytest.mark.startmethod
@pytest.mark.timeout(SUBPROCESS_TIMEOUT + 10)
@pytest.mark.parametrize("how", ["lifespan", "kill"])
def test_start_method_names_the_method_of_the_newest_worker(how):
    """Under 'auto' a script forks while it has one thread. Once it has started a thread, a
    worker that replaces one (worker_lifespan, a death) comes from the forkserver, and
    ``pool.start_method`` must say so, not report the first workers' fork."""
    out = _check(_run_script(MIXED_METHODS_SCRIPT, how))
    report = json.loads(out.split("REPORT", 1)[1])
    assert report == {"first": "fork", "first_forked": True, "after": "forkserver",
                      "replacement_from_forkserver": True}, report
