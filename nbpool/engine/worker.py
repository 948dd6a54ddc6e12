"""The loop each worker runs: receive a chunk, run its tasks, send one reply per chunk.

Kept free of heavy imports so a forkserver can preload it and new workers start fast.
Counters and timings go to the worker's row of the shared stats block, never into messages.
Large buffers (numpy arrays) arrive and leave in shared memory (``codec``): the tasks see
copy-on-write views of the parent's data, and the segment goes back to the parent for reuse
once the chunk is done, unless a task kept a view of it.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import os
import reprlib
import signal
import sys
import threading
import time
import traceback
from functools import partial
from typing import Any, Callable

from . import codec, errors, output, shm, upstream
from .lifeline import close_inherited_ends, die_with_parent, release_forkserver
from .protocol import (
    APPLY,
    CHUNK,
    EXIT,
    EXIT_ERROR,
    INIT_ERROR,
    JOB,
    READY,
    RESULT,
    START_ERROR,
    STATE,
    STOP,
    TASK_ERROR,
    UNREADABLE,
    Failure,
    JobSpec,
    WorkerSetup,
)
from .serialization import ByValue, Unloadable, dumps
from .stats import N_FIELDS, Field, Status
from .transport import Link

_monotonic = time.monotonic
_NOT_UNPACKED = (str, bytes, bytearray, dict)
BATCH_TARGET_SECONDS = 0.02  # progress is published at least this often on long chunks
TOP_N = 5
_state_repr = reprlib.Repr()
_state_repr.maxstring = _state_repr.maxother = 40
_state_repr.maxlist = _state_repr.maxdict = _state_repr.maxset = 4
MAX_STATE_KEYS = 12


class _Terminated(BaseException):
    """Raised by SIGTERM in a worker so that ``finally`` blocks (nested pools) run."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _acknowledging_sigterm(row, index: int):
    """A SIGTERM handler that first marks the worker TERMINATING in its stats row: the parent
    then knows it is running Python code and gives its ``finally`` blocks time, while it
    kills at once a worker that cannot react (stuck in one long C call)."""

    def on_sigterm(signum, frame):
        row[index] = Status.TERMINATING
        raise _Terminated()

    return on_sigterm


def _is_unpacked(arg: Any) -> bool:
    """mpire's rule: iterables are unpacked as ``*args`` except str, bytes, numpy arrays."""
    if isinstance(arg, _NOT_UNPACKED):
        return False
    if type(arg).__module__ == "numpy":
        return False
    return hasattr(arg, "__iter__")


def _call(target: Callable, arg: Any) -> Any:
    if type(arg) is tuple:
        return target(*arg)
    if isinstance(arg, dict):
        return target(**arg)
    if _is_unpacked(arg):
        return target(*arg)
    return target(arg)


def _batch_runner(target: Callable, kind: str, args: Any) -> Callable[[Any], Any]:
    """Picks the cheapest way to call ``target`` on every element of a chunk."""
    if kind in ("range", "numpy"):
        return partial(map, target)
    kinds = set(map(type, args))
    if kinds == {tuple}:
        return partial(itertools.starmap, target)
    if not any(_is_unpacked(a) or isinstance(a, dict) for a in args):
        return partial(map, target)
    return partial(map, partial(_call, target))


def make_failure(exc: BaseException, worker_id: int, task_index=None, args_text="") -> Failure:
    # Drop the failed code's local variables first: after a MemoryError they hold most
    # of the worker's memory, and building the report needs some.
    traceback.clear_frames(exc.__traceback__)
    return Failure(
        worker_id=worker_id,
        exc_payload=errors.pack_exception(exc),
        type_payload=errors.pack_exception_type(exc),
        type_name=type(exc).__qualname__,
        message=errors.safe_str(exc),
        traceback_text=errors.format_user_traceback(exc),
        task_index=task_index,
        args_text=args_text,
    )


class Worker:
    """State of one worker: its setup, the current job, its stats row and its connection."""

    def __init__(self, conn, stats_block, setup: WorkerSetup, in_thread: bool):
        self.link = Link(conn)
        self.setup = setup
        use_shm = setup.shared_memory and self.link.can_pass_fds and shm.supported()
        self.segments = shm.SegmentPool(keep=4) if use_shm else None  # for results
        self.inputs: shm.Mapped | None = None  # the segment of the message being run
        self.give_back: list[int] = []  # the parent's segments, free again
        self.in_thread = in_thread
        self.row = memoryview(stats_block).cast("B").cast("d")
        self.base = setup.worker_id * N_FIELDS
        self.worker_state: dict = {}
        self.prefix = self._prefix()
        self.job: JobSpec | None = None
        self.job_id: int | None = None
        self.received = 0  # messages received, unreadable ones included (see UNREADABLE)
        self.target: Callable | None = None
        self.init_done = False
        self.init_failed = False
        self.init_failure: Failure | None = None
        self.tasks_run = 0
        self.top: list = []  # heap of (seconds, tie, args_text) for insights
        self.send_lock = threading.Lock()  # a task's threads may print while we reply
        self.state_summary: dict | None = None

    def _prefix(self) -> tuple:
        prefix: list = []
        if self.setup.pass_worker_id:
            prefix.append(self.setup.worker_id)
        if self.setup.shared_objects is not None:
            prefix.append(self.setup.shared_objects)
        if self.setup.use_worker_state:
            prefix.append(self.worker_state)
        return tuple(prefix)

    # -- stats -------------------------------------------------------------------------
    def put(self, field: Field, value: float) -> None:
        self.row[self.base + field] = value

    def add(self, field: Field, value: float) -> None:
        self.row[self.base + field] += value

    # -- messages --------------------------------------------------------------------
    def encode(self, message: tuple) -> codec.Outgoing:
        return codec.encode(message, self.segments)

    def send(self, message: tuple | codec.Outgoing) -> None:
        outgoing = message if isinstance(message, codec.Outgoing) else self.encode(message)
        output.flush()  # printed lines go ahead of the reply that follows them
        with self.send_lock:
            give_back, self.give_back = self.give_back, []
            self.link.send(outgoing.payload, outgoing.fds + give_back)

    def relay(self, message: tuple) -> None:
        """Send output or a nested pool's progress up (from any thread of this worker)."""
        payload = dumps(message)
        with self.send_lock:
            self.link.send(payload)

    def receive(self) -> list | None:
        """The next message; None if it could not be unpickled here (the parent is told).

        Raises EOFError or OSError if the connection is gone."""
        payload, fds = self.link.recv()
        self.received += 1
        try:
            incoming = codec.decode(payload, fds)
        except _Terminated:
            raise
        except BaseException as exc:  # e.g. a module this process cannot import
            self.send((UNREADABLE, self.received, self.failure(exc)))
            return None
        shm.take_back(self.segments, incoming.returned)  # our result segments, free again
        self.inputs = incoming.mapped
        return list(incoming.message)

    def release_inputs(self) -> None:
        """Hands the message's segment back to the parent, unless a task kept a view of it."""
        if self.inputs is not None:
            fd = self.inputs.release()
            self.inputs = None
            if fd is not None:
                self.give_back.append(fd)

    def report_state(self) -> None:
        """Tell the parent about a changed worker_state (keys and short value reprs)."""
        if not self.setup.use_worker_state:
            return
        try:
            items = list(self.worker_state.items())
            summary = {str(k): _state_repr.repr(v) for k, v in items[:MAX_STATE_KEYS]}
            if len(items) > MAX_STATE_KEYS:
                summary["..."] = f"{len(items) - MAX_STATE_KEYS} more keys"
        except Exception as exc:  # a broken __repr__ must not break the task
            summary = {"<unavailable>": errors.describe_exception(exc)}
        if summary != self.state_summary:
            self.state_summary = summary
            self.send((STATE, summary))

    def failure(self, exc: BaseException, task_index=None, args_text="") -> Failure:
        return make_failure(exc, self.setup.worker_id, task_index, args_text)

    def close(self) -> None:
        if self.segments is not None:
            self.segments.clear()
        shm.close_all(self.give_back)
        self.give_back = []
        self.link.close()

    # -- lifecycle ---------------------------------------------------------------------
    def run(self) -> None:
        self.put(Field.PID, os.getpid())
        ready = _monotonic()
        self.put(Field.READY_AT, ready)
        self.add(Field.START_UP_TIME, max(0.0, ready - self.row[self.base + Field.STARTED_AT]))
        # not idle before worker_init has run: the parent watches worker_init_timeout from
        # STARTING on, and would miss an init that starts while it is already waiting
        self.put(Field.STATUS, Status.IDLE if self.setup.worker_init is None else Status.STARTING)
        self.send((READY, os.getpid()))
        # worker_init runs now, as the parent is still starting the other workers and
        # preparing the map: its work must not wait for the first message
        if self.setup.worker_init is not None and self.ensure_init():
            self.report_state()
        while True:
            waited_from = _monotonic()
            try:
                message = self.receive()
            except (EOFError, OSError):
                return  # the parent is gone: nothing left to do
            self.add(Field.WAITING_TIME, _monotonic() - waited_from)
            if message is None:
                continue
            tag = message[0]
            if tag in (CHUNK, APPLY):
                if tag == CHUNK:
                    self.mark_running(message[2])
                run = self.run_chunk if tag == CHUNK else self.run_apply
                reply = run(message)  # empties ``message``: no view of the inputs is left here
                self.release_inputs()
                if reply is not None:
                    self.report_state()
                    self.send(reply)
                self.put(Field.RUNNING_CHUNK, 0)  # answered
            elif tag == JOB:
                self.job_id = message[1]
                self.job = message[2]
                self.target = self._bind(self.job.func) if self.job.func is not None else None
                self.top = []
                if self.segments is not None:
                    self.segments.clear()  # a new map: let the last one's memory go
                if self.ensure_init():
                    self.report_state()
            elif tag == STOP:
                self.stop()
                return

    def mark_running(self, chunk_index: int) -> None:
        """Tells the parent, should this worker die, which chunk it had started and how many
        of its tasks it had counted as done (so that a re-run does not count them twice)."""
        self.put(Field.UNREPORTED_TASKS, 0)
        self.put(Field.RUNNING_CHUNK, chunk_index + 1)

    def _bind(self, func: Callable) -> Callable:
        return partial(func, *self.prefix) if self.prefix else func

    def ensure_init(self) -> bool:
        if self.init_done:
            return True
        if self.init_failed:  # every task it is given gets the same answer
            self.send((INIT_ERROR, self.init_failure))
            return False
        init = self.setup.worker_init
        if init is not None:
            self.put(Field.STATUS, Status.INIT)
            started = _monotonic()
            self.put(Field.PHASE_START, started)
            try:
                init(*self.prefix)
            except _Terminated:
                raise
            except BaseException as exc:  # SystemExit in worker_init is its error, too
                self.init_failed = True
                self.init_failure = self.failure(exc)
                self.put(Field.PHASE_START, 0.0)
                self.send((INIT_ERROR, self.init_failure))
                return False
            finally:
                self.add(Field.INIT_TIME, _monotonic() - started)
            self.put(Field.PHASE_START, 0.0)
        self.init_done = True
        self.put(Field.STATUS, Status.IDLE)
        return True

    def stop(self) -> None:
        exit_func = self.setup.worker_exit
        if exit_func is None or not self.init_done or self.tasks_run == 0:
            self.send((EXIT, False, None))
            return
        self.put(Field.STATUS, Status.EXITING)
        started = _monotonic()
        self.put(Field.PHASE_START, started)
        try:
            value = exit_func(*self.prefix)
        except _Terminated:
            raise
        except BaseException as exc:  # SystemExit in worker_exit is its error, too
            self.send((EXIT_ERROR, self.failure(exc)))
            return
        finally:
            self.add(Field.EXIT_TIME, _monotonic() - started)
            self.put(Field.PHASE_START, 0.0)
        try:
            self.send((EXIT, True, value))
        except Exception as exc:
            self.send((EXIT_ERROR, self.failure(exc)))

    # -- tasks -------------------------------------------------------------------------
    def run_chunk(self, message: list) -> codec.Outgoing | None:
        """Runs a chunk; returns its encoded reply (RESULT or TASK_ERROR)."""
        _, job_id, chunk_index, start, kind, args, one_by_one = message
        message.clear()
        if job_id != self.job_id:  # its JOB message could not be unpickled: no function
            missing = RuntimeError(f"the function of job {job_id} did not reach this worker")
            return self.encode((TASK_ERROR, job_id, chunk_index, self.failure(missing)))
        if not self.ensure_init():
            return None
        self.put(Field.STATUS, Status.WORKING)
        results: list = []
        began = _monotonic()
        try:
            if self.job.track_each_task or one_by_one:
                self._run_tracked(kind, start, args, results)
            else:
                self._run_batched(kind, start, args, results)
        except _Terminated:
            raise
        except BaseException as exc:  # SystemExit in a task is an error of that task
            done = len(results)
            index = start + done
            args_text = errors.describe_args(self._nth(args, kind, done), kind)
            self._finish_chunk(began, done)
            failure = self.failure(exc, index, args_text)
            return self.encode((TASK_ERROR, job_id, chunk_index, failure))
        took = self._finish_chunk(began, len(results))
        top = sorted(self.top, reverse=True) if self.job.insights else None
        try:
            return self.encode((RESULT, job_id, chunk_index, results, top, took))
        except Exception as exc:
            return self.encode(
                self._unpicklable_result(job_id, chunk_index, start, kind, args, results, exc))

    def _finish_chunk(self, began: float, done: int) -> float:
        """Books the chunk's working time, which it returns."""
        took = _monotonic() - began
        self.add(Field.WORKING_TIME, took)
        self.put(Field.PHASE_START, 0.0)
        self.put(Field.CURRENT_TASK, -1)
        self.put(Field.STATUS, Status.IDLE)
        self.tasks_run += done
        return took

    @staticmethod
    def _nth(args: Any, kind: str, n: int) -> Any:
        if kind == "numpy":
            return args
        return args[n]

    def _run_batched(self, kind: str, start: int, args: Any, results: list) -> None:
        """Runs the chunk in growing batches: as fast as a plain ``map``, yet the progress
        counter moves at least every ``BATCH_TARGET_SECONDS`` even when tasks are slow."""
        run = _batch_runner(self.target, kind, args)
        if kind == "numpy":
            args = (args,)
        total = len(args)
        done = 0
        batch = 1
        row, base = self.row, self.base
        while done < total:
            piece = args[done : done + batch]
            row[base + Field.CURRENT_TASK] = start + done
            row[base + Field.CURRENT_SPAN] = len(piece)
            row[base + Field.PHASE_START] = began = _monotonic()
            results.extend(run(piece))  # extend keeps finished results if a task raises
            row[base + Field.TASKS_DONE] += len(piece)
            row[base + Field.UNREPORTED_TASKS] += len(piece)
            done += len(piece)
            if _monotonic() - began < BATCH_TARGET_SECONDS:
                batch *= 2

    def _run_tracked(self, kind: str, start: int, args: Any, results: list) -> None:
        """One task at a time, with its start stamp (for task_timeout) and duration."""
        target = self.target
        if kind == "numpy":
            args = (args,)
        row, base = self.row, self.base
        insights = self.job.insights
        top = self.top
        call = (lambda a: target(a)) if kind != "items" else (lambda a: _call(target, a))
        row[base + Field.CURRENT_SPAN] = 1
        for offset, arg in enumerate(args):
            row[base + Field.CURRENT_TASK] = start + offset
            row[base + Field.PHASE_START] = began = _monotonic()
            results.append(call(arg))
            took = _monotonic() - began
            row[base + Field.TASKS_DONE] += 1
            row[base + Field.UNREPORTED_TASKS] += 1
            if insights and (len(top) < TOP_N or took > top[0][0]):
                entry = (took, start + offset, errors.describe_args(arg, kind))
                if len(top) < TOP_N:
                    heapq.heappush(top, entry)
                else:
                    heapq.heapreplace(top, entry)

    def _unpicklable_result(self, job_id, chunk_index, start, kind, args, results, exc) -> tuple:
        bad = 0
        for bad, value in enumerate(results):
            try:
                dumps(value)
            except Exception as value_exc:
                exc = value_exc
                break
        error = errors.TaskPicklingError(
            f"the result of task {start + bad} could not be pickled: "
            f"{errors.describe_exception(exc)}"
        )
        args_text = errors.describe_args(self._nth(args, kind, bad), kind)
        return (TASK_ERROR, job_id, chunk_index, self.failure(error, start + bad, args_text))

    def run_apply(self, message: list) -> codec.Outgoing | None:
        """Runs an apply task; returns its encoded reply."""
        _, job_id, func, args, kwargs = message
        message.clear()
        if not self.ensure_init():
            return None
        self.put(Field.STATUS, Status.WORKING)
        began = _monotonic()
        self.put(Field.PHASE_START, began)
        self.put(Field.CURRENT_TASK, 0)
        try:
            value = func(*self.prefix, *args, **kwargs)
        except _Terminated:
            raise
        except BaseException as exc:
            self._finish_chunk(began, 1)
            return self.encode(
                (TASK_ERROR, job_id, 0, self.failure(exc, None, errors.describe_args(args))))
        took = self._finish_chunk(began, 1)
        self.add(Field.TASKS_DONE, 1)
        try:
            return self.encode((RESULT, job_id, 0, [value], None, took))
        except Exception as exc:
            error = errors.TaskPicklingError(
                f"the result of the task could not be pickled: {errors.describe_exception(exc)}")
            return self.encode(
                (TASK_ERROR, job_id, 0, self.failure(error, None, errors.describe_args(args))))


def _prepare_process(setup: WorkerSetup, conn) -> None:
    """Process-wide settings for a worker process (never for a worker thread)."""
    # Ctrl-C and a Jupyter interrupt are for the parent: it stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # What the process inherited (under fork: the user's whole heap) leaves the garbage
    # collector's view: a full collection writes to every object it tracks, and so copied
    # every inherited page (a 200,000-dict heap: +56 MB of private memory per worker).
    gc.freeze()
    close_inherited_ends(conn)  # nothing to close unless forked from the parent
    release_forkserver()
    if setup.die_with_parent:
        die_with_parent(setup.parent_pid)
    for path in setup.sys_path:
        if path not in sys.path:
            sys.path.append(path)
    if setup.cwd and os.getcwd() != setup.cwd:
        try:
            os.chdir(setup.cwd)
        except OSError:
            pass
    if setup.cpu_ids:
        try:
            os.sched_setaffinity(0, setup.cpu_ids)
        except (AttributeError, OSError):
            pass


def _report_unloadable_start(conn, exc: BaseException) -> None:
    """Tells the parent why this worker cannot start (its start data did not unpickle)."""
    link = Link(conn)
    try:
        link.send(dumps((START_ERROR, make_failure(exc, -1))))
    except OSError:
        pass  # the parent is gone
    finally:
        link.close()


def worker_main(conn, start_data: tuple | ByValue, in_thread: bool = False) -> None:
    """Entry point of a worker process or thread; ``start_data`` is (stats block, setup)."""
    worker = None
    try:  # a SIGTERM can come at any point, even while the worker is still starting
        if isinstance(start_data, ByValue):
            start_data = start_data.value
        if isinstance(start_data, Unloadable):
            _report_unloadable_start(conn, start_data.error)
            return
        stats_block, setup = start_data
        if in_thread:
            output.track_worker_thread()  # its lines are written whole, not mixed with others'
        else:
            _prepare_process(setup, conn)
        worker = Worker(conn, stats_block, setup, in_thread)
        upstream.become_worker(worker.relay if setup.relay else None, in_thread)
        if not in_thread:
            status_cell = worker.base + Field.STATUS
            signal.signal(signal.SIGTERM, _acknowledging_sigterm(worker.row, status_cell))
            if setup.relay:
                output.install(worker.relay)
        worker.run()
    except (_Terminated, EOFError, BrokenPipeError, ConnectionResetError):
        pass  # terminated, or the parent closed its end: nobody is left to answer
    finally:
        try:
            output.flush()
        except Exception:
            pass  # the parent is gone
        if not in_thread:
            # what is printed from here on (an uncaught error's traceback) must not go to
            # the connection closed below
            output.uninstall()
        else:  # before the connection closes: the pool may return as soon as it has
            output.untrack_worker_thread()
        if worker is not None:
            worker.put(Field.STATUS, Status.STOPPED)
            worker.put(Field.PHASE_START, 0.0)
            worker.close()
        else:
            try:
                conn.close()
            except OSError:
                pass
