"""Parameter checks with messages that name the parameter and what it accepts."""

from __future__ import annotations

import numbers
from typing import Any

from .cpu import cpu_count
from .engine.start_methods import START_METHODS

PROGRESS_BAR_STYLES = (None, "auto", "std", "notebook", "widget", "rich")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(name: str, value: Any, minimum: int = 1, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if not _is_int(value):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def positive_number(name: str, value: Any, minimum: float = 0.0, inclusive: bool = False):
    if value is None:
        return None
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if value < minimum or (value == minimum and not inclusive):
        op = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be {op} {minimum}, got {value!r}")
    return value


def task_retries(value: Any) -> int:
    """How often a chunk may re-run after its worker died: an int >= 0 (0: never)."""
    return positive_int("task_retries", value, minimum=0, allow_none=False)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def callable_or_none(name: str, value: Any):
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
    return value


def n_jobs(value: Any) -> int:
    if value is None:
        return cpu_count()
    return positive_int("n_jobs", value, allow_none=False)


def start_method(value: Any) -> str:
    if value is None:
        return "auto"
    if value not in START_METHODS:
        raise ValueError(
            f"Unknown start method: {value!r}. start_method must be one of {START_METHODS}"
        )
    return value


def cpu_ids(value: Any, n: int) -> list[list[int]] | None:
    """Normalised to one list of CPU ids per worker."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"cpu_ids must be a list of ints or of lists of ints, got {value!r}")
    if len(value) not in (1, n):
        raise ValueError(f"cpu_ids must have 1 or n_jobs={n} entries, got {len(value)}")
    n_cpus = cpu_count_all()
    result = []
    for entry in value:
        ids = list(entry) if isinstance(entry, (list, tuple, set)) else [entry]
        for cpu in ids:
            if not _is_int(cpu):
                raise TypeError(f"cpu_ids entries must be ints, got {cpu!r}")
            if cpu < 0 or cpu >= n_cpus:
                raise ValueError(
                    f"cpu_ids entry {cpu} is not a CPU of this machine (0..{n_cpus - 1})")
        result.append(ids)
    return result * n if len(result) == 1 else result


def cpu_count_all() -> int:
    import os

    return os.cpu_count() or 1


def chunk_size(value: Any):
    if value is None:
        return None
    if not _is_number(value):
        raise TypeError(f"chunk_size must be an int or float >= 1, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"chunk_size must be >= 1, got {value!r}")
    return value


def progress_bar_options(value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"progress_bar_options must be a dict of tqdm options, got {value!r}")
    return dict(value)


def progress_bar_style(value: Any):
    if value not in PROGRESS_BAR_STYLES:
        raise ValueError(
            f"Invalid progress bar style: {value!r}. progress_bar_style must be one of "
            f"{PROGRESS_BAR_STYLES}"
        )
    return value


def iterable(value: Any) -> Any:
    if not hasattr(value, "__iter__"):
        raise TypeError(f"iterable_of_args must be iterable, got {type(value).__name__}")
    return value


def func(value: Any) -> Any:
    if not callable(value):
        raise TypeError(f"func must be callable, got {type(value).__name__}")
    return value
