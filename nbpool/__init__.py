"""nbpool: a Jupyter-first process pool with mpire's ``WorkerPool`` API."""

from __future__ import annotations

__version__ = "0.1.0"

from .cpu import cpu_count
from .pool import WorkerPool

__all__ = ["WorkerPool", "cpu_count", "tqdm", "__version__"]


def __getattr__(name: str):
    # tqdm.auto picks the widget bar in a kernel and the text bar elsewhere; imported lazily
    # so that ``import nbpool`` stays cheap.
    if name == "tqdm":
        from tqdm.auto import tqdm

        return tqdm
    raise AttributeError(f"module 'nbpool' has no attribute {name!r}")
