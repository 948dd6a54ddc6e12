"""How objects cross the process boundary.

Everything is pickled with cloudpickle, so functions, lambdas, closures and classes defined
in ``__main__`` (a notebook cell, ``python -c``) travel by value and work under every start
method. cloudpickle leaves importable functions and builtins to plain pickle, so the cost for
ordinary data is the same as pickle's.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

dumps = cloudpickle.dumps
loads = pickle.loads


def _rebuild_by_value(payload: bytes) -> "ByValue":
    return ByValue(pickle.loads(payload))


class ByValue:
    """Wraps an object handed to a worker at start-up.

    Under fork nothing is pickled (the child inherits the object, copy-on-write). Under
    spawn and forkserver multiprocessing pickles process arguments with plain pickle, which
    cannot carry notebook functions; this wrapper switches that one object to cloudpickle.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __reduce__(self):
        return (_rebuild_by_value, (cloudpickle.dumps(self.value),))
