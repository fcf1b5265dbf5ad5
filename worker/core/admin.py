"""The queue's admin operations on single tasks: list, show, retry, cancel, run now.

What ``websurf tasks`` does, callable from Python with a psycopg connection (autocommit:
each operation is one statement, or a read). Results are frozen dataclasses; a request
that cannot be done raises a :class:`TaskError` saying why.

Retry keeps the count: ``attempts`` goes on saying how many times the task really ran
(each attempt also has its audit row), and ``max_attempts`` is raised to ``attempts +
N`` (default 1), so a retried task gets exactly N more runs before it fails again. The
last error message stays until a new attempt replaces it. Cancel stops a pending task at
once and asks the worker running a running one to stop it (``websurf.cancel_task``,
sql/migrations/0027): it ends cancelled within about a second, without spending the
attempt.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import class_row, dict_row

from websurf.sql import QUERIES
from websurf.worker.core import story
from websurf.worker.core.model import Status
from websurf.worker.core.queue import MAX_ATTEMPTS_LIMIT
from websurf.worker.core.story import Attempt, Wait

LIST_LIMIT = 50
RETRY_ATTEMPTS = 1


class TaskError(Exception):
    """An admin operation on a task could not be done; the message says why."""


class InvalidRequest(TaskError, ValueError):
    """The request itself is wrong (not a task id, no attempts): nothing was looked up."""


class TaskNotFound(TaskError):
    """No task has this id (never had, or it was pruned)."""


class WrongState(TaskError):
    """The task exists but its state does not allow the operation."""


@dataclass(frozen=True)
class TaskSummary:
    """One line of ``websurf tasks list`` (fields in the order JSON shows them)."""

    id: uuid.UUID
    task_type: str
    status: Status
    priority: int
    attempts: int
    max_attempts: int
    scheduled_for: datetime
    created_at: datetime
    updated_at: datetime
    worker_id: str | None
    error_message: str | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))


@dataclass(frozen=True)
class AttemptRecord:
    """The audit row one attempt of a task wrote (cell, operator, outcome)."""

    id: uuid.UUID
    cell_id: uuid.UUID
    operator_type: str
    success: bool
    processing_time_ms: int | None
    error_message: str | None
    created_at: datetime


@dataclass(frozen=True)
class TaskDetail:
    """One task as ``websurf tasks show`` prints it: its attempts (worker, timing, error),
    their audit rows, and why it waits."""

    id: uuid.UUID
    task_type: str
    payload: dict[str, Any]
    status: Status
    priority: int
    attempts: int
    max_attempts: int
    scheduled_for: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    error_message: str | None
    worker_id: str | None
    created_at: datetime
    updated_at: datetime
    fairness_key: str | None = None
    limit_key: str | None = None
    cancel_requested_at: datetime | None = None  # its worker was asked to stop it
    robot_events: tuple[AttemptRecord, ...] = ()
    attempt_log: tuple[Attempt, ...] = ()  # every attempt, oldest first, the current last
    waiting: Wait | None = None  # why it has not started, while pending (or stopping)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))


@dataclass(frozen=True)
class Retried:
    """A task put back in the queue: how often it ran so far, and how often it may now."""

    id: uuid.UUID
    task_type: str
    attempts: int
    max_attempts: int


@dataclass(frozen=True)
class Cancelled:
    """A task that will not run (pending), or that its worker was asked to stop (running)."""

    id: uuid.UUID
    task_type: str
    how: str | None  # 'cancelled' | 'cancel_requested'; None: it had finished

    @property
    def running(self) -> bool:
        """Whether the task was running: its worker stops it, and records it cancelled."""
        return self.how == "cancel_requested"


def parse_task_id(text: str) -> uuid.UUID:
    """A task id as a UUID, or InvalidRequest naming what is wrong."""
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise InvalidRequest(f"{text!r} is not a task id (task ids are UUIDs)") from None


def list_tasks(
    conn: psycopg.Connection[Any],
    *,
    status: Status | None = None,
    task_type: str | None = None,
    limit: int = LIST_LIMIT,
) -> list[TaskSummary]:
    """The newest tasks, newest first, filtered by status and/or type.

    Running tasks are found through the registered workers (a dead worker's tasks show
    again once the reaper hands them back).
    """
    with conn.cursor(row_factory=class_row(TaskSummary)) as cur:
        return cur.execute(
            QUERIES["list_tasks"], {"status": status, "task_type": task_type, "limit": limit}
        ).fetchall()


def show_task(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> TaskDetail:
    """One task with its attempts and their audit rows, oldest first, and why it waits;
    TaskNotFound if none."""
    task = _get_task(conn, task_id)
    with conn.cursor(row_factory=class_row(AttemptRecord)) as cur:
        events = cur.execute(QUERIES["list_task_robot_events"], {"id": task_id}).fetchall()
    return replace(
        task,
        robot_events=tuple(events),
        attempt_log=tuple(story.attempts(conn, task)),
        waiting=story.why_waiting(conn, task),
    )


def retry_task(
    conn: psycopg.Connection[Any], task_id: uuid.UUID, *, attempts: int = RETRY_ATTEMPTS
) -> Retried:
    """Put a failed or cancelled task back in the queue, due now, with ``attempts`` more runs.

    The workers are woken on ``new_task``. WrongState for any other task.
    """
    if attempts < 1:
        raise InvalidRequest("a retry needs at least 1 more attempt")
    if attempts > MAX_ATTEMPTS_LIMIT:
        raise InvalidRequest(f"a task may have at most {MAX_ATTEMPTS_LIMIT} attempts in all")
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(
                QUERIES["retry_task"], {"id": task_id, "more_attempts": attempts}
            ).fetchone()
    except psycopg.errors.CheckViolation:  # 0023: attempts so far plus these, at most 1000
        raise InvalidRequest(
            f"a task may have at most {MAX_ATTEMPTS_LIMIT} attempts in all:"
            " retry it with fewer more attempts"
        ) from None
    if row is None:
        raise WrongState(
            f"task {task_id} is {_get_task(conn, task_id).status}:"
            " only a failed or cancelled task can be retried"
        )
    return Retried(row["id"], row["task_type"], row["attempts"], row["max_attempts"])


def cancel_task(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> Cancelled:
    """Cancel a pending task, or ask for a running one to be stopped; WrongState when finished."""
    with conn.cursor(row_factory=class_row(Cancelled)) as cur:
        cancelled = cur.execute(QUERIES["cancel_task"], {"id": task_id}).fetchone()
    if cancelled is None:
        raise TaskNotFound(f"no task with id {task_id}")
    if cancelled.how is None:
        raise WrongState(
            f"task {task_id} is {_get_task(conn, task_id).status}:"
            " only a pending or running task can be cancelled"
        )
    return cancelled


def run_task_now(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> None:
    """Make a pending task due now (its retry backoff or schedule skipped); WrongState otherwise."""
    if conn.execute(QUERIES["run_task_now"], {"id": task_id}).fetchone() is None:
        raise WrongState(
            f"task {task_id} is {_get_task(conn, task_id).status}:"
            " only a pending task can be run now"
        )


def _get_task(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> TaskDetail:
    with conn.cursor(row_factory=class_row(TaskDetail)) as cur:
        task = cur.execute(QUERIES["get_task"], {"id": task_id}).fetchone()
    if task is None:
        raise TaskNotFound(f"no task with id {task_id}")
    return task
