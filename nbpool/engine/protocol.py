"""Message tags exchanged between the parent and a worker, and the worker's start-up data.

Parent -> worker: ``(JOB, job_id, JobSpec)``,
``(CHUNK, job_id, chunk_index, start, kind, args, one_by_one)``,
``(APPLY, job_id, func, args, kwargs)``, ``(STOP,)``.
Worker -> parent: ``(READY, pid)``, ``(START_ERROR, failure)`` (instead of READY),
``(RESULT, job_id, chunk_index, results, top_tasks, working_seconds)``,
``(TASK_ERROR, job_id, chunk_index, failure)``, ``(INIT_ERROR, failure)``,
``(EXIT, has_result, value)``, ``(EXIT_ERROR, failure)``,
``(UNREADABLE, sequence, failure)`` for the ``sequence``-th message (counted from 1) that the
worker could not unpickle: only the parent knows what that message was.
One message per chunk each way; nothing is sent per task. Besides: with ``use_worker_state`` a
worker sends ``(STATE, summary)`` after a chunk that changed its state (for the workers view);
when the pool was started from a notebook, workers send ``(OUTPUT, stream_name, text)`` per
printed line and ``(PROGRESS, report)`` for pools nested inside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

JOB = "job"
CHUNK = "chunk"
APPLY = "apply"
STOP = "stop"

READY = "ready"
RESULT = "result"
TASK_ERROR = "task_error"
INIT_ERROR = "init_error"
EXIT = "exit"
EXIT_ERROR = "exit_error"
OUTPUT = "output"
PROGRESS = "progress"
STATE = "state"
UNREADABLE = "unreadable"
START_ERROR = "start_error"


@dataclass
class WorkerSetup:
    """What a worker needs for its whole life (sent once, when it starts)."""

    worker_id: int
    pass_worker_id: bool
    shared_objects: Any
    use_worker_state: bool
    worker_init: Callable | None
    worker_exit: Callable | None
    cpu_ids: list[int] | None
    sys_path: list[str] = field(default_factory=list)
    cwd: str | None = None
    relay: bool = False  # send output and nested progress up to the parent (notebook roots)
    shared_memory: bool = False  # large buffers travel in shared-memory segments (codec)
    die_with_parent: bool = False  # see lifeline.die_with_parent
    parent_pid: int = 0  # the process that starts the worker (0: a forkserver, unknown)


@dataclass
class JobSpec:
    """What a worker needs for one map: sent once per worker per map, never per task."""

    func: Callable | None
    track_each_task: bool  # per-task timings (insights) or start stamps (task_timeout)
    insights: bool


@dataclass
class Failure:
    """An exception raised in a worker, in a form that always pickles."""

    worker_id: int
    exc_payload: bytes | None
    type_payload: bytes | None
    type_name: str
    message: str
    traceback_text: str
    task_index: int | None = None  # index in the map's input
    args_text: str = ""
