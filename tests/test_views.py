"""Insights and worker views with real workers: what they show, and that they stay live.

The widget views are tested outside a kernel (``widgets_available`` forced on: ipywidgets
works without a frontend); test_widgets_kernel.py draws them in a real kernel.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from nbpool import WorkerPool
from nbpool.insights import PHASES
from nbpool.widgets import render


def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _wait_for(predicate, timeout: float = 20.0):
    """Polls until ``predicate()`` is true; the timeout only catches a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


# -- insights --------------------------------------------------------------------------------
def test_top_tasks_add_up_over_maps_with_keep_alive():
    """Each map numbers its tasks from 0: the second map's quick task 3 must not replace the
    first map's slow task 3."""
    with WorkerPool(2, enable_insights=True, keep_alive=True) as pool:
        pool.map(pause, [0.3 if i == 3 else 0.0 for i in range(10)], chunk_size=1)
        pool.map(pause, [0.0] * 10, chunk_size=1)
        raw = pool.insights().raw()
        report = pool.insights().report()
    assert sum(raw["n_completed_tasks"]) == 20
    assert raw["top_5_max_task_durations"][0] >= 0.3, raw["top_5_max_task_durations"]
    assert "0.3" in raw["top_5_max_task_args"][0], raw["top_5_max_task_args"]
    assert len(raw["top_5_max_task_durations"]) == 5
    assert "(task 3) Arg 0: 0.3" in report, report
