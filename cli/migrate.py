"""``websurf migrate`` and ``websurf migrate status``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import psycopg
import structlog

from websurf.cli.options import (
    EXIT_FAILURE,
    EXIT_USAGE,
    CommandError,
    Runtime,
    common_options,
    database_errors,
    direct_url_option,
    echo,
    option,
    runtime,
)
from websurf.sql import migrate as migrator
from websurf.sql.database import CONNECT_RETRY_FOR_S, connect, describe, pooler_between

log = structlog.get_logger("websurf.cli")

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


def _session_url(rt: Runtime) -> tuple[str, bool]:
    """The URL migrations take (the direct one when configured), and whether it is that."""
    direct = rt.direct_database()
    return (direct.url, True) if direct else (rt.database().url, False)


def _refuse_pooler(conn: psycopg.Connection[Any], url: str) -> None:
    """Migrations hold a session advisory lock: never through a transaction pooler."""
    if pooler_between(conn):
        raise CommandError(
            f"{describe(url)} goes through a connection pooler, and migrations need a session"
            " (an advisory lock, CREATE INDEX CONCURRENTLY): set --direct-database-url"
            " (WEBSURF_DIRECT_DATABASE_URL or DIRECT_URL) to the database's direct address",
            EXIT_USAGE,
        )


@click.group("migrate", invoke_without_command=True)
@common_options
@direct_url_option
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
    direct_database_url: str | None,
    dry_run: bool,
    lock_timeout: float,
    connect_retry: float,
) -> None:
    """Apply the pending SQL migrations, in order (on the direct URL when one is set)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = (database_url, log_level, log_format, direct_database_url)
        return
    rt = runtime(ctx, database_url, log_level, log_format, direct_database_url)
    url, direct = _session_url(rt)
    with (
        database_errors(),
        _sql_errors(),
        connect(url, autocommit=True, retry_for_s=connect_retry) as conn,
    ):
        if not direct:
            _refuse_pooler(conn, url)
        elif pooler_between(conn):
            log.warning(
                "direct_url_through_pooler",
                target=describe(url),
                message="the direct URL goes through a connection pooler: fine in session mode"
                " (one server connection per client), not in transaction mode",
            )
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
@direct_url_option
@connect_retry_option
@click.pass_context
def status_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    direct_database_url: str | None,
    connect_retry: float,
) -> None:
    """List applied and pending migrations; exit 1 when any is pending."""
    parent = ctx.obj or (None, "info", "auto", None)
    rt = runtime(
        ctx, database_url or parent[0], log_level, log_format, direct_database_url or parent[3]
    )
    url, _ = _session_url(rt)
    with (
        database_errors(),
        _sql_errors(),
        connect(url, autocommit=True, retry_for_s=connect_retry) as conn,
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
