"""Exceptions the pool raises, and how a worker's exception travels to the parent."""

from __future__ import annotations

import os
import pickle
import signal
import traceback
from typing import Any

import cloudpickle

from .serialization import unpicklable_global

# nbpool's own frames (the worker loop, the %%pmap cell wrapper) are hidden from tracebacks
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class WorkerDiedError(RuntimeError):
    """A worker process ended without being asked to (killed, crashed, ``os._exit``)."""


class WorkerStartError(RuntimeError):
    """A worker could not start (it failed before it could take work)."""


class TaskPicklingError(TypeError):
    """A task's arguments or result, or a function the pool runs, could not be serialised
    (or could not be rebuilt on the other side)."""


class TaskExitError(RuntimeError):
    """A task raised ``SystemExit``, ``KeyboardInterrupt`` or another ``BaseException`` that
    is not an ``Exception``. Re-raised as such in the parent it would end the program quietly
    (``sys.exit(0)``) or pass for the user's Ctrl-C; the original is in ``original``."""

    def __init__(self, message: str, original: BaseException | None = None):
        super().__init__(message)
        self.original = original


class RemoteTraceback(Exception):
    """Carries the worker's formatted traceback as the ``__cause__`` of a re-raised error."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def describe_args(args: Any, kind: str = "items") -> str:
    """``'Arg 0: 99'`` style description of a task's arguments (as in mpire's insights)."""
    if kind == "numpy":
        return f"Arg 0: {_short_repr(args)}"
    if isinstance(args, dict):
        return "\n".join(f"Arg {key}: {_short_repr(value)}" for key, value in args.items())
    if isinstance(args, (str, bytes)) or not hasattr(args, "__iter__") or _is_array(args):
        return f"Arg 0: {_short_repr(args)}"
    try:
        return "\n".join(f"Arg {i}: {_short_repr(value)}" for i, value in enumerate(args))
    except Exception:  # an iterator that cannot be listed: fall back to its repr
        return f"Arg 0: {_short_repr(args)}"


def _is_array(obj: Any) -> bool:
    return type(obj).__module__ == "numpy"


def _short_repr(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not hide the real error
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_user_traceback(exc: BaseException) -> str:
    """The worker's traceback without nbpool's own frames, so the user's frames stand out."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR)
    ]
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def pack_exception(exc: BaseException) -> bytes | None:
    """Pickle an exception so that the parent can rebuild it; None if that is impossible."""
    tb = exc.__traceback__
    try:
        exc.__traceback__ = None
        payload = cloudpickle.dumps(exc)
        pickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
        return payload
    except Exception:
        return None
    finally:
        exc.__traceback__ = tb


def pack_exception_type(exc: BaseException) -> bytes | None:
    try:
        return cloudpickle.dumps(type(exc))
    except Exception:
        return None


def rebuild_exception(
    payload: bytes | None, type_payload: bytes | None, type_name: str, message: str
) -> BaseException:
    """The worker's exception, or the closest thing to it: same type with its message."""
    if payload is not None:
        try:
            return pickle.loads(payload)
        except Exception:
            pass
    if type_payload is not None:
        try:
            exc_type = pickle.loads(type_payload)
            exc = exc_type.__new__(exc_type)
            exc.args = (message,)
            return exc
        except Exception:
            pass
    return RuntimeError(f"{type_name}: {message}")


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, even for an exception whose ``__str__`` raises."""
    try:
        return str(exc)
    except Exception as str_exc:  # the report must not fail because the exception is odd
        return f"<{type(exc).__name__}.__str__ failed: {str_exc!r}>"


def describe_exception(exc: BaseException) -> str:
    """``'TypeName: message'`` for error messages, or just ``'TypeName'`` when the message is
    empty (``MemoryError()``: a bare ``{exc}`` would leave nothing after the colon)."""
    text = safe_str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def task_failure(
    exc: BaseException, worker_id: int, args_text: str, tb_text: str, during: str | None = None
) -> BaseException:
    """Attach where it happened to a rebuilt exception, ready to raise in the parent.

    ``during`` names what ran instead of a task (``'worker_init'``, ``'worker_exit'``)."""
    if during is not None:
        header = f"Exception in Worker-{worker_id} in {during}:"
        note = f"(raised in Worker-{worker_id}, in {during})"
    else:
        header = (f"Exception in Worker-{worker_id} while running a task with these "
                  f"arguments:\n{args_text}")
        first = args_text.splitlines()[0] if args_text else ""
        note = f"(raised in Worker-{worker_id}; task arguments: {first})"
    exc.__cause__ = RemoteTraceback(f"\n\n{header}\n\n{tb_text}")
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    return exc


def unpicklable_function(func, exc: BaseException, to: str) -> TaskPicklingError:
    """The error for a function that cannot be pickled to send it ``to`` its worker(s)
    (raise it ``from exc``)."""
    found = unpicklable_global(getattr(func, "func", func))  # a partial's (or a cell's) own
    if found is not None:  # name the global variable to blame, and the error it gives
        name, via, exc = found
        through = f" (through {via})" if via else ""
        return TaskPicklingError(
            f"the function {describe_callable(func)} could not be pickled to send it to {to}: "
            f"it uses the global variable {name!r}{through}, which cannot be pickled: "
            f"{describe_exception(exc)}")
    return TaskPicklingError(
        f"the function {describe_callable(func)} could not be pickled to send it to {to}: "
        f"{describe_exception(exc)}")


def task_exit_failure(
    exc: BaseException, worker_id: int, task_index: int | None, args_text: str, tb_text: str,
    during: str | None = None,
) -> TaskExitError:
    """A ``TaskExitError`` for a task (or ``during``: worker_init, worker_exit) that raised
    ``exc``, a BaseException that is not an Exception."""
    task = during or ("a task" if task_index is None else f"task {task_index}")
    args = f" ({'; '.join(args_text.splitlines())})" if args_text else ""
    error = TaskExitError(
        f"{task}{args} raised {_short_repr(exc)} in Worker-{worker_id}; "
        "code run in a worker cannot end or interrupt the program, so it is reported as this "
        "error", exc)
    return task_failure(error, worker_id, args_text, tb_text, during)


def remote_cause(exc: BaseException, worker_id: int, doing: str,
                 tb_text: str) -> BaseException:
    """``exc`` with the worker's traceback as its cause."""
    exc.__cause__ = RemoteTraceback(f"\n\nException in Worker-{worker_id} {doing}:\n\n{tb_text}")
    return exc


def unpickling_failure(what: str, exc: BaseException, worker_id: int, tb_text: str,
                       headline: str | None = None) -> TaskPicklingError:
    """The error for a message that Worker-``worker_id`` could not unpickle: ``what`` says
    what it held (``headline`` replaces the message's start); ``exc``, the worker's exception
    rebuilt, becomes the cause."""
    remote_cause(exc, worker_id, f"while unpickling {what}", tb_text)
    headline = headline or f"Worker-{worker_id} could not unpickle {what}"
    error = TaskPicklingError(f"{headline}: {describe_exception(exc)}")
    error.__cause__ = exc
    return error


def describe_callable(func: Any) -> str:
    """``'function f'``-like name of a callable for error messages."""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if name is None:
        inner = getattr(func, "func", None)  # functools.partial
        if inner is not None and inner is not func:
            return f"partial of {describe_callable(inner)}"
        return _short_repr(func, 80)
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name


def describe_exit(exitcode: int | None) -> str:
    """Human words for a process exit code."""
    if exitcode is None:
        return "it vanished"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {
            "SIGKILL": " (often the OS out-of-memory killer)",
            "SIGSEGV": " (segmentation fault, usually a crash in C code)",
            "SIGBUS": " (bus error, usually a crash in C code)",
            "SIGABRT": " (aborted)",
        }.get(name, "")
        return f"it was killed by {name}{hint}"
    return f"it exited with code {exitcode}"
