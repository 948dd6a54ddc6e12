"""Warnings that point at the user's line, not at nbpool's.

A fixed ``stacklevel`` is wrong as soon as the call goes through a generator (``imap``) or a
helper, so the level is counted: the first frame outside this package is the one to name.
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_user(message: str, category: type[Warning] = RuntimeWarning) -> None:
    frame = sys._getframe(1)
    level = 2  # 1 would be this function; 2 is its caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
