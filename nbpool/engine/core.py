"""The engine: starts and stops workers, moves chunks and replies, notices deaths and timeouts.

Everything happens in the thread that calls into the pool (``pump``): there are no helper
threads, no polling sleeps. ``pump`` waits on every worker socket and process sentinel at
once and wakes on the first event or the nearest deadline (a task timeout, a progress tick).
Large buffers travel in shared-memory segments (``codec``, ``shm``) unless the pool was made
with ``use_shared_memory=False``.
"""

from __future__ import annotations

import os
import selectors
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Pipe
from multiprocessing.connection import wait as wait_for
from typing import Any, Callable, Iterable

from . import codec, errors, lifeline, output, shm, start_methods
from .protocol import (
    APPLY,
    EXIT,
    EXIT_ERROR,
    INIT_ERROR,
    JOB,
    OUTPUT,
    PROGRESS,
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
from .serialization import ByValue, dumps, dumps_at_start
from .signals import interrupts_deferred
from .start_payload import SharedStartSegment, StartPayload
from .stats import Field, StatsTable, Status, allocate
from .transport import Channel
from .worker import worker_main

PREFETCH = 2  # chunks a worker may hold: one running, one waiting, so it never idles
TERMINATE_GRACE = 0.3  # seconds a worker that reacts to SIGTERM has for its finally blocks
TERMINATE_ACK = 0.05  # seconds a worker has to react to SIGTERM at all (in C code it cannot)
RECHECK_INTERVAL = 0.02  # how soon to look again at a timeout whose clock has not started
MAX_RETURNED = 4  # result segments waiting to go back to one worker (it keeps as many)
# relayed output is flushed at most this long after it was written (see output.py): a stream
# flushed after every message made ipykernel send one iopub message per line
OUTPUT_FLUSH_SECONDS = 0.1


class Job:
    """A unit of work the engine routes replies to: one map, or one apply task."""

    _ids = iter(range(1, sys.maxsize))

    def __init__(
        self,
        spec: JobSpec | None,
        # (chunk index, results, top tasks, working seconds, bytes the results took)
        on_result: Callable[[int, list, Any, float, int], None],
        on_failure: Callable[[BaseException], None],
        task_timeout: float | None = None,
        on_lease: Callable[[int, "Lease"], None] | None = None,
        requeue: Callable[["InFlight", int], None] | None = None,
        task_retries: int = 0,
    ):
        self.id = next(Job._ids)
        self.spec = spec
        self.spec_message = _job_message(self.id, spec) if spec is not None else None
        self.on_result = on_result
        self.on_failure = on_failure
        self.on_lease = on_lease  # takes the segment of a chunk's results, if it has one
        self.task_timeout = task_timeout
        # requeue(item, worker_id) takes back a chunk that a dead worker held; None: the job
        # cannot re-run work and fails instead
        self.requeue = requeue
        self.task_retries = task_retries
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            self.on_failure(exc)

    def detach(self) -> None:
        """Drop the callbacks and the error once the job is over. The callbacks point back
        at the job's owner, and the error's traceback at the frames that hold it: either
        cycle would keep the owner (and its pool, and its workers) alive until the garbage
        collector runs."""
        self.on_result = _ignore
        self.on_failure = _ignore
        self.on_lease = None
        self.requeue = None
        if self.error is not None:
            self.error = FAILED


def _job_message(job_id: int, spec: JobSpec) -> bytes:
    try:
        return dumps((JOB, job_id, spec))
    except Exception as exc:  # only the function can fail: the rest is plain data
        raise errors.unpicklable_function(spec.func, exc, "the workers") from exc


FAILED = RuntimeError("the job failed")  # Job.error once the job's own error was handed over


def _ignore(*args) -> None:
    pass


class Lease:
    """The shared-memory segment a worker's results arrived in.

    ``release`` sends it back to that worker for reuse once no result views it any more;
    otherwise the results keep their mapping and the parent keeps no descriptor.
    """

    __slots__ = ("mapped", "slot")

    def __init__(self, mapped: shm.Mapped, slot: "WorkerSlot"):
        self.mapped = mapped
        self.slot = slot

    def release(self) -> None:
        fd = self.mapped.release()
        if fd is None:
            return
        if self.slot.gone or len(self.slot.returnable) >= MAX_RETURNED:
            shm.close(fd)
        else:
            self.slot.returnable.append(fd)

    def detach(self) -> None:
        self.mapped.detach()


@dataclass
class InFlight:
    job: Job
    index: int  # chunk index within the job
    start: int  # input index of its first task
    size: int
    args: Any
    kind: str
    retries: int = 0  # times this chunk was re-run after its worker died
    sequence: int = 0  # which message to its worker it was (see UNREADABLE)


@dataclass(eq=False)
class WorkerSlot:
    """The parent's view of one worker (a process or a thread)."""

    worker_id: int
    method: str
    handle: Any  # multiprocessing.Process or threading.Thread
    channel: Channel
    pid: int | None = None
    ready: bool = False
    job_id: int | None = None  # the job whose spec this worker holds
    job_sequence: int = 0  # which message to it that spec was
    sent: int = 0  # messages sent to it
    start_error: BaseException | None = None  # why it could not unpickle its start data
    in_flight: "OrderedDict[tuple[int, int], InFlight]" = field(default_factory=OrderedDict)
    tasks_since_start: int = 0
    stopping: bool = False  # STOP sent
    retiring: bool = False  # stopped for worker_lifespan: a fresh worker takes its slot
    exited: bool = False  # EXIT received
    gone: bool = False  # process ended / thread finished and cleaned up
    last_returned: float = 0.0
    returnable: list = field(default_factory=list)  # its segments, free again, to send back

    @property
    def in_flight_tasks(self) -> int:
        return sum(item.size for item in self.in_flight.values())

    @property
    def sentinel(self):
        return getattr(self.handle, "sentinel", None)


@dataclass
class _Launch:
    """A worker made ready to start (see ``Engine._start_workers``)."""

    worker_id: int
    method: str
    setup: WorkerSetup
    handle: Any  # multiprocessing.Process or threading.Thread, not started yet
    channel: Channel
    child_conn: Any

    def close_child_end(self) -> None:
        """The child's end, once the child has its own copy (or will never start)."""
        lifeline.forget_end(self.child_conn)
        self.child_conn.close()

    def discard(self) -> None:
        """For a worker that did not start."""
        self.channel.close()
        self.close_child_end()


class Engine:
    """Owns the workers of one pool."""

    def __init__(self, n_jobs: int, start_method: str, daemon: bool, cpu_ids,
                 shared_memory: bool = True):
        self.n_jobs = n_jobs
        self.start_method = start_method
        self.daemon = daemon
        self.cpu_ids = cpu_ids  # list of lists (one per worker) or None
        self.stats_block = allocate(n_jobs)
        self.stats = StatsTable(self.stats_block)
        self.slots: list[WorkerSlot | None] = [None] * n_jobs
        self.jobs: dict[int, Job] = {}
        self.selector = selectors.DefaultSelector()
        self.exit_results: list = []
        self.exit_errors: list[BaseException] = []
        self.setup_key: tuple | None = None
        self._setup_args: dict | None = None
        self.method_used: str | None = None  # the method of the worker started last
        self._launched_tracker: int | None = None  # a resource tracker our starts launched
        self.lifespan: int | None = None
        self.init_timeout: float | None = None
        self.exit_timeout: float | None = None
        self.apply_queue: list[tuple[Job, codec.Outgoing, Any]] = []
        self._owner_pid = os.getpid()
        # where relayed worker output and nested pools' progress reports go
        self.on_output: Callable[[str, str], None] = output.write_to_parent_stream
        self.output_since: float | None = None  # when unflushed relayed output was written
        self.on_progress: Callable[[dict], None] = lambda report: None
        self.last_states: dict[int, dict] = {}  # worker id -> state summary, kept after it ends
        # segments for the buffers we send; None pickles everything into the pipe
        self.segments = shm.SegmentPool() if shared_memory and shm.supported() else None
        self._start_segment = SharedStartSegment()  # large buffers of the workers' start data
        self.closing = False  # stop() or terminate() ran: no worker is restarted for applies
        self.init_error: BaseException | None = None  # a worker_init failure before any job

    # -- workers -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return any(slot is not None and not slot.gone for slot in self.slots)

    def live_slots(self) -> list[WorkerSlot]:
        return [s for s in self.slots if s is not None and not s.gone]

    def start(self, setup_args: dict) -> None:
        """Start every worker with ``setup_args`` (pool parameters, init and exit)."""
        self._setup_args = setup_args
        self.closing = False
        self.init_error = None
        self.stats.reset()
        self.last_states = {}
        self._start_segment.refresh()
        self._start_workers(range(self.n_jobs))

    def _start_workers(self, worker_ids: Iterable[int]) -> None:
        """Prepares every worker first, then starts them back to back, then registers them.

        Between forks the parent's memory is shared with the children forked so far, and
        each page it writes then is copied (~2.4 us here, against ~0.9 us once no child
        shares it): preparing one worker between two forks cost ~250 such copies.
        """
        method = start_methods.resolve(self.start_method)
        launches: list[_Launch] = []
        try:
            for worker_id in worker_ids:
                launches.append(self._prepare_worker(worker_id, method))
        except BaseException:
            for launch in launches:
                launch.discard()
            raise
        started = 0
        try:
            with start_methods.quiet_fork(method, explicit=self.start_method == "fork"), \
                    start_methods.hide_main(method):
                for launch in launches:
                    self._launch(launch)
                    started += 1
        except BaseException as exc:
            for launch in launches[started + 1:]:
                launch.discard()
            for launch in launches[:started]:
                self._adopt(launch)
            if started < len(launches):
                self._explain_start_failure(launches[started], exc)
            raise
        for launch in launches:
            self._adopt(launch)

    def _prepare_worker(self, worker_id: int, method: str) -> "_Launch":
        cpu_ids = self.cpu_ids[worker_id] if self.cpu_ids else None
        setup = WorkerSetup(
            worker_id=worker_id,
            cpu_ids=cpu_ids,
            sys_path=[p for p in sys.path if p],
            cwd=os.getcwd(),
            shared_memory=self.segments is not None,
            # the kernel's parent-death signal follows the thread that started the worker
            die_with_parent=(method == "forkserver"
                             or threading.current_thread() is threading.main_thread()),
            parent_pid=0 if method == "forkserver" else os.getpid(),
            **self._setup_args,
        )
        parent_conn, child_conn = Pipe(duplex=True)
        channel = Channel(parent_conn)  # registered before a fork, which must close it
        if method == "fork":  # the workers forked before this one's start must close it too
            lifeline.close_in_forked_workers(child_conn)
        self.stats.set(worker_id, Field.STATUS, Status.STARTING)
        self.stats.set(worker_id, Field.PHASE_START, 0.0)
        self.stats.set(worker_id, Field.CURRENT_TASK, -1)
        self.stats.set(worker_id, Field.RUNNING_CHUNK, 0)
        self.stats.set(worker_id, Field.UNREPORTED_TASKS, 0)
        if method == "threading":
            handle = threading.Thread(
                target=worker_main,
                args=(child_conn, (self.stats_block, setup), True),
                name=f"nbpool-Worker-{worker_id}",
                daemon=True,
            )
        else:
            # one pickle for both, so a shared-memory arena they share travels once
            start_data = (self.stats_block, setup)
            if method == "fork":
                payload = start_data
            elif self.segments is not None:  # arrays in shared_objects: one shared copy
                payload = StartPayload(start_data, self._start_segment)
            else:
                payload = ByValue(start_data)
            handle = start_methods.get_context(method).Process(
                target=worker_main,
                args=(child_conn, payload),
                name=f"nbpool-Worker-{worker_id}",
                daemon=self.daemon,
            )
        return _Launch(worker_id, method, setup, handle, channel, child_conn)

    def _launch(self, launch: "_Launch") -> None:
        self.stats.set(launch.worker_id, Field.STARTED_AT, time.monotonic())
        if launch.method == "threading":
            launch.handle.start()
            return
        # a tracker that an earlier start launched may have died as that worker did
        # (both are new interpreters): multiprocessing would relaunch it with a warning
        start_methods.bury_dead_tracker(self._launched_tracker)
        tracker = start_methods.tracker_pid()
        try:
            launch.handle.start()
        finally:
            self._note_new_tracker(tracker)

    def _adopt(self, launch: "_Launch") -> None:
        """A started worker becomes a slot the event loop watches."""
        if launch.method != "threading":
            launch.close_child_end()
        self.method_used = launch.method
        slot = WorkerSlot(launch.worker_id, launch.method, launch.handle, launch.channel)
        self.slots[launch.worker_id] = slot
        self.selector.register(slot.channel.fd, selectors.EVENT_READ, ("conn", slot))
        if slot.sentinel is not None:
            self.selector.register(slot.sentinel, selectors.EVENT_READ, ("sentinel", slot))

    def _explain_start_failure(self, launch: "_Launch", exc: BaseException) -> None:
        """Raises a clearer error than ``exc`` for a worker that could not start, if known."""
        launch.discard()
        if launch.method == "threading":
            return  # nothing was pickled: ``exc`` says it all
        if launch.method == "forkserver" and isinstance(exc, (EOFError, OSError)):
            self._raise_if_forkserver_died(launch.worker_id, exc)
        part = _unpicklable_part(launch.setup, exc)
        if part is not None:
            raise errors.TaskPicklingError(
                f"{part} could not be pickled to start Worker-{launch.worker_id} (start "
                f"method {launch.method!r}): {errors.describe_exception(exc)}") from exc

    def _note_new_tracker(self, before: int | None) -> None:
        """Remembers a resource tracker that a worker's start launched (spawn and forkserver
        launch one on first use): where a worker cannot start, neither can it."""
        now = start_methods.tracker_pid()
        if now is not None and now != before:
            self._launched_tracker = now

    def _bury_dead_tracker(self, environment_suspect: bool) -> None:
        """After a worker failed to start: reap the resource tracker if it died too.

        ``environment_suspect``: the failure came before any nbpool code ran, so a tracker
        launched along with the worker (another new interpreter, same environment) is
        likely ending as well: give it a moment.
        """
        pid = start_methods.tracker_pid()
        wait = start_methods.HELPER_DEATH_WAIT if (
            environment_suspect and pid is not None and pid == self._launched_tracker) else 0.0
        start_methods.bury_dead_tracker(pid, wait)

    def _raise_if_forkserver_died(self, worker_id: int, exc: BaseException) -> None:
        """A forkserver start failed with ``exc``: if the forkserver has died (it could not
        even start, as where no new interpreter runs), reap it and say so."""
        code = start_methods.bury_dead_forkserver()
        if code is None:
            return  # the forkserver runs: the caller re-raises ``exc``
        self._bury_dead_tracker(environment_suspect=True)
        raise errors.WorkerStartError(
            f"Worker-{worker_id} could not start: the forkserver that starts the workers "
            f"ended: {errors.describe_exit(code)}. Its error output (stderr) says why; a "
            "common cause is an environment in which no new Python process can start "
            "(PYTHONPATH, a sitecustomize module)."
        ) from exc

    def reap(self) -> None:
        """Notice workers that died while idle (between maps) and replace them."""
        self.pump(0)
        self.replenish()

    def replenish(self) -> None:
        """Start a fresh worker in every slot whose worker has retired or died."""
        if self._setup_args is None:
            return
        for worker_id, slot in enumerate(self.slots):
            if slot is None or slot.gone:
                self._start_segment.refresh()  # the objects as they are now, as a fork would
                self._start_workers([worker_id])
                restarts = self.stats.get(worker_id, Field.RESTARTS)
                self.stats.set(worker_id, Field.RESTARTS, restarts + 1)

    def _forget(self, slot: WorkerSlot, status: Status) -> None:
        """Release everything the parent holds for a worker that has ended."""
        if slot.gone:
            return
        slot.gone = True
        shm.close_all(slot.returnable)
        slot.returnable = []
        for key in (slot.channel.fd, slot.sentinel):
            if key is None:
                continue
            try:
                self.selector.unregister(key)
            except (KeyError, ValueError):
                pass
        slot.channel.close()
        handle = slot.handle
        if not isinstance(handle, threading.Thread):  # a thread closes its own end
            handle.join(timeout=1.0)
            if handle.exitcode is None:  # should not happen; never leave it running
                handle.kill()
                handle.join()
            try:
                handle.close()
            except ValueError:  # someone else reaped it (SIGCHLD ignored, os.wait()):
                pass  # multiprocessing never learns its exit code, but it is gone
        self.stats.set(slot.worker_id, Field.STATUS, status)
        self.stats.set(slot.worker_id, Field.PHASE_START, 0.0)

    # -- sending -------------------------------------------------------------------------
    def encode(self, message: tuple) -> codec.Outgoing:
        """Pickles a message for a worker; large buffers go to shared memory if enabled."""
        return codec.encode(message, self.segments)

    def _send(self, slot: WorkerSlot, payload: bytes | codec.Outgoing) -> None:
        if isinstance(payload, codec.Outgoing):
            payload, fds = payload.payload, payload.fds
        else:
            fds = []
        if slot.returnable and slot.channel.can_pass_fds:  # its own segments, back for reuse
            fds = fds + slot.returnable
            slot.returnable = []
        slot.sent += 1
        slot.channel.queue(payload, fds)
        self._flush(slot)

    def _flush(self, slot: WorkerSlot) -> None:
        try:
            slot.channel.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the sentinel or EOF reports the death with its context
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if slot.channel.wants_write else 0)
        try:
            self.selector.modify(slot.channel.fd, events, ("conn", slot))
        except (KeyError, ValueError):
            pass

    def _ensure_job(self, slot: WorkerSlot, job: Job) -> None:
        if job.spec_message is not None and slot.job_id != job.id:
            self._send(slot, job.spec_message)
            slot.job_id = job.id
            slot.job_sequence = slot.sent

    def register(self, job: Job) -> None:
        """A new job the replies go to; it fails at once if worker_init already failed."""
        self.jobs[job.id] = job
        if self.init_error is not None:
            error, self.init_error = self.init_error, None
            job.fail(error)

    def set_lifespan(self, lifespan: int | None) -> None:
        """A map's ``worker_lifespan``. Kept-alive workers already past it retire now: no
        chunk would ever be sent to them, and the map would wait for them forever."""
        self.lifespan = lifespan
        for slot in self.live_slots():
            self._maybe_retire(slot)

    def can_take(self, slot: WorkerSlot) -> bool:
        if slot.gone or slot.stopping or len(slot.in_flight) >= PREFETCH:
            return False
        if self.lifespan is not None:
            return slot.tasks_since_start + slot.in_flight_tasks < self.lifespan
        return True

    def send_chunk(self, slot: WorkerSlot, job: Job, index: int, start: int, size: int,
                   args: Any, kind: str, payload: codec.Outgoing, retries: int = 0) -> None:
        self._ensure_job(slot, job)
        slot.in_flight[(job.id, index)] = InFlight(job, index, start, size, args, kind, retries,
                                                   sequence=slot.sent + 1)
        self._send(slot, payload)

    def submit_apply(self, job: Job, func, args: tuple, kwargs: dict) -> None:
        message = (APPLY, job.id, func, args, kwargs)
        try:
            payload = self.encode(message)
        except Exception as exc:
            try:
                dumps(func)
            except Exception as func_exc:
                raise errors.unpicklable_function(func, func_exc, "a worker") from func_exc
            raise errors.TaskPicklingError(
                f"the apply task could not be pickled ({errors.describe_args(args)}): "
                f"{errors.describe_exception(exc)}"
            ) from exc
        # no closure over the job: a job -> requeue -> job cycle would keep a dropped pool
        job.requeue = partial(self._requeue_apply, message)
        self.register(job)
        self.apply_queue.append((job, payload, args))
        self._dispatch_applies()

    def _requeue_apply(self, message: tuple, item: InFlight, worker_id: int) -> None:
        """An apply task that a worker held but never started (the worker died, or was
        killed for another task's timeout) goes back to the front of the queue."""
        self.apply_queue.insert(0, (item.job, self.encode(message), item.args))

    def dispatch_applies(self) -> None:
        """Send queued apply tasks; workers that retired (``worker_lifespan``), died or were
        killed for a timeout are replaced first, unless the pool is stopping."""
        if self.apply_queue and not self.closing and not any(map(self.can_take,
                                                                  self.live_slots())):
            self.replenish()
        self._dispatch_applies()

    def _dispatch_applies(self) -> None:
        while self.apply_queue:
            free = [s for s in self.live_slots() if self.can_take(s) and not s.in_flight]
            if not free:
                free = [s for s in self.live_slots() if self.can_take(s)]
            if not free:
                return
            slot = min(free, key=lambda s: (len(s.in_flight), s.worker_id))
            job, payload, args = self.apply_queue.pop(0)
            slot.in_flight[(job.id, 0)] = InFlight(job, 0, 0, 1, args, "apply",
                                                   sequence=slot.sent + 1)
            self._send(slot, payload)

    # -- the event loop ------------------------------------------------------------------
    def pump(self, timeout: float | None) -> None:
        """Wait for one round of events (or ``timeout``) and handle them."""
        deadline = self._next_deadline()
        if self.output_since is not None:
            flush_at = self.output_since + OUTPUT_FLUSH_SECONDS
            deadline = flush_at if deadline is None else min(deadline, flush_at)
        if deadline is not None:
            wait = max(0.0, deadline - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        events = self.selector.select(timeout)
        dead: list[WorkerSlot] = []
        for key, mask in events:
            kind, slot = key.data
            if slot.gone:
                continue
            if kind == "sentinel":
                dead.append(slot)
                continue
            if mask & selectors.EVENT_WRITE:
                self._flush(slot)
            if mask & selectors.EVENT_READ:
                for payload, fds in slot.channel.read():
                    self._receive(slot, payload, fds)
                if slot.channel.eof:
                    dead.append(slot)
        for slot in dict.fromkeys(dead):
            self._drain_and_bury(slot)
        self._check_deadlines()
        self.dispatch_applies()
        if (self.output_since is not None
                and time.monotonic() - self.output_since >= OUTPUT_FLUSH_SECONDS):
            self.flush_output()

    def flush_output(self) -> None:
        """Flush the streams relayed output went to, if it wrote anything since the last
        time (once per round of messages at most, and as a map ends or the pool stops)."""
        if self.output_since is not None:
            self.output_since = None
            output.flush_parent_streams()

    def _drain_and_bury(self, slot: WorkerSlot) -> None:
        if slot.gone:
            return
        if not slot.channel.eof:  # replies written just before the end may still be there
            for payload, fds in slot.channel.read():
                self._receive(slot, payload, fds)
        if slot.gone:
            return
        if slot.exited:
            self._forget(slot, Status.STOPPED)
            return
        handle = slot.handle
        if isinstance(handle, threading.Thread):
            exitcode = 0
        else:
            handle.join(timeout=1.0)
            exitcode = handle.exitcode
        status = self.stats.get(slot.worker_id, Field.STATUS)
        self._forget(slot, Status.DEAD)
        self._report_death(slot, exitcode, status)

    def _report_death(self, slot: WorkerSlot, exitcode, status: float) -> None:
        how = errors.describe_exit(exitcode)
        who = f"Worker-{slot.worker_id} (pid {slot.pid or '?'})"
        if slot.stopping:
            # it was asked to stop: a missing exit reply is not worth an error, unless it
            # died in the middle of worker_exit
            if status == Status.EXITING:
                self.exit_errors.append(errors.WorkerDiedError(
                    f"{who} died while running worker_exit: {how}."))
            return
        if not slot.ready or status == Status.INIT:
            if slot.ready:
                text = f"{who} died while running worker_init: {how}."
            elif slot.start_error is not None:
                cause = slot.start_error
                text = (f"{who} could not start: it could not unpickle its start data "
                        f"(shared_objects, worker_init, worker_exit): "
                        f"{errors.describe_exception(cause)}")
            else:
                text = (f"{who} could not start: {how}. Its error output (stderr) says why; a "
                        "common cause is a module the worker cannot import.")
            error = errors.WorkerStartError(text)
            error.__cause__ = slot.start_error
            self._bury_dead_tracker(environment_suspect=not slot.ready
                                    and slot.start_error is None)
            for job in list(self.jobs.values()):
                job.fail(error)
            return
        items = list(slot.in_flight.values())
        slot.in_flight.clear()
        for position, item in enumerate(items):
            self._lose(slot, item, position == 0, who, how)

    def _lose(self, slot: WorkerSlot, item: InFlight, oldest: bool, who: str, how: str) -> None:
        """Re-run or fail a chunk whose worker died.

        The oldest chunk a worker holds is the one it was running (it works in order), so
        its death is blamed on that chunk: a re-run uses one of ``task_retries``. Chunks
        queued behind it never ran and go back to the job for free.
        """
        job = item.job
        if job.error is None and job.requeue is not None:
            if not oldest:
                job.requeue(item, slot.worker_id)
                return
            if item.retries < job.task_retries:
                self._uncount_partial_chunk(slot, item)
                item.retries += 1
                job.requeue(item, slot.worker_id)
                return
        if oldest:
            started = self._started(slot, item)
            what = f"while running {self._describe_current(slot, item)}" if started else (
                f"before it started {_describe_tasks(item)}")
            text = f"{who} died unexpectedly {what}: {how}."
            if started and self._in_batch(slot, item):
                text += (" To learn which task it was, run the map again with task_retries=1 "
                         "(a re-run goes task by task) or chunk_size=1.")
            if job.task_retries:
                text += (f" Gave up after {item.retries} retries (task_retries="
                         f"{job.task_retries}), each on a fresh worker.")
        else:
            text = f"{who} died unexpectedly before it started {_describe_tasks(item)}: {how}."
        job.fail(errors.WorkerDiedError(text))
        self._settle(item)

    def _started(self, slot: WorkerSlot, item: InFlight) -> bool:
        if item.kind == "apply":
            return True
        return self.stats.get(slot.worker_id, Field.RUNNING_CHUNK) == item.index + 1

    def _uncount_partial_chunk(self, slot: WorkerSlot, item: InFlight) -> None:
        """Takes back the tasks a dead worker counted for a chunk that will run again."""
        if not self._started(slot, item):
            return
        worker_id = slot.worker_id
        counted = self.stats.get(worker_id, Field.UNREPORTED_TASKS)
        self.stats.set(worker_id, Field.TASKS_DONE,
                       self.stats.get(worker_id, Field.TASKS_DONE) - counted)
        self.stats.set(worker_id, Field.UNREPORTED_TASKS, 0)

    def _current_tasks(self, slot: WorkerSlot, item: InFlight) -> tuple[int, int] | None:
        """The first and last task of what the worker was running (one call, or one batch
        of fast tasks that records only where it starts), if that is within ``item``."""
        if item.kind in ("apply", "numpy"):
            return None
        current = int(self.stats.get(slot.worker_id, Field.CURRENT_TASK))
        if not item.start <= current < item.start + item.size:
            return None
        span = int(self.stats.get(slot.worker_id, Field.CURRENT_SPAN))
        return current, min(current + max(span, 1), item.start + item.size) - 1

    def _in_batch(self, slot: WorkerSlot, item: InFlight) -> bool:
        tasks = self._current_tasks(slot, item)
        return tasks is not None and tasks[1] > tasks[0]

    def _describe_current(self, slot: WorkerSlot, item: InFlight) -> str:
        tasks = self._current_tasks(slot, item)
        if tasks is None:
            return _describe_tasks(item)
        first, last = tasks
        if first == last:
            return f"task {first} ({_args_of(item, first)})"
        return (f"one of tasks {first}..{last}, run as one batch (task {first}: "
                f"{_args_of(item, first)}; task {last}: {_args_of(item, last)})")

    def _receive(self, slot: WorkerSlot, payload, fds: list) -> None:
        """Decodes one frame from a worker and handles its message."""
        try:
            incoming = codec.decode(payload, fds)
        except Exception as exc:  # e.g. a result whose class cannot be rebuilt in the parent
            self._unreadable_reply(slot, exc)
            return
        shm.take_back(self.segments, incoming.returned)
        lease = Lease(incoming.mapped, slot) if incoming.mapped is not None else None
        claimed = self._handle(slot, incoming.message, lease, incoming.nbytes)
        del incoming
        if lease is not None and not claimed:
            lease.release()  # back to the worker, unless something still views the data

    def _unreadable_reply(self, slot: WorkerSlot, exc: Exception) -> None:
        """A worker answers in the order it was given work, so an unreadable reply belongs
        to the oldest chunk it holds (or, once it was told to stop, to its exit)."""
        who = f"Worker-{slot.worker_id}"
        if slot.in_flight:
            _, item = slot.in_flight.popitem(last=False)
            slot.tasks_since_start += item.size
            item.job.fail(errors.TaskPicklingError(
                f"{who} sent results of {_describe_tasks(item)} that could not be unpickled "
                f"in the parent: {errors.describe_exception(exc)}"
            ))
            self._settle(item)
            self._maybe_retire(slot)
        elif slot.stopping:
            slot.exited = True
            self.exit_errors.append(errors.TaskPicklingError(
                f"{who} returned a worker_exit value that could not be unpickled in the "
                f"parent: {errors.describe_exception(exc)}"
            ))

    def _handle(self, slot: WorkerSlot, message: tuple, lease: Lease | None = None,
                nbytes: int = 0) -> bool:
        """Acts on one message; True if a job took ``lease`` (it then releases it)."""
        tag = message[0]
        if tag == RESULT:
            _, job_id, index, results, top, seconds = message
            del message
            item = slot.in_flight.pop((job_id, index), None)
            slot.last_returned = time.monotonic()
            claimed = False
            if item is not None:
                slot.tasks_since_start += item.size
                if item.job.error is None:
                    item.job.on_result(index, results, top, seconds, nbytes)
                    if lease is not None and item.job.on_lease is not None:
                        item.job.on_lease(index, lease)
                        claimed = True
                self._settle(item)
            self._maybe_retire(slot)
            return claimed
        elif tag == TASK_ERROR:
            _, job_id, index, failure = message
            item = slot.in_flight.pop((job_id, index), None)
            if item is not None:
                item.job.fail(self._exception_from(failure))
                self._settle(item)
        elif tag == OUTPUT:
            self.on_output(message[1], message[2])
            if self.output_since is None:
                self.output_since = time.monotonic()
        elif tag == PROGRESS:
            self.on_progress(message[1])
        elif tag == STATE:
            self.last_states[slot.worker_id] = message[1]
        elif tag == READY:
            slot.ready = True
            slot.pid = message[1]
        elif tag == INIT_ERROR:
            error = self._exception_from(message[1], what="worker_init")
            if not self.jobs:  # worker_init runs as the worker starts: maybe before any job
                self.init_error = error
            for job in list(self.jobs.values()):
                job.fail(error)
            for item in slot.in_flight.values():  # it answers nothing else for them
                self._settle(item)
            slot.in_flight.clear()
        elif tag == EXIT:
            slot.exited = True
            if message[1]:
                self.exit_results.append(message[2])
        elif tag == EXIT_ERROR:
            slot.exited = True
            self.exit_errors.append(self._exception_from(message[1], what="worker_exit"))
        elif tag == UNREADABLE:
            self._unreadable_message(slot, message[1], message[2])
        elif tag == START_ERROR:
            slot.start_error = errors.remote_cause(
                _rebuilt(message[1]), slot.worker_id, "while unpickling its start data",
                message[1].traceback_text)
        return False

    def _unreadable_message(self, slot: WorkerSlot, sequence: int, failure: Failure) -> None:
        """The worker could not unpickle the ``sequence``-th message sent to it. Not retried:
        it would fail again on any worker. The worker itself carries on."""
        exc = _rebuilt(failure)
        if sequence == slot.job_sequence:
            job = self.jobs.get(slot.job_id)
            if job is not None:
                func = errors.describe_callable(job.spec.func)
                job.fail(errors.unpickling_failure(
                    f"the function {func}", exc, slot.worker_id, failure.traceback_text,
                    headline=f"the function {func} could not be loaded in Worker-"
                             f"{slot.worker_id} (unpickling it failed there)"))
            return
        for key, item in slot.in_flight.items():
            if item.sequence == sequence:
                del slot.in_flight[key]
                what = ("an apply task (its function or arguments)" if item.kind == "apply"
                        else f"the arguments of {_describe_tasks(item)}")
                item.job.fail(errors.unpickling_failure(what, exc, slot.worker_id,
                                                        failure.traceback_text))
                self._settle(item)
                return

    def _settle(self, item: InFlight) -> None:
        """An apply task is finished once its single reply (or failure) is in."""
        if item.kind == "apply":
            self.jobs.pop(item.job.id, None)

    @staticmethod
    def _exception_from(failure: Failure, what: str | None = None) -> BaseException:
        exc = _rebuilt(failure)
        if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt from a task
            return errors.task_exit_failure(exc, failure.worker_id, failure.task_index,
                                            failure.args_text, failure.traceback_text, what)
        return errors.task_failure(exc, failure.worker_id, failure.args_text,
                                   failure.traceback_text, during=what)

    def _maybe_retire(self, slot: WorkerSlot) -> None:
        if (
            self.lifespan is not None
            and not slot.in_flight
            and not slot.stopping
            and slot.tasks_since_start >= self.lifespan
        ):
            self.stats.set(slot.worker_id, Field.STATUS, Status.RESTARTING)
            slot.stopping = slot.retiring = True
            self._send(slot, dumps((STOP,)))

    # -- deadlines -----------------------------------------------------------------------
    def _slot_deadline(self, slot: WorkerSlot) -> tuple[float, str] | None:
        started = self.stats.get(slot.worker_id, Field.PHASE_START)
        status = self.stats.get(slot.worker_id, Field.STATUS)
        if not started:
            if self._timeout_pending(slot, status):
                # the worker has not stamped the start yet: look again shortly
                return (time.monotonic() + RECHECK_INTERVAL, "recheck")
            return None
        if status == Status.WORKING and slot.in_flight:
            timeout = next(iter(slot.in_flight.values())).job.task_timeout
            kind = "task"
        elif status == Status.INIT:
            timeout, kind = self.init_timeout, "worker_init"
        elif status == Status.EXITING:
            timeout, kind = self.exit_timeout, "worker_exit"
        else:
            return None
        return (started + timeout, kind) if timeout else None

    def _timeout_pending(self, slot: WorkerSlot, status: float) -> bool:
        """A timeout applies to what this worker is about to do, but has not started."""
        if slot.stopping:
            return bool(self.exit_timeout) and not slot.exited
        if slot.in_flight and next(iter(slot.in_flight.values())).job.task_timeout:
            return True
        return bool(self.init_timeout) and status in (Status.STARTING, Status.INIT)

    def _next_deadline(self) -> float | None:
        deadlines = [d[0] for s in self.live_slots() if (d := self._slot_deadline(s))]
        return min(deadlines) if deadlines else None

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for slot in self.live_slots():
            deadline = self._slot_deadline(slot)
            if deadline is None or deadline[0] > now:
                continue
            kind = deadline[1]
            if kind == "recheck":
                continue
            if kind == "task":
                item = next(iter(slot.in_flight.values()))
                task = self._describe_current(slot, item)
                error = TimeoutError(
                    f"Worker-{slot.worker_id} task timed out (timeout={item.job.task_timeout}) "
                    f"while running {task}"
                )
                jobs = [item.job]
            else:
                timeout = self.init_timeout if kind == "worker_init" else self.exit_timeout
                error = TimeoutError(
                    f"Worker-{slot.worker_id} {kind} timed out (timeout={timeout})")
                jobs = list(self.jobs.values())
            slot.stopping = True  # its end is expected now
            self._kill([slot])
            if kind == "worker_exit":
                self.exit_errors.append(error)
            for job in jobs:
                job.fail(error)
            for item in slot.in_flight.values():
                if item.job.error is None and item.job.requeue is not None:
                    item.job.requeue(item, slot.worker_id)  # queued behind: never started
                else:
                    self._settle(item)
            slot.in_flight.clear()

    # -- stopping ------------------------------------------------------------------------
    def cancel(self, job: Job) -> None:
        """Stop a job's work at once: kill the workers running its chunks."""
        busy = [s for s in self.live_slots() if any(i.job is job for i in s.in_flight.values())]
        for slot in busy:
            slot.stopping = True
        self._kill(busy)
        self.jobs.pop(job.id, None)
        self._drop_applies(lambda entry: entry[0] is job)

    def stop(self) -> None:
        """Graceful stop: every worker runs its exit function and ends."""
        self.closing = True
        for slot in self.live_slots():
            if not slot.stopping:
                slot.stopping = True
                self._send(slot, dumps((STOP,)))
        while self.live_slots():
            self.pump(None)
        self.flush_output()
        self.selector_reset()
        self.release_memory()

    def terminate(self) -> None:
        """Stop every worker now, whatever it is doing."""
        self.closing = True
        slots = self.live_slots()
        for slot in slots:
            slot.stopping = True
        self._kill(slots)
        self._drop_applies(lambda entry: True)
        self.selector_reset()
        self.release_memory()

    def _drop_applies(self, which: Callable[[tuple], bool]) -> None:
        """Forgets queued apply tasks; their segments are never going to be sent."""
        keep = []
        for entry in self.apply_queue:
            if which(entry):
                shm.close_all(entry[1].fds)
            else:
                keep.append(entry)
        self.apply_queue = keep

    def release_memory(self) -> None:
        """Frees the shared memory kept for reuse (between maps, and when the pool stops)."""
        if self.segments is not None:
            self.segments.clear()
        if not self.live_slots():
            self._start_segment.close()

    def _kill(self, slots: list[WorkerSlot]) -> None:
        """SIGTERM, so that the task's ``finally`` blocks run (nested pools stop theirs);
        SIGKILL for a worker that does not react within ``TERMINATE_ACK`` (stuck in C code)
        or does not end within ``TERMINATE_GRACE``."""
        with interrupts_deferred():
            self._stop_processes([s for s in slots if not isinstance(s.handle, threading.Thread)])
            for slot in slots:
                self._forget(slot, Status.DEAD)
            self.flush_output()

    def _stop_processes(self, processes: list[WorkerSlot]) -> None:
        for slot in processes:
            if slot.handle.exitcode is None:
                slot.handle.terminate()
        started = time.monotonic()
        _wait_ended(processes, started + TERMINATE_ACK)
        for slot in processes:
            status = self.stats.get(slot.worker_id, Field.STATUS)
            if slot.handle.exitcode is None and status != Status.TERMINATING:
                slot.handle.kill()
        _wait_ended(processes, started + TERMINATE_GRACE)
        for slot in processes:
            if slot.handle.exitcode is None:
                slot.handle.kill()
            slot.handle.join()

    def selector_reset(self) -> None:
        """Forget finished jobs once no worker is left."""
        if not self.live_slots():
            self.jobs = {k: j for k, j in self.jobs.items() if j.spec is None and j.error is None}
            self.lifespan = None

    def close(self) -> None:
        if os.getpid() != self._owner_pid:
            return  # a forked child must not touch its parent's workers
        self.terminate()
        self.selector.close()

    # -- views ---------------------------------------------------------------------------
    def tasks_done(self) -> int:
        return int(self.stats.total(Field.TASKS_DONE))


def _rebuilt(failure: Failure) -> BaseException:
    return errors.rebuild_exception(
        failure.exc_payload, failure.type_payload, failure.type_name, failure.message)


def _unpicklable_part(setup: WorkerSetup, exc: BaseException) -> str | None:
    """Which of the start data's user objects failed to pickle with ``exc``, if one did."""
    if not isinstance(exc, Exception):
        return None
    parts = [("worker_init", setup.worker_init), ("worker_exit", setup.worker_exit),
             ("shared_objects", setup.shared_objects)]
    for name, obj in parts:
        if obj is None:
            continue
        try:
            dumps_at_start(obj)
        except Exception as part_exc:
            # the same failure: objects that pickle only while a process starts (a
            # multiprocessing Lock in shared_objects) fail here for another reason
            if type(part_exc) is type(exc) and str(part_exc) == str(exc):
                return name if name == "shared_objects" else (
                    f"{name} ({errors.describe_callable(obj)})")
    return None


def _wait_ended(slots: list[WorkerSlot], deadline: float) -> None:
    """Waits until every process of ``slots`` has ended, or until ``deadline``."""
    while True:
        alive = [s.handle.sentinel for s in slots if s.handle.exitcode is None]
        remaining = deadline - time.monotonic()
        if not alive or remaining <= 0:
            return
        wait_for(alive, remaining)


def _args_of(item: InFlight, task: int) -> str:
    """The arguments of one task of a chunk, on one line."""
    text = errors.describe_args(item.args[task - item.start], item.kind)
    return "; ".join(text.splitlines())


def _describe_tasks(item: InFlight) -> str:
    """The tasks of a chunk, named as precisely as the chunk allows."""
    if item.kind == "apply":
        return f"an apply task ({errors.describe_args(item.args)})"
    if item.kind == "numpy":
        return f"the numpy block starting at row {item.start}"
    if item.size == 1:
        return f"task {item.start} ({errors.describe_args(item.args[0], item.kind)})"
    return f"tasks {item.start}..{item.start + item.size - 1}"
