"""Tasks for test_start_method_matrix.py: light imports, so that spawn and forkserver
workers start fast (see tasks.py)."""

import os
import threading
import time
import uuid

# Stalled tasks wait on this. Process workers never see it set, and are killed by the timeout;
# worker threads cannot be killed, so the test sets it at the end to let them finish.
RELEASE = threading.Event()
STALL_SECONDS = 30
_local = threading.local()


class TaskFailed(Exception):
    pass


def square(x):
    return x * x


def identity(x):
    return x


def stall(*_args):
    RELEASE.wait(STALL_SECONDS)


def stall_task(x):
    RELEASE.wait(STALL_SECONDS)
    return x


def fail_on_7(x):
    if x == 7:
        raise TaskFailed("task failed", x)
    return x


def lock_on_3(x):
    return threading.Lock() if x == 3 else x


def double_block(block):
    return block * 2


def block_rows(block):
    return len(block)


def worker_token(_x):
    """Who ran the task: the pid, and a token of the worker (a thread too) that ran it."""
    if not hasattr(_local, "token"):
        _local.token = uuid.uuid4().hex
    return os.getpid(), _local.token


def worker_affinity(worker_id, _x):
    return worker_id, sorted(os.sched_getaffinity(0))


def init_a():
    pass


def init_b():
    pass


def exit_returning_1():
    return 1


class CountingSquare:
    """A task function that counts how often the parent pickles it."""

    pickles = 0

    def __call__(self, x):
        return x * x

    def __reduce__(self):
        type(self).pickles += 1
        return (CountingSquare, ())


def sum_of_squares_in_a_forkserver_pool(n):
    """A nested pool with an explicit forkserver, inside a worker."""
    from nbpool import WorkerPool

    with WorkerPool(n_jobs=2, start_method="forkserver") as pool:
        return sum(pool.map(square, range(n)))


def received(*args, **kwargs):
    """Exactly what the worker passed in."""
    return args, kwargs


def slower_first(x):
    """Early tasks take longest: with two workers, unordered results would come back shuffled."""
    time.sleep(max(0, 20 - x) / 2000)
    return x
