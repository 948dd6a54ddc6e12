"""The functions of mpire's "Map family" page (/work/shared/reference/map-family.txt), as the
page writes them, for test_reference_page.py.

They live here, not in the test module, because a spawn or forkserver worker imports the module
of each function it runs: this one imports nothing heavy (see tasks.py), the test module would
bring pytest along into every worker.
"""

import time

from nbpool import WorkerPool


def square(x):
    return x * x


def multiply(x, y):
    return x * y


def multiply_dict(d):
    return d["x"] * d["y"]


def add_five(x):
    return x + 5


def init_func(worker_state):
    # Initialize a counter for each worker
    worker_state["count_even"] = 0


def square_and_count_even(worker_state, x):
    # Count number of even numbers and return the square
    if x % 2 == 0:
        worker_state["count_even"] += 1
    return x**x


def exit_func(worker_state):
    # Return the counter
    return worker_state["count_even"]


def sleep_and_square(x):
    # For illustration purposes
    time.sleep(x / 1000)
    return x * x


def dispatcher(worker_id, X):
    with WorkerPool(n_jobs=2) as nested_pool:
        return nested_pool.map(square, X, progress_bar=True, progress_bar_position=worker_id + 1)


def dispatcher_with_option(worker_id, X):
    with WorkerPool(n_jobs=2) as nested_pool:
        return nested_pool.map(square, X, progress_bar=True,
                               progress_bar_options={"position": worker_id + 1})


# ---- not the page's: a helper of the tests ----------------------------------------------------
def wid_and_square(worker_id, x):
    """Which worker ran the task (with order_tasks, that tells where the chunks are cut)."""
    return worker_id, x * x
