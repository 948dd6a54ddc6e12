"""Plots a bench_peers.py run: each library's time relative to the fastest peer, per workload.

Run::

    python benchmarks/bench_peers.py --json /tmp/bench.json
    python benchmarks/plot_bench.py /tmp/bench.json docs/benchmarks.svg

Bars left of the line at 1 are faster than the fastest of mpire, multiprocessing.Pool,
ProcessPoolExecutor and joblib in that run (log scale).
"""

from __future__ import annotations

import json
import statistics
import sys

PEERS = ("mpire", "mp", "ppe", "joblib")
SHOWN = ("nbpool", "nbpool-pickle", "mpire", "mp", "ppe", "joblib")
COLORS = {"nbpool": "#d62728", "nbpool-pickle": "#ff9896", "mpire": "#1f77b4",
          "mp": "#2ca02c", "ppe": "#9467bd", "joblib": "#8c564b"}
LABELS = {"nbpool": "nbpool", "nbpool-pickle": "nbpool, use_shared_memory=False",
          "mpire": "mpire", "mp": "multiprocessing.Pool", "ppe": "ProcessPoolExecutor",
          "joblib": "joblib (loky)"}


def rows(data):
    """(label, {lib: seconds}) for every timed row of the run, in the run's order."""
    out = []
    for key, libs in data["results"].items():
        for field, suffix in (("times", ""), ("firsts", " (1st result)")):
            medians = {lib: statistics.median(entry[field]) for lib, entry in libs.items()
                       if entry.get(field) and entry.get("error") is None}
            if medians:
                out.append((key + suffix, medians))
    return out


def plot(data, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [(label, meds) for label, meds in rows(data)
             if any(p in meds for p in PEERS)]
    libs = [lib for lib in SHOWN if any(lib in meds for _, meds in table)]
    height = 0.8 / max(1, len(libs))
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(table) * max(1, len(libs)) ** 0.5 + 1.2))
    for row, (label, meds) in enumerate(table):
        best = min(meds[p] for p in PEERS if p in meds)
        for i, lib in enumerate(libs):
            if lib not in meds:
                continue
            ratio = meds[lib] / best
            y = row + (i - (len(libs) - 1) / 2) * height
            ax.barh(y, ratio, height=height * 0.9, color=COLORS[lib],
                    label=LABELS[lib] if row == 0 else None)
            if lib == "nbpool":
                ax.text(ratio * 1.05, y, f"{ratio:.2f}", va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(table)))
    ax.set_yticklabels([label for label, _ in table])
    ax.invert_yaxis()
    ax.set_xlabel("time / fastest peer's time (log scale; < 1 is faster)")
    meta = data["meta"]
    ax.set_title(f"n_jobs={meta['n_jobs']}, Python {meta['python']}, "
                 f"median of {meta['repeats']}, pool start-up included", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    with open(argv[0]) as fh:
        plot(json.load(fh), argv[1])
    print(f"plot written to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
