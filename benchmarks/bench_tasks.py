"""Task functions of the benchmarks (see bench_peers.py).

Kept apart from the harness and light on imports: every library pickles these functions by
reference, so a spawned or forkserver worker imports this module before its first task.
"""

import time

INIT_SLEEP = 0.45
STATE_VALUE = 7


def noop(x):
    return x


def square(x):
    return x * x


def busy(n):
    """Pure-Python CPU work; returns n so results are easy to check."""
    acc = 0
    for i in range(n):
        acc += i ^ (acc & 7)
    return n if acc >= 0 else -1


def arr_sum(arr):
    return float(arr.sum())


def arr_double(arr):
    return arr * 2


# D: per-worker state, three flavours.
def init_state(worker_state):  # mpire / nbpool (use_worker_state=True)
    time.sleep(INIT_SLEEP)
    worker_state["value"] = STATE_VALUE


def task_state(worker_state, x):
    return x + worker_state["value"]


_GLOBAL_STATE = None  # mp.Pool / ProcessPoolExecutor initializer


def init_global():
    global _GLOBAL_STATE
    time.sleep(INIT_SLEEP)
    _GLOBAL_STATE = {"value": STATE_VALUE}


def task_global(x):
    return x + _GLOBAL_STATE["value"]


_LAZY_STATE = None  # joblib: no initializer, so initialise lazily once per process


def task_lazy(x):
    global _LAZY_STATE
    if _LAZY_STATE is None:
        time.sleep(INIT_SLEEP)
        _LAZY_STATE = {"value": STATE_VALUE}
    return x + _LAZY_STATE["value"]


def reset_state():
    global _GLOBAL_STATE, _LAZY_STATE
    _GLOBAL_STATE = None
    _LAZY_STATE = None
