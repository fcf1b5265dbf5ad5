"""The queue's admin operations from Python, against a real database.

Tasks go in with the queue API and through a worker's claim and finish, as they would in
production; then list, show, retry, cancel and the status snapshot are asked what a
person on call would ask: which tasks failed and why, can this one run again, is the
queue moving.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from websurf.sql import QUERIES
from websurf.worker.core import admin
from websurf.worker.core.admin import InvalidRequest, TaskNotFound, WrongState
from websurf.worker.core.model import Status
from websurf.worker.core.queue import Outcome, claim, enqueue, finish, record_robot_events
from websurf.worker.core.snapshot import status_snapshot

WORKER = "test-host/0/admin"


def register_worker(conn: psycopg.Connection[Any], task_types: list[str]) -> None:
    conn.execute(
        QUERIES["register_worker"],
        {
            "id": WORKER,
            "hostname": "test-host",
            "pid": 4242,
            "task_types": task_types,
            "stale_after_s": 60.0,
        },
    )


def run_once(
    conn: psycopg.Connection[Any], task_type: str, status: Status, error: str | None = None
) -> uuid.UUID:
    """Claim the one due task of task_type and finish it as the worker would."""
    [task] = claim(conn, WORKER, [task_type], 1)
    outcome = Outcome(task, status, task_type, error=error, duration_ms=12)
    with conn.transaction():
        assert finish(conn, WORKER, [outcome]) == {task.id}
        record_robot_events(conn, [outcome])
    return task.id


@pytest.fixture
def queue(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """One task of each state: completed, failed (after one attempt), running, pending."""
    register_worker(conn, ["fetch", "noop"])
    enqueue(conn, "noop", {"n": 1}, allow_unknown_type=True)
    run_once(conn, "noop", Status.COMPLETED)
    enqueue(conn, "fetch", {"url": "slow"}, max_attempts=1, allow_unknown_type=True)
    run_once(conn, "fetch", Status.FAILED, "TimeoutError: slow site")
    enqueue(conn, "noop", {"n": 2}, allow_unknown_type=True)
    claim(conn, WORKER, ["noop"], 1)
    enqueue(conn, "noop", {"n": 3}, allow_unknown_type=True)
    return conn


def ids_of(tasks: list[admin.TaskSummary]) -> list[uuid.UUID]:
    return [t.id for t in tasks]


def test_list_shows_the_newest_first_filtered_by_state_and_type(
    queue: psycopg.Connection[Any],
) -> None:
    everything = admin.list_tasks(queue)
    failed = admin.list_tasks(queue, status=Status.FAILED)
    running_noop = admin.list_tasks(queue, status=Status.PROCESSING, task_type="noop")

    assert [(t.task_type, t.status) for t in everything] == [
        ("noop", Status.PENDING),
        ("noop", Status.PROCESSING),
        ("fetch", Status.FAILED),
        ("noop", Status.COMPLETED),
    ]
    assert [(t.task_type, t.error_message, t.attempts) for t in failed] == [
        ("fetch", "TimeoutError: slow site", 1)
    ]
    assert [t.worker_id for t in running_noop] == [WORKER]
    assert ids_of(admin.list_tasks(queue, limit=2)) == ids_of(everything)[:2]
    assert admin.list_tasks(queue, status=Status.CANCELLED) == []


def test_show_gives_the_task_and_the_audit_row_of_each_attempt(
    conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    register_worker(conn, ["fetch"])
    cell = make_cell()
    enqueue(conn, "fetch", {"cell_id": cell}, max_attempts=1, allow_unknown_type=True)
    task_id = run_once(conn, "fetch", Status.FAILED, "TimeoutError: slow site")

    task = admin.show_task(conn, task_id)

    assert (task.status, task.attempts, task.max_attempts) == (Status.FAILED, 1, 1)
    assert task.payload == {"cell_id": cell} and task.failed_at is not None
    assert [(str(e.cell_id), e.success, e.error_message) for e in task.robot_events] == [
        (cell, False, "TimeoutError: slow site")
    ]


def test_retry_puts_a_failed_task_back_with_more_attempts(
    queue: psycopg.Connection[Any],
) -> None:
    [failed] = admin.list_tasks(queue, status=Status.FAILED)

    retried = admin.retry_task(queue, failed.id, attempts=2)

    assert (retried.id, retried.attempts, retried.max_attempts) == (failed.id, 1, 3)
    again = admin.show_task(queue, failed.id)
    assert (again.status, again.failed_at, again.worker_id) == (Status.PENDING, None, None)
    assert again.error_message == "TimeoutError: slow site"  # until a new attempt replaces it
    assert [t.id for t in claim(queue, WORKER, ["fetch"], 10)] == [failed.id]


def test_cancel_keeps_a_pending_task_from_running(queue: psycopg.Connection[Any]) -> None:
    [pending] = admin.list_tasks(queue, status=Status.PENDING)

    cancelled = admin.cancel_task(queue, pending.id)

    assert (cancelled.id, cancelled.task_type) == (pending.id, "noop")
    assert admin.show_task(queue, pending.id).status == Status.CANCELLED
    assert claim(queue, WORKER, ["noop"], 10) == []
    assert admin.retry_task(queue, pending.id).max_attempts == 1  # a cancelled one can come back


def test_a_request_that_cannot_be_done_says_why_and_changes_nothing(
    queue: psycopg.Connection[Any],
) -> None:
    [running] = admin.list_tasks(queue, status=Status.PROCESSING)
    [completed] = admin.list_tasks(queue, status=Status.COMPLETED)
    unknown = uuid.uuid4()

    with pytest.raises(WrongState, match="is completed: only a pending or running task can be"):
        admin.cancel_task(queue, completed.id)
    with pytest.raises(WrongState, match="is completed: only a failed or cancelled task"):
        admin.retry_task(queue, completed.id)
    with pytest.raises(TaskNotFound, match=f"no task with id {unknown}"):
        admin.show_task(queue, unknown)
    with pytest.raises(TaskNotFound):
        admin.cancel_task(queue, unknown)
    with pytest.raises(InvalidRequest, match="at least 1 more attempt"):
        admin.retry_task(queue, completed.id, attempts=0)
    with pytest.raises(InvalidRequest, match="is not a task id"):
        admin.parse_task_id("not-a-uuid")

    assert admin.show_task(queue, running.id).status == Status.PROCESSING
    assert admin.show_task(queue, completed.id).status == Status.COMPLETED
    assert admin.parse_task_id(f" {running.id} ") == running.id


def test_the_status_snapshot_counts_what_the_queue_holds(queue: psycopg.Connection[Any]) -> None:
    enqueue(queue, "uppercsae", {}, allow_unknown_type=True)  # a typo no worker handles

    status = status_snapshot(queue)

    noop, fetch = status.types["noop"], status.types["fetch"]
    assert (noop.due, noop.processing, noop.completed) == (1, 1, 1)
    assert (fetch.due, fetch.failed) == (0, 1)
    assert status.totals["due"] == 2 and status.totals["failed"] == 1
    assert [(f.task_type, f.failed, f.last_error) for f in status.failures] == [
        ("fetch", 1, "TimeoutError: slow site")
    ]
    assert [(w.id, w.task_types, w.stale) for w in status.workers] == [
        (WORKER, ["fetch", "noop"], False)
    ]
    assert status.unhandled == {"uppercsae": 1}
    assert status.oldest_due_age_s is not None
