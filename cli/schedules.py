"""``websurf schedules add|list|pause|resume|remove|refresh``: recurring tasks.

Thin: the work is done by :mod:`websurf.worker.core.schedules` and
:mod:`websurf.worker.app.refresh`; a :class:`ScheduleError` becomes a one-line error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import click
import psycopg

from websurf.cli.options import (
    DURATION,
    JSON_OBJECT,
    Duration,
    Runtime,
    argument,
    json_option,
    open_db,
    option,
    pass_runtime,
    task_type_options,
)
from websurf.cli.render import EXIT_USAGE, CommandError, echo, one_line_errors, timestamp
from websurf.cli.render.schedules import interval_text, schedule_lines, schedules_json
from websurf.worker.app import refresh, sheets
from websurf.worker.app.sheets import SheetError
from websurf.worker.core import schedules
from websurf.worker.core.queue import PRIORITY, PRIORITY_MAX, PRIORITY_MIN
from websurf.worker.core.registry import OperatorError, load_operators
from websurf.worker.core.schedules import ScheduleError, Spec

EVERY_MIN = timedelta(seconds=1)  # a shorter interval only piles up missed ticks


@contextmanager
def _conn(rt: Runtime) -> Iterator[psycopg.Connection[Any]]:
    with open_db(rt) as conn, one_line_errors(ScheduleError, SheetError):
        yield conn


@click.group("schedules")
def schedules_group() -> None:
    """Recurring tasks: cron or interval schedules, and robot columns that refresh."""


@schedules_group.command("add")
@pass_runtime
@argument("name")
@argument("task_type")
@option("--cron", default=None, help="5-field cron expression, e.g. '*/15 * * * *'.")
@option(
    "--every",
    type=Duration(minimum=EVERY_MIN),
    default=None,
    help="Or a fixed interval, e.g. 30s, 15m, 1h (at least 1s).",
)
@option("--timezone", default="UTC", help="IANA time zone the cron expression is read in.")
@option("--payload", type=JSON_OBJECT, default="{}", help="Each task's payload, a JSON object.")
@option(
    "--priority",
    type=click.IntRange(PRIORITY_MIN, PRIORITY_MAX),
    default=PRIORITY,
    help="Higher runs first.",
)
@option(
    "--max-attempts",
    type=click.IntRange(1),
    default=None,
    help="Attempts before a task fails [default: the operator's, else 3].",
)
@option(
    "--catch-up",
    type=click.Choice(schedules.CATCH_UP),
    default="once",
    help="Ticks missed while no worker ran: run the latest once, or skip them.",
)
@task_type_options
def add_command(
    rt: Runtime,
    name: str,
    task_type: str,
    cron: str | None,
    every: timedelta | None,
    timezone: str,
    payload: dict[str, Any],
    priority: int,
    max_attempts: int | None,
    catch_up: str,
    operator_modules: tuple[str, ...],
    allow_unknown_type: bool,
) -> None:
    """Enqueue a TASK_TYPE task on every tick of a new schedule NAME; print its first tick."""
    with one_line_errors(ScheduleError, OperatorError, exit_code=EXIT_USAGE):
        spec = Spec(
            name, task_type, cron, every, timezone, payload, priority, max_attempts, catch_up
        )
        spec = spec.validate()
        registry = load_operators(operator_modules)
    with _conn(rt) as conn:
        first = schedules.add_schedule(
            conn, spec, registry=registry, allow_unknown_type=allow_unknown_type
        )
    echo(f"{name}: first tick {timestamp(first)}")


@schedules_group.command("list")
@pass_runtime
@json_option("Print a JSON array.")
def list_command(rt: Runtime, as_json: bool) -> None:
    """Every schedule: when it runs, its next and last tick, how the last run went."""
    with _conn(rt) as conn:
        rows = schedules.list_schedules(conn)
    echo(schedules_json(rows) if as_json else "\n".join(schedule_lines(rows)))


def _pause_or_resume(paused: bool) -> click.Command:
    @pass_runtime
    @argument("name")
    def command(rt: Runtime, name: str) -> None:
        with _conn(rt) as conn:
            following = schedules.set_paused(conn, name, paused)
        if paused:
            echo(f"{name}: paused")
        else:
            echo(f"{name}: active" + (f", next tick {timestamp(following)}" if following else ""))

    command.__doc__ = (
        "Stop enqueueing NAME's ticks until it is resumed."
        if paused
        else "Resume NAME from its first tick after now (ticks while paused are not run)."
    )
    return click.command("pause" if paused else "resume")(command)


schedules_group.add_command(_pause_or_resume(True))
schedules_group.add_command(_pause_or_resume(False))


@schedules_group.command("remove")
@pass_runtime
@argument("name")
def remove_command(rt: Runtime, name: str) -> None:
    """Delete schedule NAME (tasks it already enqueued stay). A schedule still declared in
    code comes back when a worker starts: remove it from the code too."""
    with _conn(rt) as conn:
        schedules.remove_schedule(conn, name)
    echo(f"{name}: removed")


@schedules_group.command("refresh")
@pass_runtime
@argument("spreadsheet_id")
@argument("column")
@option(
    "--every",
    type=DURATION,
    default=None,
    help="Re-run the column's robot for every filled row this often.",
)
@option("--off", is_flag=True, default=False, help="Stop refreshing the column.")
def refresh_command(
    rt: Runtime, spreadsheet_id: str, column: str, every: timedelta | None, off: bool
) -> None:
    """Make robot COLUMN refresh itself (sets its refresh_every), or stop it with --off."""
    if off == (every is not None):
        raise CommandError("give --every DURATION or --off", EXIT_USAGE)
    with _conn(rt) as conn:
        target = sheets.find_column(conn, spreadsheet_id, column)
        refresh.set_column_refresh(conn, target.id, every)
    echo(
        f"{target.title}: "
        + (f"refreshes every {interval_text(every)}" if every else "no longer refreshes")
    )
