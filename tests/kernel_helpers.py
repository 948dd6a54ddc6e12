"""Running cells in a real Jupyter kernel of the test interpreter (shared by the kernel tests)."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path


def write_kernelspec(root: Path, env: dict | None = None) -> Path:
    """A 'python3' kernelspec for this interpreter under ``root``; returns the JUPYTER_PATH."""
    spec_dir = root / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (test interpreter)", "language": "python"}
    if env:
        spec["env"] = env
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root / "jupyter"


@contextmanager
def jupyter_path(path: Path):
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved


def run_cells(cells: dict[str, str], root: Path, env: dict | None = None,
              allow_errors: bool = False, timeout: int = 180):
    """Executes the cells as one notebook with nbclient; returns ({name: cell}, notebook)."""
    import nbclient
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source.strip()) for source in cells.values()]
    with jupyter_path(write_kernelspec(root, env)):
        nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                allow_errors=allow_errors,
                                resources={"metadata": {"path": str(root)}}).execute()
    return dict(zip(cells, nb.cells)), nb
