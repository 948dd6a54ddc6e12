"""How objects cross the process boundary.

Everything is pickled with cloudpickle, so functions, lambdas, closures and classes defined
in ``__main__`` (a notebook cell, ``python -c``) travel by value and work under every start
method. cloudpickle leaves importable functions and builtins to plain pickle, so the cost for
ordinary data is the same as pickle's.
"""

from __future__ import annotations

import io
import linecache
import pickle
import types
from collections import ChainMap
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable

import cloudpickle

loads = pickle.loads

# cloudpickle's own reducer for code objects (private API: without it we keep its behaviour)
_cloudpickle_code_reduce = getattr(getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None)


def _rebuild_code(constructor, args, filename: str, lines: tuple | None):
    if lines is not None and filename not in linecache.cache:
        linecache.cache[filename] = (sum(map(len, lines)), None, list(lines), filename)
    return constructor(*args).replace(co_filename=filename)


def _reduce_code_keeping_origin(code: types.CodeType):
    """cloudpickle renames every code object it sends ``<dynamic-code>``. Keep the real file
    name, and the source lines of a notebook cell (in linecache with no file behind it), so
    that a worker's traceback shows the user's cell and line."""
    constructor, args = _cloudpickle_code_reduce(code)
    entry = linecache.cache.get(code.co_filename)
    lines = tuple(entry[2]) if entry is not None and entry[1] is None else None
    return (_rebuild_code, (constructor, args, code.co_filename, lines))


class _Pickler(cloudpickle.Pickler):
    if _cloudpickle_code_reduce is not None:
        dispatch_table = ChainMap({types.CodeType: _reduce_code_keeping_origin},
                                  cloudpickle.Pickler.dispatch_table)


def dumps(obj: Any, buffer_callback=None) -> bytes:
    """``buffer_callback``: pickle protocol 5's hook for out-of-band buffers (see codec)."""
    with io.BytesIO() as buffer:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL,
                 buffer_callback=buffer_callback).dump(obj)
        return buffer.getvalue()


class _StartPickler(_Pickler):
    """For what a worker gets when it starts: multiprocessing's own reducers (shared memory
    arenas, locks, connections) join cloudpickle's, so ``multiprocessing.Value``/``Array``/
    ``Lock`` in ``shared_objects`` work under spawn and forkserver as they do in mpire."""

    dispatch_table = ChainMap(ForkingPickler._extra_reducers, _Pickler.dispatch_table)


def dumps_at_start(obj: Any, buffer_callback=None) -> bytes:
    with io.BytesIO() as buffer:
        _StartPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL,
                      buffer_callback=buffer_callback).dump(obj)
        return buffer.getvalue()


class Unloadable:
    """Stands for start data that could not be unpickled in a new process. Raising there
    would kill the process before it could talk; this keeps the exception, so that the
    process can tell its parent why it cannot start."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


def _rebuild_by_value(payload: bytes) -> "ByValue":
    try:
        return ByValue(pickle.loads(payload))
    except Exception as exc:
        return ByValue(Unloadable(exc))


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
        return (_rebuild_by_value, (dumps_at_start(self.value),))


def unpicklable_global(func: Callable) -> tuple[str, str | None, Exception] | None:
    """Why a function cannot be pickled, when a global variable it uses is to blame: (the
    variable's name, the function that uses it if not ``func`` itself, the error). None if
    every variable it uses pickles. Only called once pickling failed: it pickles each variable
    the function uses once more.

    Only functions of ``__main__`` (a notebook, ``python -c``) are searched: cloudpickle sends
    them with the variables they use, while an importable function travels by name.
    """
    seen: set[int] = set()

    def search(function, via: str | None):
        globals_ = getattr(function, "__globals__", None)
        code = getattr(function, "__code__", None)
        if globals_ is None or code is None or id(function) in seen \
                or getattr(function, "__module__", None) != "__main__":
            return None
        seen.add(id(function))
        for name in _global_names(code):
            if name not in globals_:
                continue  # a builtin, or an attribute name
            try:
                dumps(globals_[name])
            except Exception as exc:
                # a notebook function that cannot be pickled: blame what it uses, if it can
                return search(globals_[name], name) or (name, via, exc)
        return None

    return search(func, None)


def _global_names(code) -> list[str]:
    """The names a code object and the functions, lambdas and comprehensions in it may read
    as globals, in order of first use."""
    names = dict.fromkeys(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names.update(dict.fromkeys(_global_names(const)))
    return list(names)
