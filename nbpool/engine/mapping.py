"""One map call: feeds chunks to workers under back-pressure and hands results back in order.

The input is read one chunk ahead, only when a worker can take it, so generators stream.
``max_tasks_active`` bounds the tasks sent but not yet handed to the user; a chunk is always
allowed when nothing is active, so no combination of parameters can deadlock (mpire does when
``max_tasks_active < chunk_size``).

Results that arrived in shared memory are handed over as views of it; once the consumer has
moved on to the next chunk, the segment goes back to its worker for reuse (if nothing views it
any more: ``map``'s concatenation copies the arrays out first).

With ``task_retries``, a chunk whose worker died goes back into the queue, ahead of new
chunks, and runs again on the fresh worker that replaces the dead one, one task at a time:
should it die again, the error names the exact task (a first run, in batches, records only
where each batch starts).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterator

from ..chunking import Chunk, WorkMeter
from . import codec, errors
from .core import Engine, InFlight, Job, Lease, WorkerSlot
from .protocol import CHUNK, JobSpec
from .serialization import dumps

MAX_HELD_LEASES = 64  # results waiting for their turn keep at most this many descriptors


class MapRun:
    """Drives one map; iterate ``results()`` to get each chunk's results."""

    def __init__(
        self,
        engine: Engine,
        spec: JobSpec,
        chunks: Iterator[Chunk],
        ordered: bool,
        max_tasks_active: int | None,
        order_tasks: bool,
        task_timeout: float | None,
        task_retries: int = 0,
        on_tick: Callable[[], None] | None = None,
        tick_interval: float = 0.1,
        on_top_tasks: Callable[[int, list], None] | None = None,
        meter: WorkMeter | None = None,
    ):
        self.engine = engine
        self.chunks = chunks
        self.ordered = ordered
        self.max_tasks_active = max_tasks_active
        self.order_tasks = order_tasks
        self.on_tick = on_tick
        self.tick_interval = tick_interval
        self.on_top_tasks = on_top_tasks
        self.meter = meter  # told each chunk's cost, for the sizes of the chunks to come
        self.job = Job(spec, self._on_result, self._on_failure, task_timeout,
                       on_lease=self._on_lease, requeue=self._requeue,
                       task_retries=task_retries)
        self.started = False
        self.leases: dict[int, Lease] = {}
        self.pending: Chunk | None = None
        self.retry_queue: deque[tuple[Chunk, int, int]] = deque()  # chunk, retries, worker
        self.exhausted = False
        self.active_tasks = 0  # sent and not yet handed to the user
        self.sizes: dict[int, int] = {}
        self.done: dict[int, list] = {}
        self.done_order: deque[int] = deque()
        self.next_index = 0
        self.rr_next = 0

    def _on_result(self, index: int, results: list, top, seconds: float, nbytes: int) -> None:
        if self.meter is not None:
            self.meter.add(self.sizes.get(index, len(results)), seconds, nbytes)
        self.done[index] = results
        if not self.ordered:
            self.done_order.append(index)
        if top and self.on_top_tasks is not None:
            self.on_top_tasks(index, top)

    def _on_lease(self, index: int, lease: Lease) -> None:
        self.leases[index] = lease
        if len(self.leases) > MAX_HELD_LEASES:  # results pile up out of order: hold no more fds
            self.leases.pop(next(iter(self.leases))).detach()

    def _release(self, index: int) -> None:
        lease = self.leases.pop(index, None)
        if lease is not None:
            lease.release()

    def _on_failure(self, exc: BaseException) -> None:
        pass  # Job.error holds it; results() raises it in the caller's thread

    def _requeue(self, item: InFlight, worker_id: int) -> None:
        chunk = Chunk(item.index, item.start, item.args, item.size, item.kind)
        self.retry_queue.append((chunk, item.retries, worker_id))

    # -- dispatch ------------------------------------------------------------------------
    def _next_chunk(self) -> Chunk | None:
        if self.pending is None and not self.exhausted:
            try:
                self.pending = next(self.chunks)
            except StopIteration:
                self.exhausted = True
        return self.pending

    def _pick(self, chunk: Chunk) -> WorkerSlot | None:
        engine = self.engine
        if self.order_tasks:
            slot = engine.slots[self.rr_next % engine.n_jobs]
            if slot is not None and engine.can_take(slot):
                return slot
            return None
        free = [s for s in engine.live_slots() if engine.can_take(s)]
        if not free:
            return None
        # the least loaded worker; among equals the one that returned most recently
        return min(free, key=lambda s: (len(s.in_flight), -s.last_returned, s.worker_id))

    def _dispatch(self) -> None:
        engine = self.engine
        while self.job.error is None:
            if self.retry_queue:
                if not self._dispatch_retry():
                    return
                continue
            chunk = self._next_chunk()
            if chunk is None:
                return
            limit = self.max_tasks_active
            if limit is not None and self.active_tasks and self.active_tasks + chunk.size > limit:
                return
            slot = self._pick(chunk)
            if slot is None:
                engine.replenish()
                slot = self._pick(chunk)
                if slot is None:
                    return
            payload = self._encode(chunk, slot)
            if payload is None:
                return
            engine.send_chunk(slot, self.job, chunk.index, chunk.start, chunk.size,
                              chunk.args, chunk.kind, payload)
            if self.meter is not None:
                self.meter.sent(chunk.size, payload.nbytes)
            self.pending = None
            self.rr_next += 1
            self.active_tasks += chunk.size
            self.sizes[chunk.index] = chunk.size

    def _dispatch_retry(self) -> bool:
        """Sends the first chunk to re-run, preferably to the worker that replaced the one
        that died with it. Its tasks are already counted as active."""
        engine = self.engine
        chunk, retries, worker_id = self.retry_queue[0]
        engine.replenish()
        slot = engine.slots[worker_id]
        if slot is None or not engine.can_take(slot):
            if self.order_tasks:
                return False
            free = [s for s in engine.live_slots() if engine.can_take(s)]
            if not free:
                return False
            slot = min(free, key=lambda s: (len(s.in_flight), s.worker_id))
        payload = self._encode(chunk, slot, one_by_one=retries > 0)
        if payload is None:
            return False
        self.retry_queue.popleft()
        engine.send_chunk(slot, self.job, chunk.index, chunk.start, chunk.size, chunk.args,
                          chunk.kind, payload, retries)
        return True

    def _encode(self, chunk: Chunk, slot: WorkerSlot,
                one_by_one: bool = False) -> codec.Outgoing | None:
        message = (CHUNK, self.job.id, chunk.index, chunk.start, chunk.kind, chunk.args,
                   one_by_one)
        try:
            return self.engine.encode(message)
        except Exception as exc:
            self.job.fail(self._pickling_error(chunk, exc, f"Worker-{slot.worker_id}"))
            return None

    @staticmethod
    def _pickling_error(chunk: Chunk, exc: Exception, worker: str) -> BaseException:
        items = [chunk.args] if chunk.kind == "numpy" else list(chunk.args)
        for offset, arg in enumerate(items):
            try:
                dumps(arg)
            except Exception as arg_exc:
                text = errors.describe_args(arg, chunk.kind)
                return errors.TaskPicklingError(
                    f"the arguments of task {chunk.start + offset} could not be pickled to "
                    f"send them to {worker} ({text}): {errors.describe_exception(arg_exc)}"
                )
        return errors.TaskPicklingError(
            f"chunk {chunk.index} could not be pickled to send it to {worker}: "
            f"{errors.describe_exception(exc)}"
        )

    # -- results -------------------------------------------------------------------------
    def _next_ready(self) -> int | None:
        """The index of the next chunk to hand over, if its results are in."""
        if not self.ordered:
            return self.done_order.popleft() if self.done_order else None
        if self.next_index not in self.done:
            return None
        self.next_index += 1
        return self.next_index - 1

    def _ready(self) -> Iterator[list]:
        while (index := self._next_ready()) is not None:
            self.active_tasks -= self.sizes.pop(index)
            part = self.done.pop(index)
            yield part
            del part
            self._release(index)

    def _finished(self) -> bool:
        return (self.exhausted and self.pending is None and not self.sizes
                and not self.retry_queue)

    def start(self) -> None:
        """Registers the job and sends the first chunks (``results`` does it if not done)."""
        if not self.started:
            self.started = True
            self.engine.register(self.job)
            self._dispatch()

    def results(self) -> Iterator[list]:
        """Each chunk's result list, in input order (or completion order if unordered)."""
        engine = self.engine
        self.start()
        last_tick = time.monotonic()
        try:
            while True:
                yield from self._ready()  # handing results over frees room for more work
                self._dispatch()
                if self.job.error is not None:
                    raise self.job.error
                if self._finished():
                    return
                timeout = self.tick_interval if self.on_tick is not None else None
                engine.pump(timeout)
                if self.job.error is not None:
                    raise self.job.error
                if self.on_tick is not None and time.monotonic() - last_tick >= self.tick_interval:
                    last_tick = time.monotonic()
                    self.on_tick()
        finally:
            engine.jobs.pop(self.job.id, None)
            self.done.clear()
            for index in list(self.leases):
                self._release(index)
            engine.release_memory()
            self.job.detach()
            engine.flush_output()  # what the workers printed shows before the map returns
