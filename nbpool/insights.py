"""Worker insights: where each worker's time went, and the slowest tasks.

Built from the engine's shared stats block (timings per worker) and the top tasks that
workers attach to chunk replies; computing them never costs the workers anything.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from .engine.stats import Field

PHASES = ("start_up", "init", "waiting", "working", "exit")
_PHASE_FIELDS = {
    "start_up": Field.START_UP_TIME,
    "init": Field.INIT_TIME,
    "waiting": Field.WAITING_TIME,
    "working": Field.WORKING_TIME,
    "exit": Field.EXIT_TIME,
}
TOP_N = 5
# mpire's words, for print_insights() before any map with insights
NO_INSIGHTS = "No profiling stats available. Try to run a function first with insights enabled."


def format_seconds(seconds: float) -> str:
    """``'0:00:01.142'``, or ``'0:00:00'`` for zero, as mpire's insights show durations."""
    text = str(datetime.timedelta(seconds=round(seconds, 3)))
    return text[:-3] if "." in text else text


@dataclass
class TopTasks:
    """The slowest tasks seen so far, merged from every worker's report.

    Keyed by (map number, task index): every map counts its tasks from 0, and with
    ``keep_alive`` the insights add up over several maps."""

    entries: dict = field(default_factory=dict)  # (map, task index) -> (seconds, args text)
    maps: int = 0

    def next_map(self) -> int:
        """The number under which a new map's tasks are kept."""
        self.maps += 1
        return self.maps

    def merge(self, reported: list, map_number: int = 0) -> None:
        # a worker reports its running top list with each chunk: the same task comes again
        for seconds, index, args_text in reported:
            self.entries[(map_number, index)] = (seconds, args_text)
        if len(self.entries) > 4 * TOP_N:
            self.entries = dict(self._ranked()[:TOP_N])

    def _ranked(self) -> list:
        return sorted(self.entries.items(), key=lambda kv: kv[1][0], reverse=True)

    def slowest(self) -> list:
        """The ``TOP_N`` slowest tasks as ``(task index, (seconds, args text))``."""
        return [(index, value) for (_, index), value in self._ranked()[:TOP_N]]


class Insights:
    """A snapshot of the insights; ``as_dict()`` has mpire's keys and formats."""

    def __init__(self, stats, top: TopTasks):
        self.n_completed_tasks = [int(v) for v in stats.column(Field.TASKS_DONE)]
        # workers started in each slot to replace one that retired (worker_lifespan) or died
        self.n_restarts = [int(v) for v in stats.column(Field.RESTARTS)]
        self.seconds = {phase: stats.column(col) for phase, col in _PHASE_FIELDS.items()}
        self.top_tasks = top.slowest()

    def raw(self) -> dict:
        """The same figures as numbers (seconds as floats), for computing with them."""
        total = sum(sum(values) for values in self.seconds.values())
        out: dict = {"n_completed_tasks": list(self.n_completed_tasks), "total_time": total,
                     "n_restarts": list(self.n_restarts)}
        for phase, values in self.seconds.items():
            out[f"{phase}_time"] = list(values)
            out[f"total_{phase}_time"] = sum(values)
            out[f"{phase}_ratio"] = sum(values) / total if total else 0.0
        out["top_5_max_task_durations"] = [seconds for _, (seconds, _) in self.top_tasks]
        out["top_5_max_task_args"] = [text for _, (_, text) in self.top_tasks]
        return out

    def as_dict(self) -> dict:
        """mpire's ``get_insights()`` dict: durations as strings, ratios as floats.

        Exactly mpire's keys; restarts are in ``raw()`` and in the report."""
        raw = self.raw()
        out: dict = {"n_completed_tasks": raw["n_completed_tasks"]}
        for phase in PHASES:
            out[f"total_{phase}_time"] = format_seconds(raw[f"total_{phase}_time"])
        out["total_time"] = format_seconds(raw["total_time"])
        for phase in PHASES:
            values = raw[f"{phase}_time"]
            mean = sum(values) / len(values) if values else 0.0
            std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5 if values else 0.0
            out[f"{phase}_time"] = [format_seconds(v) for v in values]
            out[f"{phase}_time_mean"] = format_seconds(mean)
            out[f"{phase}_time_std"] = format_seconds(std)
            out[f"{phase}_ratio"] = raw[f"{phase}_ratio"]
        out["top_5_max_task_durations"] = [
            format_seconds(s) for s in raw["top_5_max_task_durations"]]
        out["top_5_max_task_args"] = raw["top_5_max_task_args"]
        return out

    def _repr_html_(self) -> str:
        from .widgets.render import insights_html

        return insights_html(self.raw(), self.top_tasks)

    def __repr__(self) -> str:
        from .widgets.render import insights_text

        return f"<{insights_text(self.raw())}>"

    def report(self) -> str:
        """A readable text report."""
        raw = self.raw()
        lines = ["WorkerPool insights", "-------------------",
                 f"Total number of tasks completed: {sum(raw['n_completed_tasks'])}"]
        if sum(raw["n_restarts"]):
            lines.append(f"Worker restarts (retired or died): {sum(raw['n_restarts'])}")
        lines.append("")
        phases = " ".join(f"{p.replace('_', ' '):>12}" for p in PHASES)
        lines.append(f"{'Worker':>8} {'Tasks':>8} {'Restarts':>8} {phases}")
        for worker_id, count in enumerate(raw["n_completed_tasks"]):
            cells = " ".join(f"{format_seconds(raw[f'{p}_time'][worker_id]):>12}" for p in PHASES)
            restarts = raw["n_restarts"][worker_id]
            lines.append(f"{worker_id:>8} {count:>8} {restarts:>8} {cells}")
        lines.append("")
        lines.append("Total time: " + format_seconds(raw["total_time"]))
        for phase in PHASES:
            lines.append(
                f"  {phase.replace('_', ' ')} time: {format_seconds(raw[f'total_{phase}_time'])} "
                f"({raw[f'{phase}_ratio']:.1%})"
            )
        if raw["total_time"] and raw["working_ratio"] < 0.8:
            lines.append("Efficiency warning: working ratio is < 80%!")
        if self.top_tasks:
            lines += ["", "Top 5 longest tasks:"]
            for rank, (index, (seconds, text)) in enumerate(self.top_tasks, 1):
                arguments = " | ".join(text.splitlines())
                lines.append(f"  {rank}. {format_seconds(seconds)} (task {index}) {arguments}")
        return "\n".join(lines)
