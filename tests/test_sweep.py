"""Any combination of map parameters gives the right results, and never hangs.

Hypothesis draws the parameters; each example runs under a hard per-example timeout (a
SIGALRM that raises in the waiting parent), so that a hang fails the test with the
parameters that caused it instead of blocking CI.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from contextlib import contextmanager

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nbpool import WorkerPool  # noqa: E402
from tasks import affine, double_rows  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:start_method='fork':RuntimeWarning")

EXAMPLE_TIMEOUT = 20.0  # seconds; a correct example takes well under one
EXAMPLES = int(os.environ.get("NBPOOL_SWEEP_EXAMPLES", "300"))  # more by hand
# spawn pools take ~0.3 s to start, and a restarted worker as long: fewer, smaller examples
SPAWN_EXAMPLES = int(os.environ.get("NBPOOL_SWEEP_SPAWN_EXAMPLES", "15"))
FUNCTIONS = ["map", "map_unordered", "imap", "imap_unordered"]


class ExampleHung(Exception):
    pass


@contextmanager
def hard_timeout(seconds: float):
    """Raises ExampleHung in this (the main) thread after ``seconds``.

    pytest-timeout also uses SIGALRM: its handler and remaining time are put back after.
    """
    def on_alarm(signum, frame):
        raise ExampleHung(f"the example did not finish within {seconds} s")

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


@st.composite
def map_calls(draw, start_methods=("fork", "forkserver", "threading"), max_n=80,
              min_lifespan=1):
    n = draw(st.integers(0, max_n))
    source = draw(st.sampled_from(["list", "generator", "numpy", "range"]))
    length = draw(st.sampled_from(["not given", "equal", "shorter"]))
    iterable_len = {"not given": None, "equal": n}.get(length)
    if length == "shorter":
        iterable_len = draw(st.integers(0, max(n - 1, 0)))
    return {
        "start_method": draw(st.sampled_from(start_methods)),
        "n_jobs": draw(st.integers(1, 4)),
        "order_tasks": draw(st.booleans()),
        "function": draw(st.sampled_from(FUNCTIONS)),
        "n": n,
        "source": source,
        "options": {
            "iterable_len": iterable_len,
            "chunk_size": draw(st.one_of(
                st.none(), st.integers(1, 25),
                st.floats(1.0, 12.0, allow_nan=False, allow_infinity=False))),
            "n_splits": draw(st.one_of(st.none(), st.integers(1, 12))),
            "max_tasks_active": draw(st.one_of(st.none(), st.integers(1, 40))),
            "worker_lifespan": draw(st.one_of(st.none(), st.integers(min_lifespan, 12))),
        },
    }


def _input(source: str, n: int):
    if source == "list":
        return list(range(n))
    if source == "generator":
        return (x for x in range(n))  # length unknown unless iterable_len says it
    if source == "range":
        return range(n)
    return np.arange(2 * n).reshape(n, 2)


def _run(call: dict):
    options = {k: v for k, v in call["options"].items() if v is not None}
    func = double_rows if call["source"] == "numpy" else affine
    with WorkerPool(n_jobs=call["n_jobs"], start_method=call["start_method"],
                    order_tasks=call["order_tasks"]) as pool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # unknown length: chunk size 1
            result = getattr(pool, call["function"])(func, _input(call["source"], call["n"]),
                                                     **options)
            return result if call["function"].startswith("map") else list(result)


def _expected_count(call: dict) -> int:
    limit = call["options"]["iterable_len"]
    return call["n"] if limit is None else min(limit, call["n"])


def _check(call: dict, result) -> None:
    count = _expected_count(call)
    ordered = call["function"] in ("map", "imap")
    if call["source"] == "numpy":
        expected = np.arange(2 * count).reshape(count, 2) * 2
        if call["function"] == "map":
            got = result if count else np.empty((0, 2), dtype=expected.dtype)
        else:  # blocks of rows, as the workers returned them
            got = np.concatenate(result) if result else np.empty((0, 2), dtype=expected.dtype)
        if not ordered:
            got = got[np.argsort(got[:, 0])]
        assert got.shape == expected.shape and (got == expected).all(), (got, expected)
        return
    expected = [3 * x + 1 for x in range(count)]
    assert (result if ordered else sorted(result)) == expected


@pytest.mark.timeout(900)
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow])
@given(call=map_calls())
def test_any_parameters_give_the_right_results_without_hanging(call):
    with hard_timeout(EXAMPLE_TIMEOUT):
        result = _run(call)
    _check(call, result)


@pytest.mark.timeout(300)
@settings(max_examples=SPAWN_EXAMPLES, deadline=None, database=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow])
@given(call=map_calls(start_methods=("spawn",), max_n=40, min_lifespan=4))
def test_any_parameters_give_the_right_results_without_hanging_under_spawn(call):
    """Up to 40 tasks and a lifespan of at least 4: at most 14 spawned workers an example."""
    with hard_timeout(EXAMPLE_TIMEOUT):
        result = _run(call)
    _check(call, result)


def test_the_hard_timeout_turns_a_hang_into_a_failure():
    """The guard above must work: a map that never ends fails within the timeout."""
    started = time.monotonic()
    with pytest.raises(ExampleHung):
        with hard_timeout(0.5):
            with WorkerPool(n_jobs=1) as pool:
                pool.map(time.sleep, [60])
    assert time.monotonic() - started < 5
