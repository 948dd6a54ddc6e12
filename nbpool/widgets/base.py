"""Widgets whose text form is ours, in full, and cheap to create.

Beside the widget view, every display carries ``text/plain``: frontends without a widget
manager (GitHub, nbviewer, a notebook opened later) show it, and nbval compares it. ipywidgets
cuts it at 110 characters, which would cut an error message or a worker table in half.
"""

from __future__ import annotations

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle


class TextForm:
    """Makes ``repr`` and ``text/plain`` of a widget ``text_form()``."""

    def text_form(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.text_form()

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.text_form())

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        if data is not None:
            data["text/plain"] = self.text_form()
        return data


_shared: dict = {}


def shared_html_parts() -> dict:
    """A ``layout`` and a ``style`` for HTML widgets that never change them.

    Each widget otherwise makes a Layout and a style widget of its own: three comm openings
    instead of one, most of what a progress bar costs to show. A part closed meanwhile (by
    ``Widget.close_all()``, say) is made again, since a frontend cannot draw a closed model."""
    for name, make in (("layout", widgets.Layout), ("style", HTMLStyle)):
        part = _shared.get(name)
        if part is None or part.comm is None:
            _shared[name] = make()
    return dict(_shared)


class TextFormHTML(TextForm, widgets.HTML):
    """An HTML widget whose ``repr`` and ``text/plain`` are ``text_form()``; it shares its
    layout and style with the others (see ``shared_html_parts``)."""

    def __init__(self, **kwargs):
        super().__init__(**shared_html_parts(), **kwargs)


def show(widget: TextForm, handle=None):
    """Displays ``widget`` (or, given the ``handle`` of an earlier display, updates it) and
    returns the display handle.

    In IPython this hands over the widget's own mimebundle: the display formatter would ask
    the widget for a dozen other forms first, which costs 0.3 ms a time, a tenth of what a
    progress bar costs per map."""
    from IPython import get_ipython
    from IPython.display import display

    if widget.comm is None:  # closed by the user (``Widget.close_all()``): nothing to show
        return handle
    shell = get_ipython()
    data = widget._repr_mimebundle_() if shell is not None else None
    if handle is not None:
        if data is None:
            handle.update(widget)
        else:
            handle.update(data, raw=True)
        return handle
    if data is None:
        return display(widget, display_id=True)
    return display(data, raw=True, display_id=True)
