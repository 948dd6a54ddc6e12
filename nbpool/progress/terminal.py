"""Text progress bar (tqdm on stderr) for terminals and scripts."""

from __future__ import annotations

import sys
import warnings

from tqdm import tqdm

from ..warn import warn_user

_FORCED = ("total", "leave")


class _Bar(tqdm):
    # tqdm's monitor thread would make the process multi-threaded for good, and then
    # start_method='auto' could no longer fork. The pool refreshes the bar itself.
    monitor_interval = 0


class TerminalProgress:
    """A tqdm bar whose count is set from the pool's shared counters."""

    bar_class = _Bar

    def __init__(self, total, options: dict, position: int | None):
        options = dict(options)
        for key in _FORCED:
            if key in options:
                warn_user(f"progress_bar_options[{key!r}] is set by nbpool and ignored")
                options.pop(key)
        if position is not None:
            options["position"] = position
        settings = {"file": sys.stderr, "dynamic_ncols": True, "mininterval": 0.1,
                    "maxinterval": 0.5}
        settings.update(options)
        self.bar = self.bar_class(total=total, leave=True, **settings)
        self.done = 0

    def update(self, done: int) -> None:
        if done != self.done:
            self.bar.update(done - self.done)
            self.done = done

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()

    def close(self, outcome: str, message: str = "") -> None:
        if outcome == "error":
            self.bar.colour = "red"
            self.bar.set_description(f"Error: {message}"[:80])
        elif outcome == "interrupted":
            self.bar.set_description("Interrupted")
        self.bar.close()


class RichProgress(TerminalProgress):
    def __init__(self, total, options: dict):
        try:
            from tqdm.rich import tqdm as rich_tqdm
            from tqdm import TqdmExperimentalWarning
        except ImportError as exc:  # rich missing
            raise ImportError("progress_bar_style='rich' needs the 'rich' package") from exc
        warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
        self.bar_class = rich_tqdm
        options = {k: v for k, v in options.items() if k not in ("position",)}
        super().__init__(total, options, None)
