"""``websurf status``: what the queue and its workers are doing, for the person on call.

Every number comes from an index, so the command stays fast on a table with millions of
finished rows: pending tasks through the partial pending index, running tasks through
the registered workers' claims (``task_queue_worker_idx``), finished tasks by finish
time through ``task_queue_finished_idx`` (only a recent window of them is counted; the
table's total is the planner's estimate, not a count).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import click
import psycopg

from websurf.cli.options import (
    common_options,
    database_errors,
    direct_url_option,
    echo,
    option,
    runtime,
)
from websurf.cli.schedules import last_run
from websurf.sql import QUERIES
from websurf.sql.database import connect, resolve_paths
from websurf.worker.core.schedules import list_schedules
from websurf.worker.daemon.metrics import last_run_succeeded

FINISHED_WINDOW_S = 3600.0  # finished and failed tasks are counted over this window
THROUGHPUT_WINDOWS_S = {"1m": 60.0, "5m": 300.0, "15m": 900.0}


@dataclass
class TypeCounts:
    due: int = 0
    scheduled: int = 0  # pending with scheduled_for in the future
    processing: int = 0
    completed: int = 0  # within the window
    failed: int = 0  # within the window
    cancelled: int = 0  # within the window
    oldest_due_age_s: float | None = None


@dataclass
class Status:
    at: datetime
    window_s: float
    estimated_rows: int
    types: dict[str, TypeCounts]
    oldest_due_age_s: float | None
    throughput_per_s: dict[str, float]
    failures: list[dict[str, Any]]
    workers: list[dict[str, Any]]
    totals: dict[str, int] = field(default_factory=dict)
    connections: dict[str, str] = field(default_factory=dict)  # kind -> where it goes
    schedules: list[dict[str, Any]] = field(default_factory=list)
    # Pending tasks per type that no live worker handles: they wait forever unless a
    # worker with that operator starts (a typo in a column's operator_type, say).
    unhandled: dict[str, int] = field(default_factory=dict)


def gather(conn: psycopg.Connection[Any], *, window_s: float = FINISHED_WINDOW_S) -> Status:
    """Read the queue's state (a handful of index-driven queries in one snapshot)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(QUERIES["estimate_task_rows"]).fetchone()
        assert row is not None
        estimated_rows, now = row
        types: dict[str, TypeCounts] = {}

        def counts(task_type: str) -> TypeCounts:
            return types.setdefault(task_type, TypeCounts())

        for task_type, due, scheduled, oldest_due_at in conn.execute(
            QUERIES["count_pending_by_type"]
        ):
            c = counts(task_type)
            c.due, c.scheduled = due, scheduled
            if oldest_due_at is not None:
                c.oldest_due_age_s = max(0.0, (now - oldest_due_at).total_seconds())
        for task_type, processing, _oldest in conn.execute(QUERIES["count_processing_by_type"]):
            counts(task_type).processing = processing
        for task_type, status, tasks in conn.execute(
            QUERIES["count_finished_by_type"], {"window_s": window_s}
        ):
            setattr(counts(task_type), status, tasks)
        row = conn.execute(QUERIES["completed_throughput"]).fetchone()
        assert row is not None
        throughput = {
            name: round(n / seconds, 2)
            for (name, seconds), n in zip(THROUGHPUT_WINDOWS_S.items(), row, strict=True)
        }
        failures = [
            {
                "task_type": task_type,
                "failed": failed,
                "last_failed_at": last_failed_at,
                "last_error": last_error,
            }
            for task_type, failed, last_failed_at, last_error in conn.execute(
                QUERIES["recent_failures_by_type"], {"window_s": window_s}
            )
        ]
        workers = [
            {
                "id": worker_id,
                "hostname": hostname,
                "pid": pid,
                "task_types": task_types,
                "started_at": started_at,
                "last_heartbeat_at": last_heartbeat_at,
                "heartbeat_age_s": round((now - last_heartbeat_at).total_seconds(), 1),
                "stale": stale,
            }
            for worker_id, hostname, pid, task_types, started_at, last_heartbeat_at, stale in (
                conn.execute(QUERIES["list_workers"])
            )
        ]
        scheduled = [_schedule(row) for row in list_schedules(conn)]
    handled = {t for w in workers if not w["stale"] for t in w["task_types"]}
    unhandled = {
        name: c.due + c.scheduled
        for name, c in sorted(types.items())
        if c.due + c.scheduled and name not in handled
    }
    ages = [c.oldest_due_age_s for c in types.values() if c.oldest_due_age_s is not None]
    totals = {
        key: sum(getattr(c, key) for c in types.values())
        for key in ("due", "scheduled", "processing", "completed", "failed", "cancelled")
    }
    return Status(
        at=now,
        window_s=window_s,
        estimated_rows=estimated_rows,
        types=dict(sorted(types.items())),
        oldest_due_age_s=max(ages) if ages else None,
        throughput_per_s=throughput,
        failures=failures,
        workers=workers,
        totals=totals,
        schedules=scheduled,
        unhandled=unhandled,
    )


def _schedule(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "source": row["source"],
        "task_type": row["task_type"],
        "cron": row["cron"],
        "every_s": row["every"].total_seconds() if row["every"] is not None else None,
        "time_zone": row["time_zone"],
        "paused": row["paused"],
        "next_run_at": row["next_run_at"],
        "last_run_at": row["last_run_at"],
        "last_run": last_run(row),
        "last_run_ok": last_run_succeeded(row),
    }


def as_json(status: Status) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(type(value).__name__)

    return json.dumps(asdict(status), default=default)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def render(status: Status) -> str:
    window = _age(status.window_s).replace(".0", "")
    lines = [
        f"websurf status at {status.at:%Y-%m-%d %H:%M:%S%z}"
        f"  (about {status.estimated_rows} rows in the queue table)",
        "",
        f"oldest due pending task waits: {_age(status.oldest_due_age_s)}",
        "throughput (completed/s): "
        + "  ".join(f"{k} {v:g}" for k, v in status.throughput_per_s.items()),
        "",
        f"{'task type':24} {'due':>8} {'later':>8} {'running':>8}"
        f" {'done/' + window:>9} {'failed/' + window:>10} {'cancel/' + window:>10}"
        f" {'oldest due':>11}",
    ]
    for name, c in status.types.items():
        lines.append(
            f"{name[:24]:24} {c.due:>8} {c.scheduled:>8} {c.processing:>8}"
            f" {c.completed:>9} {c.failed:>10} {c.cancelled:>10} {_age(c.oldest_due_age_s):>11}"
        )
    if not status.types:
        lines.append("(no tasks pending, running or finished recently)")
    lines += ["", f"failures in the last {window}:"]
    for f in status.failures:
        error = (f["last_error"] or "-").splitlines()[0][:100] if f["last_error"] else "-"
        lines.append(
            f"  {f['task_type']:24} {f['failed']:>6}  last {f['last_failed_at']:%H:%M:%S}  {error}"
        )
    if not status.failures:
        lines.append("  none")
    if status.unhandled:
        lines += ["", "pending tasks that no live worker handles (they wait until one does):"]
        lines += [f"  {name:24} {n:>6}" for name, n in status.unhandled.items()]
        lines.append(
            "  check the robot column's operator_type, or start a worker with that operator"
            " (--operators)"
        )
    if status.connections:
        lines += ["", "connections:"]
        lines += [
            f"  {kind.replace('_', ' '):22} {where}" for kind, where in status.connections.items()
        ]
    lines += ["", f"schedules: {len(status.schedules)}"]
    for s in status.schedules:
        when = f"cron {s['cron']!r}" if s["cron"] else f"every {s['every_s']:g}s"
        state = "PAUSED " if s["paused"] else ""
        last = f"{s['last_run_at']:%H:%M:%S}" if s["last_run_at"] else "-"
        lines.append(
            f"  {s['name'][:40]:40} {state}{when}  next {s['next_run_at']:%Y-%m-%d %H:%M:%S%z}"
            f"  last {last} ({s['last_run']})"
        )
    live = [w for w in status.workers if not w["stale"]]
    lines += ["", f"workers: {len(live)} live, {len(status.workers) - len(live)} stale"]
    for w in status.workers:
        state = "STALE" if w["stale"] else "live"
        age = _age(w["heartbeat_age_s"])
        lines.append(f"  {w['id']:40} pid {w['pid']:<7} {state:5}  heartbeat {age} ago")
    return "\n".join(lines)


@click.command("status")
@common_options
@direct_url_option
@option("--json", "json_output", is_flag=True, default=False, help="Print one JSON object.")
@option(
    "--window",
    type=click.FloatRange(1, 7 * 86400),
    default=FINISHED_WINDOW_S,
    help="Seconds over which finished and failed tasks are counted.",
)
@click.pass_context
def status_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    direct_database_url: str | None,
    json_output: bool,
    window: float,
) -> None:
    """Tasks by state and type, oldest wait, throughput, failures, live workers, and which
    path each kind of connection takes."""
    rt = runtime(ctx, database_url, log_level, log_format, direct_database_url)
    direct = rt.direct_database()
    url = rt.database().url
    with database_errors(), connect(url, autocommit=True) as conn:
        status = gather(conn, window_s=window)
        status.connections = resolve_paths(conn, url, direct.url if direct else None).routes()
    echo(as_json(status) if json_output else render(status))
