"""``WorkerPool``: mpire's API on nbpool's engine.

This module only translates calls: it checks parameters, prepares chunks, asks the engine to
run them, reports progress and returns results. Workers, messages and deaths are the
engine's business (``nbpool.engine``); drawing progress is the views' (``nbpool.progress``).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from . import frontend, params
from .async_result import AsyncResult
from .chunking import (WorkMeter, _is_numpy_array, adaptive_sizes, iter_chunks, known_length,
                       resolve_chunk_size)
from .engine import upstream
from .engine.core import Engine, Job
from .engine.errors import RemoteTraceback, describe_exception
from .engine.mapping import MapRun
from .engine.protocol import PROGRESS, JobSpec
from .engine.signals import interrupts_deferred
from .engine.status import worker_rows
from .insights import NO_INSIGHTS, Insights, TopTasks
from .map_output import MapOutput
from .warn import warn_user


class WorkerPool:
    """A pool of worker processes with mpire's ``WorkerPool`` interface.

    ``start_method='auto'`` (the default) forks only where that is safe and otherwise uses a
    forkserver (or spawn), so functions defined in a notebook work everywhere;
    ``start_method=None`` means 'auto' too.
    ``use_shared_memory`` (nbpool only, default True) moves large numpy arguments, results and
    ``shared_objects`` through shared memory instead of pickling them through a pipe; workers
    see zero-copy, copy-on-write views. False pickles everything, like mpire.
    """

    def __init__(
        self,
        n_jobs: int | None = None,
        daemon: bool = True,
        cpu_ids: list | None = None,
        shared_objects: Any = None,
        pass_worker_id: bool = False,
        use_worker_state: bool = False,
        start_method: str = "auto",
        keep_alive: bool = False,
        use_dill: bool = False,
        enable_insights: bool = False,
        order_tasks: bool = False,
        *,
        use_shared_memory: bool = True,
    ):
        n = params.n_jobs(n_jobs)
        self._n_jobs = n
        self._daemon = params.flag("daemon", daemon)
        self._start_method = params.start_method(start_method)
        self._cpu_ids = params.cpu_ids(cpu_ids, n, self._start_method)
        self._shared_objects = shared_objects
        self._pass_worker_id = params.flag("pass_worker_id", pass_worker_id)
        self._use_worker_state = params.flag("use_worker_state", use_worker_state)
        self._keep_alive = params.flag("keep_alive", keep_alive)
        self._use_dill = params.flag("use_dill", use_dill)  # cloudpickle is always used
        self._enable_insights = params.flag("enable_insights", enable_insights)
        self._order_tasks = params.flag("order_tasks", order_tasks)
        self._use_shared_memory = params.flag("use_shared_memory", use_shared_memory)
        self._engine = Engine(n, self._start_method, self._daemon, self._cpu_ids,
                              shared_memory=self._use_shared_memory)
        self._top_tasks = TopTasks()
        self._map_running = False
        self._insights_used = False
        self._apply_results: list[AsyncResult] = []
        self._progress = None  # the running map's progress view
        self._batch = None  # the BatchProgress of a `with pool.progress():` block
        # shows nested pools' bars when the map itself has none; closed with the map, so
        # that the cell's saved output keeps their final text form
        self._nested_view = None
        self._live_views: weakref.WeakSet = weakref.WeakSet()  # show_workers/show_insights
        self._engine.on_progress = _weak_method(self._on_nested_progress)

    # -- properties ----------------------------------------------------------------------
    @property
    def n_jobs(self) -> int:
        return self._n_jobs

    @property
    def start_method(self) -> str:
        """The start method the most recently started worker used (resolved from 'auto').

        Before any worker has started: the method a worker started now would use. Under
        'auto' the method is chosen for each worker as it starts, so it can change within a
        pool: a script that forked its first workers and then started a thread gets its
        replacement workers (``worker_lifespan``, a worker that died) from the forkserver,
        and ``start_method`` then says 'forkserver'.
        """
        from .engine.start_methods import resolve

        return self._engine.method_used or resolve(self._start_method)

    # -- setters (mpire names) -----------------------------------------------------------
    def pass_on_worker_id(self, pass_on: bool = True) -> None:
        self._pass_worker_id = params.flag("pass_on", pass_on)

    def set_shared_objects(self, shared_objects: Any = None) -> None:
        self._shared_objects = shared_objects

    def set_use_worker_state(self, use_worker_state: bool = True) -> None:
        self._use_worker_state = params.flag("use_worker_state", use_worker_state)

    def set_keep_alive(self, keep_alive: bool = True) -> None:
        self._keep_alive = params.flag("keep_alive", keep_alive)

    def set_order_tasks(self, order_tasks: bool = True) -> None:
        self._order_tasks = params.flag("order_tasks", order_tasks)

    # -- workers -------------------------------------------------------------------------
    def _setup_args(self, worker_init, worker_exit) -> dict:
        return {
            "pass_worker_id": self._pass_worker_id,
            "shared_objects": self._shared_objects,
            "use_worker_state": self._use_worker_state,
            "worker_init": worker_init,
            "worker_exit": worker_exit,
            # in a notebook, worker output and nested bars must travel to the cell's process
            "relay": upstream.relaying() or frontend.in_kernel(),
        }

    @staticmethod
    def _same_setup(a: dict | None, b: dict) -> bool:
        return a is not None and all(a[key] is b[key] or (
            isinstance(b[key], bool) and a[key] == b[key]) for key in b)

    def _ensure_workers(self, worker_init, worker_exit) -> None:
        """Start workers, or reuse running ones when nothing they were started with changed."""
        setup = self._setup_args(worker_init, worker_exit)
        engine = self._engine
        if engine.running:
            if self._same_setup(engine._setup_args, setup):
                engine.reap()  # a worker that died while idle lost nothing: replace it
                return
            if self._keep_alive:
                _warn_restart(engine._setup_args, setup)
            self._finish_applies()
            self._stop_workers()  # their init/exit or pool parameters changed: start afresh
        self._top_tasks = TopTasks()
        engine.exit_results = []
        engine.exit_errors = []
        try:
            engine.start(setup)  # names an unpicklable worker_init, worker_exit, shared_objects
        except Exception:
            engine.terminate()  # the workers that did start
            raise

    def _drive(self, timeout: float | None) -> None:
        """Advance the event loop once (used by AsyncResult)."""
        self._engine.dispatch_applies()  # replaces workers that are gone, if tasks wait
        if not self._engine.running:
            self._fail_pending_applies(RuntimeError("Pool was terminated"))
            return
        with self._terminated_on_interrupt():
            self._engine.pump(timeout)
        self._refresh_batch()
        self._refresh_views()

    @contextmanager
    def _terminated_on_interrupt(self):
        """Ctrl-C or Jupyter's 'interrupt kernel' while the pool waits stops all its work,
        even if the pool object lives on (a notebook variable)."""
        try:
            yield
        except KeyboardInterrupt:
            self.terminate()
            raise

    def _stop_workers(self) -> None:
        """Graceful stop (exit functions run); an interrupt turns it into terminate."""
        with self._terminated_on_interrupt():
            self._engine.stop()

    # -- the map family ------------------------------------------------------------------
    def map(self, func: Callable, iterable_of_args: Iterable, iterable_len: int | None = None,
            max_tasks_active: int | None = None, chunk_size: float | None = None,
            n_splits: int | None = None, worker_lifespan: int | None = None,
            progress_bar: bool = False, concatenate_numpy_output: bool = True,
            worker_init: Callable | None = None, worker_exit: Callable | None = None,
            task_timeout: float | None = None, worker_init_timeout: float | None = None,
            worker_exit_timeout: float | None = None, progress_bar_options: dict | None = None,
            progress_bar_style: str | None = None, enable_insights: bool | None = None,
            progress_bar_position: int | None = None, task_retries: int = 0) -> Any:
        """Apply ``func`` to every element; results in input order (numpy outputs joined).

        ``task_retries=N`` (every map function has it) re-runs the chunk of a worker that
        died, up to N times, on a fresh worker: one OOM kill does not lose a long map.
        """
        params.flag("concatenate_numpy_output", concatenate_numpy_output)
        parts = self._run(func, iterable_of_args, True, iterable_len, max_tasks_active,
                          chunk_size, n_splits, worker_lifespan, progress_bar, worker_init,
                          worker_exit, task_timeout, worker_init_timeout, worker_exit_timeout,
                          progress_bar_options, progress_bar_style, enable_insights,
                          progress_bar_position, task_retries)
        output = MapOutput(concatenate_numpy_output, parts.total)
        for part in parts:
            output.add(part)
            del part  # lets the chunk's shared memory go back to its worker
        return output.result()

    def map_unordered(self, func: Callable, iterable_of_args: Iterable,
                      iterable_len: int | None = None, max_tasks_active: int | None = None,
                      chunk_size: float | None = None, n_splits: int | None = None,
                      worker_lifespan: int | None = None, progress_bar: bool = False,
                      worker_init: Callable | None = None, worker_exit: Callable | None = None,
                      task_timeout: float | None = None,
                      worker_init_timeout: float | None = None,
                      worker_exit_timeout: float | None = None,
                      progress_bar_options: dict | None = None,
                      progress_bar_style: str | None = None,
                      enable_insights: bool | None = None,
                      progress_bar_position: int | None = None,
                      task_retries: int = 0) -> list:
        """Like ``map``, results in the order tasks finish."""
        results: list = []
        for part in self._run(func, iterable_of_args, False, iterable_len, max_tasks_active,
                              chunk_size, n_splits, worker_lifespan, progress_bar, worker_init,
                              worker_exit, task_timeout, worker_init_timeout, worker_exit_timeout,
                              progress_bar_options, progress_bar_style, enable_insights,
                              progress_bar_position, task_retries):
            results.extend(part)
        return results

    def imap(self, func: Callable, iterable_of_args: Iterable, iterable_len: int | None = None,
             max_tasks_active: int | None = None, chunk_size: float | None = None,
             n_splits: int | None = None, worker_lifespan: int | None = None,
             progress_bar: bool = False, worker_init: Callable | None = None,
             worker_exit: Callable | None = None, task_timeout: float | None = None,
             worker_init_timeout: float | None = None, worker_exit_timeout: float | None = None,
             progress_bar_options: dict | None = None, progress_bar_style: str | None = None,
             enable_insights: bool | None = None,
             progress_bar_position: int | None = None, task_retries: int = 0) -> Iterator:
        """Lazy ``map``: yields results in input order as they become available."""
        return self._flatten(self._run(
            func, iterable_of_args, True, iterable_len, max_tasks_active, chunk_size, n_splits,
            worker_lifespan, progress_bar, worker_init, worker_exit, task_timeout,
            worker_init_timeout, worker_exit_timeout, progress_bar_options, progress_bar_style,
            enable_insights, progress_bar_position, task_retries))

    def imap_unordered(self, func: Callable, iterable_of_args: Iterable,
                       iterable_len: int | None = None, max_tasks_active: int | None = None,
                       chunk_size: float | None = None, n_splits: int | None = None,
                       worker_lifespan: int | None = None, progress_bar: bool = False,
                       worker_init: Callable | None = None, worker_exit: Callable | None = None,
                       task_timeout: float | None = None,
                       worker_init_timeout: float | None = None,
                       worker_exit_timeout: float | None = None,
                       progress_bar_options: dict | None = None,
                       progress_bar_style: str | None = None,
                       enable_insights: bool | None = None,
                       progress_bar_position: int | None = None,
                       task_retries: int = 0) -> Iterator:
        """Lazy ``map_unordered``: yields results as tasks finish."""
        return self._flatten(self._run(
            func, iterable_of_args, False, iterable_len, max_tasks_active, chunk_size, n_splits,
            worker_lifespan, progress_bar, worker_init, worker_exit, task_timeout,
            worker_init_timeout, worker_exit_timeout, progress_bar_options, progress_bar_style,
            enable_insights, progress_bar_position, task_retries))

    @staticmethod
    def _flatten(parts: Iterator[list]) -> Iterator:
        for part in parts:
            yield from part

    def _run(self, func, iterable_of_args, ordered, iterable_len, max_tasks_active, chunk_size,
             n_splits, worker_lifespan, progress_bar, worker_init, worker_exit, task_timeout,
             worker_init_timeout, worker_exit_timeout, progress_bar_options, progress_bar_style,
             enable_insights, progress_bar_position, task_retries) -> "_Parts":
        """Validates eagerly, then returns the generator that runs the map."""
        params.func(func)
        params.iterable(iterable_of_args)
        iterable_len = params.positive_int("iterable_len", iterable_len, minimum=0)
        max_tasks_active = params.positive_int("max_tasks_active", max_tasks_active)
        chunk_size = params.chunk_size(chunk_size)
        n_splits = params.positive_int("n_splits", n_splits)
        worker_lifespan = params.positive_int("worker_lifespan", worker_lifespan)
        progress_bar = params.flag("progress_bar", progress_bar)
        params.callable_or_none("worker_init", worker_init)
        params.callable_or_none("worker_exit", worker_exit)
        task_timeout = params.positive_number("task_timeout", task_timeout)
        worker_init_timeout = params.positive_number("worker_init_timeout", worker_init_timeout)
        worker_exit_timeout = params.positive_number("worker_exit_timeout", worker_exit_timeout)
        options = params.progress_bar_options(progress_bar_options)
        style = params.progress_bar_style(progress_bar_style, shown=progress_bar)
        position = params.positive_int("progress_bar_position", progress_bar_position, minimum=0)
        task_retries = params.task_retries(task_retries)
        option_position = options.pop("position", None)
        if position is None:
            position = option_position
        insights = self._enable_insights if enable_insights is None else params.flag(
            "enable_insights", enable_insights)
        self._insights_used = self._insights_used or insights
        if self._map_running:
            raise RuntimeError("Cannot start a map while another map of this pool is running; "
                               "consume or close the running imap first")

        n_tasks = known_length(iterable_of_args, iterable_len)
        is_numpy = _is_numpy_array(iterable_of_args)
        size = resolve_chunk_size(n_tasks, self._n_jobs, chunk_size, n_splits, is_numpy)
        sizes = meter = None
        if (chunk_size is None and n_splits is None and n_tasks is not None and not is_numpy
                and not self._order_tasks):
            meter = WorkMeter()
            sizes = adaptive_sizes(size, n_tasks, self._n_jobs, meter,
                                   most=_largest_chunk(self._n_jobs, max_tasks_active,
                                                       worker_lifespan))
        chunks = iter_chunks(iterable_of_args, n_tasks, size, iterable_len, sizes)
        total = n_tasks
        if is_numpy and n_tasks is not None:
            total = _count_chunks(n_tasks, size)
        spec = JobSpec(func=func, track_each_task=insights or task_timeout is not None,
                       insights=insights)
        return _Parts(self._execute(spec, chunks, ordered, max_tasks_active, task_timeout,
                                    worker_lifespan, worker_init, worker_exit,
                                    worker_init_timeout, worker_exit_timeout, progress_bar,
                                    style, options, position, total, task_retries, meter),
                      total)

    def _execute(self, spec, chunks, ordered, max_tasks_active, task_timeout, worker_lifespan,
                 worker_init, worker_exit, worker_init_timeout, worker_exit_timeout,
                 progress_bar, style, options, position, total,
                 task_retries, meter) -> Iterator[list]:
        self._map_running = True
        engine = self._engine
        progress = None
        self._nested_view = None
        try:
            self._ensure_workers(worker_init, worker_exit)
            engine.set_lifespan(worker_lifespan)
            engine.init_timeout = worker_init_timeout
            engine.exit_timeout = worker_exit_timeout
            baseline = engine.tasks_done()
            refresh_views = _weak_method(self._refresh_views)  # must not hold the pool

            def tick() -> None:
                if progress is not None:
                    progress.update(engine.tasks_done() - baseline)
                refresh_views()

            # always ticking (cheap): a view may be shown at any time during an imap
            run = MapRun(engine, spec, chunks, ordered, max_tasks_active, self._order_tasks,
                         task_timeout, task_retries, on_tick=tick,
                         on_top_tasks=_merge_into(self._top_tasks), meter=meter)
            # the first chunks go out before the bar is drawn: making a widget takes the
            # kernel ~10 ms, which the workers would otherwise spend waiting for work
            run.start()
            if progress_bar:
                from .progress import make_progress

                with interrupts_deferred():  # a Ctrl-C mid-draw still leaves a bar to close
                    progress = self._progress = make_progress(style, total, options, position)
            for part in run.results():
                tick()
                yield part
                del part  # an error's traceback must not keep a chunk's shared memory
            if progress is not None:
                done = engine.tasks_done() - baseline
                if total is None:
                    progress.set_total(done)
                progress.update(done)
        except BaseException as exc:
            frontend.name_cells_in_worker_tracebacks(exc)
            if progress is not None:
                progress.update(engine.tasks_done() - baseline)
            engine.terminate()
            self._fail_pending_applies(RuntimeError("Pool was terminated"))
            interrupted = isinstance(exc, (KeyboardInterrupt, GeneratorExit))
            outcome = "interrupted" if interrupted else "error"
            for view in (progress, self._nested_view):
                if view is not None:
                    view.close(outcome, describe_exception(exc))
            progress = None
            self._finish_views()
            raise
        finally:
            self._map_running = False
            self._progress = None
            engine.set_lifespan(None)  # a map's worker_lifespan is not for later apply tasks
        for view in (progress, self._nested_view):
            if view is not None:
                view.close("done")
        if not self._keep_alive:
            self._finish_applies()
            self._stop_workers()
        self._finish_views()
        if not self._keep_alive:
            self._raise_exit_errors()

    # -- what reaches the notebook -------------------------------------------------------
    def _on_nested_progress(self, report: dict) -> None:
        """A pool nested in one of our workers reports progress: draw it, or pass it up."""
        if upstream.relaying():
            upstream.send((PROGRESS, report))
            return
        bar = self._progress if self._progress is not None else getattr(self._batch, "view", None)
        view = bar if hasattr(bar, "show_nested") else self._nested_view
        if view is None:
            if not frontend.widgets_available():
                return
            from .progress.widget import WidgetProgress

            view = self._nested_view = WidgetProgress(None, {}, show_main=False)
        view.show_nested(report)

    def _refresh_views(self) -> None:
        for view in list(self._live_views):
            view.refresh()

    def _finish_views(self) -> None:
        for view in list(self._live_views):
            view.finish()

    def worker_status(self) -> list[dict]:
        """What each worker is doing: one dict per worker with ``worker_id``, ``pid``,
        ``status``, ``task``, ``running_for`` (seconds), ``tasks_done``, ``restarts``,
        ``rss_bytes`` and ``state`` (a summary of its worker_state, with
        ``use_worker_state``). ``status`` is one of: not started, starting, init, idle,
        working, exiting, restarting (retired by ``worker_lifespan`` or died, and being
        replaced), stopped or dead."""
        return worker_rows(self._engine)

    def show_workers(self) -> None:
        """Show a table of the workers: a widget in Jupyter, text elsewhere.

        In a notebook the widget updates while this pool works (whether it was shown before
        or during a map), and keeps the final state."""
        from .widgets import render

        if not frontend.widgets_available():
            print(render.workers_text(self.worker_status()))
            return
        from .widgets.views import WorkersView

        self._live_views.add(WorkersView(self.worker_status).show())

    def show_insights(self) -> None:
        """Show the insights: a widget in Jupyter, text elsewhere.

        The widget updates while this pool works (whether it was shown before or during a
        map). Shown before any map with insights, it says so, and fills in once a map runs
        with ``enable_insights=True``."""
        if not frontend.widgets_available():
            self.print_insights()
            return
        from .widgets.views import InsightsView

        self._live_views.add(InsightsView(self.insights).show())

    # -- the apply family ----------------------------------------------------------------
    def apply(self, func: Callable, args: Any = (), kwargs: dict | None = None,
              callback: Callable | None = None, error_callback: Callable | None = None,
              worker_init: Callable | None = None, worker_exit: Callable | None = None,
              task_timeout: float | None = None, worker_init_timeout: float | None = None,
              worker_exit_timeout: float | None = None) -> Any:
        """Run ``func(*args, **kwargs)`` in a worker and wait for the result."""
        return self.apply_async(func, args, kwargs, callback, error_callback, worker_init,
                                worker_exit, task_timeout, worker_init_timeout,
                                worker_exit_timeout).get()

    def apply_async(self, func: Callable, args: Any = (), kwargs: dict | None = None,
                    callback: Callable | None = None, error_callback: Callable | None = None,
                    worker_init: Callable | None = None, worker_exit: Callable | None = None,
                    task_timeout: float | None = None, worker_init_timeout: float | None = None,
                    worker_exit_timeout: float | None = None) -> AsyncResult:
        """Submit one task; returns an ``AsyncResult``. Workers stay up until ``stop_and_join``.

        The first call starts the workers with its ``worker_init``/``worker_exit``.
        """
        params.func(func)
        params.callable_or_none("callback", callback)
        params.callable_or_none("error_callback", error_callback)
        params.callable_or_none("worker_init", worker_init)
        params.callable_or_none("worker_exit", worker_exit)
        task_timeout = params.positive_number("task_timeout", task_timeout)
        worker_init_timeout = params.positive_number("worker_init_timeout", worker_init_timeout)
        worker_exit_timeout = params.positive_number("worker_exit_timeout", worker_exit_timeout)
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
        args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
        engine = self._engine
        with self._terminated_on_interrupt():  # workers may be at work from here on
            if not engine.running:
                self._ensure_workers(worker_init, worker_exit)
                engine.init_timeout = worker_init_timeout
                engine.exit_timeout = worker_exit_timeout
            result = AsyncResult(self, callback, error_callback)
            job = Job(None, result._set_result, result._set_error, task_timeout)
            result.job_id = job.id
            if self._batch is not None:
                self._batch.task_submitted(job.id)
            engine.submit_apply(job, func, args, kwargs or {})
            self._apply_results.append(result)
            engine.pump(0)
        self._refresh_batch()
        return result

    @contextmanager
    def progress(self, total: int | None = None, progress_bar_style: str | None = None,
                 **progress_bar_options) -> Iterator:
        """One progress bar for the ``apply_async`` tasks submitted inside the block::

            with pool.progress(desc="files") as batch:
                results = [pool.apply_async(f, (x,)) for x in xs]

        It counts them as they finish, whenever the pool is driven (``get``, ``wait``,
        ``ready``, ``apply_async``), counting against ``total`` or, without one, against the
        tasks submitted so far. A block that ends normally waits for its tasks, and the bar
        ends done, or error if a task failed; a block that raises ends it error or
        interrupted. The keywords are tqdm's options, as ``progress_bar_options``. Yields a
        ``BatchProgress`` with the ``submitted``, ``finished`` and ``failed`` counts.
        """
        total = params.positive_int("total", total, minimum=0)
        options = params.progress_bar_options(progress_bar_options)
        style = params.progress_bar_style(progress_bar_style)
        if self._batch is not None:
            raise RuntimeError("pool.progress() blocks of one pool cannot be nested")
        from .progress import make_progress
        from .progress.batch import BatchProgress

        position = options.pop("position", None)
        with interrupts_deferred():  # a Ctrl-C mid-draw still leaves a bar to close
            batch = self._batch = BatchProgress(make_progress(style, total, options, position),
                                                total)
        try:
            yield batch
            while batch.pending:
                self._drive(None)
        except BaseException as exc:
            batch.close(exc)
            raise
        else:
            batch.close()
        finally:
            self._batch = None

    def _refresh_batch(self) -> None:
        if self._batch is not None:
            self._batch.refresh()

    def _apply_done(self, result: AsyncResult) -> None:
        """Forget a finished result: the pool holds only pending ones, so that a pool the
        user drops is freed at once (and its workers stopped) instead of waiting for the
        garbage collector to break a pool -> result -> pool cycle."""
        try:
            self._apply_results.remove(result)
        except ValueError:
            pass
        if self._batch is not None:
            self._batch.task_finished(result.job_id, result._error)

    def _finish_applies(self) -> None:
        with self._terminated_on_interrupt():
            while any(not r._done() for r in self._apply_results) and self._engine.running:
                self._engine.pump(None)
                self._refresh_batch()
        self._apply_results = []

    def _fail_pending_applies(self, exc: BaseException) -> None:
        pending, self._apply_results = self._apply_results, []
        for result in pending:
            result._set_error(exc)

    # -- lifecycle -----------------------------------------------------------------------
    def stop_and_join(self, keep_alive: bool = False) -> None:
        """Finish outstanding work, run exit functions and stop the workers.

        With ``keep_alive=True`` the workers stay up (for the next map).
        """
        keep_alive = params.flag("keep_alive", keep_alive)
        self._finish_applies()
        if keep_alive:
            return
        self._stop_workers()
        self._finish_views()
        self._raise_exit_errors()

    join = stop_and_join

    def terminate(self) -> None:
        """Stop every worker at once; pending apply results fail with RuntimeError."""
        self._engine.terminate()
        self._fail_pending_applies(RuntimeError("Pool was terminated"))
        self._finish_views()

    def _raise_exit_errors(self) -> None:
        if self._engine.exit_errors:
            error = self._engine.exit_errors[0]
            self._engine.exit_errors = []
            raise error

    def get_exit_results(self) -> list:
        """What each worker's ``worker_exit`` returned (one entry per exit that ran)."""
        return list(self._engine.exit_results)

    def get_insights(self) -> dict:
        """mpire's insights dict (durations as strings); ``{}`` if insights are off."""
        snapshot = self.insights()
        return snapshot.as_dict() if snapshot is not None else {}

    def insights(self) -> Insights | None:
        """An ``Insights`` snapshot (with ``raw()`` numbers), or None if insights are off."""
        if not self._insights_were_enabled():
            return None
        return Insights(self._engine.stats, self._top_tasks)

    def _insights_were_enabled(self) -> bool:
        return self._enable_insights or self._insights_used

    def print_insights(self) -> None:
        """Print a readable report of the insights."""
        snapshot = self.insights()
        if snapshot is None:
            print(NO_INSIGHTS)
            return
        print(snapshot.report())

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.terminate()

    def __del__(self):
        engine = getattr(self, "_engine", None)
        if engine is not None:
            try:
                engine.close()
            except Exception:
                pass


def _warn_restart(old: dict, new: dict) -> None:
    """keep_alive promises the same workers; a map with another worker_init or worker_exit
    cannot keep that promise (the new init must run), so say so. A setter called on purpose
    (set_shared_objects, ...) restarts them without a warning."""
    changed = [key for key in ("worker_init", "worker_exit") if old[key] is not new[key]]
    others = {key: value for key, value in new.items() if key not in ("worker_init",
                                                                       "worker_exit")}
    if changed and WorkerPool._same_setup(old, others):  # not also a setter's restart
        verb = "differ" if len(changed) > 1 else "differs"
        warn_user(f"keep_alive=True, but {' and '.join(changed)} {verb} from what the workers "
                  "were started with: restarting the workers so that the new functions run. "
                  "Pass the same function objects to keep the workers.", UserWarning)


def _weak_method(method: Callable) -> Callable:
    """A callback for the engine that does not keep the pool alive: a pool that holds its
    engine and is held by it would outlive the user's last reference (and keep its workers
    running) until the garbage collector runs."""
    ref = weakref.WeakMethod(method)

    def call(*args):
        target = ref()
        if target is not None:
            target(*args)

    return call


def _merge_into(top_tasks: TopTasks) -> Callable[[int, list], None]:
    """The MapRun's callback for top tasks of one map (each map numbers its tasks from 0);
    it must not hold the pool (see _apply_done)."""
    map_number = top_tasks.next_map()
    return lambda _index, top: top_tasks.merge(top, map_number)


class _Parts:
    """The per-chunk results of one map call, and how many results it will give (if known)."""

    def __init__(self, parts: Iterator[list], total: int | None):
        self._parts = parts
        self.total = total

    def __iter__(self) -> Iterator[list]:
        return self._parts


def _largest_chunk(n_jobs: int, max_tasks_active: int | None,
                   worker_lifespan: int | None) -> int | None:
    """How far adaptive chunks may grow: a chunk larger than ``max_tasks_active / n_jobs``
    would leave workers idle, one larger than ``worker_lifespan`` would outlive its worker."""
    limits = [worker_lifespan] if worker_lifespan is not None else []
    if max_tasks_active is not None:
        limits.append(max(1, max_tasks_active // n_jobs))
    return min(limits) if limits else None


def _count_chunks(n_tasks: int, size) -> int:
    from .chunking import _split_sizes

    count = covered = 0
    for step in _split_sizes(size):
        if covered >= n_tasks:
            return count
        covered += step
        count += 1
    return count


__all__ = ["WorkerPool", "RemoteTraceback"]
