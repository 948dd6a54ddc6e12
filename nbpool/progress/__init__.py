"""Progress views. The engine publishes counts; a view only reads them and draws.

``make_progress`` picks the view for a style; a terminal or a script gets tqdm on stderr.
"""

from __future__ import annotations

from typing import Protocol

from .terminal import TerminalProgress


class ProgressView(Protocol):
    def update(self, done: int) -> None: ...
    def set_total(self, total: int) -> None: ...
    def close(self, outcome: str, message: str = "") -> None: ...


def make_progress(style, total, options: dict, position: int | None) -> ProgressView:
    """A progress view for ``style`` (None/'auto'/'std' -> text bar; others as named)."""
    if style in ("notebook", "widget"):
        from .notebook import NotebookProgress

        return NotebookProgress(total, options)
    if style == "rich":
        from .terminal import RichProgress

        return RichProgress(total, options)
    return TerminalProgress(total, options, position)
