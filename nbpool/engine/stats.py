"""Per-worker counters and timings in shared memory.

Workers write their own row; the parent (progress bars, insights, status views) only reads.
Nothing here costs a message: a row is a few doubles in a ``RawArray`` handed to each worker
when it starts, which works for fork, forkserver, spawn and threads alike.
"""

from __future__ import annotations

import enum
from multiprocessing.sharedctypes import RawArray


class Field(enum.IntEnum):
    """Columns of a worker's row."""

    TASKS_DONE = 0  # tasks completed by this worker slot since the pool started
    STATUS = 1  # a Status value
    PHASE_START = 2  # time.monotonic() when the current task/init/exit began, 0 when idle
    PID = 3
    STARTED_AT = 4  # monotonic time the parent started the process
    READY_AT = 5  # monotonic time the worker was ready for work
    START_UP_TIME = 6
    INIT_TIME = 7
    WAITING_TIME = 8
    WORKING_TIME = 9
    EXIT_TIME = 10
    RESTARTS = 11  # workers started in this slot to replace one that retired or died
    CURRENT_TASK = 12  # index (in the map's input) of the first task being run, -1 if none
    CURRENT_SPAN = 13  # how many tasks from CURRENT_TASK on are running as one batch
    RUNNING_CHUNK = 14  # index + 1 of the chunk started and not yet answered, 0 if none
    UNREPORTED_TASKS = 15  # tasks of RUNNING_CHUNK already counted in TASKS_DONE


N_FIELDS = len(Field)


class Status(enum.IntEnum):
    STARTING = 0
    INIT = 1
    IDLE = 2
    WORKING = 3
    EXITING = 4
    STOPPED = 5
    DEAD = 6
    RESTARTING = 7
    TERMINATING = 8  # the worker's SIGTERM handler runs (it is being terminated)


def allocate(n_workers: int) -> "RawArray":
    """A zeroed block of ``n_workers`` rows, shareable with any kind of worker."""
    return RawArray("d", n_workers * N_FIELDS)


class StatsTable:
    """The parent's reading (and resetting) view of the block.

    Plain memoryview access: importing numpy here would start BLAS threads in the parent,
    and a process with threads must not fork.
    """

    def __init__(self, block):
        self.block = block
        self.cells = memoryview(block).cast("B").cast("d")
        self.n_workers = len(self.cells) // N_FIELDS

    def get(self, worker_id: int, field: Field) -> float:
        return self.cells[worker_id * N_FIELDS + field]

    def set(self, worker_id: int, field: Field, value: float) -> None:
        self.cells[worker_id * N_FIELDS + field] = value

    def column(self, field: Field) -> list[float]:
        return [self.cells[w * N_FIELDS + field] for w in range(self.n_workers)]

    def total(self, field: Field) -> float:
        return sum(self.column(field))

    def reset(self) -> None:
        for index in range(len(self.cells)):
            self.cells[index] = 0.0
        for worker_id in range(self.n_workers):
            self.set(worker_id, Field.CURRENT_TASK, -1)
