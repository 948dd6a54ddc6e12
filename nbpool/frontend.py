"""Where is nbpool running: a Jupyter kernel that can show widgets, or a terminal/script?

Checked on every call that draws something (cheap: no imports unless IPython is loaded), so a
pool created in a script and used in a kernel, or the other way round, still draws right.
"""

from __future__ import annotations

import functools
import importlib.util
import sys

from .engine import upstream


def in_kernel() -> bool:
    """True inside an IPython kernel (Jupyter, nbclient, VS Code), not a terminal IPython."""
    if upstream.in_worker():  # a forked worker of a kernel cannot talk to the frontend
        return False
    if "IPython" not in sys.modules or "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def widgets_available() -> bool:
    """A kernel whose frontend can be expected to render ipywidgets, with ipywidgets installed."""
    if not in_kernel():
        return False
    if "spyder_kernels" in sys.modules:  # Spyder's console shows no widgets
        return False
    return _ipywidgets_installed()


@functools.cache
def _ipywidgets_installed() -> bool:
    """Looked up once: find_spec searches sys.path, and nested progress asks ~10 times a second."""
    return importlib.util.find_spec("ipywidgets") is not None
