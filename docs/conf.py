"""Sphinx configuration for nbpool's documentation.

The pages are Markdown, read by myst-parser. Build with:

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html

``tests/test_docs.py`` runs the same build and fails on any warning.
"""

from __future__ import annotations

import os
import re

_HERE = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    # read, not imported: building the docs must not need nbpool's dependencies
    try:
        with open(os.path.join(_HERE, os.pardir, "nbpool", "__init__.py"), encoding="utf-8") as f:
            match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.MULTILINE)
    except OSError:
        return "unknown"
    return match.group(1) if match else "unknown"


project = "nbpool"
author = "nbpool contributors"
copyright = "nbpool contributors"
release = version = _version()

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Markdown: links to headings as page.md#heading, tables, definition lists, ::: blocks
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

html_theme = "alabaster"
html_title = f"nbpool {release}"
html_theme_options = {
    "description": "A Jupyter-first process pool with mpire's WorkerPool API",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_show_sourcelink = False
pygments_style = "sphinx"
