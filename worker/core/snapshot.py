"""The queue's status snapshot: what ``websurf status`` shows the person on call.

Every number comes from an index, so the snapshot stays fast on a table with millions
of finished rows: pending tasks through the partial pending indexes (per type, and per
fairness key for the keys with the largest backlogs), running tasks through
the registered workers' claims (``task_queue_claimed_idx``), finished tasks by finish
time through ``task_queue_finished_idx`` (only a recent window of them is counted; the
table's total is the planner's estimate, not a count). All of it is read in one
repeatable-read transaction, so the numbers agree with each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from websurf.sql import QUERIES
from websurf.worker.core import workers
from websurf.worker.core.limits import LimitState, limit_states
from websurf.worker.core.model import Status
from websurf.worker.core.schedules import last_run_succeeded, list_schedules

FINISHED_WINDOW_S = 3600.0  # finished and failed tasks are counted over this window
TOP_KEYS = 10  # the fairness keys with the most pending tasks that the snapshot names
THROUGHPUT_WINDOWS_S = {"1m": 60.0, "5m": 300.0, "15m": 900.0}
COUNTED = ("due", "scheduled", "processing", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class TypeCounts:
    """One task type's tasks by state (finished ones within the window)."""

    due: int = 0
    scheduled: int = 0  # pending with scheduled_for in the future
    processing: int = 0
    completed: int = 0  # within the window
    failed: int = 0  # within the window
    cancelled: int = 0  # within the window
    oldest_due_age_s: float | None = None


@dataclass(frozen=True)
class KeyBacklog:
    """One fairness key's pending tasks (README, "Fairness between tenants")."""

    key: str | None  # None: tasks with no key, which share one turn
    pending: int


@dataclass(frozen=True)
class Failures:
    """One task type's failures within the window, with the latest error."""

    task_type: str
    failed: int
    last_failed_at: datetime
    last_error: str | None


@dataclass(frozen=True)
class WorkerState:
    """A registered worker process and how long ago it last said it was alive."""

    id: str
    hostname: str
    pid: int
    task_types: list[str]
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_s: float
    stale: bool


@dataclass(frozen=True)
class ScheduleState:
    """A schedule: when it runs next, and how its last run went."""

    name: str
    source: str
    task_type: str
    cron: str | None
    every_s: float | None
    time_zone: str
    paused: bool
    next_run_at: datetime
    last_run_at: datetime | None
    last_run: str  # in a few words, see last_run_summary
    last_run_ok: bool | None  # None: running, or never ran


@dataclass(frozen=True)
class StatusSnapshot:
    """The queue at one moment (fields in the order ``websurf status --json`` shows them)."""

    at: datetime
    window_s: float
    estimated_rows: int
    types: dict[str, TypeCounts]
    oldest_due_age_s: float | None
    throughput_per_s: dict[str, float]
    failures: list[Failures]
    workers: list[WorkerState]
    totals: dict[str, int] = field(default_factory=dict)
    connections: dict[str, str] = field(default_factory=dict)  # kind -> where it goes
    schedules: list[ScheduleState] = field(default_factory=list)
    # Pending tasks per type that no live worker handles: they wait forever unless a
    # worker with that operator starts (a typo in a column's operator_type, say).
    unhandled: dict[str, int] = field(default_factory=dict)
    # Limits across the cluster, with what they hold and why tasks wait (core/limits.py).
    limits: list[LimitState] = field(default_factory=list)
    # The TOP_KEYS fairness keys with the most pending tasks, and how many keys have any.
    keys: list[KeyBacklog] = field(default_factory=list)
    keys_pending: int = 0


def status_snapshot(
    conn: psycopg.Connection[Any], *, window_s: float = FINISHED_WINDOW_S
) -> StatusSnapshot:
    """Read the queue's state (a handful of index-driven queries in one snapshot).

    ``connections`` is left empty: where each kind of connection goes depends on the
    URLs the caller holds (:func:`websurf.sql.database.resolve_paths`).
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute(QUERIES["estimate_task_rows"]).fetchone()
        assert row is not None
        estimated_rows, now = row
        counts: dict[str, dict[str, Any]] = {}
        for task_type, due, scheduled, oldest_due_at in conn.execute(
            QUERIES["count_pending_by_type"]
        ):
            counts.setdefault(task_type, {}).update(due=due, scheduled=scheduled)
            if oldest_due_at is not None:
                age = max(0.0, (now - oldest_due_at).total_seconds())
                counts[task_type]["oldest_due_age_s"] = age
        keys, keys_pending = pending_by_key(conn, TOP_KEYS)
        for task_type, processing, _oldest in conn.execute(QUERIES["count_processing_by_type"]):
            counts.setdefault(task_type, {})["processing"] = processing
        for task_type, status, tasks in conn.execute(
            QUERIES["count_finished_by_type"], {"window_s": window_s}
        ):
            counts.setdefault(task_type, {})[status] = tasks
        row = conn.execute(QUERIES["completed_throughput"]).fetchone()
        assert row is not None
        throughput = {
            name: round(n / seconds, 2)
            for (name, seconds), n in zip(THROUGHPUT_WINDOWS_S.items(), row, strict=True)
        }
        failures = [
            Failures(*row)
            for row in conn.execute(QUERIES["recent_failures_by_type"], {"window_s": window_s})
        ]
        roster = [
            WorkerState(
                w.id,
                w.hostname,
                w.pid,
                w.task_types,
                w.started_at,
                w.last_heartbeat_at,
                heartbeat_age_s=round((now - w.last_heartbeat_at).total_seconds(), 1),
                stale=w.stale,
            )
            for w in workers.list_workers(conn)
        ]
        schedules = [schedule_state(row) for row in list_schedules(conn)]
        limits = limit_states(conn)
    types = {name: TypeCounts(**counts[name]) for name in sorted(counts)}
    handled = {t for w in roster if not w.stale for t in w.task_types}
    unhandled = {
        name: c.due + c.scheduled
        for name, c in types.items()
        if c.due + c.scheduled and name not in handled
    }
    ages = [c.oldest_due_age_s for c in types.values() if c.oldest_due_age_s is not None]
    return StatusSnapshot(
        at=now,
        window_s=window_s,
        estimated_rows=estimated_rows,
        types=types,
        oldest_due_age_s=max(ages) if ages else None,
        throughput_per_s=throughput,
        failures=failures,
        workers=roster,
        totals={key: sum(getattr(c, key) for c in types.values()) for key in COUNTED},
        schedules=schedules,
        unhandled=unhandled,
        limits=limits,
        keys=keys,
        keys_pending=keys_pending,
    )


def pending_by_key(conn: psycopg.Connection[Any], limit: int) -> tuple[list[KeyBacklog], int]:
    """The ``limit`` fairness keys with the most pending tasks, and how many keys have any."""
    by_key = conn.execute(QUERIES["count_pending_by_key"], {"limit": limit}).fetchall()
    return [KeyBacklog(key, pending) for key, pending, _keys in by_key], (
        by_key[0][2] if by_key else 0
    )


def last_run_summary(row: Mapping[str, Any]) -> str:
    """How a schedule's last run went, in a few words (a list_schedules row)."""
    if row["column_id"] is not None:
        if row["refresh_after_row"] is not None:
            return (
                f"refreshing: {row['refresh_rows']} rows enqueued,"
                f" {row['refresh_in_flight'] or 0} in flight"
            )
        if row["refresh_done_at"] is None:
            return "never ran"
        failed = row["refresh_failed"]
        return f"refreshed {row['refresh_rows']} rows" + (f", {failed} failed" if failed else "")
    if row["last_task_id"] is None:
        return "never ran"
    status = row["last_task_status"] or "pruned"
    if status == Status.FAILED and row["last_task_error"]:
        return f"failed: {row['last_task_error'].splitlines()[0][:80]}"
    return str(status)


def schedule_state(row: Mapping[str, Any]) -> ScheduleState:
    """A list_schedules row as the status snapshot and the dashboard show it."""
    return ScheduleState(
        name=row["name"],
        source=row["source"],
        task_type=row["task_type"],
        cron=row["cron"],
        every_s=row["every"].total_seconds() if row["every"] is not None else None,
        time_zone=row["time_zone"],
        paused=row["paused"],
        next_run_at=row["next_run_at"],
        last_run_at=row["last_run_at"],
        last_run=last_run_summary(row),
        last_run_ok=last_run_succeeded(row),
    )
