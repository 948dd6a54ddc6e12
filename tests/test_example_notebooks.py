"""The example notebooks in notebooks/ run again and reproduce their stored outputs (nbval).

``pytest --nbval`` runs in a subprocess, with a kernelspec for this interpreter (written to a
temporary JUPYTER_PATH, the same one ``notebooks/execute.py`` uses to store the outputs) and
``notebooks/nbval_sanitize.cfg`` for the few outputs that change from run to run. Cells tagged
``nbval-ignore-output`` run but are not compared.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbval")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SANITIZE = NOTEBOOKS / "nbval_sanitize.cfg"


def _load_execute_script():
    spec = importlib.util.spec_from_file_location("nbpool_notebooks_execute",
                                                  NOTEBOOKS / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(path: Path) -> int:
    return sum(1 for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code")


@pytest.mark.timeout(900)
def test_example_notebooks_reproduce_their_outputs(tmp_path):
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert notebooks, f"no notebooks in {NOTEBOOKS}"
    execute = _load_execute_script()
    jupyter_dir = tmp_path / "jupyter"
    execute.write_kernelspec(jupyter_dir)
    command = [
        sys.executable, "-m", "pytest", "--nbval", str(NOTEBOOKS),
        "--nbval-kernel-name", execute.KERNEL_NAME,
        "--nbval-sanitize-with", str(SANITIZE),
        "--nbval-cell-timeout", "120",
        "-p", "no:cacheprovider", "-q", "-rfE", "--color=no",
    ]
    proc = subprocess.run(command, check=False, cwd=ROOT,
                          env=execute.kernel_environment(jupyter_dir),
                          capture_output=True, text=True, timeout=840)
    report = f"{' '.join(command)}\n\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, f"nbval reported failures:\n{report}"
    summary = proc.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    expected = sum(_code_cells(path) for path in notebooks)
    assert passed and int(passed.group(1)) == expected, (
        f"expected {expected} notebook cells to pass, got: {summary}\n{report}")
    assert not re.search(r"\d+ (failed|error)", summary), report
