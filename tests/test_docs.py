"""The documentation site builds with Sphinx without a single warning.

The same command as in docs/index.md, into a temporary folder: ``-W`` turns warnings into
errors, ``--keep-going`` reports all of them, ``-n`` also flags links to pages, headings and
Python objects that do not exist.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_build_without_warnings(tmp_path):
    missing = [name for name in ("sphinx", "myst_parser") if not _importable(name)]
    assert not missing, (
        f"{', '.join(missing)} not installed: pip install -e '.[test]' (they are in the test extra)"
    )
    command = [
        sys.executable, "-m", "sphinx",
        "-W", "--keep-going", "-n", "-q",
        "-b", "html",
        "-d", str(tmp_path / "doctrees"),
        str(DOCS), str(tmp_path / "html"),
    ]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"the docs build failed (exit code {proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
    )
    assert (tmp_path / "html" / "index.html").is_file()
    # every page of the toctree was built
    for page in DOCS.glob("*.md"):
        assert (tmp_path / "html" / f"{page.stem}.html").is_file(), f"{page.name} was not built"


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
