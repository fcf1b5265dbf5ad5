"""``websurf migrate`` and ``websurf migrate status``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
import psycopg

from websurf.cli.options import (
    EXIT_FAILURE,
    CommandError,
    common_options,
    database_errors,
    echo,
    option,
    runtime,
)
from websurf.sql import migrate as migrator
from websurf.sql.database import CONNECT_RETRY_FOR_S, connect

connect_retry_option = option(
    "--connect-retry",
    type=click.FloatRange(min=0),
    default=CONNECT_RETRY_FOR_S,
    help="Seconds to keep retrying while the database cannot be reached.",
)


@contextmanager
def _sql_errors() -> Iterator[None]:
    """Turn a database error outside any migration file into a one-line error."""
    try:
        yield
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"database error: {detail}") from None


@click.group("migrate", invoke_without_command=True)
@common_options
@option("--dry-run", is_flag=True, default=False, help="Print what would run; change nothing.")
@option(
    "--lock-timeout",
    type=float,
    default=migrator.LOCK_TIMEOUT_S,
    help="Seconds a DDL statement may wait for a table lock before the migration fails.",
)
@connect_retry_option
@click.pass_context
def migrate_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    dry_run: bool,
    lock_timeout: float,
    connect_retry: float,
) -> None:
    """Apply the pending SQL migrations, in order."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = (database_url, log_level, log_format)
        return
    rt = runtime(ctx, database_url, log_level, log_format)
    with (
        database_errors(),
        _sql_errors(),
        connect(rt.database().url, autocommit=True, retry_for_s=connect_retry) as conn,
    ):
        try:
            result = migrator.migrate(conn, dry_run=dry_run, lock_timeout_s=lock_timeout)
        except migrator.MigrationError as exc:
            raise CommandError(str(exc)) from None
    if dry_run:
        if not result.pending_before:
            echo("nothing to apply: the schema is up to date")
        if result.collisions:
            echo(
                f"would first try to adopt existing tables ({', '.join(result.collisions[:5])}"
                f"{', …' if len(result.collisions) > 5 else ''}): verified against a scratch"
                " database built from the migrations, refused if they differ"
            )
        for migration in result.pending_before:
            mode = "" if migration.transactional else "  (outside a transaction)"
            echo(f"would apply {migration.name}{mode}")
        return
    if not result.applied and not result.adopted:
        echo("nothing to apply: the schema is up to date")
    for migration, duration_ms in result.adopted:
        echo(
            f"adopted {migration.name} in {duration_ms} ms"
            " (its tables were already there; added what they lacked)"
        )
    for migration, duration_ms in result.applied:
        echo(f"applied {migration.name} in {duration_ms} ms")


@migrate_command.command("status")
@common_options
@connect_retry_option
@click.pass_context
def status_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    connect_retry: float,
) -> None:
    """List applied and pending migrations; exit 1 when any is pending."""
    parent = ctx.obj or (None, "info", "auto")
    rt = runtime(ctx, database_url or parent[0], log_level, log_format)
    with (
        database_errors(),
        _sql_errors(),
        connect(rt.database().url, autocommit=True, retry_for_s=connect_retry) as conn,
    ):
        states = migrator.migration_states(conn)
    pending = 0
    for state in states:
        recorded = state.applied.name if state.applied else "?"
        name = state.migration.name if state.migration else recorded
        if state.applied is None:
            pending += 1
            echo(f"pending  {name}")
        elif state.migration is None:
            echo(f"applied  {name}  (not shipped with this version of websurf)")
        elif state.changed:
            echo(f"CHANGED  {name}  (edited after it was applied)")
        else:
            echo(f"applied  {name}  {state.applied.applied_at:%Y-%m-%d %H:%M:%S%z}")
    if pending:
        echo(f"{pending} pending: run `websurf migrate`")
        ctx.exit(EXIT_FAILURE)
    if any(s.changed for s in states):
        ctx.exit(EXIT_FAILURE)
