"""``websurf tasks list|show|retry|cancel``: look at and steer single tasks.

The functions above the click commands do the work (tests and scripts call them); the
commands parse, call, render and map :class:`TaskError` to a one-line error.

Retry keeps the count: ``attempts`` goes on saying how many times the task really ran
(each attempt also has its audit row), and ``max_attempts`` is raised to ``attempts +
N`` (``--attempts``, default 1), so a retried task gets exactly N more runs before it
fails again. The last error message stays until a new attempt replaces it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
import psycopg
from psycopg.rows import dict_row

from websurf.cli.options import CommandError, common_options, database_errors, echo, option, runtime
from websurf.sql import QUERIES
from websurf.sql.database import connect

LIST_LIMIT = 50
RETRY_ATTEMPTS = 1
STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
EXIT_NOT_FOUND = 1
EXIT_WRONG_STATE = 1
EXIT_BAD_ID = 2


class TaskError(Exception):
    """A task command could not do what was asked; the message says why."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_task_id(text: str) -> uuid.UUID:
    """A task id as a UUID, or TaskError naming what is wrong."""
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise TaskError(f"{text!r} is not a task id (task ids are UUIDs)", EXIT_BAD_ID) from None


def list_tasks(
    conn: psycopg.Connection[Any],
    *,
    status: str | None = None,
    task_type: str | None = None,
    limit: int = LIST_LIMIT,
) -> list[dict[str, Any]]:
    """The newest tasks, filtered by status and/or type."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            QUERIES["list_tasks"], {"status": status, "task_type": task_type, "limit": limit}
        ).fetchall()


def get_task(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> dict[str, Any]:
    """One task with the audit rows of its attempts; TaskError when there is none."""
    with conn.cursor(row_factory=dict_row) as cur:
        task = cur.execute(QUERIES["get_task"], {"id": task_id}).fetchone()
        if task is None:
            raise TaskError(f"no task with id {task_id}", EXIT_NOT_FOUND)
        task["robot_events"] = cur.execute(
            QUERIES["list_task_robot_events"], {"id": task_id}
        ).fetchall()
    return task


def cancel_task(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> None:
    """Cancel a pending task; TaskError when it does not exist or is not pending."""
    row = conn.execute(QUERIES["cancel_task"], {"id": task_id}).fetchone()
    if row is None:
        status = _status_of(conn, task_id)
        raise TaskError(
            f"task {task_id} is {status}: only a pending task can be cancelled", EXIT_WRONG_STATE
        )


def retry_task(
    conn: psycopg.Connection[Any], task_id: uuid.UUID, *, attempts: int = RETRY_ATTEMPTS
) -> tuple[int, int]:
    """Put a failed or cancelled task back in the queue with ``attempts`` more runs.

    Returns (attempts so far, new max_attempts). The workers are woken on ``new_task``.
    """
    if attempts < 1:
        raise TaskError("a retry needs at least 1 more attempt", EXIT_BAD_ID)
    row = conn.execute(QUERIES["retry_task"], {"id": task_id, "more_attempts": attempts}).fetchone()
    if row is None:
        status = _status_of(conn, task_id)
        raise TaskError(
            f"task {task_id} is {status}: only a failed or cancelled task can be retried",
            EXIT_WRONG_STATE,
        )
    return row[2], row[3]


def _status_of(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> str:
    row = conn.execute(QUERIES["get_task"], {"id": task_id}).fetchone()
    if row is None:
        raise TaskError(f"no task with id {task_id}", EXIT_NOT_FOUND)
    return str(row[3])


# -- rendering -------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S%z}" if value else "-"


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _render_list(rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        echo("no tasks")
        return
    echo(f"{'id':36}  {'type':20}  {'status':10}  {'tries':>5}  {'created':24}  error")
    for r in rows:
        error = (r["error_message"] or "").splitlines()[0][:60] if r["error_message"] else ""
        echo(
            f"{r['id']!s:36}  {r['task_type'][:20]:20}  {r['status']:10}"
            f"  {r['attempts']}/{r['max_attempts']:<3}  {_when(r['created_at']):24}  {error}"
        )


def _render_task(task: dict[str, Any]) -> None:
    fields = [
        ("id", task["id"]),
        ("type", task["task_type"]),
        ("status", task["status"]),
        ("priority", task["priority"]),
        ("attempts", f"{task['attempts']} of {task['max_attempts']}"),
        ("created", _when(task["created_at"])),
        ("scheduled for", _when(task["scheduled_for"])),
        ("started", _when(task["started_at"])),
        ("completed", _when(task["completed_at"])),
        ("failed", _when(task["failed_at"])),
        ("updated", _when(task["updated_at"])),
        ("worker", task["worker_id"] or "-"),
        ("error", task["error_message"] or "-"),
        ("payload", json.dumps(task["payload"], default=_json_default)),
    ]
    for name, value in fields:
        echo(f"{name + ':':15}{value}")
    events = task["robot_events"]
    echo(f"{'audit rows:':15}{len(events)}")
    for e in events:
        outcome = "ok" if e["success"] else f"failed: {e['error_message'] or '-'}"
        echo(
            f"  {_when(e['created_at'])}  cell {e['cell_id']}  {e['operator_type']}"
            f"  {e['processing_time_ms'] if e['processing_time_ms'] is not None else '-'} ms"
            f"  {outcome}"
        )


# -- commands ----------------------------------------------------------------------------


@contextmanager
def _task_errors() -> Iterator[None]:
    """TaskError becomes a one-line error with its exit code."""
    try:
        yield
    except TaskError as exc:
        raise CommandError(str(exc), exc.exit_code) from None


@click.group("tasks")
def tasks_command() -> None:
    """List, inspect, retry and cancel tasks."""


@tasks_command.command("list")
@common_options
@option("--status", type=click.Choice(STATUSES), default=None, help="Only tasks in this state.")
@option("--type", "task_type", default=None, help="Only tasks of this type.")
@option("--limit", type=click.IntRange(1, 10_000), default=LIST_LIMIT, help="Most tasks shown.")
@option("--json", "as_json", is_flag=True, default=False, help="Print JSON lines.")
@click.pass_context
def list_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    status: str | None,
    task_type: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The newest tasks, newest first.

    Running tasks are found through the registered workers (a dead worker's tasks show
    again once the reaper hands them back). Filtering by --type alone reads every task
    of a state in which that type is rare; add --status on big tables.
    """
    rt = runtime(ctx, database_url, log_level, log_format)
    with database_errors(), connect(rt.database().url, autocommit=True) as conn:
        rows = list_tasks(conn, status=status, task_type=task_type, limit=limit)
    if as_json:
        for row in rows:
            echo(json.dumps(row, default=_json_default))
    else:
        _render_list(rows)


@tasks_command.command("show")
@common_options
@click.argument("task_id")
@option("--json", "as_json", is_flag=True, default=False, help="Print the task as JSON.")
@click.pass_context
def show_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    task_id: str,
    as_json: bool,
) -> None:
    """One task: its state, payload, last error and the audit rows of its attempts."""
    rt = runtime(ctx, database_url, log_level, log_format)
    with _task_errors(), database_errors():
        wanted = parse_task_id(task_id)
        with connect(rt.database().url, autocommit=True) as conn:
            task = get_task(conn, wanted)
    if as_json:
        echo(json.dumps(task, default=_json_default))
    else:
        _render_task(task)


@tasks_command.command("retry")
@common_options
@click.argument("task_id")
@option(
    "--attempts",
    type=click.IntRange(1, 1000),
    default=RETRY_ATTEMPTS,
    help="How many more runs the task gets.",
)
@click.pass_context
def retry_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    task_id: str,
    attempts: int,
) -> None:
    """Put a failed or cancelled task back in the queue, due now."""
    rt = runtime(ctx, database_url, log_level, log_format)
    with _task_errors(), database_errors():
        wanted = parse_task_id(task_id)
        with connect(rt.database().url, autocommit=True) as conn:
            done, most = retry_task(conn, wanted, attempts=attempts)
    echo(f"task {wanted} is pending again (attempts so far {done}, now allowed {most})")


@tasks_command.command("cancel")
@common_options
@click.argument("task_id")
@click.pass_context
def cancel_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    task_id: str,
) -> None:
    """Cancel a pending task (a running one cannot be cancelled)."""
    rt = runtime(ctx, database_url, log_level, log_format)
    with _task_errors(), database_errors():
        wanted = parse_task_id(task_id)
        with connect(rt.database().url, autocommit=True) as conn:
            cancel_task(conn, wanted)
    echo(f"task {wanted} cancelled")
