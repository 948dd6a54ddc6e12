"""nbpool: a Jupyter-first process pool with mpire's ``WorkerPool`` API.

The package imports its parts on first use (PEP 562), so ``%load_ext nbpool`` and the startup
file that loads it in every kernel cost almost nothing until a pool is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["WorkerPool", "cpu_count", "tqdm", "__version__", "WorkerDiedError", "WorkerStartError",
           "TaskPicklingError", "TaskExitError", "RemoteTraceback"]
_ERRORS = ("WorkerDiedError", "WorkerStartError", "TaskPicklingError", "TaskExitError",
           "RemoteTraceback")

if TYPE_CHECKING:
    from tqdm.auto import tqdm

    from .cpu import cpu_count
    from .engine.errors import (RemoteTraceback, TaskExitError, TaskPicklingError,
                                WorkerDiedError, WorkerStartError)
    from .pool import WorkerPool


def __getattr__(name: str):
    if name == "WorkerPool":
        from .pool import WorkerPool

        return WorkerPool
    if name == "cpu_count":
        from .cpu import cpu_count

        return cpu_count
    if name in _ERRORS:
        from .engine import errors

        return getattr(errors, name)
    if name == "tqdm":
        from .progress import tqdm_class

        return tqdm_class()
    raise AttributeError(f"module 'nbpool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython) -> None:
    """``%load_ext nbpool``: registers the ``%%pmap`` and ``%pmap`` magics."""
    from .magics import register

    register(ipython)


def unload_ipython_extension(ipython) -> None:
    from .magics import unregister

    unregister(ipython)
