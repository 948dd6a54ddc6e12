"""What each worker is doing now, as plain data: the model behind ``pool.worker_status()``.

Read from the shared stats block and the parent's own records of the chunks it sent, so looking
costs the workers nothing. Memory is read from ``/proc`` where there is one.
"""

from __future__ import annotations

import os
import time
from multiprocessing.connection import wait

from . import errors
from .stats import Field, Status

# what ``worker_status()`` can say; the stats block's own values are mapped onto these
STATUSES = ("not started", "starting", "init", "idle", "working", "exiting", "restarting",
            "stopped", "dead")

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a live process, or None where it cannot be read."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def _current_task(slot, current: int, span: int) -> str | None:
    """A short description of the task a worker runs, from the chunk the parent sent it."""
    if slot is None or current < 0:
        return None
    for item in list(slot.in_flight.values()):  # a copy: another thread may be asking
        if item.kind == "apply":
            return f"apply {errors.describe_args(item.args)}".replace("\n", ", ")
        if not item.start <= current < item.start + item.size:
            continue
        if item.kind == "numpy":
            return f"rows {item.start}..{item.start + item.size - 1}"
        if span > 1:
            last = min(current + span, item.start + item.size) - 1
            return f"tasks {current}..{last}"
        text = errors.describe_args(item.args[current - item.start], item.kind)
        return f"task {current}: " + text.replace("\n", ", ")
    return None


def _process_ended(slot) -> bool:
    """The worker's process has ended (the parent may not have noticed yet). Polls its
    sentinel, which does not reap it: the engine still buries it in its own time."""
    if slot.sentinel is None:  # a thread: it cannot be killed, and ends only when stopped
        return False
    try:
        return bool(wait([slot.sentinel], 0))
    except (OSError, ValueError):  # buried meanwhile
        return True


def status_of(engine, worker_id: int, slot) -> str:
    """One of ``STATUSES``, as true as the parent can tell.

    The stats cell alone is not enough: a worker retired for ``worker_lifespan`` writes
    'stopped' as it ends, and one that was killed writes nothing at all."""
    cell = Status(int(engine.stats.get(worker_id, Field.STATUS)))
    if slot is None:
        return "not started"
    # a retired slot gets a fresh worker when work needs it, until the pool stops (which
    # forgets the lifespan)
    replacement_due = slot.retiring and engine.lifespan is not None
    if slot.gone:
        if cell == Status.STARTING:  # its replacement is being started
            return "restarting"
        if cell not in (Status.STOPPED, Status.RESTARTING):
            return "dead"
        return "restarting" if replacement_due else "stopped"
    if cell in (Status.EXITING, Status.TERMINATING):
        return "exiting"
    if cell != Status.STOPPED and _process_ended(slot):
        return "dead"  # killed or crashed: it never got to write 'stopped'
    if slot.retiring:
        return "restarting"
    if cell == Status.STARTING and engine.stats.get(worker_id, Field.RESTARTS):
        return "restarting"  # the replacement of a worker that retired or died
    if cell in (Status.RESTARTING, Status.DEAD):  # not written for a live, unretired worker
        return "stopped"
    return cell.name.lower()


def worker_rows(engine) -> list[dict]:
    """One dict per worker slot: id, pid, status (one of ``STATUSES``), task, running_for,
    tasks_done, restarts, rss_bytes and a summary of its worker_state (with
    ``use_worker_state``)."""
    stats = engine.stats
    rows = []
    for worker_id in range(engine.n_jobs):
        slot = engine.slots[worker_id]
        status = status_of(engine, worker_id, slot)
        cell = Status(int(stats.get(worker_id, Field.STATUS)))
        alive = status not in ("not started", "stopped", "dead") and not slot.gone
        pid = int(stats.get(worker_id, Field.PID)) or (slot.pid if slot else None)
        phase_start = stats.get(worker_id, Field.PHASE_START)
        now = time.monotonic()  # after the read: a phase the worker began meanwhile is not negative
        timed = alive and cell in (Status.WORKING, Status.INIT, Status.EXITING)
        task = None
        if alive and cell == Status.WORKING:
            task = _current_task(slot, int(stats.get(worker_id, Field.CURRENT_TASK)),
                                 int(stats.get(worker_id, Field.CURRENT_SPAN)))
        rows.append({
            "worker_id": worker_id,
            "pid": pid or None,
            "status": status,
            "task": task,
            "running_for": (now - phase_start) if timed and phase_start else None,
            "tasks_done": int(stats.get(worker_id, Field.TASKS_DONE)),
            "restarts": int(stats.get(worker_id, Field.RESTARTS)),
            "rss_bytes": rss_bytes(pid) if alive and slot.method != "threading" else None,
            "state": engine.last_states.get(worker_id),
        })
    return rows
