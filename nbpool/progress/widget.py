"""Progress as an ipywidgets bar in a Jupyter kernel, with nested pools' bars under it.

Rules that follow from how the kernel behaves (see docs/widgets.md):
- the thread that runs the cell creates and displays the widget (once the work has run for
  ``SHOW_AFTER_SECONDS``, or as it ends) and makes every update too (the pool is driven from
  that thread);
- ``ProgressModel.due`` throttles updates of the main bar to about ten a second, and one more
  ``Throttle`` the nested bars' together (however many nested pools report);
- the final state is written before the blocking call returns, and the display is refreshed
  so that the stored text form (what nbval, nbconvert and GitHub show) is the final one.

The whole display, nested rows included, is one HTML widget that draws its bars with CSS. It
costs one comm message to make, one to display and one per redraw: a bar made of ipywidgets'
own progress bar, label and boxes took ten messages to make and added 14% to a map of a
million tiny tasks in a kernel (0.08 s); this adds nothing measurable
(``benchmarks/bench_progress.py``, docs/benchmarks.md).
"""

from __future__ import annotations

import html
import time
from typing import Callable

from ..engine.signals import interrupts_deferred
from ..widgets.base import TextFormHTML, show
from .model import ProgressModel, Throttle

CSS_CLASS = "nbpool-progress"
BAR_CSS_CLASS = "nbpool-progress-bar"
# ipywidgets' bar styles, as each outcome shows; "info" is a running bar of unknown length
_BAR_STYLE = {"running": "", "done": "success", "error": "danger", "interrupted": "warning"}
# JupyterLab's theme colours where there are, Bootstrap's (as ipywidgets' bar) elsewhere
_FILL_COLOUR = {
    "": "var(--jp-brand-color1, #2196f3)",
    "success": "var(--jp-success-color1, #4caf50)",
    "danger": "var(--jp-error-color1, #f44336)",
    "warning": "var(--jp-warn-color1, #ff9800)",
    "info": "var(--jp-info-color1, #00bcd4)",
}
SHOW_AFTER_SECONDS = 0.2  # a map over sooner draws its bar once, as it ends
_ROW_STYLE = "display:flex;align-items:center;gap:0.6em;margin:1px 0;white-space:nowrap"
_TRACK_STYLE = ("flex:0 0 auto;width:20em;height:1.1em;overflow:hidden;"
                "background:var(--jp-layout-color3, #e0e0e0)")


def _html_text(text: str) -> str:
    # figure spaces keep the columns steady while the numbers change, as tqdm's bar does
    return html.escape(text).replace(" ", "\u2007")


def _css_colour(colour: str) -> str:
    return colour if colour.startswith("#") else colour.lower()  # tqdm's names are upper case


class ProgressDisplay(TextFormHTML):
    """The displayed widget; its text form is the progress as lines of text."""

    def __init__(self, text_form, **kwargs):
        super().__init__(**kwargs)
        self._text_form = text_form

    def text_form(self) -> str:
        return self._text_form()


class BarRow:
    """One bar (main or nested) as HTML: the description, the bar, the figures after it.

    The row states its bar style, count and total in ``data-`` attributes, and the bar is a
    ``progressbar`` for screen readers."""

    def __init__(self, model: ProgressModel):
        self.model = model
        self.report_id = None  # for a nested row: which nested map it shows now

    def bar_style(self) -> str:
        model = self.model
        if not model.total and model.outcome == "running":
            return "info"  # unknown length: a full bar that counts, neutral until the end
        return _BAR_STYLE[model.outcome]

    def html(self) -> str:
        model = self.model
        style = self.bar_style()
        if model.total:
            value, maximum = min(model.n, model.total), model.total
            percent = 100.0 * value / maximum
        else:
            value, maximum, percent = model.n, 0, 100.0
        colour = _FILL_COLOUR[style]
        if model.colour and model.outcome in ("running", "done"):  # errors stay red
            colour = html.escape(_css_colour(model.colour), quote=True)
        figures = f"{model.count_text()} {model.timing_text()}"
        if model.outcome in ("error", "interrupted"):
            figures += f" {model.outcome_text()}"
        desc = html.escape(model.desc, quote=True)
        label = f'<span class="nbpool-progress-desc">{desc}</span>' if model.desc else ""
        return (
            f'<div class="{BAR_CSS_CLASS}" data-bar-style="{style}" data-value="{value}" '
            f'data-max="{maximum}" data-description="{desc}" style="{_ROW_STYLE}">{label}'
            f'<div class="nbpool-progress-track" role="progressbar" aria-valuemin="0" '
            f'aria-valuenow="{value}" aria-valuemax="{maximum}" style="{_TRACK_STYLE}">'
            f'<div class="nbpool-progress-fill nbpool-progress-{style or "running"}" '
            f'style="width:{percent:.1f}%;height:100%;background:{colour}"></div></div>'
            f'<span class="nbpool-progress-figures">{_html_text(figures)}</span></div>'
        )


class WidgetProgress:
    """The progress view of one map in a notebook.

    The bar shows once the map has run for ``show_after`` seconds, or as it ends: a map over
    sooner gets its bar drawn once, in its final state (two messages instead of five, for a
    bar nobody could have watched). A view of nested bars alone shows at once."""

    def __init__(self, total: int | None, options: dict, show_main: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 show_after: float = SHOW_AFTER_SECONDS):
        self.model = ProgressModel.from_options(total, options, clock)
        self.row = BarRow(self.model) if show_main else None
        self.nested: dict = {}  # position (or nested map id) -> BarRow
        self._nested_redraw = Throttle(clock=clock)
        self.show_after = show_after if show_main else 0.0
        self.widget: ProgressDisplay | None = None
        self.handle = None
        if self.show_after <= 0:
            self._show()

    def _show(self) -> None:
        # a Ctrl-C half-way would leave a bar displayed without its handle: close() would
        # display a second one
        with interrupts_deferred():
            # made whole: each trait set after it exists is one more message
            self.widget = ProgressDisplay(self.text_form, value=self._html(),
                                          _dom_classes=(CSS_CLASS,))
            self.model.due()  # that was a redraw: the next is due in a tenth of a second
            self.handle = show(self.widget)

    def _html(self) -> str:
        rows = [self.row] if self.row is not None else []
        rows += [self.nested[key] for key in sorted(self.nested)]
        return "".join(row.html() for row in rows)

    def redraw(self) -> None:
        """Draws every row: one message to the frontend (none before the bar shows)."""
        if self.widget is not None:
            self.widget.value = self._html()

    def update(self, done: int) -> None:
        self.model.set_count(done)
        if self.widget is None:
            if self.model.elapsed >= self.show_after:
                self._show()
        elif self.row is not None and self.model.due():
            self.redraw()

    def set_total(self, total: int) -> None:
        self.model.set_total(total)

    def close(self, outcome: str, message: str = "") -> None:
        self.model.finish(outcome, message)
        if self.widget is None:
            self._show()  # the final state, in the display's first and only form
            return
        self.redraw()  # with what the nested rows' throttle held back
        show(self.widget, self.handle)  # so the stored text form is the final one

    def show_nested(self, report: dict) -> None:
        """Draw the progress of a pool nested in a worker, reported up through the workers.

        Bars with a ``progress_bar_position`` keep one row per position (later maps at the
        same position reuse it, as they overwrite a terminal line); others get a row each.
        Redraws for nested rows are throttled, all rows together; a final state is drawn at
        once.
        """
        position = report.get("position")
        key = (0, position) if position is not None else (1, str(report["id"]))
        row = self.nested.get(key)
        if row is None or row.report_id != report["id"]:
            model = ProgressModel(report["total"], report["desc"], report["unit"],
                                  report.get("colour"))
            if row is None:
                row = self.nested[key] = BarRow(model)
            else:
                row.model = model
            row.report_id = report["id"]
        model = row.model
        model.set_total(report["total"])
        model.set_count(report["n"])
        model.set_elapsed(report["elapsed"])
        if report["outcome"] != "running":
            model.finish(report["outcome"], report.get("message", ""))
            self.redraw()
            if self.row is None:
                # nested bars alone (a nested pool in an ``apply``) have no map to close
                # them: the stored text form follows each finished row instead
                show(self.widget, self.handle)
        elif self._nested_redraw.due():
            self.redraw()

    def text_form(self) -> str:
        lines = [self.model.summary()] if self.row is not None else []
        lines += ["  " + self.nested[key].model.summary() for key in sorted(self.nested)]
        return "\n".join(lines)
