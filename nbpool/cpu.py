"""``cpu_count``: the CPUs this process may really use (affinity and cgroup quota).

The quota is the one of the process's own cgroup and of each of its ancestors (a quota on a
parent caps every child): ``/proc/self/cgroup`` names the cgroup, ``/proc/self/mountinfo``
where each hierarchy is mounted. cgroup v2 (``cpu.max``), v1 (``cpu.cfs_quota_us`` and
``cpu.cfs_period_us`` in the hierarchy that has the ``cpu`` controller) and the hybrid layout
(v1 controllers beside a v2 tree, usually at ``/sys/fs/cgroup/unified``) are read alike: every
quota found counts, the smallest wins. A file that is missing, unreadable or malformed sets no
limit.
"""

from __future__ import annotations

import math
import os
import re
from typing import NamedTuple

FS_ROOT = "/"  # where the files below are looked up; tests point it at a fake tree
CGROUP_ROOT = "/sys/fs/cgroup"  # the usual mount point, used when mountinfo names none
# where the v2 tree and v1's cpu hierarchy usually are, relative to CGROUP_ROOT
_USUAL_V2_MOUNTS = ("", "unified")
_USUAL_V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


class CgroupMount(NamedTuple):
    fstype: str  # "cgroup" (v1) or "cgroup2"
    root: str  # the cgroup of the hierarchy that appears at the mount point
    mount_point: str
    options: frozenset  # v1: the controllers of the hierarchy are among these


class Membership(NamedTuple):
    hierarchy: str  # "0" is cgroup v2
    controllers: frozenset  # v1: e.g. {"cpu", "cpuacct"}; v2: empty
    path: str  # the cgroup, relative to the hierarchy's root (or the cgroup namespace's)


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


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes a space in a path as ``\\040`` (and tab, newline, backslash alike)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup mounts of a ``/proc/<pid>/mountinfo``; lines that do not parse are skipped.

    A line: ``id parent major:minor root mount_point options [optional...] - fstype source
    super_options``.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            dash = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < dash + 2 or fields[dash + 1] not in ("cgroup", "cgroup2"):
            continue
        options = fields[dash + 3] if len(fields) > dash + 3 else ""
        mounts.append(CgroupMount(fields[dash + 1], _unescape(fields[3]), _unescape(fields[4]),
                                  frozenset(options.split(","))))
    return mounts


def parse_proc_cgroup(text: str) -> list[Membership]:
    """The lines of a ``/proc/<pid>/cgroup``: ``hierarchy:controllers:path``."""
    memberships = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[2].startswith("/"):
            controllers = frozenset(c for c in parts[1].split(",") if c)
            memberships.append(Membership(parts[0], controllers, parts[2]))
    return memberships


def _cgroup_dirs(mount: CgroupMount, path: str, fs_root: str) -> list[str]:
    """The directories of the cgroup ``path`` and of its ancestors, innermost first, as far up
    as ``mount`` shows them (its mount point last)."""
    mount_root = mount.root.rstrip("/")
    if path == mount_root or path.startswith(mount_root + "/"):
        relative = path[len(mount_root):]
    else:  # the mount shows another part of the tree: only its top can be read
        relative = ""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if ".." in parts:  # a cgroup outside this cgroup namespace: the mount does not show it
        parts = []
    top = os.path.join(fs_root, mount.mount_point.lstrip("/"))
    return [os.path.join(top, *parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_limit(directory: str) -> float | None:
    try:
        return parse_cpu_max(_read(os.path.join(directory, "cpu.max")))
    except (OSError, ValueError):
        return None


def _v1_limit(directory: str) -> float | None:
    try:
        return parse_cfs_quota(_read(os.path.join(directory, "cpu.cfs_quota_us")),
                               _read(os.path.join(directory, "cpu.cfs_period_us")))
    except (OSError, ValueError):
        return None


def cgroup_cpu_limit(root: str | None = None) -> float | None:
    """The smallest CPU quota of this process's cgroups and their ancestors, if any.

    ``root`` is the file system root the ``proc`` and cgroup files are read under (default
    ``FS_ROOT``, ``/``). Without a readable ``/proc/self/cgroup`` the process is taken to be
    in the root cgroup; without cgroup mounts in ``/proc/self/mountinfo``, the hierarchies are
    looked for where they usually are, under ``CGROUP_ROOT``.
    """
    root = FS_ROOT if root is None else root
    try:
        memberships = parse_proc_cgroup(_read(os.path.join(root, "proc/self/cgroup")))
    except (OSError, ValueError):
        memberships = []
    if not memberships:
        memberships = [Membership("0", frozenset(), "/"), Membership("", frozenset({"cpu"}), "/")]
    try:
        mounts = parse_mountinfo(_read(os.path.join(root, "proc/self/mountinfo")))
    except (OSError, ValueError):
        mounts = []
    if not mounts:
        mounts = [CgroupMount("cgroup2", "/", os.path.join(CGROUP_ROOT, name).rstrip("/"),
                              frozenset()) for name in _USUAL_V2_MOUNTS]
        mounts += [CgroupMount("cgroup", "/", os.path.join(CGROUP_ROOT, name),
                               frozenset({"cpu"})) for name in _USUAL_V1_CPU_MOUNTS]

    limits = []
    for member in memberships:
        if member.hierarchy == "0" and not member.controllers:
            candidates, read = [m for m in mounts if m.fstype == "cgroup2"], _v2_limit
        elif "cpu" in member.controllers:
            candidates, read = [m for m in mounts if m.fstype == "cgroup"
                                and "cpu" in m.options], _v1_limit
        else:
            continue
        for mount in candidates:
            for directory in _cgroup_dirs(mount, member.path, root):
                limit = read(directory)
                if limit is not None:
                    limits.append(limit)
    return min(limits, default=None)


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
