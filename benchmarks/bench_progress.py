"""What does ``progress_bar=True`` cost? A million tiny tasks with and without a bar.

Runs in one go, alternating the variants, n_jobs=2:
- nbpool in this process (text bar on stderr, sent to /dev/null so drawing is still done);
- mpire the same way, for comparison (its bar runs in a separate process and thread);
- nbpool in a real Jupyter kernel (executed with nbclient), where the bar is an ipywidget.

Prints the median seconds and the overhead ratio (with bar / without). The target is an
overhead under 5% (issue 3). Times are noisy on a small machine: read the ratios.

    python benchmarks/bench_progress.py [--n 1000000] [--repeats 5] [--no-kernel] [--no-mpire]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

KERNEL_CODE = """
import json, sys
sys.path.insert(0, {bench_dir!r})
from bench_progress import time_local
print("TIMES", json.dumps(time_local("nbpool", {n}, {repeats})))
"""


def time_local(lib: str, n: int, repeats: int) -> dict:
    """Median-ready timings of the map with and without a bar, alternating (also run in the
    kernel, where the bar is a widget and stderr is not involved)."""
    if lib == "nbpool":
        from nbpool import WorkerPool
    else:
        from mpire import WorkerPool
    times: dict = {"off": [], "on": []}
    saved = sys.stderr
    with open(os.devnull, "w") as sink:
        sys.stderr = sink
        try:
            for repeat in range(repeats):
                # ABBA order: whichever runs second pays for freeing the first's results
                for variant in ("off", "on") if repeat % 2 == 0 else ("on", "off"):
                    started = time.perf_counter()
                    with WorkerPool(2) as pool:
                        pool.map(abs, range(n), progress_bar=(variant == "on"))
                    times[variant].append(time.perf_counter() - started)
        finally:
            sys.stderr = saved
    return times


def time_in_kernel(n: int, repeats: int) -> dict:
    import nbclient
    import nbformat

    with tempfile.TemporaryDirectory() as root:
        spec = os.path.join(root, "kernels", "python3")
        os.makedirs(spec)
        with open(os.path.join(spec, "kernel.json"), "w") as f:
            json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                "{connection_file}"], "display_name": "bench",
                       "language": "python"}, f)
        os.environ["JUPYTER_PATH"] = root
        nb = nbformat.v4.new_notebook()
        code = KERNEL_CODE.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), n=n,
                                  repeats=repeats)
        nb.cells = [nbformat.v4.new_code_cell(code)]
        nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3").execute()
    for output in nb.cells[0].outputs:
        if output.get("name") == "stdout" and "TIMES" in output["text"]:
            return json.loads(output["text"].split("TIMES", 1)[1])
    raise RuntimeError("the kernel printed no timings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-kernel", action="store_true")
    parser.add_argument("--no-mpire", action="store_true")
    args = parser.parse_args()
    results = {"nbpool (terminal)": time_local("nbpool", args.n, args.repeats)}
    if not args.no_mpire:
        results["mpire (terminal)"] = time_local("mpire", args.n, args.repeats)
    if not args.no_kernel:
        results["nbpool (Jupyter kernel, widget)"] = time_in_kernel(args.n, args.repeats)
    print(f"\n## progress_bar overhead: map(abs, range({args.n:,})), n_jobs=2, "
          f"median of {args.repeats}\n")
    print("| variant | no bar (s) | with bar (s) | with / without |")
    print("|---|--:|--:|--:|")
    for name, times in results.items():
        off, on = statistics.median(times["off"]), statistics.median(times["on"])
        print(f"| {name} | {off:.3f} | {on:.3f} | {on / off:.3f} |")


if __name__ == "__main__":
    main()
