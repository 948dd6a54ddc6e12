"""``python -m nbpool.demo``: a pool with a progress bar and insights, in the terminal."""

from __future__ import annotations

import time

from nbpool import WorkerPool, cpu_count


def slow_square(x: int) -> int:
    time.sleep(0.002 + (x % 10) / 2000)
    return x * x


def init(worker_state: dict) -> None:
    worker_state["tasks"] = 0


def square_and_count(worker_state: dict, x: int) -> int:
    worker_state["tasks"] += 1
    return slow_square(x)


def report(worker_state: dict) -> int:
    return worker_state["tasks"]


def main() -> None:
    n_jobs = min(4, cpu_count())
    print(f"nbpool demo: {n_jobs} workers")
    with WorkerPool(n_jobs=n_jobs, use_worker_state=True, enable_insights=True) as pool:
        results = pool.map(square_and_count, range(1000), progress_bar=True,
                           worker_init=init, worker_exit=report,
                           progress_bar_options={"desc": "squares"})
        print(f"start method: {pool.start_method}")
        print(f"sum of squares: {sum(results)}  (expected {sum(x * x for x in range(1000))})")
        print(f"tasks per worker (from worker_exit): {pool.get_exit_results()}")
        pool.print_insights()


if __name__ == "__main__":
    main()
