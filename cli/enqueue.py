"""``websurf enqueue``: add a task from the terminal or a script."""

from __future__ import annotations

from datetime import datetime

import click

from websurf.cli.options import (
    CommandError,
    common_options,
    database_errors,
    echo,
    option,
    parse_duration,
    runtime,
    task_type_options,
)
from websurf.sql.database import connect
from websurf.worker.core.payloads import PayloadError, parse_object
from websurf.worker.core.queue import INT32_MAX, INT32_MIN, PRIORITY, EnqueueError, enqueue
from websurf.worker.core.registry import OperatorError, load_operators


@click.command("enqueue")
@common_options
@click.argument("task_type")
@option("--payload", default="{}", help="The task's payload, a JSON object.")
@option(
    "--priority", type=int, default=PRIORITY, help=f"Higher runs first ({INT32_MIN}..{INT32_MAX})."
)
@option("--delay", default=None, help="Run after this long, e.g. 30s, 5m, 2h.")
@option("--at", "at", default=None, help="Run at this ISO 8601 time (with a time zone).")
@option(
    "--max-attempts",
    type=int,
    default=None,
    help="Attempts before the task fails [default: the operator's, else 3].",
)
@option(
    "--unique-key",
    default=None,
    help="At most one pending task per key: a pending task with this key takes this"
    " task's payload instead (its id is printed).",
)
@task_type_options
@click.pass_context
def enqueue_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    task_type: str,
    payload: str,
    priority: int,
    delay: str | None,
    at: str | None,
    max_attempts: int | None,
    unique_key: str | None,
    operator_modules: tuple[str, ...],
    allow_unknown_type: bool,
) -> None:
    """Add a task of TASK_TYPE to the queue and print its id."""
    rt = runtime(ctx, database_url, log_level, log_format)
    try:
        body = parse_object(payload)
    except PayloadError as exc:
        raise CommandError(f"--payload {exc}", 2) from None
    if not INT32_MIN <= priority <= INT32_MAX:
        raise CommandError(f"--priority must be between {INT32_MIN} and {INT32_MAX}", 2)
    if max_attempts is not None and not 1 <= max_attempts <= INT32_MAX:
        raise CommandError(f"--max-attempts must be between 1 and {INT32_MAX}", 2)
    if delay and at:
        raise CommandError("give --delay or --at, not both", 2)
    when = None
    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise CommandError(f"--at {at!r} is not an ISO 8601 time", 2) from None
        if when.tzinfo is None:
            raise CommandError("--at needs a time zone, e.g. 2026-01-01T09:00:00+00:00", 2)
    try:
        wait = parse_duration(delay) if delay else None
    except click.BadParameter as exc:
        raise CommandError(f"--delay {exc.message}", 2) from None
    try:
        registry = load_operators(operator_modules)
    except OperatorError as exc:
        raise CommandError(str(exc), 2) from None
    with database_errors(), connect(rt.database().url, autocommit=True) as conn:
        try:
            task_id = enqueue(
                conn,
                task_type,
                body,
                priority=priority,
                max_attempts=max_attempts,
                scheduled_for=when,
                delay=wait,
                registry=registry,
                allow_unknown_type=allow_unknown_type,
                unique_key=unique_key,
            )
        except EnqueueError as exc:
            raise CommandError(str(exc), 2) from None
    echo(str(task_id))
