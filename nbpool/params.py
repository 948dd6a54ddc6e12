"""Parameter checks with messages that name the parameter and what it accepts."""

from __future__ import annotations

import importlib.util
import math
import numbers
import re
from typing import Any

from .cpu import cpu_count
from .engine.start_methods import START_METHODS
from .warn import warn_user

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
    """A finite number above ``minimum``, or None. NaN would compare False with every bound
    (and so pass them), inf would overflow the event loop's wait: both are refused."""
    if value is None:
        return None
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    op = ">=" if inclusive else ">"
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {op} {minimum} (or None), "
                         f"got {value!r}")
    if value < minimum or (value == minimum and not inclusive):
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
    """None is taken as 'auto' (mpire has no None; accepting it costs nothing)."""
    if value is None:
        return "auto"
    if not isinstance(value, str):
        raise TypeError(f"start_method must be a str, one of {START_METHODS}, got "
                        f"{type(value).__name__} {value!r}")
    if value not in START_METHODS:
        raise ValueError(
            f"Unknown start method: {value!r}. start_method must be one of {START_METHODS}"
        )
    return value


def cpu_ids(value: Any, n: int, method: str = "auto") -> list[list[int]] | None:
    """Normalised to one list of CPU ids per worker. Threads share their process's
    affinity: pinning one would pin the whole process, so threading refuses cpu_ids."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"cpu_ids must be a list of ints or of lists of ints, got {value!r}")
    if method == "threading":
        raise ValueError("cpu_ids cannot be used with start_method='threading': worker "
                         "threads share the process's CPU affinity and cannot be pinned one by "
                         "one. Use a process start method, or cpu_ids=None")
    if len(value) not in (1, n):
        raise ValueError(f"cpu_ids must have 1 or n_jobs={n} entries, got {len(value)}")
    n_cpus = cpu_count_all()
    result = []
    for entry in value:
        ids = list(entry) if isinstance(entry, (list, tuple, set)) else [entry]
        if not ids:
            raise ValueError(f"cpu_ids entries must name at least one CPU, got {entry!r}")
        for cpu in ids:
            if not _is_int(cpu):
                raise TypeError(f"cpu_ids entries must be ints or lists of ints, got {cpu!r}")
            if cpu < 0 or cpu >= n_cpus:
                raise ValueError(
                    f"cpu_ids entry {cpu} is not a CPU of this machine (0..{n_cpus - 1})")
        result.append([int(cpu) for cpu in ids])
    return result * n if len(result) == 1 else result


def cpu_count_all() -> int:
    import os

    return os.cpu_count() or 1


def chunk_size(value: Any) -> int | float | None:
    """An int or a finite float >= 1 (fractional sizes alternate, see chunking), or None."""
    if value is None:
        return None
    if not _is_number(value):
        raise TypeError(f"chunk_size must be an int or float >= 1, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"chunk_size must be a finite number >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"chunk_size must be >= 1, got {value!r}")
    return int(value) if _is_int(value) else float(value)


def _option_name(key: str) -> str:
    return f"progress_bar_options[{key!r}]"


def _check_str(key, value):
    if not isinstance(value, str):
        raise TypeError(f"{_option_name(key)} must be a str, got {type(value).__name__} {value!r}")


def _check_flag(key, value):
    if not isinstance(value, bool):
        raise TypeError(f"{_option_name(key)} must be True or False, got {value!r}")


def _check_count(key, value):
    positive_int(_option_name(key), value, minimum=0)


def _check_amount(key, value):
    positive_number(_option_name(key), value, inclusive=True)


def _check_smoothing(key, value):
    _check_amount(key, value)
    if value > 1:
        raise ValueError(f"{_option_name(key)} must be between 0 and 1, got {value!r}")


def _check_unit_divisor(key, value):
    positive_number(_option_name(key), value)


def _check_disable(key, value):
    if not isinstance(value, bool):
        raise TypeError(f"{_option_name(key)} must be True, False or None (off when stderr "
                        f"is not a terminal), got {value!r}")


def _check_ascii(key, value):
    if not isinstance(value, (bool, str)):
        raise TypeError(f"{_option_name(key)} must be True, False or a str of bar characters, "
                        f"got {value!r}")


def _check_unit_scale(key, value):
    if not isinstance(value, bool) and not _is_number(value):
        raise TypeError(f"{_option_name(key)} must be True, False or a number, got {value!r}")


_COLOURS = ("BLACK", "RED", "GREEN", "YELLOW", "BLUE", "MAGENTA", "CYAN", "WHITE")  # tqdm's


def _check_colour(key, value):
    _check_str(key, value)
    if value.upper() not in _COLOURS and not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        raise ValueError(f"{_option_name(key)} must be one of {', '.join(_COLOURS).lower()} "
                         f"or a hex colour like '#00ff00', got {value!r}")


def _check_postfix(key, value):
    if not isinstance(value, (dict, str)):
        raise TypeError(f"{_option_name(key)} must be a dict or a str, got {value!r}")


def _check_file(key, value):
    if not callable(getattr(value, "write", None)):
        raise TypeError(f"{_option_name(key)} must be a file-like object with write(), "
                        f"got {value!r}")


def _check_lock_args(key, value):
    if not isinstance(value, tuple):
        raise TypeError(f"{_option_name(key)} must be a tuple, got {value!r}")


# tqdm's options: how each is checked, and whether tqdm's default is None (then None is too)
TQDM_OPTIONS = {
    "desc": (_check_str, True), "total": (None, True), "leave": (None, False),
    "file": (_check_file, True), "ncols": (_check_count, True),
    "mininterval": (_check_amount, False), "maxinterval": (_check_amount, False),
    "miniters": (_check_amount, True), "ascii": (_check_ascii, True),
    "disable": (_check_disable, True), "unit": (_check_str, False),
    "unit_scale": (_check_unit_scale, False), "dynamic_ncols": (_check_flag, False),
    "smoothing": (_check_smoothing, False), "bar_format": (_check_str, True),
    "initial": (_check_amount, False), "position": (_check_count, True),
    "postfix": (_check_postfix, True), "unit_divisor": (_check_unit_divisor, False),
    "write_bytes": (_check_flag, False), "lock_args": (_check_lock_args, True),
    "nrows": (_check_count, True), "colour": (_check_colour, True),
    "delay": (_check_amount, False),
}
SET_BY_NBPOOL = ("total", "leave")


def progress_bar_options(value: Any) -> dict:
    """tqdm's options, checked before any worker starts, so that every view (text, widget,
    nested) accepts and rejects the same ones. ``total`` and ``leave`` are dropped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"progress_bar_options must be a dict of tqdm options, got {value!r}")
    options = {}
    for key, option in value.items():
        if key not in TQDM_OPTIONS:
            raise ValueError(f"progress_bar_options has an unknown key {key!r}; tqdm's options "
                             f"are {', '.join(TQDM_OPTIONS)}")
        if key in SET_BY_NBPOOL:
            warn_user(f"{_option_name(key)} is set by nbpool and ignored")
            continue
        check, none_allowed = TQDM_OPTIONS[key]
        if option is not None or not none_allowed:
            check(key, option)
        options[key] = option
    return options


_STYLE_PACKAGES = {"rich": "rich"}  # style -> the package it needs


def progress_bar_style(value: Any, shown: bool = True):
    """A valid style; when a bar will be shown, one whose package is installed."""
    if value == "dashboard":
        raise ValueError(
            "progress_bar_style='dashboard' is mpire's web dashboard, which nbpool does not "
            "have. Use progress_bar_style=None (a widget in Jupyter, text elsewhere); in a "
            "notebook, pool.show_workers() and pool.show_insights() show the live state")
    if value not in PROGRESS_BAR_STYLES:
        raise ValueError(
            f"Invalid progress bar style: {value!r}. progress_bar_style must be one of "
            f"{PROGRESS_BAR_STYLES}"
        )
    package = _STYLE_PACKAGES.get(value)
    if shown and package and importlib.util.find_spec(package) is None:
        raise ImportError(f"progress_bar_style={value!r} needs the {package!r} package "
                          f"(pip install {package}); progress_bar_style=None needs nothing")
    return value


def iterable(value: Any) -> Any:
    if not hasattr(value, "__iter__"):
        raise TypeError(f"iterable_of_args must be iterable, got {type(value).__name__}")
    return value


def func(value: Any) -> Any:
    if not callable(value):
        raise TypeError(f"func must be callable, got {type(value).__name__}")
    return value
