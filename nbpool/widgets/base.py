"""A container widget whose text form is ours, in full.

Beside the widget view, every display carries ``text/plain``: frontends without a widget
manager (GitHub, nbviewer, a notebook opened later) show it, and nbval compares it. ipywidgets
cuts it at 110 characters, which would cut an error message or a worker table in half.
"""

from __future__ import annotations

import ipywidgets as widgets


class TextFormBox(widgets.VBox):
    """A VBox whose ``repr`` and ``text/plain`` are ``text_form()``."""

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
