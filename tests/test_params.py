"""Bad parameters raise TypeError/ValueError naming the parameter, before any worker starts.

Every case here is checked before a worker exists, so these tests start none. ``cpu_count``
(affinity and cgroup quota) is here too: it is what ``n_jobs=None`` means.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import nbpool
from nbpool import WorkerPool, cpu
from nbpool.utils import chunk_tasks

NAN, INF = float("nan"), float("inf")


def _square(x):
    return x * x


def _names(name: str) -> str:
    """A regex that finds ``name`` as a word in the error message."""
    return rf"(?<![\w]){re.escape(name)}(?![\w])"


def _cases(name: str, *pairs) -> list:
    """``(name, value, error)`` params with readable ids, from ``(value, error)`` pairs."""
    return [pytest.param(name, value, error, id=f"{name}={value!r}") for value, error in pairs]


T, V = TypeError, ValueError
FLAGS = ["daemon", "pass_worker_id", "use_worker_state", "keep_alive", "use_dill",
         "enable_insights", "order_tasks", "use_shared_memory"]
BAD_FLAG = [("yes", T), (2, T), (None, T), (0.5, T)]

CONSTRUCTOR_CASES = (
    _cases("n_jobs", ("2", T), (2.0, T), (True, T), (0, V), (-1, V))
    + _cases("start_method", ("bogus", V), ("Fork", V), (3, T), (["fork"], T))
    + _cases("cpu_ids", (5, T), ("0", T), ({0: 1}, T), ([0, 0, 0], V), ([[0], [0], [0]], V),
             ([[]], V), ([999], V), ([-1], V), ([[0.5]], T), ([[[0]]], T), ([True], T),
             ([None], T))
    + [case for flag in FLAGS for case in _cases(flag, *BAD_FLAG)]
)


@pytest.mark.parametrize("name, value, error", CONSTRUCTOR_CASES)
def test_constructor_rejects(name, value, error):
    with pytest.raises(error, match=_names(name)):
        WorkerPool(**{"n_jobs": 2, name: value})


def test_cpu_ids_with_threading_is_refused():
    """Threads share the process's affinity: pinning one would pin them all."""
    with pytest.raises(ValueError, match="threading") as info:
        WorkerPool(n_jobs=2, cpu_ids=[0], start_method="threading")
    assert "cpu_ids" in str(info.value)


def test_accepted_constructor_values():
    n_cpus = os.cpu_count() or 1
    for kwargs, cpu_ids in [({"cpu_ids": [0]}, [[0], [0]]),
                            ({"cpu_ids": [[0], {n_cpus - 1}]}, [[0], [n_cpus - 1]]),
                            ({"cpu_ids": None}, None)]:
        with WorkerPool(n_jobs=2, **kwargs) as pool:
            assert pool._cpu_ids == cpu_ids
    with WorkerPool(start_method=None) as pool:  # None is 'auto', as documented
        assert pool._start_method == "auto"
        assert pool.n_jobs == nbpool.cpu_count()  # n_jobs=None: the CPUs we may use
    for shared in (None, 0, "text", [1, 2], object()):  # mpire accepts any object
        with WorkerPool(n_jobs=1, shared_objects=shared) as pool:
            pool.set_shared_objects(shared)


TIMEOUTS = ["task_timeout", "worker_init_timeout", "worker_exit_timeout"]
BAD_TIMEOUT = [("a", T), (True, T), ([1], T), (0, V), (-1, V), (NAN, V), (INF, V), (-INF, V)]
COMMON_CASES = [case for name in TIMEOUTS for case in _cases(name, *BAD_TIMEOUT)] + _cases(
    "worker_init", (3, T), ("f", T)) + _cases("worker_exit", (3, T))

MAP_CASES = (
    _cases("iterable_len", ("a", T), (2.5, T), (True, T), (-1, V), (NAN, T))
    + _cases("max_tasks_active", ("a", T), (1.5, T), (0, V), (-3, V), (NAN, T))
    + _cases("worker_lifespan", ("a", T), (2.0, T), (0, V), (INF, T))
    + _cases("n_splits", ("a", T), (2.5, T), (0, V), (NAN, T))
    + _cases("chunk_size", ("a", T), (True, T), (0, V), (0.5, V), (-1, V),
             (NAN, V), (INF, V), (-INF, V))
    + _cases("progress_bar", ("yes", T), (2, T))
    + _cases("progress_bar_style", ("bogus", V), ("dashboard", V), (3, V))
    + _cases("progress_bar_position", ("a", T), (-1, V))
    + _cases("enable_insights", ("x", T))
    + _cases("task_retries", ("a", T), (1.5, T), (-1, V), (None, T))
    + COMMON_CASES
)
MAP_METHODS = ["map", "map_unordered", "imap", "imap_unordered"]


@pytest.fixture(scope="module")
def pool():
    """One pool for every validation case: a rejected call must not start its workers."""
    with WorkerPool(n_jobs=2) as shared_pool:
        yield shared_pool
        assert not shared_pool._engine.running


@pytest.mark.parametrize("method", MAP_METHODS)
@pytest.mark.parametrize("name, value, error", MAP_CASES)
def test_map_functions_reject(pool, method, name, value, error):
    with pytest.raises(error, match=_names(name)):
        getattr(pool, method)(_square, range(10), **{name: value})  # imap too: eagerly


@pytest.mark.parametrize("method", MAP_METHODS)
def test_map_functions_reject_func_and_iterable(pool, method):
    with pytest.raises(TypeError, match="func"):
        getattr(pool, method)(5, range(3))
    with pytest.raises(TypeError, match="iterable_of_args"):
        getattr(pool, method)(_square, 5)


def test_map_rejects_concatenate_numpy_output(pool):
    with pytest.raises(TypeError, match="concatenate_numpy_output"):
        pool.map(_square, range(3), concatenate_numpy_output="x")


APPLY_CASES = COMMON_CASES + _cases("callback", (3, T)) + _cases(
    "error_callback", ("x", T)) + _cases("kwargs", ([1], T), ("a=1", T))


@pytest.mark.parametrize("method", ["apply", "apply_async"])
@pytest.mark.parametrize("name, value, error", APPLY_CASES)
def test_apply_functions_reject(pool, method, name, value, error):
    with pytest.raises(error, match=_names(name)):
        getattr(pool, method)(_square, (2,), **{name: value})


@pytest.mark.parametrize("method", ["apply", "apply_async"])
def test_apply_functions_reject_func(pool, method):
    with pytest.raises(TypeError, match="func"):
        getattr(pool, method)(5, (2,))


@pytest.mark.parametrize("setter, name", [
    ("pass_on_worker_id", "pass_on"), ("set_use_worker_state", "use_worker_state"),
    ("set_keep_alive", "keep_alive"), ("set_order_tasks", "order_tasks"),
    ("stop_and_join", "keep_alive"), ("join", "keep_alive"),
])
@pytest.mark.parametrize("value", ["yes", 2, None])
def test_setters_reject(pool, setter, name, value):
    with pytest.raises(TypeError, match=_names(name)):
        getattr(pool, setter)(value)


# -- nbpool.utils.chunk_tasks -----------------------------------------------------------------
CHUNK_TASKS_CASES = (
    _cases("chunk_size", ("a", T), (True, T), (0, V), (0.5, V), (NAN, V), (INF, V))
    + _cases("n_splits", ("a", T), (2.5, T), (0, V), (NAN, T))
    + _cases("iterable_len", ("a", T), (2.5, T), (-1, V))
)


@pytest.mark.parametrize("name, value, error", CHUNK_TASKS_CASES)
def test_chunk_tasks_rejects(name, value, error):
    other = {"n_splits": 2} if name != "n_splits" else {}
    with pytest.raises(error, match=_names(name)):
        chunk_tasks(range(10), **{name: value}, **other)  # at the call, before any next()


def test_chunk_tasks_needs_a_size_and_an_iterable():
    with pytest.raises(ValueError, match="chunk_size or n_splits"):
        chunk_tasks(range(10))
    with pytest.raises(TypeError, match="iterable_of_args"):
        chunk_tasks(5, chunk_size=2)
    with pytest.raises(ValueError, match="iterable_len"):
        chunk_tasks(iter(range(10)), n_splits=2)


def test_chunk_tasks_accepts_numpy_numbers():
    np = pytest.importorskip("numpy")
    assert list(chunk_tasks(range(5), chunk_size=np.float64(2.5))) == [(0, 1, 2), (3, 4)]
    assert list(chunk_tasks(range(5), n_splits=np.int64(2))) == [(0, 1, 2), (3, 4)]


# -- cpu_count ----------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2,
                    reason="needs 2 CPUs to restrict the affinity to one")
def test_cpu_count_follows_the_affinity_of_the_process():
    code = "import nbpool; print(nbpool.cpu_count(), nbpool.WorkerPool().n_jobs)"
    cpu0 = min(os.sched_getaffinity(0))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, preexec_fn=lambda: os.sched_setaffinity(0, {cpu0}),
                            env={**os.environ, "PYTHONPATH": _package_root()})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(nbpool.__file__)))


@pytest.mark.parametrize("files, limit", [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "200000 100000"}, 2.0),
    ({"cpu.max": "garbage"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n"}, None),  # period missing: no limit known
    ({}, None),
], ids=["v2-1.5", "v2-max", "v2-2", "v2-garbage", "v1-0.5", "v1-unlimited", "v1-partial",
        "none"])
def test_cgroup_cpu_limit_reads_v2_and_v1_files(tmp_path, files, limit):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu.cgroup_cpu_limit(str(tmp_path)) == limit


@pytest.mark.parametrize("text, expected", [("100000 100000", 1), ("50000 100000", 1),
                                            ("150000 100000", 2), ("max 100000", None)])
def test_cpu_count_respects_a_cgroup_quota(tmp_path, monkeypatch, text, expected):
    """A container's quota caps the count (rounded up, at least 1), affinity still applies."""
    (tmp_path / "cpu.max").write_text(text)
    monkeypatch.setattr(cpu, "CGROUP_ROOT", str(tmp_path))
    by_affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    assert cpu.cpu_count() == (by_affinity if expected is None else min(by_affinity, expected))
