"""Progress in a Jupyter kernel. A placeholder on tqdm's widget bar until nbpool's own widget."""

from __future__ import annotations

from .terminal import TerminalProgress


class NotebookProgress(TerminalProgress):
    def __init__(self, total, options: dict):
        from tqdm.notebook import tqdm as notebook_tqdm

        self.bar_class = notebook_tqdm
        options = {k: v for k, v in options.items() if k != "position"}
        super().__init__(total, options, None)
