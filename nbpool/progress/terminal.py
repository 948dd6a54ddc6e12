"""Text progress bar (tqdm on stderr) for terminals and scripts."""

from __future__ import annotations

import functools
import sys
import warnings

from tqdm import tqdm

_MESSAGE_WIDTH = 80  # an error message is cut to this many characters on the bar's line


class _Bar(tqdm):
    # tqdm's monitor thread would make the process multi-threaded for good, and then
    # start_method='auto' could no longer fork. The pool refreshes the bar itself.
    monitor_interval = 0


class TerminalProgress:
    """A tqdm bar whose count is set from the pool's shared counters.

    ``options`` were checked by ``params.progress_bar_options``."""

    bar_class = _Bar

    def __init__(self, total, options: dict, position: int | None):
        options = dict(options)
        if position is not None:
            options["position"] = position
        settings = {"file": sys.stderr, "dynamic_ncols": True, "mininterval": 0.1,
                    "maxinterval": 0.5}
        settings.update(options)
        self.desc = options.get("desc") or ""
        self.bar = self.bar_class(total=total, leave=True, **settings)
        self.done = 0

    def update(self, done: int) -> None:
        if done != self.done:
            self.bar.update(done - self.done)  # tqdm redraws at most every mininterval
            self.done = done

    def set_total(self, total: int) -> None:
        self.bar.total = total  # drawn by the next update or by close

    def close(self, outcome: str, message: str = "") -> None:
        label = f"{self.desc} - " if self.desc else ""
        if outcome == "error":
            self.bar.colour = "red"
            self.bar.set_description(f"{label}Error: {message[:_MESSAGE_WIDTH]}", refresh=False)
        elif outcome == "interrupted":
            self.bar.set_description(f"{label}Interrupted", refresh=False)
        self.bar.close()  # draws the final state once


@functools.cache
def _rich_bar_class() -> type:
    """tqdm's rich bar without threads: no tqdm monitor, and rich's live display without its
    auto-refresh thread (which outlives the bar by up to a refresh period); the pool's
    updates redraw it instead."""
    from tqdm import TqdmExperimentalWarning
    from tqdm.rich import tqdm_rich

    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)

    class RichBar(tqdm_rich):
        monitor_interval = 0

        def display(self, *args, **kwargs):
            super().display(*args, **kwargs)
            if hasattr(self, "_prog"):
                self._prog.refresh()

    return RichBar


class RichProgress(TerminalProgress):
    def __init__(self, total, options: dict):
        from rich.console import Console

        self.bar_class = _rich_bar_class()
        options = {k: v for k, v in options.items() if k != "position"}
        console = Console(file=options.get("file") or sys.stderr)
        options["options"] = {"auto_refresh": False, "console": console}
        super().__init__(total, options, None)

    def close(self, outcome: str, message: str = "") -> None:
        # tqdm's rich bar ignores ``colour``: paint rich's own bar column instead
        colour = _RICH_OUTCOME_COLOUR.get(outcome)
        if colour is not None:
            from rich.progress import BarColumn

            for column in getattr(self.bar, "_prog", None) and self.bar._prog.columns or ():
                if isinstance(column, BarColumn):
                    column.complete_style = column.finished_style = colour
                    column.style = colour
        super().close(outcome, message)


_RICH_OUTCOME_COLOUR = {"error": "red", "interrupted": "yellow"}
