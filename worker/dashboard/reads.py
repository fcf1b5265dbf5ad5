"""What each dashboard page shows, read from the database into plain values.

Every function takes an autocommit connection, runs named queries (sql/queries/
dashboard.sql, and the core's own readers) and returns frozen dataclasses or lists: the
caller gives the connection back before a template renders, so no transaction stays open
while a page renders. Each query reads an index of the queue, never the whole table
(tests/integration/test_dashboard_queries.py checks the plans).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from websurf.sql import QUERIES
from websurf.worker.core import admin
from websurf.worker.core.schedules import list_schedules
from websurf.worker.core.snapshot import ScheduleState, schedule_state, status_snapshot

HOUR_S = 3600.0
DAY_S = 86400.0
HOUR_BUCKET_S = 60.0  # the last hour, per minute
DAY_BUCKET_S = 900.0  # the last day, per quarter hour
FAILURE_WINDOW_S = 7 * DAY_S  # failures grouped on the failures page
TASK_WINDOW_S = DAY_S  # finished tasks the task search looks through, by default
STUCK_S = 900.0  # a task running longer than this needs a person
MANY_ATTEMPTS = 3  # a pending task that already ran this often needs a person
ATTENTION_LIMIT = 20
GROUP_LIMIT = 100
PAGE_LIMIT = 100
GROUP_ACTION_LIMIT = 10_000  # most tasks one group action touches


@dataclass(frozen=True)
class Series:
    """One line of a chart: a name and its value per bucket (buckets shared by the chart)."""

    name: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class Throughput:
    """Completed and failed tasks per bucket and operator over a window."""

    window_s: float
    bucket_s: float
    buckets: tuple[datetime, ...]
    completed: tuple[Series, ...]
    failed: tuple[Series, ...]


@dataclass(frozen=True)
class Latency:
    """Pickup latency (due to started) per bucket: mean and worst, in seconds."""

    buckets: tuple[datetime, ...]
    mean_s: Series
    max_s: Series


@dataclass(frozen=True)
class Depth:
    """Pending tasks of one operator and priority."""

    task_type: str
    priority: int
    due: int
    scheduled: int
    oldest_due_s: float | None


@dataclass(frozen=True)
class Worker:
    """A registered worker process and the tasks it is running."""

    id: str
    hostname: str
    pid: int
    task_types: list[str]
    started_at: datetime
    last_heartbeat_at: datetime
    heartbeat_age_s: float
    stale: bool
    in_flight: int


@dataclass(frozen=True)
class AttentionTask:
    """A task stuck running or retried many times."""

    id: uuid.UUID
    task_type: str
    status: str
    attempts: int
    max_attempts: int
    worker_id: str | None
    error_message: str | None
    running_s: float | None


@dataclass(frozen=True)
class Overview:
    """The overview page: charts, depth, workers and what needs a person."""

    at: datetime
    hour: Throughput
    day: Throughput
    latency: Latency
    depth: list[Depth]
    workers: list[Worker]
    attention: list[AttentionTask]
    unhandled: dict[str, int]
    failing_schedules: list[ScheduleState]


@dataclass(frozen=True)
class FailureGroup:
    """Failures of one operator with one normalised error."""

    fingerprint: str
    task_type: str
    error: str
    failed: int
    retrying: int
    first_seen: datetime
    last_seen: datetime
    example_error: str | None
    example_id: uuid.UUID


@dataclass(frozen=True)
class GroupTask:
    """One task of a failure group."""

    id: uuid.UUID
    task_type: str
    status: str
    updated_at: datetime
    error_message: str | None
    error: str
    attempts: int
    max_attempts: int
    worker_id: str | None


@dataclass(frozen=True)
class FoundTask:
    """One line of the tasks page."""

    id: uuid.UUID
    task_type: str
    status: str
    priority: int
    attempts: int
    max_attempts: int
    scheduled_for: datetime
    updated_at: datetime
    worker_id: str | None
    error_message: str | None
    spreadsheet_id: str | None


@dataclass(frozen=True)
class TaskFilter:
    """The tasks page's filters (None: not filtered)."""

    status: str = "failed"
    task_type: str | None = None
    spreadsheet_id: str | None = None
    error: str | None = None
    window_s: float = TASK_WINDOW_S


@dataclass(frozen=True)
class TaskPage:
    """One task with its attempts' audit rows and the cells it wrote."""

    task: admin.TaskDetail
    cells: list[dict[str, Any]]


def _rows(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> list[Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(QUERIES[name], params).fetchall()


def throughput(conn: psycopg.Connection[Any], window_s: float, bucket_s: float) -> Throughput:
    """Completed and failed per bucket and operator; buckets without a task read as 0."""
    rows = _rows(
        conn, "dashboard_finished_per_bucket", {"window_s": window_s, "bucket_s": bucket_s}
    )
    now = conn.execute(QUERIES["database_now"]).fetchone()[0]  # type: ignore[index]
    buckets = _buckets(now, window_s, bucket_s)
    index = {b: i for i, b in enumerate(buckets)}
    counts: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        slot = index.get(row["bucket"])
        if slot is None:
            continue
        line = counts.setdefault((row["status"], row["task_type"]), [0.0] * len(buckets))
        line[slot] = float(row["tasks"])

    def lines(status: str) -> tuple[Series, ...]:
        return tuple(
            Series(task_type, tuple(values))
            for (kind, task_type), values in sorted(counts.items())
            if kind == status
        )

    return Throughput(window_s, bucket_s, buckets, lines("completed"), lines("failed"))


def _buckets(now: datetime, window_s: float, bucket_s: float) -> tuple[datetime, ...]:
    """The bucket starts covering the window, as date_bin from the epoch makes them."""
    step = int(bucket_s)
    last = int(now.timestamp()) // step * step
    first = last - int(window_s) // step * step
    return tuple(datetime.fromtimestamp(t, tz=now.tzinfo) for t in range(first, last + step, step))


def latency(conn: psycopg.Connection[Any], window_s: float, bucket_s: float) -> Latency:
    """Pickup latency per bucket of finished tasks; empty buckets read as 0."""
    rows = _rows(conn, "dashboard_pickup_latency", {"window_s": window_s, "bucket_s": bucket_s})
    now = conn.execute(QUERIES["database_now"]).fetchone()[0]  # type: ignore[index]
    buckets = _buckets(now, window_s, bucket_s)
    found = {row["bucket"]: row for row in rows}
    mean = tuple(float(found[b]["mean_s"]) if b in found else 0.0 for b in buckets)
    worst = tuple(float(found[b]["max_s"]) if b in found else 0.0 for b in buckets)
    return Latency(buckets, Series("mean", mean), Series("worst", worst))


def overview(conn: psycopg.Connection[Any]) -> Overview:
    """Everything the overview page shows."""
    snapshot = status_snapshot(conn)
    return Overview(
        at=snapshot.at,
        hour=throughput(conn, HOUR_S, HOUR_BUCKET_S),
        day=throughput(conn, DAY_S, DAY_BUCKET_S),
        latency=latency(conn, HOUR_S, HOUR_BUCKET_S),
        depth=[Depth(**row) for row in _rows(conn, "dashboard_queue_depth", {})],
        workers=[Worker(**row) for row in _rows(conn, "dashboard_workers", {})],
        attention=[
            AttentionTask(**row)
            for row in _rows(
                conn,
                "dashboard_attention_tasks",
                {"stuck_s": STUCK_S, "many_attempts": MANY_ATTEMPTS, "limit": ATTENTION_LIMIT},
            )
        ],
        unhandled=snapshot.unhandled,
        failing_schedules=[s for s in snapshot.schedules if s.last_run_ok is False],
    )


def failure_groups(
    conn: psycopg.Connection[Any], window_s: float = FAILURE_WINDOW_S
) -> list[FailureGroup]:
    """Failures grouped by operator and normalised error, biggest group first."""
    params = {"window_s": window_s, "limit": GROUP_LIMIT}
    return [FailureGroup(**row) for row in _rows(conn, "dashboard_failure_groups", params)]


def failure_group_tasks(
    conn: psycopg.Connection[Any],
    fingerprint: str,
    *,
    window_s: float = FAILURE_WINDOW_S,
    limit: int = PAGE_LIMIT,
) -> list[GroupTask]:
    """The tasks of one failure group, newest first."""
    params = {"fingerprint": fingerprint, "window_s": window_s, "limit": limit}
    return [GroupTask(**row) for row in _rows(conn, "dashboard_failure_group_tasks", params)]


def find_tasks(conn: psycopg.Connection[Any], wanted: TaskFilter) -> list[FoundTask]:
    """The tasks page: tasks of one status matching the filters."""
    params = {
        "status": wanted.status,
        "task_type": wanted.task_type,
        "spreadsheet_id": wanted.spreadsheet_id,
        "error": wanted.error,
        "window_s": wanted.window_s,
        "limit": PAGE_LIMIT,
    }
    return [FoundTask(**row) for row in _rows(conn, "dashboard_find_tasks", params)]


def task_page(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> TaskPage:
    """One task, its attempts and its cells; admin.TaskNotFound if there is none."""
    task = admin.show_task(conn, task_id)
    return TaskPage(task, _rows(conn, "dashboard_task_cells", {"id": task_id}))


def schedules(conn: psycopg.Connection[Any]) -> list[ScheduleState]:
    """Every schedule and refreshing column: next tick, last result, paused or not."""
    return [schedule_state(row) for row in list_schedules(conn)]
