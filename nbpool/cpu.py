"""``cpu_count``: the CPUs this process may really use (affinity and cgroup quota)."""

from __future__ import annotations

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def parse_cpu_max(text: str) -> float | None:
    """The CPUs a cgroup v2 ``cpu.max`` allows (``"<quota> <period>"``, quota ``max``: none)."""
    fields = text.split()
    if len(fields) < 2 or fields[0] == "max":
        return None
    quota, period = int(fields[0]), int(fields[1])
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """The CPUs cgroup v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` allow (-1: none)."""
    quota_us, period_us = int(quota_text), int(period_text)
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def cgroup_cpu_limit(root: str | None = None) -> float | None:
    """CPU quota of the container (cgroup v2 ``cpu.max`` or v1 cfs files under ``root``,
    default ``CGROUP_ROOT``), if any. A missing or unreadable file means no limit."""
    root = CGROUP_ROOT if root is None else root
    try:
        return parse_cpu_max(_read(os.path.join(root, "cpu.max")))
    except (OSError, ValueError):
        pass
    try:
        return parse_cfs_quota(_read(os.path.join(root, "cpu", "cpu.cfs_quota_us")),
                               _read(os.path.join(root, "cpu", "cpu.cfs_period_us")))
    except (OSError, ValueError):
        return None


def cpu_count() -> int:
    """Number of CPUs available to this process, at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)
