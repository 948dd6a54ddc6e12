"""Progress views. The engine publishes counts; a view only reads them and draws.

``make_progress`` picks the view for a style: a widget bar in a Jupyter kernel, tqdm on stderr
in a terminal or a script, and for a pool nested in a notebook's worker a view that reports up
to the root process, which draws it under its own bar.
"""

from __future__ import annotations

import functools
from typing import Protocol

from .. import frontend
from ..engine import upstream
from ..warn import warn_user


class ProgressView(Protocol):
    def update(self, done: int) -> None: ...
    def set_total(self, total: int) -> None: ...
    def close(self, outcome: str, message: str = "") -> None: ...


def resolve_style(style: str | None) -> str:
    """The concrete view for a ``progress_bar_style``: 'relayed', 'notebook', 'rich' or 'std'."""
    wants_widget = style in (None, "auto", "notebook", "widget")
    if wants_widget and upstream.relaying():
        return "relayed"
    if style in ("notebook", "widget"):
        if frontend.widgets_available():
            return "notebook"
        warn_user(f"progress_bar_style={style!r} needs a Jupyter kernel with ipywidgets; "
                  "showing a text bar instead")
        return "std"
    if style in (None, "auto"):
        return "notebook" if frontend.widgets_available() else "std"
    return style


def make_progress(style, total, options: dict, position: int | None) -> ProgressView | None:
    """A progress view for ``style`` (see ``resolve_style``); None with ``disable=True``.

    ``options`` were checked by ``params.progress_bar_options``."""
    if options.get("disable") is True:
        return None
    style = resolve_style(style)
    if style == "relayed":
        from .relayed import RelayedProgress

        return RelayedProgress(total, options, position)
    if style == "notebook":
        from .widget import WidgetProgress

        return WidgetProgress(total, options)
    if style == "rich":
        from .terminal import RichProgress

        return RichProgress(total, options)
    from .terminal import TerminalProgress

    return TerminalProgress(total, options, position)


@functools.cache
def tqdm_class() -> type:
    """``nbpool.tqdm``, chosen at first use as ``tqdm.auto`` chooses at import: the widget bar
    where nbpool draws widgets, text elsewhere, with async iteration. Without tqdm's monitor
    thread, so that a pool used after it may still fork."""
    from tqdm.asyncio import tqdm_asyncio

    if frontend.widgets_available():
        from tqdm.notebook import tqdm_notebook

        bases: tuple = (tqdm_notebook, tqdm_asyncio)
    else:
        bases = (tqdm_asyncio,)
    doc = "tqdm's bar (a widget in Jupyter, text elsewhere) without tqdm's monitor thread."
    return type("tqdm", bases, {"monitor_interval": 0, "__module__": "nbpool", "__doc__": doc})
