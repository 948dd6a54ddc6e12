"""nbpool inside a Jupyter kernel against nbpool in a plain process: same workloads, one run.

A kernel always has threads, so ``start_method='auto'`` never forks it: it starts a
forkserver with nbpool (and numpy) preloaded, and every worker after that forks from the
forkserver. In a plain single-threaded script 'auto' forks the script itself. The target is
that the kernel stays within 1.2x of the fork figures once the forkserver is warm: both runs
go through ``bench_peers`` with its untimed warm-up pool first, so neither timing includes
the first pool of the process.

The kernel is a real ipykernel running this interpreter (a temporary kernelspec), driven by
nbclient as a notebook would be. nbpool's own options are compared as in ``bench_peers``
(``--libs nbpool,nbpool-pickle``).

Run::

    python benchmarks/bench_kernel.py [--quick] [--workloads S,A,B] [--repeats 3]
    python benchmarks/bench_kernel.py --json /tmp/kernel.json   # both runs' raw timings
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "bench_peers.py")


def bench_args(args, json_path):
    out = ["--libs", args.libs, "--workloads", args.workloads, "--json", json_path]
    if args.repeats is not None:
        out += ["--repeats", str(args.repeats)]
    if args.quick:
        out.append("--quick")
    return out


def run_plain(args, json_path):
    """bench_peers in a fresh, single-threaded process: 'auto' forks."""
    subprocess.run([sys.executable, BENCH] + bench_args(args, json_path), check=True,
                   stdout=subprocess.DEVNULL)


def run_in_kernel(args, json_path, timeout):
    """bench_peers in a real ipykernel: 'auto' uses a forkserver."""
    import nbclient
    import nbformat

    with tempfile.TemporaryDirectory() as tmp:
        spec_dir = os.path.join(tmp, "jupyter", "kernels", "python3")
        os.makedirs(spec_dir)
        with open(os.path.join(spec_dir, "kernel.json"), "w") as spec:
            json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                "{connection_file}"],
                       "display_name": "Python 3 (benchmark interpreter)",
                       "language": "python"}, spec)
        os.environ["JUPYTER_PATH"] = os.path.join(tmp, "jupyter")
        cell = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {HERE!r})
            import bench_peers
            bench_peers.main({bench_args(args, json_path)!r})
        """)
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(cell)]
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": HERE}})
        client.execute()
        for output in nb.cells[0].get("outputs", []):
            if output.get("output_type") == "stream":
                sys.stderr.write(output["text"])
            elif output.get("output_type") == "error":
                raise RuntimeError("\n".join(output.get("traceback", [])))


def medians(path):
    with open(path) as fh:
        data = json.load(fh)
    table = {}
    for key, libs in data["results"].items():
        for lib, entry in libs.items():
            for field in ("times", "firsts"):
                if entry[field]:
                    table[(key, lib, field)] = statistics.median(entry[field])
    return data["meta"], table


def render(plain_path, kernel_path, libs):
    plain_meta, plain = medians(plain_path)
    kernel_meta, kernel = medians(kernel_path)
    lines = ["| workload | lib | plain script [" + plain_meta["methods"].get("nbpool", "?")
             + "] | Jupyter kernel [" + kernel_meta["methods"].get("nbpool", "?")
             + "] | kernel / script |", "|---|---|--:|--:|--:|"]
    worst = 0.0
    for key, lib, field in sorted(plain, key=lambda k: (k[0], libs.index(k[1]), k[2])):
        a, b = plain[(key, lib, field)], kernel.get((key, lib, field))
        label = key if field == "times" else f"{key} time to 1st result"
        ratio = "n/a" if b is None or a <= 0 else f"{b / a:.2f}"
        if b is not None and a > 0:
            worst = max(worst, b / a)
        lines.append(f"| {label} | {lib} | {a:.3f} | "
                     f"{'n/a' if b is None else f'{b:.3f}'} | {ratio} |")
    return "\n".join(lines), worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="S,A,B,C_arg,C_ret,D,E")
    ap.add_argument("--libs", default="nbpool")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds for the kernel run")
    ap.add_argument("--json", metavar="PATH", help="write both runs' raw results to PATH")
    args = ap.parse_args(argv)
    libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        plain_path = os.path.join(tmp, "plain.json")
        kernel_path = os.path.join(tmp, "kernel.json")
        print("plain script ...", file=sys.stderr, flush=True)
        run_plain(args, plain_path)
        print("Jupyter kernel ...", file=sys.stderr, flush=True)
        run_in_kernel(args, kernel_path, args.timeout)
        table, worst = render(plain_path, kernel_path, libs)
        print("\n## nbpool in a Jupyter kernel vs a plain script (after the first pool)\n")
        print(table)
        print(f"\nworst kernel / script ratio: {worst:.2f}")
        if args.json:
            with open(plain_path) as a, open(kernel_path) as b:
                payload = {"plain": json.load(a), "kernel": json.load(b)}
            with open(args.json, "w") as fh:
                json.dump(payload, fh, indent=1)
            print(f"raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
