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
from websurf.worker.core.limits import LimitState, limit_states
from websurf.worker.core.schedules import list_schedules
from websurf.worker.core.snapshot import KeyBacklog, ScheduleState, pending_by_key, schedule_state
from websurf.worker.dashboard.history import (
    ClosedBuckets,
    Throughput,
    database_now,
    throughput,
)

HOUR_S = 3600.0
DAY_S = 86400.0
HOUR_BUCKET_S = 60.0  # the last hour, per minute
DAY_BUCKET_S = 900.0  # the last day, per quarter hour
FAILURE_WINDOW_S = DAY_S  # failures grouped on the failures page
TASK_WINDOW_S = DAY_S  # finished tasks the task search looks through
SAMPLE = 20_000  # most rows of one status a search or the grouping of failures reads
STUCK_S = 900.0  # a task running longer than this needs a person
MANY_ATTEMPTS = 3  # a pending task that already ran this often needs a person
ATTENTION_LIMIT = 20
GROUP_LIMIT = 100
PAGE_LIMIT = 100
GROUP_ACTION_LIMIT = 10_000  # most tasks one group action touches
TOP_KEYS = 25  # the fairness keys with the most pending tasks the tenants page names


@dataclass(frozen=True)
class Depth:
    """Pending tasks of one operator and priority."""

    task_type: str
    priority: int
    due: int
    scheduled: int
    retried: int  # already ran MANY_ATTEMPTS times or more
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
class StuckTask:
    """A task running for longer than STUCK_S."""

    id: uuid.UUID
    task_type: str
    attempts: int
    max_attempts: int
    worker_id: str | None
    running_s: float


@dataclass(frozen=True)
class Overview:
    """The overview page: charts, depth, workers and what needs a person."""

    at: datetime
    hour: Throughput
    day: Throughput
    depth: list[Depth]
    workers: list[Worker]
    stuck: list[StuckTask]
    retried: dict[str, int]  # pending tasks per type that already ran MANY_ATTEMPTS times
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
class GroupTotals:
    """One failure group's counts (over the whole group, not only the tasks shown)."""

    task_type: str
    fingerprint: str
    error: str
    failed: int
    retrying: int
    first_seen: datetime
    last_seen: datetime


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
    fairness_key: str | None


@dataclass(frozen=True)
class TaskFilter:
    """The tasks page's filters (None: not filtered)."""

    status: str = "failed"
    task_type: str | None = None
    spreadsheet_id: str | None = None
    fairness_key: str | None = None
    error: str | None = None
    window_s: float = TASK_WINDOW_S


@dataclass(frozen=True)
class TaskPage:
    """One task with its attempts' audit rows, the cells it wrote, and its keys."""

    task: admin.TaskDetail
    cells: list[dict[str, Any]]
    fairness_key: str | None = None
    limit_key: str | None = None
    cancel_requested_at: datetime | None = None  # its worker was asked to stop it

    @property
    def stopping(self) -> bool:
        """Whether the task runs on while its worker stops it (a cancel was asked)."""
        return self.task.status == "processing" and self.cancel_requested_at is not None


@dataclass(frozen=True)
class Tenants:
    """The tenants and limits page: backlog per fairness key, what each limit holds."""

    keys: list[KeyBacklog]
    keys_pending: int  # how many fairness keys have pending tasks
    limits: list[LimitState]

    @property
    def paused(self) -> list[LimitState]:
        """The limits paused now (a handler asked to slow down, or a person paused them)."""
        return [limit for limit in self.limits if limit.paused_until is not None]


def _rows(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> list[Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(QUERIES[name], params).fetchall()


def overview(conn: psycopg.Connection[Any], closed: ClosedBuckets | None = None) -> Overview:
    """Everything the overview page shows."""
    depth = [
        Depth(**row)
        for row in _rows(conn, "dashboard_queue_depth", {"many_attempts": MANY_ATTEMPTS})
    ]
    roster = [Worker(**row) for row in _rows(conn, "dashboard_workers", {})]
    handled = {t for w in roster if not w.stale for t in w.task_types}
    unhandled: dict[str, int] = {}
    retried: dict[str, int] = {}
    for row in depth:
        if row.task_type not in handled:
            unhandled[row.task_type] = unhandled.get(row.task_type, 0) + row.due + row.scheduled
        if row.retried:
            retried[row.task_type] = retried.get(row.task_type, 0) + row.retried
    stuck_params = {"stuck_s": STUCK_S, "limit": ATTENTION_LIMIT}
    return Overview(
        at=database_now(conn),
        hour=throughput(conn, HOUR_S, HOUR_BUCKET_S, closed),
        day=throughput(conn, DAY_S, DAY_BUCKET_S, closed),
        depth=depth,
        workers=roster,
        stuck=[StuckTask(**row) for row in _rows(conn, "dashboard_stuck_tasks", stuck_params)],
        retried=retried,
        unhandled=unhandled,
        failing_schedules=[s for s in schedules(conn) if s.last_run_ok is False],
    )


def failure_groups(
    conn: psycopg.Connection[Any], window_s: float = FAILURE_WINDOW_S
) -> list[FailureGroup]:
    """Failures grouped by operator and normalised error, biggest group first."""
    params = {"window_s": window_s, "limit": GROUP_LIMIT, "sample": SAMPLE}
    return [FailureGroup(**row) for row in _rows(conn, "dashboard_failure_groups", params)]


def failure_group(
    conn: psycopg.Connection[Any],
    task_type: str,
    fingerprint: str,
    *,
    window_s: float = FAILURE_WINDOW_S,
    limit: int = PAGE_LIMIT,
) -> tuple[GroupTotals | None, list[GroupTask]]:
    """One failure group's totals (None: no task left in it) and its newest tasks."""
    params = {
        "task_type": task_type,
        "fingerprint": fingerprint,
        "window_s": window_s,
        "limit": limit,
        "sample": SAMPLE,
    }
    rows = _rows(conn, "dashboard_failure_group_tasks", params)
    if not rows:
        return None, []
    first = rows[0]
    totals = GroupTotals(
        task_type,
        fingerprint,
        first["error"],
        first["group_failed"],
        first["group_retrying"],
        first["first_seen"],
        first["last_seen"],
    )
    fields = set(GroupTask.__dataclass_fields__)
    return totals, [GroupTask(**{k: v for k, v in row.items() if k in fields}) for row in rows]


def find_tasks(conn: psycopg.Connection[Any], wanted: TaskFilter) -> list[FoundTask]:
    """The tasks page: tasks of one status matching the filters."""
    params = {
        "status": wanted.status,
        "task_type": wanted.task_type,
        "spreadsheet_id": wanted.spreadsheet_id,
        "fairness_key": wanted.fairness_key,
        "error": wanted.error,
        "window_s": wanted.window_s,
        "limit": PAGE_LIMIT,
        "sample": SAMPLE,
    }
    return [FoundTask(**row) for row in _rows(conn, "dashboard_find_tasks", params)]


def task_page(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> TaskPage:
    """One task, its attempts, its cells and its keys; admin.TaskNotFound if there is none."""
    task = admin.show_task(conn, task_id)
    cells = _rows(conn, "dashboard_task_cells", {"id": task_id})
    keys = _rows(conn, "dashboard_task_keys", {"id": task_id})
    return TaskPage(task, cells, **(keys[0] if keys else {}))


def tenants(conn: psycopg.Connection[Any]) -> Tenants:
    """The fairness keys with the largest backlogs, and every limit with what it holds."""
    keys, keys_pending = pending_by_key(conn, TOP_KEYS)
    return Tenants(keys, keys_pending, limit_states(conn))


def schedules(conn: psycopg.Connection[Any]) -> list[ScheduleState]:
    """Every schedule and refreshing column: next tick, last result, paused or not."""
    return [schedule_state(row) for row in list_schedules(conn)]
