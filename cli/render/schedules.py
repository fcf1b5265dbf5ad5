"""What ``websurf schedules list`` prints: a line per schedule, or JSON."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from websurf.cli.render import timestamp, to_json
from websurf.worker.core.snapshot import last_run_summary


def _when(row: dict[str, Any]) -> str:
    if row["cron"] is not None:
        return f"cron {row['cron']!r} {row['time_zone']}"
    every: timedelta = row["every"]
    return f"every {interval_text(every)}"


def interval_text(every: timedelta) -> str:
    """An interval in its largest whole unit: 15m, 2h, 1d (else seconds: 90s, 0.5s)."""
    total = every.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size and total % size == 0:
            return f"{int(total // size)}{unit}"
    return f"{total:g}s"


def schedule_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Each schedule: when it runs, its next and last tick, how the last run went."""
    if not rows:
        return ["no schedules"]
    lines = []
    for row in rows:
        title = row["name"]
        if row["column_id"] is not None:
            title = f"{row['name']} (column {row['column_title']!r})"
        state = "PAUSED" if row["paused"] else "active"
        lines.append(
            f"{title}  [{row['source']}, {state}]  {_when(row)} -> {row['task_type']}"
            f"  next {timestamp(row['next_run_at'])}  last {timestamp(row['last_run_at'])}"
            f" ({last_run_summary(row)})"
        )
    return lines


def schedules_json(rows: list[dict[str, Any]]) -> str:
    return to_json(rows)
