"""HTML and text for the insights and workers views, from plain data (testable anywhere).

The HTML uses inline styles only, so it renders the same in JupyterLab, Notebook, VS Code and
in static HTML exported by nbconvert.
"""

from __future__ import annotations

import html

from ..insights import PHASES, format_seconds

PHASE_COLOURS = {
    "start_up": "#9e9e9e",
    "init": "#f0ad4e",
    "waiting": "#d9534f",
    "working": "#5cb85c",
    "exit": "#5bc0de",
}
_CELL = "padding:2px 8px;text-align:left;border-bottom:1px solid #ddd"


def _e(value) -> str:
    return html.escape(str(value))


def _table(headers: list[str], rows: list[list[str]], row_class: str = "") -> str:
    head = "".join(f"<th style='{_CELL}'>{_e(h)}</th>" for h in headers)
    body = []
    for cells in rows:
        attr = f" class='{row_class}'" if row_class else ""
        row = "".join(f"<td style='{_CELL}'>{c}</td>" for c in cells)
        body.append(f"<tr{attr}>{row}</tr>")
    return ("<table style='border-collapse:collapse;font-size:0.9em'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _stacked_bar(seconds: dict[str, float], longest: float, width_px: int = 320) -> str:
    """A bar whose length is the worker's total time and whose parts are its phases."""
    total = sum(seconds.values())
    length = width_px * (total / longest) if longest else 0
    parts = []
    for phase in PHASES:
        share = seconds[phase] / total if total else 0
        if share <= 0:
            continue
        title = f"{phase.replace('_', ' ')}: {format_seconds(seconds[phase])} ({share:.0%})"
        parts.append(f"<div title='{_e(title)}' style='display:inline-block;height:12px;"
                     f"width:{share * length:.1f}px;background:{PHASE_COLOURS[phase]}'></div>")
    return f"<div style='white-space:nowrap;line-height:0'>{''.join(parts)}</div>"


def insights_html(raw: dict, top_tasks: list) -> str:
    """Per worker a stacked bar of where its time went, the ratios, and the slowest tasks."""
    n_workers = len(raw["n_completed_tasks"])
    per_worker = [{p: raw[f"{p}_time"][w] for p in PHASES} for w in range(n_workers)]
    longest = max((sum(s.values()) for s in per_worker), default=0.0)
    legend = " ".join(
        f"<span style='display:inline-block;width:10px;height:10px;background:{PHASE_COLOURS[p]}'>"
        f"</span> {_e(p.replace('_', ' '))} {raw[f'{p}_ratio']:.1%}" for p in PHASES)
    rows = [[_e(w), _e(raw["n_completed_tasks"][w]), _e(raw["n_restarts"][w]),
             _stacked_bar(per_worker[w], longest),
             _e(format_seconds(per_worker[w]["working"])),
             _e(format_seconds(sum(per_worker[w].values())))]
            for w in range(n_workers)]
    restarts = sum(raw["n_restarts"])
    restarted = (f"{restarts} worker restart{'s' * (restarts != 1)} (retired or died), "
                 if restarts else "")
    parts = [
        f"<div><b>nbpool insights</b>: {sum(raw['n_completed_tasks'])} tasks completed, "
        f"{restarted}total time {_e(format_seconds(raw['total_time']))}</div>",
        f"<div style='margin:4px 0'>{legend}</div>",
        _table(["worker", "tasks", "restarts", "time split", "working", "total"], rows,
               "nbpool-insights-row"),
    ]
    if raw["total_time"] and raw["working_ratio"] < 0.8:
        parts.append("<div style='color:#d9534f'>Efficiency warning: working ratio is "
                     f"{raw['working_ratio']:.1%} (&lt; 80%)</div>")
    if top_tasks:
        top_rows = [[_e(rank), _e(index), _e(format_seconds(seconds)),
                     "<br>".join(_e(line) for line in text.splitlines())]
                    for rank, (index, (seconds, text)) in enumerate(top_tasks, 1)]
        parts += ["<div style='margin-top:6px'><b>Top 5 longest tasks</b></div>",
                  _table(["#", "task", "duration", "arguments"], top_rows)]
    return "".join(parts)


def insights_text(raw: dict) -> str:
    """A stable one-line text form (no timings)."""
    n_workers = len(raw["n_completed_tasks"])
    return f"nbpool insights: {n_workers} workers, {sum(raw['n_completed_tasks'])} tasks completed"


NO_INSIGHTS_TEXT = "nbpool insights: none yet (run a map with enable_insights=True)"


def insights_view_html(insights) -> str:
    """The live insights view: an ``Insights`` drawn, or what to do while there is none."""
    if insights is None:
        return ("<div><b>nbpool insights</b>: none yet. They appear here while a map runs "
                "with <code>enable_insights=True</code> (on the pool or the map).</div>")
    return insights_html(insights.raw(), insights.top_tasks)


def insights_view_text(insights) -> str:
    return NO_INSIGHTS_TEXT if insights is None else insights_text(insights.raw())


def format_bytes(count: int | None) -> str:
    if count is None:
        return ""
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _state_text(state: dict | None) -> str:
    if not state:
        return ""
    return ", ".join(f"{key}={value}" for key, value in state.items())


def workers_html(rows: list[dict]) -> str:
    """One table row per worker: what it does now, for how long, and what it holds."""
    cells = []
    for row in rows:
        running = format_seconds(row["running_for"]) if row["running_for"] is not None else ""
        cells.append([
            _e(row["worker_id"]), _e(row["pid"] or ""),
            f"<span class='nbpool-status-{_e(row['status'])}'>{_e(row['status'])}</span>",
            _e(row["task"] or ""), _e(running), _e(row["tasks_done"]), _e(row["restarts"]),
            _e(format_bytes(row["rss_bytes"])), _e(_state_text(row["state"])),
        ])
    return _table(["worker", "pid", "status", "task", "for", "tasks done", "restarts",
                   "memory", "worker_state"], cells, "nbpool-worker-row")


def workers_text(rows: list[dict]) -> str:
    """The workers as text lines (what a terminal shows, and the widget's text form): the
    same figures as the table."""
    lines = []
    for row in rows:
        line = f"Worker {row['worker_id']}: {row['status']}"
        if row["running_for"] is not None:
            line += f" for {format_seconds(row['running_for'])}"
        restarts = row["restarts"]
        line += f", {row['tasks_done']} tasks done, {restarts} restart{'s' * (restarts != 1)}"
        if row["pid"]:
            line += f", pid {row['pid']}"
        if row["rss_bytes"] is not None:
            line += f", {format_bytes(row['rss_bytes'])}"
        if row["task"]:
            line += f", running {row['task']}"
        if row["state"]:
            line += f", state {_state_text(row['state'])}"
        lines.append(line)
    return "\n".join(lines)
