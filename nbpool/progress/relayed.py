"""Progress of a pool nested in a worker whose root process is a notebook.

Such a worker cannot draw (see ``nbpool.engine.upstream``), so it sends its progress up, at most
about ten reports a second, and the root process draws it under its own bar.
"""

from __future__ import annotations

import itertools
import os

from ..engine import upstream
from ..engine.protocol import PROGRESS
from .model import ProgressModel

_ids = itertools.count()


class RelayedProgress:
    def __init__(self, total: int | None, options: dict, position: int | None):
        self.model = ProgressModel.from_options(total, options)
        self.id = f"{os.getpid()}-{next(_ids)}"
        self.position = position
        self._send()

    def _send(self) -> None:
        model = self.model
        upstream.send((PROGRESS, {
            "id": self.id, "position": self.position, "desc": model.desc, "unit": model.unit,
            "colour": model.colour,
            "n": model.n, "total": model.total, "elapsed": model.elapsed,
            "outcome": model.outcome, "message": model.message,
        }))

    def update(self, done: int) -> None:
        if done != self.model.n:
            self.model.set_count(done)
            if self.model.due():
                self._send()

    def set_total(self, total: int) -> None:
        self.model.set_total(total)

    def close(self, outcome: str, message: str = "") -> None:
        self.model.finish(outcome, message)
        self._send()
