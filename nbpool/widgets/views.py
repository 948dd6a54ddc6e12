"""The insights and workers widgets. They redraw from the pool's data when the pool refreshes
them (from the thread that drives the pool), at most about ten times a second."""

from __future__ import annotations

from typing import Callable

from ..progress.model import Throttle
from . import render
from .base import TextFormHTML, show as show_widget


class LiveHTMLView(TextFormHTML):
    """An HTML panel redrawn by ``refresh()``; its ``repr`` is a text form of the same data."""

    css_class = ""

    def __init__(self, snapshot: Callable[[], object], to_html: Callable, to_text: Callable):
        self._snapshot = snapshot
        self._to_html = to_html
        self._to_text = to_text
        self._throttle = Throttle()
        self._throttle.due()  # this is the first drawing
        self._handle = None
        data = snapshot()
        self._text = to_text(data)
        super().__init__(value=to_html(data), _dom_classes=(self.css_class,))

    def show(self) -> "LiveHTMLView":
        self._handle = show_widget(self)
        return self

    def finish(self) -> None:
        """Draw the final state and store its text form in the cell's output."""
        self.refresh(force=True)
        if self._handle is not None:
            show_widget(self, self._handle)

    def refresh(self, force: bool = False) -> None:
        if not self._throttle.due(force):
            return
        data = self._snapshot()
        self._text = self._to_text(data)
        self.value = self._to_html(data)

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
