"""Where is nbpool running: a Jupyter kernel that can show widgets, or a terminal/script?

Checked on every call that draws something (cheap: no imports unless IPython is loaded), so a
pool created in a script and used in a kernel, or the other way round, still draws right.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
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


PROGRESS_ENV = "NBPOOL_PROGRESS"
_CHOICES = ("auto", "text", "widget")


def widgets_available() -> bool:
    """A kernel whose frontend can be expected to render ipywidgets, with ipywidgets installed.

    ``NBPOOL_PROGRESS=text`` turns widgets off, for frontends that cannot draw them and cannot
    be told apart (``jupyter console``); ``NBPOOL_PROGRESS=widget`` turns them on in a kernel
    that the checks below would exclude. Read at every call, so ``%env`` works too.
    """
    choice = _choice()
    if choice == "text" or not in_kernel():
        return False
    if choice == "auto" and not _frontend_draws_widgets():
        return False
    return _ipywidgets_installed()


def _choice() -> str:
    value = os.environ.get(PROGRESS_ENV, "").strip().lower() or "auto"
    if value not in _CHOICES:
        raise ValueError(f"the environment variable {PROGRESS_ENV}={value!r} must be one of "
                         f"{', '.join(_CHOICES)}")
    return value


def _frontend_draws_widgets() -> bool:
    """False for the kernels of frontends known to show no widgets (tqdm.auto's checks)."""
    if "spyder_kernels" in sys.modules or any(name.startswith("SPYDER") for name in os.environ):
        return False  # Spyder's console
    if "QT_API" in _environment_at_start():
        return False  # qtconsole: its qtpy sets QT_API, and the kernel it starts inherits it
    from IPython import get_ipython

    shell_name = type(get_ipython()).__name__.lower()
    return "qt" not in shell_name and "spyder" not in shell_name


@functools.cache
def _environment_at_start() -> frozenset[str]:
    """The names in the environment the kernel was started with (on Linux, read from /proc:
    a notebook that imports qtpy itself sets QT_API later, and still draws widgets)."""
    try:
        with open("/proc/self/environ", "rb") as file:
            entries = file.read().split(b"\0")
        return frozenset(entry.split(b"=", 1)[0].decode(errors="replace")
                         for entry in entries if entry)
    except OSError:
        return frozenset(os.environ)


@functools.cache
def _ipywidgets_installed() -> bool:
    """Looked up once: find_spec searches sys.path, and nested progress asks ~10 times a second."""
    return importlib.util.find_spec("ipywidgets") is not None


_WORKER_FRAME = re.compile(r'File "([^"\n]+)", line')  # as the traceback module writes it


def name_cells_in_worker_tracebacks(exc: BaseException | None) -> None:
    """A worker's traceback names a notebook cell by its file ('/tmp/ipykernel_1/2.py'); in a
    kernel, name it as the notebook's own traceback does ('Cell In[3]'), so that both point
    at the same cell. Works on ``exc`` and the exceptions chained to it."""
    if exc is None or not in_kernel():
        return
    from IPython import get_ipython

    name_of = getattr(get_ipython().compile, "format_code_name", None)
    if name_of is None:  # an IPython without "Cell In[n]" names
        return

    def rename(match: re.Match) -> str:
        label = name_of(match.group(1))
        return f"{label[0]} {label[1]}, line" if label else match.group(0)

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = getattr(exc, "text", None)
        if type(exc).__name__ == "RemoteTraceback" and isinstance(text, str):
            exc.text = _WORKER_FRAME.sub(rename, text)
            exc.args = (exc.text,)
        exc = exc.__cause__ or exc.__context__
