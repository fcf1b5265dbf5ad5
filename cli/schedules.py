"""``websurf schedules add|list|pause|resume|remove|refresh``: recurring tasks.

Thin: the work is done by :mod:`websurf.worker.core.schedules` and
:mod:`websurf.worker.app.refresh`; a :class:`ScheduleError` becomes a one-line error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import click
import psycopg

from websurf.cli.options import (
    CommandError,
    Runtime,
    common_options,
    database_errors,
    echo,
    option,
    parse_duration,
    runtime,
    task_type_options,
)
from websurf.sql.database import connect
from websurf.worker.app import refresh, sheets
from websurf.worker.app.sheets import SheetError
from websurf.worker.core import schedules
from websurf.worker.core.queue import PRIORITY
from websurf.worker.core.registry import OperatorError, load_operators
from websurf.worker.core.schedules import ScheduleError, Spec

EXIT_USAGE = 2


@contextmanager
def _conn(rt: Runtime) -> Iterator[psycopg.Connection[Any]]:
    with database_errors(), connect(rt.database().url, autocommit=True) as conn:
        try:
            yield conn
        except (ScheduleError, SheetError) as exc:
            raise CommandError(str(exc)) from None


def _when(row: dict[str, Any]) -> str:
    if row["cron"] is not None:
        return f"cron {row['cron']!r} {row['time_zone']}"
    every: timedelta = row["every"]
    return f"every {_seconds(every.total_seconds())}"


def _seconds(total: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size and total % size == 0:
            return f"{int(total // size)}{unit}"
    return f"{total:g}s"


def last_run(row: dict[str, Any]) -> str:
    """How a schedule's last run went, in a few words (also used by websurf status)."""
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
    if status == "failed" and row["last_task_error"]:
        return f"failed: {row['last_task_error'].splitlines()[0][:80]}"
    return str(status)


def _time(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%S%z}"


def render(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["no schedules"]
    lines = []
    for row in rows:
        title = row["name"]
        if row["column_id"] is not None:
            title = f"{row['name']} (column {row['column_title']!r})"
        state = "PAUSED" if row["paused"] else "active"
        lines.append(
            f"{title}  [{row['source']}, {state}]  {_when(row)} -> {row['task_type']}"
            f"  next {_time(row['next_run_at'])}  last {_time(row['last_run_at'])}"
            f" ({last_run(row)})"
        )
    return lines


def as_json(rows: list[dict[str, Any]]) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, timedelta):
            return value.total_seconds()
        return str(value)

    return json.dumps(rows, default=default)


@click.group("schedules")
def schedules_group() -> None:
    """Recurring tasks: cron or interval schedules, and robot columns that refresh."""


@schedules_group.command("add")
@common_options
@click.argument("name")
@click.argument("task_type")
@option("--cron", default=None, help="5-field cron expression, e.g. '*/15 * * * *'.")
@option("--every", default=None, help="Or a fixed interval, e.g. 30s, 15m, 1h.")
@option("--timezone", default="UTC", help="IANA time zone the cron expression is read in.")
@option("--payload", default="{}", help="Each task's payload, a JSON object.")
@option("--priority", type=int, default=PRIORITY, help="Higher runs first.")
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
@click.pass_context
def add_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    name: str,
    task_type: str,
    cron: str | None,
    every: str | None,
    timezone: str,
    payload: str,
    priority: int,
    max_attempts: int | None,
    catch_up: str,
    operator_modules: tuple[str, ...],
    allow_unknown_type: bool,
) -> None:
    """Enqueue a TASK_TYPE task on every tick of a new schedule NAME; print its first tick."""
    rt = runtime(ctx, database_url, log_level, log_format)
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--payload is not valid JSON: {exc}", EXIT_USAGE) from None
    try:
        interval = parse_duration(every) if every is not None else None
    except click.BadParameter as exc:
        raise CommandError(f"--every {exc.message}", EXIT_USAGE) from None
    try:
        spec = Spec(
            name, task_type, cron, interval, timezone, body, priority, max_attempts, catch_up
        )
        spec = spec.validate()
        registry = load_operators(operator_modules)
    except (ScheduleError, OperatorError) as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    with _conn(rt) as conn:
        first = schedules.add_schedule(
            conn, spec, registry=registry, allow_unknown_type=allow_unknown_type
        )
    echo(f"{name}: first tick {_time(first)}")


@schedules_group.command("list")
@common_options
@option("--json", "json_output", is_flag=True, default=False, help="Print a JSON array.")
@click.pass_context
def list_command(
    ctx: click.Context, database_url: str | None, log_level: str, log_format: str, json_output: bool
) -> None:
    """Every schedule: when it runs, its next and last tick, how the last run went."""
    with _conn(runtime(ctx, database_url, log_level, log_format)) as conn:
        rows = schedules.list_schedules(conn)
    echo(as_json(rows) if json_output else "\n".join(render(rows)))


def _pause_or_resume(paused: bool) -> click.Command:
    @common_options
    @click.argument("name")
    @click.pass_context
    def command(
        ctx: click.Context, database_url: str | None, log_level: str, log_format: str, name: str
    ) -> None:
        with _conn(runtime(ctx, database_url, log_level, log_format)) as conn:
            following = schedules.set_paused(conn, name, paused)
        if paused:
            echo(f"{name}: paused")
        else:
            echo(f"{name}: active" + (f", next tick {_time(following)}" if following else ""))

    command.__doc__ = (
        "Stop enqueueing NAME's ticks until it is resumed."
        if paused
        else "Resume NAME from its first tick after now (ticks while paused are not run)."
    )
    return click.command("pause" if paused else "resume")(command)


schedules_group.add_command(_pause_or_resume(True))
schedules_group.add_command(_pause_or_resume(False))


@schedules_group.command("remove")
@common_options
@click.argument("name")
@click.pass_context
def remove_command(
    ctx: click.Context, database_url: str | None, log_level: str, log_format: str, name: str
) -> None:
    """Delete schedule NAME (tasks it already enqueued stay). A schedule still declared in
    code comes back when a worker starts: remove it from the code too."""
    with _conn(runtime(ctx, database_url, log_level, log_format)) as conn:
        schedules.remove_schedule(conn, name)
    echo(f"{name}: removed")


@schedules_group.command("refresh")
@common_options
@click.argument("spreadsheet_id")
@click.argument("column")
@option("--every", default=None, help="Re-run the column's robot for every filled row this often.")
@option("--off", is_flag=True, default=False, help="Stop refreshing the column.")
@click.pass_context
def refresh_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    column: str,
    every: str | None,
    off: bool,
) -> None:
    """Make robot COLUMN refresh itself (sets its refresh_every), or stop it with --off."""
    if off == (every is not None):
        raise CommandError("give --every DURATION or --off", EXIT_USAGE)
    try:
        interval = parse_duration(every) if every is not None else None
    except click.BadParameter as exc:
        raise CommandError(f"--every {exc.message}", EXIT_USAGE) from None
    with _conn(runtime(ctx, database_url, log_level, log_format)) as conn:
        target = sheets.find_column(conn, spreadsheet_id, column)
        refresh.set_column_refresh(conn, target.id, interval)
    echo(f"{target.title}: " + (f"refreshes every {every}" if every else "no longer refreshes"))
