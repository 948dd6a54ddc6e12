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


# A fake file system: {path under the root: text}; a path whose text is None is a directory
# (a file that exists but cannot be read). MOUNTS_* are /proc/self/mountinfo lines.
MOUNTS_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
MOUNTS_V1 = ("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
             "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup "
             "rw,cpu,cpuacct\n"
             "33 31 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
             "34 31 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n")
MOUNTS_HYBRID = (MOUNTS_V1 + "35 31 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
                 "36 31 0:33 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n")
# a container without its own cgroup namespace: the mount shows the container's cgroup only
MOUNTS_V1_DOCKER = ("40 23 0:28 /docker/abc /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup "
                    "ro,cpu\n")
CG = "sys/fs/cgroup/"
SELF = "proc/self/"


def _v1(directory: str, quota: str, period: str = "100000") -> dict:
    return {f"{directory}/cpu.cfs_quota_us": quota, f"{directory}/cpu.cfs_period_us": period}


CGROUP_CASES = {
    # no /proc/self files: the process is in the root cgroup of the usual mounts
    "root-v2-1.5": ({CG + "cpu.max": "150000 100000\n"}, 1.5),
    "root-v2-max": ({CG + "cpu.max": "max 100000\n"}, None),
    "root-v2-2": ({CG + "cpu.max": "200000 100000"}, 2.0),
    "root-v2-garbage": ({CG + "cpu.max": "garbage"}, None),
    "root-v1-0.5": (_v1(CG + "cpu", "50000\n", "100000\n"), 0.5),
    "root-v1-cpu,cpuacct": (_v1(CG + "cpu,cpuacct", "25000"), 0.25),
    "root-v1-unlimited": (_v1(CG + "cpu", "-1\n"), None),
    "root-v1-partial": ({CG + "cpu/cpu.cfs_quota_us": "300000\n"}, None),  # no period
    "root-hybrid": ({CG + "unified/cpu.max": "70000 100000"}, 0.7),
    "none": ({}, None),
    # v2: the process's cgroup and every ancestor count, the smallest quota wins
    "v2-nested-parent-limit": ({
        SELF + "cgroup": "0::/a/b/c\n", SELF + "mountinfo": MOUNTS_V2,
        CG + "a/cpu.max": "50000 100000\n", CG + "a/b/cpu.max": "max 100000\n",
        CG + "a/b/c/cpu.max": "200000 100000\n"}, 0.5),
    "v2-nested-own-limit": ({
        SELF + "cgroup": "0::/a/b/c\n", SELF + "mountinfo": MOUNTS_V2,
        CG + "a/cpu.max": "max 100000", CG + "a/b/c/cpu.max": "120000 100000"}, 1.2),
    "v2-sibling-does-not-count": ({
        SELF + "cgroup": "0::/a/b\n", SELF + "mountinfo": MOUNTS_V2,
        CG + "a/other/cpu.max": "10000 100000", CG + "cpu.max": "max 100000"}, None),
    "v2-mounted-elsewhere": ({  # mountinfo says where; the usual place is not read
        SELF + "cgroup": "0::/job\n",
        SELF + "mountinfo": "30 23 0:26 / /run/my\\040cgroups rw - cgroup2 none rw\n",
        "run/my cgroups/job/cpu.max": "300000 100000", CG + "job/cpu.max": "10000 100000"},
        3.0),
    "v2-no-mountinfo": ({  # the usual place, and the process's path in it
        SELF + "cgroup": "0::/a/b\n", CG + "a/cpu.max": "80000 100000"}, 0.8),
    "v2-outside-the-namespace": ({  # "/../x": the mount shows its own top only
        SELF + "cgroup": "0::/../x\n", SELF + "mountinfo": MOUNTS_V2,
        CG + "cpu.max": "90000 100000", CG + "x/cpu.max": "10000 100000"}, 0.9),
    # v1: the hierarchy that has the cpu controller, found by controller name
    "v1-nested": ({
        SELF + "cgroup": "4:memory:/m\n3:cpuset:/\n2:cpu,cpuacct:/docker/abc\n",
        SELF + "mountinfo": MOUNTS_V1,
        **_v1(CG + "cpu,cpuacct/docker", "75000"), **_v1(CG + "cpu,cpuacct/docker/abc", "150000"),
        **_v1(CG + "memory/m", "10000"), **_v1(CG + "cpuset", "10000")}, 0.75),
    "v1-own-limit": ({
        SELF + "cgroup": "2:cpu,cpuacct:/docker/abc\n", SELF + "mountinfo": MOUNTS_V1,
        **_v1(CG + "cpu,cpuacct/docker", "-1"),
        **_v1(CG + "cpu,cpuacct/docker/abc", "150000")}, 1.5),
    "v1-mount-shows-the-own-cgroup": ({
        SELF + "cgroup": "5:cpu:/docker/abc\n", SELF + "mountinfo": MOUNTS_V1_DOCKER,
        **_v1(CG + "cpu", "250000")}, 2.5),
    # hybrid: v1 controllers, a v2 tree without them at unified/; both are read
    "hybrid-v1-limit": ({
        SELF + "cgroup": "9:name=systemd:/user.slice\n2:cpu,cpuacct:/user.slice\n"
                         "0::/user.slice\n",
        SELF + "mountinfo": MOUNTS_HYBRID, **_v1(CG + "cpu,cpuacct/user.slice", "40000"),
        **_v1(CG + "systemd/user.slice", "10000")}, 0.4),
    "hybrid-v2-limit": ({
        SELF + "cgroup": "2:cpu,cpuacct:/s\n0::/s\n", SELF + "mountinfo": MOUNTS_HYBRID,
        **_v1(CG + "cpu,cpuacct/s", "-1"), CG + "unified/s/cpu.max": "60000 100000"}, 0.6),
    # garbage and unreadable files set no limit; the others still count
    "garbage-proc-files": ({  # neither parses: the usual mounts' root cgroups
        SELF + "cgroup": "\x00garbage\n::\n", SELF + "mountinfo": "- - -\n1 2 3\n",
        CG + "cpu.max": "50000 100000"}, 0.5),
    "garbage-own-limit-parent-counts": ({
        SELF + "cgroup": "0::/a/b\n", SELF + "mountinfo": MOUNTS_V2,
        CG + "a/b/cpu.max": "fifty 100000", CG + "a/cpu.max": "150000 100000"}, 1.5),
    "garbage-v1": ({
        SELF + "cgroup": "2:cpu,cpuacct:/a\n", SELF + "mountinfo": MOUNTS_V1,
        **_v1(CG + "cpu,cpuacct/a", "1.5"), **_v1(CG + "cpu,cpuacct", "100000", "zero")}, None),
    "zero-period": ({CG + "cpu.max": "100000 0"}, None),
    "unreadable": ({
        SELF + "cgroup": None, SELF + "mountinfo": MOUNTS_V2, CG + "cpu.max": None}, None),
    "unreadable-own-limit-parent-counts": ({
        SELF + "cgroup": "0::/a/b\n", SELF + "mountinfo": MOUNTS_V2,
        CG + "a/b/cpu.max": None, CG + "a/cpu.max": "30000 100000"}, 0.3),
}


def _fake_fs(root, files: dict) -> str:
    for name, text in files.items():
        path = root / name
        if text is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return str(root)


@pytest.mark.parametrize("files, limit", CGROUP_CASES.values(), ids=CGROUP_CASES.keys())
def test_cgroup_cpu_limit_follows_the_process_cgroup(tmp_path, files, limit):
    assert cpu.cgroup_cpu_limit(_fake_fs(tmp_path, files)) == limit


@pytest.mark.parametrize("text, affinity, expected", [
    ("100000 100000", 4, 1), ("50000 100000", 4, 1), ("1 100000", 4, 1), ("150000 100000", 4, 2),
    ("250000 100000", 2, 2), ("max 100000", 4, 4), ("max 100000", 1, 1), (None, 3, 3)])
def test_cpu_count_respects_a_cgroup_quota(tmp_path, monkeypatch, text, affinity, expected):
    """A container's quota caps the count (rounded up, at least 1), affinity still applies."""
    files = {SELF + "cgroup": "0::/pod/job\n", SELF + "mountinfo": MOUNTS_V2}
    if text is not None:
        files[CG + "pod/cpu.max"] = text
    monkeypatch.setattr(cpu, "FS_ROOT", _fake_fs(tmp_path, files))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    assert cpu.cpu_count() == expected
