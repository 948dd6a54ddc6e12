"""What each worker is doing now, as plain data: the model behind ``pool.worker_status()``.

Read from the shared stats block and the parent's own records of the chunks it sent, so looking
costs the workers nothing. Memory is read from ``/proc`` where there is one.
"""

from __future__ import annotations

import os
import time

from . import errors
from .stats import Field, Status

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
    for item in slot.in_flight.values():
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


def worker_rows(engine) -> list[dict]:
    """One dict per worker slot: id, pid, status, task, running_for, tasks_done, restarts,
    rss_bytes and a summary of its worker_state (with ``use_worker_state``)."""
    stats = engine.stats
    now = time.monotonic()
    rows = []
    for worker_id in range(engine.n_jobs):
        slot = engine.slots[worker_id]
        status = Status(int(stats.get(worker_id, Field.STATUS)))
        if slot is None:
            status = Status.STARTING if engine.running else Status.STOPPED
        alive = slot is not None and not slot.gone
        pid = int(stats.get(worker_id, Field.PID)) or (slot.pid if slot else None)
        phase_start = stats.get(worker_id, Field.PHASE_START)
        working = status in (Status.WORKING, Status.INIT, Status.EXITING)
        task = None
        if status == Status.WORKING:
            task = _current_task(slot, int(stats.get(worker_id, Field.CURRENT_TASK)),
                                 int(stats.get(worker_id, Field.CURRENT_SPAN)))
        rows.append({
            "worker_id": worker_id,
            "pid": pid or None,
            "status": status.name.lower(),
            "task": task,
            "running_for": (now - phase_start) if working and phase_start else None,
            "tasks_done": int(stats.get(worker_id, Field.TASKS_DONE)),
            "restarts": int(stats.get(worker_id, Field.RESTARTS)),
            "rss_bytes": rss_bytes(pid) if alive and slot.method != "threading" else None,
            "state": engine.last_states.get(worker_id),
        })
    return rows
