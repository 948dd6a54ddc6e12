"""The numbers behind a progress view, and when a redraw is worth its cost.

Every view (text, widget, relayed) keeps one ``ProgressModel``. The pool may report counts as
often as it likes; ``due()`` lets a view redraw at most ``min_interval`` apart, so a million tiny
tasks cost the frontend about ten updates a second, never one per task.
"""

from __future__ import annotations

import time
from typing import Callable

DEFAULT_MIN_INTERVAL = 0.1  # seconds between redraws: at most ~10 updates a second

OUTCOMES = ("running", "done", "error", "interrupted")


def format_duration(seconds: float | None) -> str:
    """``'01:05'``, ``'1:02:03'``, or ``'?'``, as tqdm shows elapsed time and ETA."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Throttle:
    """Allows an action at most ``min_interval`` seconds apart (a redraw, a report)."""

    def __init__(self, min_interval: float = DEFAULT_MIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.min_interval = min_interval
        self._clock = clock
        self._last: float | None = None

    def due(self, force: bool = False) -> bool:
        """True when the action is allowed now (always with ``force``); remembers it."""
        now = self._clock()
        if not force and self._last is not None and now - self._last < self.min_interval:
            return False
        self._last = now
        return True


class ProgressModel:
    """Count, total, timing and outcome of one map."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it",
                 colour: str | None = None, min_interval: float = DEFAULT_MIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.colour = colour
        self.n = 0
        self.outcome = "running"
        self.message = ""
        self._clock = clock
        self._throttle = Throttle(min_interval, clock)
        self.started = clock()
        self.finished: float | None = None

    @classmethod
    def from_options(cls, total: int | None, options: dict,
                     clock: Callable[[], float] = time.monotonic) -> "ProgressModel":
        """A model described by tqdm-style ``progress_bar_options`` (desc, unit, colour)."""
        return cls(total, options.get("desc") or "", options.get("unit") or "it",
                   options.get("colour"), clock=clock)

    # -- changes -------------------------------------------------------------------------
    def set_count(self, n: int) -> None:
        self.n = n

    def set_total(self, total: int | None) -> None:
        self.total = total

    def set_elapsed(self, seconds: float) -> None:
        """Adopt a time measured elsewhere (a nested pool's report)."""
        self.started = self._clock() - seconds

    def finish(self, outcome: str, message: str = "") -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown progress outcome {outcome!r}; expected one of {OUTCOMES}")
        self.outcome = outcome
        self.message = message
        self.finished = self._clock()

    def due(self) -> bool:
        """True when a redraw is allowed now; remembers that one happened."""
        return self._throttle.due()

    # -- derived figures -----------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else self._clock()
        return max(0.0, end - self.started)

    @property
    def rate(self) -> float | None:
        elapsed = self.elapsed
        return self.n / elapsed if elapsed > 0 and self.n else None

    @property
    def remaining(self) -> float | None:
        rate = self.rate
        if self.total is None or not rate:
            return None
        return max(0, self.total - self.n) / rate

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.n / self.total)

    # -- text ----------------------------------------------------------------------------
    def count_text(self) -> str:
        """``' 45%  9/20'`` (no timings: stable enough for stored notebooks and tests)."""
        fraction = self.fraction
        if fraction is None:
            return f"{self.n} {self.unit}"
        return f"{fraction:4.0%} {self.n}/{self.total}"

    def timing_text(self) -> str:
        """``'[00:03<00:04, 2.50 it/s]'``: elapsed, time left and rate."""
        rate = self.rate
        if rate is None:
            speed = f"? {self.unit}/s"
        elif rate >= 1:
            speed = f"{rate:.2f} {self.unit}/s"
        else:
            speed = f"{1 / rate:.2f} s/{self.unit}"
        remaining = "" if self.outcome != "running" else f"<{format_duration(self.remaining)}"
        return f"[{format_duration(self.elapsed)}{remaining}, {speed}]"

    def outcome_text(self) -> str:
        if self.outcome == "error":
            return f"error: {self.message}" if self.message else "error"
        return self.outcome

    def summary(self) -> str:
        """One deterministic line: the text form of a widget (what nbval and GitHub show)."""
        label = f"{self.desc}: " if self.desc else ""
        return f"{label}{self.count_text().strip()} ({self.outcome_text()})"
