"""The insights and workers widgets. They redraw from the pool's data when the pool refreshes
them (from the thread that drives the pool), at most about ten times a second."""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets
from IPython.display import display

from ..progress.model import Throttle
from . import render
from .base import TextFormBox


class LiveHTMLView(TextFormBox):
    """An HTML panel redrawn by ``refresh()``; its ``repr`` is a text form of the same data."""

    css_class = ""

    def __init__(self, snapshot: Callable[[], object], to_html: Callable, to_text: Callable):
        self._snapshot = snapshot
        self._to_html = to_html
        self._to_text = to_text
        self._html = widgets.HTML()
        self._text = ""
        self._throttle = Throttle()
        self._handle = None
        super().__init__([self._html])
        self.add_class(self.css_class)
        self.refresh(force=True)

    def show(self) -> "LiveHTMLView":
        self._handle = display(self, display_id=True)
        return self

    def finish(self) -> None:
        """Draw the final state and store its text form in the cell's output."""
        self.refresh(force=True)
        if self._handle is not None:
            self._handle.update(self)

    def refresh(self, force: bool = False) -> None:
        if not self._throttle.due(force):
            return
        data = self._snapshot()
        self._text = self._to_text(data)
        self._html.value = self._to_html(data)

    def text_form(self) -> str:
        return self._text


class InsightsView(LiveHTMLView):
    """Draws ``snapshot()``: an ``Insights``, or None while no map has enabled insights."""

    css_class = "nbpool-insights"

    def __init__(self, snapshot: Callable[[], object]):
        super().__init__(snapshot, render.insights_view_html, render.insights_view_text)


class WorkersView(LiveHTMLView):
    """Draws ``snapshot()``: the rows of ``worker_status()``."""

    css_class = "nbpool-workers"

    def __init__(self, snapshot: Callable[[], list]):
        super().__init__(snapshot, render.workers_html, render.workers_text)
