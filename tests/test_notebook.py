"""nbpool in a real Jupyter kernel: notebook-defined functions and classes, every start method,
and 'auto' must not fork the (multi-threaded) kernel."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.notebook

METHODS = {"spawn": "'spawn'", "forkserver": "'forkserver'", "default": None}


def _cells() -> list[str]:
    cells = [
        "from nbpool import WorkerPool",
        "OFFSET = 1",
        "def f(x):\n    return x * 3 + OFFSET",
        "class Point:\n"
        "    def __init__(self, x):\n"
        "        self.x = x\n"
        "\n"
        "def make_point(x):\n"
        "    return Point(x * 2)",
    ]
    expected = [x * 3 + 1 for x in range(20)]
    for label, method in METHODS.items():
        arg = "" if method is None else f", start_method={method}"
        cells.append(
            f"with WorkerPool(n_jobs=2{arg}) as pool:\n"
            f"    res = pool.map(f, range(20))\n"
            f"    points = pool.map(make_point, range(5))\n"
            f"    squares = pool.map(lambda x: x * x, range(6))\n"
            f"assert res == {expected!r}, res\n"
            f"assert all(type(p) is Point for p in points), [type(p) for p in points]\n"
            f"assert [p.x for p in points] == [0, 2, 4, 6, 8]\n"
            f"assert squares == [0, 1, 4, 9, 16, 25]\n"
            f"print({label!r}, pool.start_method)"
        )
    return cells


@pytest.mark.timeout(240)
def test_notebook_runs_every_start_method(current_python_kernel, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in _cells()]
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name=current_python_kernel,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()

    printed: dict[str, str] = {}
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", (
                f"cell {index} raised {output.get('ename')}: {output.get('evalue')}\n"
                + "\n".join(output.get("traceback", []))
            )
            if output["output_type"] == "stream":
                text = output["text"]
                if output["name"] == "stderr":
                    assert "DeprecationWarning" not in text, f"cell {index} stderr:\n{text}"
                else:
                    for line in text.splitlines():
                        parts = line.split()
                        if len(parts) == 2 and parts[0] in METHODS:
                            printed[parts[0]] = parts[1]

    assert printed.get("spawn") == "spawn", printed
    assert printed.get("forkserver") == "forkserver", printed
    assert printed.get("default") in {"forkserver", "spawn"}, printed
    assert printed["default"] != "fork"


@pytest.mark.timeout(240)
def test_worker_tracebacks_name_the_cell_as_the_notebook_does(tmp_path):
    """A worker's traceback names the cell ('Cell In[2], line 3'), not the kernel's temporary
    file, for map errors (caught and uncaught) and apply errors, under spawn too."""
    from kernel_helpers import run_cells

    cells, _ = run_cells({
        "setup": "from nbpool import WorkerPool",
        "define": "def check(x):\n    if x == 3:\n        raise ValueError(f'bad {x}')\n"
                  "    return x",
        "caught": "try:\n"
                  "    with WorkerPool(2, start_method='spawn') as pool:\n"
                  "        pool.map(check, range(6))\n"
                  "except ValueError as exc:\n"
                  "    print(exc.__cause__)",
        "apply": "with WorkerPool(2) as pool:\n"
                 "    try:\n"
                 "        pool.apply(check, (3,))\n"
                 "    except ValueError as exc:\n"
                 "        print(exc.__cause__)",
        "uncaught": "with WorkerPool(2) as pool:\n    pool.map(check, range(6))",
    }, tmp_path, allow_errors=True)
    for name in ("caught", "apply"):
        text = "".join(o.get("text", "") for o in cells[name].outputs)
        assert 'Cell In[2], line 3, in check\n    raise ValueError' in text, text
        assert "ipykernel_" not in text, text
    [error] = [o for o in cells["uncaught"].outputs if o["output_type"] == "error"]
    shown = "\n".join(error["traceback"])
    assert "Cell In[2], line 3, in check" in shown and "ipykernel_" not in shown, shown
