"""Run example notebooks in a real kernel and store their outputs, as nbval will compare them.

    python notebooks/execute.py                      # every notebook in this folder
    python notebooks/execute.py notebooks/numpy.ipynb

The kernel runs this interpreter (a kernelspec for ``sys.executable`` is written to a temporary
JUPYTER_PATH) and imports nbpool from this checkout. Widget state is stored too, so that
JupyterLab and nbviewer can draw the widgets without a kernel. Run it after editing a notebook,
then check with ``pytest tests/test_example_notebooks.py``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KERNEL_NAME = "python3"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}


def write_kernelspec(jupyter_dir: Path, name: str = KERNEL_NAME) -> None:
    """A kernelspec called ``name`` that starts a kernel with this interpreter."""
    spec_dir = jupyter_dir / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor} (nbpool tests)",
        "language": "python",
    }))


def kernel_environment(jupyter_dir: Path) -> dict[str, str]:
    """The environment a kernel needs to find the kernelspec and this checkout's nbpool."""
    env = dict(os.environ)
    env["JUPYTER_PATH"] = str(jupyter_dir)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("PYTHONWARNINGS", None)  # outputs must not depend on the caller's warning filters
    return env


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name=KERNEL_NAME, store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nbformat.write(nb, path)
    return time.monotonic() - started


def main(argv: list[str]) -> None:
    paths = [Path(p).resolve() for p in argv] or sorted(HERE.glob("*.ipynb"))
    with tempfile.TemporaryDirectory() as tmp:
        jupyter_dir = Path(tmp) / "jupyter"
        write_kernelspec(jupyter_dir)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(kernel_environment(jupyter_dir))
        try:
            for path in paths:
                seconds = execute(path)
                print(f"{path.name}: {seconds:.1f} s")
        finally:
            os.environ.clear()
            os.environ.update(saved)


if __name__ == "__main__":
    main(sys.argv[1:])
