"""Progress as an ipywidgets bar in a Jupyter kernel, with nested pools' bars under it.

Rules that follow from how the kernel behaves (see docs/widgets.md):
- the thread that runs the cell creates and displays the widget, inside the call that starts
  the work, and makes every update too (the pool is driven from that thread);
- ``ProgressModel.due`` throttles updates of the main bar to about ten a second, and one more
  ``Throttle`` the nested bars' together (however many nested pools report);
- the final state is written before the blocking call returns, and the display is refreshed
  so that the stored text form (what nbval, nbconvert and GitHub show) is the final one.
"""

from __future__ import annotations

import html
import time
from typing import Callable

import ipywidgets as widgets
from IPython.display import display

from ..widgets.base import TextFormBox
from .model import ProgressModel, Throttle

CSS_CLASS = "nbpool-progress"
BAR_CSS_CLASS = "nbpool-progress-bar"
_BAR_STYLE = {"running": "", "done": "success", "error": "danger", "interrupted": "warning"}


def _html_text(text: str) -> str:
    # figure spaces keep the columns steady while the numbers change, as tqdm's bar does
    return html.escape(text).replace(" ", "\u2007")


def _css_colour(colour: str) -> str:
    return colour if colour.startswith("#") else colour.lower()  # tqdm's names are upper case


class ProgressBox(TextFormBox):
    """The displayed container; its text form is the progress as lines of text."""

    def __init__(self, text_form, **kwargs):
        super().__init__(**kwargs)
        self._text_form = text_form

    def text_form(self) -> str:
        return self._text_form()


class BarRow:
    """One bar (main or nested): the description beside the bar, figures after it.

    Two widgets only (creating each costs a few comm messages), updated in one message each."""

    def __init__(self, model: ProgressModel):
        self.model = model
        self.report_id = None  # for a nested row: which nested map it shows now
        self.bar = widgets.FloatProgress(min=0.0, max=1.0, value=0.0,
                                         style={"description_width": "initial"})
        self.figures = widgets.HTML()
        self.box = widgets.HBox([self.bar, self.figures])
        self.box.add_class(BAR_CSS_CLASS)
        self.draw()

    def draw(self) -> None:
        model = self.model
        with self.bar.hold_sync():
            if model.total:
                self.bar.max = float(model.total)
                self.bar.value = float(min(model.n, model.total))
                self.bar.bar_style = _BAR_STYLE[model.outcome]
            else:  # unknown length: a full bar that counts, neutral until the end
                self.bar.max = self.bar.value = 1.0
                running = model.outcome == "running"
                self.bar.bar_style = "info" if running else _BAR_STYLE[model.outcome]
            self.bar.description = model.desc
            if model.colour:  # tqdm's colour, while running and when done; errors stay red
                keep = model.outcome in ("running", "done")
                self.bar.style.bar_color = _css_colour(model.colour) if keep else None
        figures = f"{model.count_text()} {model.timing_text()}"
        if model.outcome in ("error", "interrupted"):
            figures += f" {model.outcome_text()}"
        self.figures.value = _html_text(figures)


class WidgetProgress:
    """The progress view of one map in a notebook."""

    def __init__(self, total: int | None, options: dict, show_main: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        self.model = ProgressModel.from_options(total, options)
        self.row = BarRow(self.model) if show_main else None
        self.nested: dict = {}  # position (or nested map id) -> BarRow
        self._nested_redraw = Throttle(clock=clock)
        self._stale: set = set()  # keys of nested rows changed since they were drawn
        self.widget = ProgressBox(self.text_form, children=[self.row.box] if self.row else [])
        self.widget.add_class(CSS_CLASS)
        self.handle = display(self.widget, display_id=True)

    def update(self, done: int) -> None:
        self.model.set_count(done)
        if self.row is not None and self.model.due():
            self.row.draw()

    def set_total(self, total: int) -> None:
        self.model.set_total(total)

    def close(self, outcome: str, message: str = "") -> None:
        self.model.finish(outcome, message)
        if self.row is not None:
            self.row.draw()
        self._draw_stale()
        if self.handle is not None:
            self.handle.update(self.widget)  # so the stored text form is the final one

    def show_nested(self, report: dict) -> None:
        """Draw the progress of a pool nested in a worker, reported up through the workers.

        Bars with a ``progress_bar_position`` keep one row per position (later maps at the
        same position reuse it, as they overwrite a terminal line); others get a row each.
        Redraws of all nested rows together are throttled; a final state is drawn at once.
        """
        position = report.get("position")
        key = (0, position) if position is not None else (1, str(report["id"]))
        row = self.nested.get(key)
        if row is None or row.report_id != report["id"]:
            model = ProgressModel(report["total"], report["desc"], report["unit"],
                                  report.get("colour"))
            if row is None:
                row = BarRow(model)
                self.nested[key] = row
                main = [self.row.box] if self.row else []
                nested = [self.nested[k].box for k in sorted(self.nested)]
                self.widget.children = tuple(main + nested)
            else:
                row.model = model
            row.report_id = report["id"]
        model = row.model
        model.set_total(report["total"])
        model.set_count(report["n"])
        model.set_elapsed(report["elapsed"])
        if report["outcome"] != "running":
            model.finish(report["outcome"], report.get("message", ""))
            self._stale.discard(key)
            row.draw()
        else:
            self._stale.add(key)
        if self._stale and self._nested_redraw.due():
            self._draw_stale()

    def _draw_stale(self) -> None:
        for key in sorted(self._stale):
            self.nested[key].draw()
        self._stale.clear()

    def text_form(self) -> str:
        lines = [self.model.summary()] if self.row is not None else []
        lines += ["  " + self.nested[key].model.summary() for key in sorted(self.nested)]
        return "\n".join(lines)
