"""nbpool inside a Jupyter kernel against nbpool in a plain script: same workloads, one run.

A kernel always has threads, so ``start_method='auto'`` never forks it: it starts a
forkserver with nbpool (and numpy) preloaded, and every worker after that forks from the
forkserver. In a plain single-threaded script 'auto' forks the script itself. The target is
that the kernel stays within 1.2x of the fork figures once the forkserver is warm.

How it is fair on a noisy machine:
- one real ipykernel (this interpreter, a temporary kernelspec, driven by nbclient as a
  notebook is) stays up for the whole run, so only its first pool starts the forkserver, and
  ``bench_peers``' untimed warm-up pool takes that cost in the kernel and in the script alike;
- the busy loop is calibrated once, here, and both sides run the same amount of work;
- the two sides alternate: each repeat runs every workload in a fresh script (fork) and then in
  the kernel, so a slow minute of the machine hits both.

Run::

    python benchmarks/bench_kernel.py [--quick] [--workloads S,A,B] [--repeats 3]
    python benchmarks/bench_kernel.py --libs nbpool,nbpool-pickle --json /tmp/kernel.json
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


def bench_args(args, busy_n, json_path):
    out = ["--libs", args.libs, "--workloads", args.workloads, "--repeats", "1",
           "--busy-n", str(busy_n), "--json", json_path]
    if args.quick:
        out.append("--quick")
    return out


def kernelspec(folder):
    """A 'python3' kernelspec for this interpreter, found first through JUPYTER_PATH."""
    spec_dir = os.path.join(folder, "jupyter", "kernels", "python3")
    os.makedirs(spec_dir)
    with open(os.path.join(spec_dir, "kernel.json"), "w") as spec:
        json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                            "{connection_file}"],
                   "display_name": "Python 3 (benchmark interpreter)",
                   "language": "python"}, spec)
    os.environ["JUPYTER_PATH"] = os.path.join(folder, "jupyter")


def run_cell(client, nb, source):
    """Runs one cell in the kernel; forwards its text output; raises on an error."""
    import nbformat

    cell = nbformat.v4.new_code_cell(source)
    nb.cells.append(cell)
    client.execute_cell(cell, len(nb.cells) - 1)
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            sys.stderr.write(output["text"])


def collect(paths):
    """(workload, lib, field) -> every timing in the runs at ``paths``; and the runs' meta."""
    table, meta = {}, None
    for path in paths:
        with open(path) as fh:
            data = json.load(fh)
        meta = data["meta"]
        for key, libs in data["results"].items():
            for lib, entry in libs.items():
                for field in ("times", "firsts"):
                    table.setdefault((key, lib, field), []).extend(entry[field])
    return table, meta


def render(plain, plain_meta, kernel, kernel_meta, libs, workloads):
    lines = ["| workload | lib | plain script [" + plain_meta["methods"].get("nbpool", "?")
             + "] | Jupyter kernel [" + kernel_meta["methods"].get("nbpool", "?")
             + "] | kernel / script |", "|---|---|--:|--:|--:|"]
    worst = 0.0
    for key in workloads:
        for lib in libs:
            for field in ("times", "firsts"):
                a, b = plain.get((key, lib, field)), kernel.get((key, lib, field))
                if not a or not b:
                    continue
                a, b = statistics.median(a), statistics.median(b)
                worst = max(worst, b / a)
                label = key if field == "times" else f"{key} time to 1st result"
                lines.append(f"| {label} | {lib} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
    return "\n".join(lines), worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="S,A,B,C_arg,C_ret,D,E")
    ap.add_argument("--libs", default="nbpool")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per kernel cell")
    ap.add_argument("--json", metavar="PATH", help="write both sides' raw results to PATH")
    args = ap.parse_args(argv)
    libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]

    sys.path.insert(0, HERE)
    import bench_peers
    import nbclient
    import nbformat

    busy_n, busy_s = bench_peers.calibrate_busy()
    print(f"busy loop: {busy_n} iterations = {busy_s * 1e3:.2f} ms", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        kernelspec(tmp)
        nb = nbformat.v4.new_notebook()
        client = nbclient.NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                                         resources={"metadata": {"path": HERE}})
        plain_paths, kernel_paths = [], []
        with client.setup_kernel():
            run_cell(client, nb, f"import sys\nsys.path.insert(0, {HERE!r})\nimport bench_peers")
            for rep in range(args.repeats):
                plain_path = os.path.join(tmp, f"plain{rep}.json")
                kernel_path = os.path.join(tmp, f"kernel{rep}.json")
                print(f"repeat {rep + 1}: plain script ...", file=sys.stderr, flush=True)
                subprocess.run([sys.executable, BENCH] + bench_args(args, busy_n, plain_path),
                               check=True, stdout=subprocess.DEVNULL)
                print(f"repeat {rep + 1}: Jupyter kernel ...", file=sys.stderr, flush=True)
                run_cell(client, nb, textwrap.dedent(f"""
                    bench_peers.main({bench_args(args, busy_n, kernel_path)!r})
                """))
                plain_paths.append(plain_path)
                kernel_paths.append(kernel_path)
        plain, plain_meta = collect(plain_paths)
        kernel, kernel_meta = collect(kernel_paths)
        table, worst = render(plain, plain_meta, kernel, kernel_meta, libs, workloads)
        print(f"\n## nbpool in a Jupyter kernel vs a plain script (after the first pool, "
              f"median of {args.repeats}, alternating)\n")
        print(table)
        print(f"\nworst kernel / script ratio: {worst:.2f}")
        if args.json:
            payload = {"busy_n": busy_n,
                       "plain": {"|".join(k): v for k, v in plain.items()},
                       "kernel": {"|".join(k): v for k, v in kernel.items()}}
            bench_peers.write_raw_results(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
