"""``websurf enqueue``: add a task from the terminal or a script."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import click

from websurf.cli.options import (
    DURATION,
    JSON_OBJECT,
    UNIQUE_KEY_MAX_LENGTH,
    Runtime,
    Text,
    argument,
    open_db,
    option,
    pass_runtime,
    task_type_options,
)
from websurf.cli.render import EXIT_USAGE, CommandError, echo, one_line_errors
from websurf.worker.core.queue import (
    MAX_ATTEMPTS_LIMIT,
    PRIORITY,
    PRIORITY_MAX,
    PRIORITY_MIN,
    EnqueueError,
    enqueue,
)
from websurf.worker.core.registry import OperatorError, load_operators


@click.command("enqueue")
@pass_runtime
@argument("task_type")
@option("--payload", type=JSON_OBJECT, default="{}", help="The task's payload, a JSON object.")
@option(
    "--priority",
    type=int,
    default=PRIORITY,
    help=f"Higher runs first ({PRIORITY_MIN}..{PRIORITY_MAX}).",
)
@option("--delay", type=DURATION, default=None, help="Run after this long, e.g. 30s, 5m, 2h.")
@option("--at", "at", default=None, help="Run at this ISO 8601 time (with a time zone).")
@option(
    "--max-attempts",
    type=int,
    default=None,
    help="Attempts before the task fails [default: the operator's, else 3].",
)
@option(
    "--unique-key",
    type=Text(UNIQUE_KEY_MAX_LENGTH),
    default=None,
    help="At most one pending task per key: a pending task with this key takes this"
    " task's payload instead (its id is printed).",
)
@task_type_options
def enqueue_command(
    rt: Runtime,
    task_type: str,
    payload: dict[str, Any],
    priority: int,
    delay: timedelta | None,
    at: str | None,
    max_attempts: int | None,
    unique_key: str | None,
    operator_modules: tuple[str, ...],
    allow_unknown_type: bool,
) -> None:
    """Add a task of TASK_TYPE to the queue and print its id."""
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise CommandError(
            f"--priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}", EXIT_USAGE
        )
    if max_attempts is not None and not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise CommandError(f"--max-attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}", EXIT_USAGE)
    if delay and at:
        raise CommandError("give --delay or --at, not both", EXIT_USAGE)
    when = None
    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise CommandError(f"--at {at!r} is not an ISO 8601 time", EXIT_USAGE) from None
        if when.tzinfo is None:
            raise CommandError("--at needs a time zone, e.g. 2026-01-01T09:00:00+00:00", EXIT_USAGE)
    with one_line_errors(OperatorError, exit_code=EXIT_USAGE):
        registry = load_operators(operator_modules)
    with open_db(rt) as conn, one_line_errors(EnqueueError, exit_code=EXIT_USAGE):
        task_id = enqueue(
            conn,
            task_type,
            payload,
            priority=priority,
            max_attempts=max_attempts,
            scheduled_for=when,
            delay=delay,
            registry=registry,
            allow_unknown_type=allow_unknown_type,
            unique_key=unique_key,
        )
    echo(str(task_id))
