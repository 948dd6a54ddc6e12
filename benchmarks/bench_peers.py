"""Side-by-side wall-clock benchmark of nbpool against other process pools.

Compares, in ONE process invocation and with ``n_jobs=2``:

* ``nbpool``  -- ``nbpool.WorkerPool`` (start method: its default ``'auto'`` unless
  ``--start-method`` is given), default options: numpy data through shared memory
* ``nbpool-pickle`` -- the same with ``use_shared_memory=False`` (everything pickled
  through the pipe, as the peers do)
* ``mpire``   -- ``mpire.WorkerPool``
* ``mp``      -- ``multiprocessing.Pool`` (default chunksize)
* ``ppe``     -- ``concurrent.futures.ProcessPoolExecutor`` (``map`` with
  ``chunksize = ceil(n / (4 * n_jobs))``, the same rule ``multiprocessing.Pool`` uses)
* ``joblib``  -- ``joblib.Parallel`` with the loky backend (its reusable executor is shut
  down at the end of every timing, so each timing starts fresh workers)
* ``serial``  -- plain ``map`` in this process (baseline)
* ``bare``    -- the hardware's limit, not a pool: ``n_jobs`` forked processes, each
  running a fixed share of the tasks (balanced by cost for E), results back in one pickle
  per process. It is what "serial time / n_jobs" really is on this machine (2 busy
  processes on a shared 2-vCPU VM rarely run twice as fast as one). Not run for C_ret,
  whose results would have to come back through a pipe.

Every timing includes starting and stopping the pool. Workloads:

* ``S``      start a pool, map a no-op over 2 items, stop it
* ``A``      ``x * x`` over ``range(1_000_000)`` (a million tiny tasks)
* ``B``      2,000 pure-Python CPU tasks of ~1 ms each (busy loop calibrated at start-up)
* ``C_arg``  200 float64 arrays of 8 MB as arguments, each task returns ``arr.sum()``
* ``C_ret``  200 arrays of 8 MB in, ``arr * 2`` (8 MB) out (mpire/nbpool ``map`` keep their
  default ``concatenate_numpy_output=True``, i.e. return one concatenated array)
* ``D``      0.45 s per-worker initialisation stored in worker state, then 1,000 light
  tasks that use it (mpire/nbpool: ``use_worker_state`` + ``worker_init``; mp/ppe:
  ``initializer`` + a global; joblib: lazily initialised per-process global)
* ``E``      400 busy-loop tasks, the first 40 take 50x longer (50 ms vs 1 ms); reports
  the total and the time to the first result (``imap_unordered`` / ``as_completed`` /
  ``return_as='generator_unordered'``)

For C_arg and C_ret the table adds the parent's peak RSS during the run, above what it
held before (the input arrays): ``VmHWM`` from /proc, reset before each run (Linux).

Each cell is the median of ``--repeats`` runs (default 3, or 1 with ``--quick``); S, which
takes ~10 ms and moves by a few ms with the machine's noise, runs at least ``S_REPEATS``
times. The order of the libraries is shuffled on every repeat to spread drift. A library
that fails (or exceeds ``--timeout`` seconds) shows an error in its cell; the rest of the
run goes on.
The machine may be small and noisy: read the numbers as rough ratios, nothing here
asserts on timings.

BLAS thread pools are limited to one thread (``OPENBLAS_NUM_THREADS=1`` etc., unless the
variables are already set) so that importing numpy does not start threads in this
process: none of the workloads use BLAS, and a threaded parent would make nbpool's
``'auto'`` pick forkserver instead of fork (for the same reason tqdm's monitor thread, which
mpire starts, is disabled). The start method nbpool resolved is printed; to measure nbpool
under forkserver, pass ``--start-method forkserver`` (peers then use it too).

Run::

    python benchmarks/bench_peers.py [--quick]
    python benchmarks/bench_peers.py --libs mpire,mp,ppe,joblib,serial --workloads S,A,E
    python benchmarks/bench_peers.py --repeats 5 --json /tmp/bench.json
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

N_JOBS = 2
ALL_LIBS = ("nbpool", "nbpool-pickle", "mpire", "mp", "ppe", "joblib", "serial", "bare")
PEERS = ("mpire", "mp", "ppe", "joblib")
PEER_TITLES = {"mpire": "mpire", "mp": "mp.Pool", "ppe": "ProcessPoolExecutor", "joblib": "joblib"}
RSS_WORKLOADS = ("C_arg", "C_ret")
ALL_WORKLOADS = ("S", "A", "B", "C_arg", "C_ret", "D", "E")
S_REPEATS = 21  # S is cheap and noisy: its median needs more runs than the others'


# The task functions live in bench_tasks.py, a small module that every library pickles by
# reference and that a spawned or forkserver worker imports in a few milliseconds, as it
# would a user's own module. (Importing this harness instead would cost each such worker
# the import of argparse, json, statistics, ... and blur the start-method comparison.)
from bench_tasks import STATE_VALUE, busy  # noqa: E402


# --------------------------------------------------------------------------------------
# Runners: one per library, all with the same three operations.
#   map(func, items)                      -> list
#   map_state(items, W)                   -> list   (workload D)
#   unordered(func, items) -> (list, t_first_result)     (workload E)
# --------------------------------------------------------------------------------------


def _ppe_chunksize(n):
    return max(1, math.ceil(n / (4 * N_JOBS)))


class SerialRunner:
    name = "serial"

    def __init__(self, start_method):
        self.version = platform.python_version()
        self.method = "-"

    def map(self, func, items):
        return list(map(func, items))

    def map_state(self, items, W):
        try:
            W.init_global()
            return list(map(W.task_global, items))
        finally:
            W.reset_state()

    def unordered(self, func, items):
        out, first = [], None
        for r in map(func, items):
            if first is None:
                first = time.perf_counter()
            out.append(r)
        return out, first


class MpireLikeRunner:
    """mpire and nbpool share one API."""

    def __init__(self, module_name, start_method):
        self.name = module_name
        mod = importlib.import_module(module_name)
        self.WorkerPool = mod.WorkerPool
        self.version = _version_of(module_name, mod)
        self.kwargs = {"n_jobs": N_JOBS}
        if start_method is not None:
            self.kwargs["start_method"] = start_method
        self.method = start_method or "default"

    def map(self, func, items):
        with self.WorkerPool(**self.kwargs) as pool:
            return pool.map(func, items)

    def map_state(self, items, W):
        with self.WorkerPool(use_worker_state=True, **self.kwargs) as pool:
            return pool.map(W.task_state, items, worker_init=W.init_state)

    def unordered(self, func, items):
        out, first = [], None
        with self.WorkerPool(**self.kwargs) as pool:
            for r in pool.imap_unordered(func, items):
                if first is None:
                    first = time.perf_counter()
                out.append(r)
        return out, first


class NbpoolRunner(MpireLikeRunner):
    def __init__(self, start_method, shared_memory=True):
        super().__init__("nbpool", start_method)
        if start_method is None:
            self.method = "auto"
        if not shared_memory:
            self.name = "nbpool-pickle"
            self.kwargs["use_shared_memory"] = False

    def resolved_method(self):
        """What 'auto' (or the given method) resolves to right now, if nbpool tells us."""
        try:
            from nbpool.engine import start_methods

            return start_methods.resolve(self.kwargs.get("start_method", "auto"))
        except Exception:  # internal API; purely informative
            return None


class MpPoolRunner:
    name = "mp"

    def __init__(self, start_method):
        import multiprocessing

        self.method = start_method or "fork"
        self.ctx = multiprocessing.get_context(self.method)
        self.version = platform.python_version()

    def _run(self, body, **pool_kwargs):
        with self.ctx.Pool(N_JOBS, **pool_kwargs) as pool:
            out = body(pool)
            pool.close()
            pool.join()
        return out

    def map(self, func, items):
        return self._run(lambda p: p.map(func, items))

    def map_state(self, items, W):
        return self._run(lambda p: p.map(W.task_global, items), initializer=W.init_global)

    def unordered(self, func, items):
        def body(pool):
            out, first = [], None
            for r in pool.imap_unordered(func, items):
                if first is None:
                    first = time.perf_counter()
                out.append(r)
            return out, first

        return self._run(body)


class PpeRunner:
    name = "ppe"

    def __init__(self, start_method):
        import concurrent.futures
        import multiprocessing

        self.cf = concurrent.futures
        self.method = start_method or "fork"
        self.ctx = multiprocessing.get_context(self.method)
        self.version = platform.python_version()

    def _executor(self, **kwargs):
        return self.cf.ProcessPoolExecutor(max_workers=N_JOBS, mp_context=self.ctx, **kwargs)

    def map(self, func, items):
        with self._executor() as ex:
            return list(ex.map(func, items, chunksize=_ppe_chunksize(len(items))))

    def map_state(self, items, W):
        with self._executor(initializer=W.init_global) as ex:
            return list(ex.map(W.task_global, items, chunksize=_ppe_chunksize(len(items))))

    def unordered(self, func, items):
        out, first = [], None
        with self._executor() as ex:
            futures = [ex.submit(func, x) for x in items]
            for fut in self.cf.as_completed(futures):
                r = fut.result()
                if first is None:
                    first = time.perf_counter()
                out.append(r)
        return out, first


class JoblibRunner:
    name = "joblib"

    def __init__(self, start_method):
        import joblib
        from joblib.externals.loky import get_reusable_executor

        self.joblib = joblib
        self.get_reusable_executor = get_reusable_executor
        self.version = joblib.__version__
        self.method = "loky"  # loky has its own process start-up; --start-method ignored
        self.unordered_mode = None

    def _shutdown(self):
        # Parallel keeps a reusable executor alive between calls; stop it so each timing
        # includes worker start-up and tear-down like the other libraries.
        self.get_reusable_executor().shutdown(wait=True)

    def _parallel(self, func, items, **kwargs):
        try:
            return self.joblib.Parallel(n_jobs=N_JOBS, backend="loky", **kwargs)(
                self.joblib.delayed(func)(x) for x in items
            )
        except BaseException:
            self._shutdown()
            raise

    def map(self, func, items):
        out = self._parallel(func, items)
        self._shutdown()
        return out

    def map_state(self, items, W):
        return self.map(W.task_lazy, items)

    def unordered(self, func, items):
        if self.unordered_mode is None:
            try:
                self.joblib.Parallel(n_jobs=1, return_as="generator_unordered")
                self.unordered_mode = "generator_unordered"
            except (TypeError, ValueError):
                self.unordered_mode = "generator"
        out, first = [], None
        gen = self._parallel(func, items, return_as=self.unordered_mode)
        try:
            for r in gen:
                if first is None:
                    first = time.perf_counter()
                out.append(r)
        finally:
            self._shutdown()
        return out, first


class SkipCell(Exception):
    """A runner that has nothing meaningful to measure for a workload."""


class BareRunner:
    """``N_JOBS`` forked processes with a fixed share of the tasks each: no pool at all."""

    name = "bare"

    def __init__(self, start_method):
        self.version = platform.python_version()
        self.method = "fork"

    @staticmethod
    def _fork_each(bodies):
        """Runs every body in its own forked child; returns their results, in order."""
        import pickle

        children = []
        for body in bodies:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: compute, send one pickle, leave without any clean-up
                code = 1
                try:
                    os.close(read_end)
                    with os.fdopen(write_end, "wb") as out:
                        out.write(pickle.dumps(body(), protocol=5))
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_end)
            children.append((pid, read_end))
        results = []
        for pid, read_end in children:
            with os.fdopen(read_end, "rb") as pipe:
                data = pipe.read()
            _, status = os.waitpid(pid, 0)
            if status != 0:
                raise RuntimeError(f"bare child {pid} failed (status {status})")
            results.append(pickle.loads(data))
        return results

    @staticmethod
    def _shares(items):
        n = len(items)
        return [items[i * n // N_JOBS:(i + 1) * n // N_JOBS] for i in range(N_JOBS)]

    def map(self, func, items):
        if items and type(items[0]).__name__ == "ndarray" and func.__name__ == "arr_double":
            raise SkipCell("results would travel through a pipe: no limit to compare with")
        parts = self._fork_each([lambda share=share: list(map(func, share))
                                 for share in self._shares(items)])
        return [r for part in parts for r in part]

    def map_state(self, items, W):
        def body(share):
            W.init_global()
            return list(map(W.task_global, share))

        parts = self._fork_each([lambda share=share: body(share)
                                 for share in self._shares(items)])
        return [r for part in parts for r in part]

    def unordered(self, func, items):
        # balance by cost (the loop count), longest first: the best fixed schedule
        loads = [[0, []] for _ in range(N_JOBS)]
        for item in sorted(items, reverse=True):
            least = min(loads, key=lambda entry: entry[0])
            least[0] += item
            least[1].append(item)
        parts = self._fork_each([lambda share=share: list(map(func, share))
                                 for _, share in loads])
        return [r for part in parts for r in part], None


def _version_of(name, mod):
    version = getattr(mod, "__version__", None)
    if version:
        return version
    try:
        from importlib.metadata import version as dist_version

        return dist_version(name)
    except Exception:
        return "?"


def make_runner(lib, start_method):
    if lib == "serial":
        return SerialRunner(start_method)
    if lib == "nbpool":
        return NbpoolRunner(start_method)
    if lib == "nbpool-pickle":
        return NbpoolRunner(start_method, shared_memory=False)
    if lib == "bare":
        return BareRunner(start_method)
    if lib == "mpire":
        return MpireLikeRunner("mpire", start_method)
    if lib == "mp":
        return MpPoolRunner(start_method)
    if lib == "ppe":
        return PpeRunner(start_method)
    if lib == "joblib":
        return JoblibRunner(start_method)
    raise ValueError(f"unknown library {lib!r}")


# --------------------------------------------------------------------------------------
# Workloads: inputs (built outside the timings), how to run them and how to check results.
# --------------------------------------------------------------------------------------


def _time_busy(n):
    t = time.perf_counter()
    busy(n)
    return time.perf_counter() - t


def calibrate_busy(target_s=0.001):
    """Loop count for which busy() takes ~target_s serially in this process."""
    n = 20_000
    for _ in range(6):
        samples = []
        for _ in range(15):
            t = time.perf_counter()
            busy(n)
            samples.append(time.perf_counter() - t)
        n = max(100, int(n * target_s / min(samples)))  # min: least disturbed by noise
    samples = []
    for _ in range(50):
        t = time.perf_counter()
        busy(n)
        samples.append(time.perf_counter() - t)
    return n, min(samples)


class Workload:
    def __init__(self, key, description, kind, func=None, build=None, check=None):
        self.key = key
        self.description = description
        self.kind = kind  # "map", "state" or "unordered"
        self.func = func
        self.build = build  # () -> items
        self.check = check  # (items, results) -> None or raise
        self.items = None

    def run(self, runner, W):
        """Returns (results, t_first_result or None)."""
        if self.kind == "map":
            return runner.map(self.func, self.items), None
        if self.kind == "state":
            return runner.map_state(self.items, W), None
        return runner.unordered(self.func, self.items)


def _expect(cond, msg):
    if not cond:
        raise AssertionError(f"wrong results: {msg}")


def make_workloads(W, sizes, busy_n):
    import numpy as np

    def build_arrays():
        rng = np.random.default_rng(0)
        return [rng.random(sizes["C_len"]) for _ in range(sizes["C_n"])]

    def check_map(expected_fn):
        def check(items, results):
            results = list(results)
            _expect(len(results) == len(items), f"{len(results)} results for {len(items)}")
            expected = expected_fn(items)
            _expect(results == expected, "values differ")

        return check

    def check_square(items, results):
        n = len(items)
        _expect(len(results) == n, f"{len(results)} results for {n}")
        _expect(sum(results) == (n - 1) * n * (2 * n - 1) // 6, "sum of squares differs")
        _expect(results[-1] == (n - 1) ** 2, "order differs")

    def check_sum(items, results):
        _expect(len(results) == len(items), f"{len(results)} results for {len(items)}")
        expected = [float(a.sum()) for a in items]
        _expect(all(math.isclose(r, e, rel_tol=1e-9) for r, e in zip(results, expected)),
                "sums differ")

    def check_double(items, results):
        if isinstance(results, np.ndarray):  # mpire-style map concatenates array outputs
            results = results.reshape(len(items), -1)
        _expect(len(results) == len(items), f"{len(results)} results for {len(items)}")
        for i in (0, len(items) // 2, len(items) - 1):
            r, a = results[i], items[i]
            _expect(r.shape == a.shape and r[0] == 2 * a[0] and r[-1] == 2 * a[-1],
                    f"array {i} differs")

    def check_unordered(items, results):
        _expect(sorted(results) == sorted(items), "multiset of results differs")

    n_e, n_long = sizes["E_n"], sizes["E_n"] // 10
    e_items = [busy_n * 50] * n_long + [busy_n] * (n_e - n_long)

    return {
        "S": Workload("S", "start+stop, no-op x 2", "map", W.noop,
                      lambda: [0, 1], check_map(lambda it: list(it))),
        "A": Workload("A", f"square x {sizes['A_n']:,}", "map", W.square,
                      lambda: range(sizes["A_n"]), check_square),
        "B": Workload("B", f"{sizes['B_n']:,} x ~1 ms busy", "map", W.busy,
                      lambda: [busy_n] * sizes["B_n"], check_map(lambda it: list(it))),
        "C_arg": Workload("C_arg", f"{sizes['C_n']} x 8 MB arg -> float", "map", W.arr_sum,
                          build_arrays, check_sum),
        "C_ret": Workload("C_ret", f"{sizes['C_n']} x 8 MB arg -> 8 MB", "map", W.arr_double,
                          build_arrays, check_double),
        "D": Workload("D", f"0.45 s init + {sizes['D_n']:,} light", "state", None,
                      lambda: list(range(sizes["D_n"])),
                      check_map(lambda it: [x + STATE_VALUE for x in it])),
        "E": Workload("E", f"{n_e} tasks, first {n_long} x50", "unordered", W.busy,
                      lambda: e_items, check_unordered),
    }


FULL_SIZES = {"A_n": 1_000_000, "B_n": 2_000, "C_n": 200, "C_len": 1_000_000,
              "D_n": 1_000, "E_n": 400}
QUICK_SIZES = {"A_n": 100_000, "B_n": 400, "C_n": 40, "C_len": 1_000_000,
               "D_n": 200, "E_n": 100}


# --------------------------------------------------------------------------------------
# Timing harness
# --------------------------------------------------------------------------------------


class CellTimeout(Exception):
    pass


def _children_pids():
    try:
        import psutil

        return {c.pid for c in psutil.Process().children(recursive=True)}
    except Exception:
        return set()


def _kill_new_children(before):
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            if child.pid not in before:
                try:
                    cmdline = " ".join(child.cmdline())
                    if "resource_tracker" in cmdline or "forkserver" in cmdline:
                        continue  # helpers, not workers; killing them only makes noise
                    child.kill()
                except psutil.Error:
                    pass
    except Exception:
        pass


def _status_kb(field):
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Restarts the kernel's peak-RSS mark (VmHWM) of this process (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def _return_freed_memory():
    """Hands the heap's freed pages back to the OS (glibc), so that one workload's garbage
    does not slow the next one's forks. Without it every library read ~0.52 s on D after C_ret
    in a full run, against 0.46-0.47 s in a run of D alone (C_ret then D, three libraries:
    0.486 s without, 0.467 s with)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


def timed_cell(workload, runner, W, timeout):
    """One timed run. Returns dict(time=..., first=..., rss_mb=...), dict(error=...) or
    dict(skip=...)."""
    before = _children_pids()
    measure_rss = workload.key in RSS_WORKLOADS and _reset_peak_rss()
    rss_before = _status_kb("VmRSS") if measure_rss else None

    def on_alarm(signum, frame):
        _kill_new_children(before)  # unblock whatever waits on the workers
        signal.alarm(10)  # and fire again if the clean-up hangs as well
        raise CellTimeout(f"no result after {timeout:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(math.ceil(timeout))))
    results = None
    try:
        try:
            t0 = time.perf_counter()
            results, t_first = workload.run(runner, W)
            elapsed = time.perf_counter() - t0
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        peak = _status_kb("VmHWM") if measure_rss else None
        workload.check(workload.items, results)
        cell = {"time": elapsed}
        if t_first is not None:
            cell["first"] = t_first - t0
        if peak is not None and rss_before is not None:
            cell["rss_mb"] = max(0, peak - rss_before) / 1024
        return cell
    except SkipCell as exc:
        return {"skip": str(exc)}
    except BaseException as exc:  # noqa: BLE001 - report, never crash the run
        if isinstance(exc, KeyboardInterrupt):
            raise
        summary = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return {"error": summary, "traceback": traceback.format_exc(),
                "timeout": isinstance(exc, CellTimeout)}
    finally:
        del results
        W.reset_state()
        gc.collect()


def median_or_none(values):
    return statistics.median(values) if values else None


def fmt_s(v):
    if v is None:
        return "n/a"
    if v < 0.1:
        return f"{v:.4f}"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}"


def fmt_ratio(a, b):
    if a is None or b is None or b <= 0:
        return "n/a"
    return f"{a / b:.2f}"


def _ratio_columns(libs):
    columns = [("nbpool / best peer", "best")]
    columns += [(f"nbpool / {PEER_TITLES[p]}", p) for p in PEERS if p in libs]
    if "bare" in libs:
        columns.append(("nbpool / bare", "bare"))
    if "nbpool-pickle" in libs:
        columns.append(("nbpool / nbpool-pickle", "nbpool-pickle"))
    return columns


def render_table(workloads, libs, raw):
    """Markdown table; error notes go below it."""
    notes = []
    ratios = _ratio_columns(libs)
    header = ["workload"] + libs + [title for title, _ in ratios]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]

    rows = []
    for wl in workloads:
        rows.append((wl.key, f"{wl.key} ({wl.description})", "times"))
        if wl.kind == "unordered":
            rows.append((wl.key, f"{wl.key} time to 1st result", "firsts"))
        if wl.key in RSS_WORKLOADS:
            rows.append((wl.key, f"{wl.key} parent peak RSS, MB above inputs", "rss"))

    for key, label, field in rows:
        meds = {}
        cells = []
        for lib in libs:
            entry = raw[key][lib]
            if entry["error"] is not None:
                note = f"{lib}: {entry['error']}"
                if note not in notes:
                    notes.append(note)
                tag = "TIMEOUT" if entry.get("timeout") else "ERR"
                cells.append(f"{tag}[{notes.index(note) + 1}]")
                meds[lib] = None
                continue
            med = median_or_none(entry[field])
            meds[lib] = med
            if field == "rss":
                cells.append("-" if med is None else f"{med:.0f}")
            else:
                cells.append("-" if entry.get("skip") and med is None else fmt_s(med))
        peer_meds = [meds[p] for p in PEERS if p in meds and meds[p] is not None]
        meds["best"] = min(peer_meds) if peer_meds else None
        nb = meds.get("nbpool")
        if field == "rss":
            cells += [""] * len(ratios)
        else:
            cells += [fmt_ratio(nb, meds.get(ref)) for _, ref in ratios]
        lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines), notes


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default=",".join(ALL_WORKLOADS),
                    help=f"comma-separated subset of {','.join(ALL_WORKLOADS)}")
    ap.add_argument("--libs", default=",".join(ALL_LIBS),
                    help=f"comma-separated subset of {','.join(ALL_LIBS)}")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs per cell, median reported (default 3, quick 1)")
    ap.add_argument("--start-method", default=None,
                    help="start method for every pool (default: fork for mpire/mp/ppe, "
                         "nbpool's own 'auto'; joblib always uses loky)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds before one run counts as hung (default 120, quick 45)")
    ap.add_argument("--json", metavar="PATH", help="write raw timings to PATH")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed start+stop run of each library")
    ap.add_argument("--busy-n", type=int, default=None,
                    help="loop count of the ~1 ms busy task (default: calibrated now); "
                         "runs to be compared must use the same")
    args = ap.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    for w in args.workloads:
        if w not in ALL_WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    for lib in args.libs:
        if lib not in ALL_LIBS:
            ap.error(f"unknown library {lib!r}")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.timeout is None:
        args.timeout = 45.0 if args.quick else 120.0
    return args


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def write_raw_results(path, payload):
    """Shared with bench_kernel.py, so that both benchmarks' raw files read alike."""
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=1)
    print(f"raw results written to {path}")


def main(argv=None):
    args = parse_args(argv)

    # Use the task functions through an importable module so that every library pickles
    # them by reference; spawned/forkserver/loky workers find it through PYTHONPATH.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    W = importlib.import_module("bench_tasks")

    # mpire creates a tqdm bar even without a progress bar, which starts tqdm's monitor
    # thread for the rest of the process; that thread would make every later nbpool 'auto'
    # choose forkserver (it never forks a threaded process). Keep the parent single-threaded.
    try:
        import tqdm

        tqdm.tqdm.monitor_interval = 0
    except ImportError:
        pass

    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.busy_n:
        busy_n = args.busy_n
        busy_s = min(_time_busy(busy_n) for _ in range(20))
    else:
        busy_n, busy_s = calibrate_busy()
    workloads = [make_workloads(W, sizes, busy_n)[k] for k in args.workloads]

    runners, libs, setup_errors = {}, [], {}
    for lib in args.libs:
        try:
            runners[lib] = make_runner(lib, args.start_method)
        except Exception as exc:  # noqa: BLE001
            setup_errors[lib] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        libs.append(lib)

    raw = {wl.key: {lib: {"times": [], "firsts": [], "rss": [], "skip": None,
                          "error": setup_errors.get(lib), "timeout": False, "traceback": None}
                    for lib in libs}
           for wl in workloads}

    if not args.no_warmup:  # first-use costs (lazy imports, resource trackers) out of timings
        warm = make_workloads(W, sizes, busy_n)["S"]
        warm.items = warm.build()
        for lib, runner in runners.items():
            cell = timed_cell(warm, runner, W, args.timeout)
            if "error" in cell:
                log(f"warm-up {lib}: {cell['error']}")

    nbpool_methods = set()
    t_start = time.perf_counter()
    for wl in workloads:
        wl.items = wl.build()
        repeats = max(args.repeats, S_REPEATS) if wl.key == "S" and not args.quick else args.repeats
        for rep in range(repeats):
            # shuffled, not rotated: rotated, each library always ran right after the same
            # one (nbpool after 'bare', whose children may still be exiting)
            order = random.Random(f"{wl.key}-{rep}").sample(libs, len(libs))
            for lib in order:
                entry = raw[wl.key][lib]
                if entry["error"] is not None or entry["skip"] is not None:
                    continue  # failed or skipped before: don't pay for it again
                runner = runners[lib]
                if lib == "nbpool":
                    resolved = runner.resolved_method()
                    if resolved:
                        nbpool_methods.add(resolved)
                cell = timed_cell(wl, runner, W, args.timeout)
                if "skip" in cell:
                    entry["skip"] = cell["skip"]
                    continue
                if "error" in cell:
                    entry.update(error=cell["error"], timeout=cell["timeout"],
                                 traceback=cell["traceback"])
                    log(f"[{wl.key}] rep {rep + 1} {lib:7s} FAILED: {cell['error']}")
                    continue
                entry["times"].append(cell["time"])
                if "first" in cell:
                    entry["firsts"].append(cell["first"])
                if "rss_mb" in cell:
                    entry["rss"].append(cell["rss_mb"])
                extra = f" (1st result {cell['first']:.3f}s)" if "first" in cell else ""
                if "rss_mb" in cell:
                    extra += f" (peak RSS +{cell['rss_mb']:.0f} MB)"
                log(f"[{wl.key}] rep {rep + 1} {lib:7s} {cell['time']:.3f}s{extra}")
        wl.items = None
        gc.collect()
        _return_freed_memory()
    total = time.perf_counter() - t_start

    methods = {}
    for lib, runner in runners.items():
        m = runner.method
        if lib == "nbpool" and nbpool_methods:
            m += " -> " + "/".join(sorted(nbpool_methods))
        methods[lib] = m
    versions = {lib: r.version for lib, r in runners.items()}

    s_note = "" if args.quick or args.repeats >= S_REPEATS else f" ({S_REPEATS} for S)"
    print(f"\n## nbpool vs peers  (n_jobs={N_JOBS}, median of {args.repeats}{s_note}, "
          f"{'quick' if args.quick else 'full'} sizes)\n")
    print(f"- Python {platform.python_version()} on {platform.platform()}, "
          f"{os.cpu_count()} CPUs")
    print("- libs: " + ", ".join(
        f"{lib} {versions[lib]} [{methods[lib]}]" if lib in runners else f"{lib} (unavailable)"
        for lib in libs))
    print(f"- busy loop: {busy_n} iterations = {busy_s * 1e3:.2f} ms serially (best of 50)")
    print("- seconds, pool start-up and tear-down included; ratio < 1 means nbpool is faster\n")
    table, notes = render_table(workloads, libs, raw)
    print(table)
    if notes:
        print()
        for i, note in enumerate(notes, 1):
            print(f"[{i}] {note}")
    print(f"\n(total benchmark time {total:.0f} s)")

    if args.json:
        payload = {
            "meta": {"python": platform.python_version(), "platform": platform.platform(),
                     "cpu_count": os.cpu_count(), "n_jobs": N_JOBS, "repeats": args.repeats,
                     "quick": args.quick, "sizes": sizes, "busy_n": busy_n,
                     "busy_ms": busy_s * 1e3, "versions": versions, "methods": methods,
                     "start_method_arg": args.start_method, "total_s": total},
            "results": raw,
        }
        write_raw_results(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
