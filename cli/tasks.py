"""``websurf tasks list|show|retry|cancel``: look at and steer single tasks.

The work is done by :mod:`websurf.worker.core.admin` (tests and scripts call it); these
commands parse, call it, render, and map a :class:`TaskError` to a one-line error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from websurf.cli.options import Runtime, argument, json_option, open_db, option, pass_runtime
from websurf.cli.render import EXIT_FAILURE, EXIT_USAGE, echo, echo_lines, one_line_errors, to_json
from websurf.cli.render.tasks import task_detail, task_json_lines, task_table
from websurf.worker.core import admin
from websurf.worker.core.admin import InvalidRequest, TaskError
from websurf.worker.core.model import Status


@contextmanager
def _task_errors() -> Iterator[None]:
    """A wrong request exits 2; an unknown task or one in the wrong state exits 1."""
    with (
        one_line_errors(TaskError, exit_code=EXIT_FAILURE),
        one_line_errors(InvalidRequest, exit_code=EXIT_USAGE),
    ):
        yield


@click.group("tasks")
def tasks_command() -> None:
    """List, inspect, retry and cancel tasks."""


@tasks_command.command("list")
@pass_runtime
@option(
    "--status",
    type=click.Choice([s.value for s in Status]),
    default=None,
    help="Only tasks in this state.",
)
@option("--type", "task_type", default=None, help="Only tasks of this type.")
@option(
    "--limit", type=click.IntRange(1, 10_000), default=admin.LIST_LIMIT, help="Most tasks shown."
)
@json_option("Print JSON lines.")
def list_command(
    rt: Runtime, status: str | None, task_type: str | None, limit: int, as_json: bool
) -> None:
    """The newest tasks, newest first.

    Running tasks are found through the registered workers (a dead worker's tasks show
    again once the reaper hands them back). Filtering by --type alone reads every task
    of a state in which that type is rare; add --status on big tables.
    """
    wanted = Status(status) if status else None
    with open_db(rt) as conn:
        rows = admin.list_tasks(conn, status=wanted, task_type=task_type, limit=limit)
    echo_lines(task_json_lines(rows) if as_json else task_table(rows))


@tasks_command.command("show")
@pass_runtime
@argument("task_id")
@json_option("Print the task as JSON.")
def show_command(rt: Runtime, task_id: str, as_json: bool) -> None:
    """One task: its state, payload, last error and the audit rows of its attempts."""
    with _task_errors():
        wanted = admin.parse_task_id(task_id)
        with open_db(rt) as conn:
            task = admin.show_task(conn, wanted)
    echo_lines([to_json(task)] if as_json else task_detail(task))


@tasks_command.command("retry")
@pass_runtime
@argument("task_id")
@option(
    "--attempts",
    type=click.IntRange(1, 1000),
    default=admin.RETRY_ATTEMPTS,
    help="How many more runs the task gets.",
)
def retry_command(rt: Runtime, task_id: str, attempts: int) -> None:
    """Put a failed or cancelled task back in the queue, due now."""
    with _task_errors():
        wanted = admin.parse_task_id(task_id)
        with open_db(rt) as conn:
            retried = admin.retry_task(conn, wanted, attempts=attempts)
    echo(
        f"task {wanted} is pending again"
        f" (attempts so far {retried.attempts}, now allowed {retried.max_attempts})"
    )


@tasks_command.command("cancel")
@pass_runtime
@argument("task_id")
def cancel_command(rt: Runtime, task_id: str) -> None:
    """Cancel a pending task, or stop a running one (its worker cancels the handler)."""
    with _task_errors():
        wanted = admin.parse_task_id(task_id)
        with open_db(rt) as conn:
            cancelled = admin.cancel_task(conn, wanted)
    if cancelled.running:
        echo(f"task {wanted} is running: asked its worker to stop it")
    else:
        echo(f"task {wanted} cancelled")
