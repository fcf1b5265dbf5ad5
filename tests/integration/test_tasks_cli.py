"""``websurf tasks list|show|retry|cancel`` against a real database.

What a user would notice: the listing filters by state and type; show prints the task
and its attempts' audit rows; retry puts a failed task back (with one more attempt and
a wake-up for the workers) and cancel stops a pending one (a running one:
tests/integration/test_cancel.py); an unknown, malformed or
wrong-state id gets one clear line and a non-zero exit, and changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from websurf.cli.tasks import tasks_command


def run(database_url: str, *args: str) -> Result:
    return CliRunner().invoke(tasks_command, [args[0], "--database-url", database_url, *args[1:]])


def add_task(
    conn: psycopg.Connection[Any],
    status: str = "pending",
    task_type: str = "noop",
    attempts: int = 0,
    error: str | None = None,
) -> str:
    row = conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status, attempts, max_attempts,"
        " error_message, failed_at) VALUES (%s, '{\"n\": 1}', %s, %s, 3, %s,"
        " CASE WHEN %s = 'failed' THEN now() END) RETURNING id",
        (task_type, status, attempts, error, status),
    ).fetchone()
    assert row is not None
    return str(row[0])


def status_of(conn: psycopg.Connection[Any], task_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempts, max_attempts, failed_at IS NULL FROM websurfing_task_queue"
        " WHERE id = %s",
        (task_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_list_filters_by_status_and_type(conn: psycopg.Connection[Any], database_url: str) -> None:
    failed = add_task(conn, "failed", "fetch", 3, "boom")
    add_task(conn, "pending", "fetch")
    add_task(conn, "failed", "noop", 3, "other")

    result = run(database_url, "list", "--status", "failed", "--type", "fetch", "--json")

    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["status"], r["error_message"]) for r in rows] == [
        (failed, "failed", "boom")
    ]
    table = run(database_url, "list")
    assert table.exit_code == 0 and table.stdout.count("\n") == 4  # header + 3 tasks


def test_show_prints_the_task_and_its_audit_rows(
    conn: psycopg.Connection[Any], database_url: str, make_user: Callable[..., str]
) -> None:
    task = add_task(conn, "failed", "fetch", 1, "TimeoutError: slow")
    cell = conn.execute(
        "WITH s AS (INSERT INTO websurfing_spreadsheet (name, owner_id) VALUES ('s', %s)"
        " RETURNING id), c AS (INSERT INTO websurfing_column (spreadsheet_id, position, title)"
        " SELECT id, 0, 'A' FROM s RETURNING id, spreadsheet_id)"
        " INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
        " SELECT spreadsheet_id, id, 1 FROM c RETURNING id",
        (make_user(),),
    ).fetchone()
    assert cell is not None
    with conn.transaction():  # a row of the past: the robot-row guard checks only new work
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO websurfing_robot_input_event"
            " (cell_id, task_id, operator_type, success, error_message, processing_time_ms)"
            " VALUES (%s, %s, 'fetch', false, 'TimeoutError: slow', 1200)",
            (cell[0], task),
        )

    text = run(database_url, "show", task)
    as_json = run(database_url, "show", task, "--json")

    assert text.exit_code == 0, text.output
    assert "TimeoutError: slow" in text.stdout and "audit rows:    1" in text.stdout
    shown = json.loads(as_json.stdout)
    assert shown["status"] == "failed" and shown["payload"] == {"n": 1}
    assert [e["processing_time_ms"] for e in shown["robot_events"]] == [1200]


def test_retry_puts_a_failed_task_back_with_one_more_attempt_and_wakes_workers(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    task = add_task(conn, "failed", "fetch", 3, "boom")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN new_task")

        result = run(database_url, "retry", task)

        notices = list(listener.notifies(timeout=5, stop_after=1))
    assert result.exit_code == 0, result.output
    assert status_of(conn, task) == ("pending", 3, 4, True)
    assert json.loads(notices[0].payload) == {"task_type": "fetch", "priority": 5, "id": task}


def test_retry_can_give_several_attempts_and_works_on_cancelled_tasks(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    task = add_task(conn, "cancelled")

    result = run(database_url, "retry", task, "--attempts", "3")

    assert result.exit_code == 0, result.output
    assert status_of(conn, task)[:3] == ("pending", 0, 3)


def test_cancel_stops_a_pending_task(conn: psycopg.Connection[Any], database_url: str) -> None:
    task = add_task(conn, "pending")

    result = run(database_url, "cancel", task)

    assert result.exit_code == 0, result.output
    assert status_of(conn, task)[0] == "cancelled"


@pytest.mark.parametrize(
    ("verb", "status", "message"),
    [
        ("retry", "completed", "is completed: only a failed or cancelled task can be retried"),
        ("retry", "pending", "is pending: only a failed or cancelled task can be retried"),
        ("cancel", "completed", "is completed: only a pending or running task can be cancelled"),
        ("cancel", "failed", "is failed: only a pending or running task can be cancelled"),
    ],
)
def test_a_task_in_the_wrong_state_is_refused_and_left_alone(
    conn: psycopg.Connection[Any], database_url: str, verb: str, status: str, message: str
) -> None:
    task = add_task(conn, status, attempts=1)
    before = status_of(conn, task)

    result = run(database_url, verb, task)

    assert result.exit_code == 1
    assert result.output.strip() == f"error: task {task} {message}"
    assert status_of(conn, task) == before


@pytest.mark.parametrize("verb", ["show", "retry", "cancel"])
def test_unknown_and_malformed_ids_get_one_clear_line(database_url: str, verb: str) -> None:
    unknown = str(uuid.uuid4())

    missing = run(database_url, verb, unknown)
    malformed = run(database_url, verb, "12345")

    assert (missing.exit_code, missing.output.strip()) == (1, f"error: no task with id {unknown}")
    assert malformed.exit_code == 2
    assert malformed.output.strip() == "error: '12345' is not a task id (task ids are UUIDs)"
