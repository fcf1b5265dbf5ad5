"""``websurf migrate`` and ``websurf migrate status``."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import click
import psycopg
import structlog

from websurf.cli.options import Runtime, direct_url_option, open_db, option, pass_runtime
from websurf.cli.render import (
    EXIT_FAILURE,
    EXIT_USAGE,
    CommandError,
    echo_lines,
    first_line,
    one_line_errors,
)
from websurf.cli.render.migrations import migration_lines, plan_lines, state_lines
from websurf.sql import migrate as migrator
from websurf.sql.database import CONNECT_RETRY_FOR_S, describe, pooler_between

log = structlog.get_logger("websurf.cli")

connect_retry_option = option(
    "--connect-retry",
    type=click.FloatRange(min=0),
    default=CONNECT_RETRY_FOR_S,
    help="Seconds to keep retrying while the database cannot be reached.",
)


def _sql_errors() -> AbstractContextManager[None]:
    """Turn a database error outside any migration file into a one-line error."""
    return one_line_errors(psycopg.Error, prefix="database error: ", detail=first_line)


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
@pass_runtime
@direct_url_option
@option("--dry-run", is_flag=True, default=False, help="Print what would run; change nothing.")
@option(
    "--lock-timeout",
    type=float,
    default=migrator.LOCK_TIMEOUT_S,
    help="Seconds a DDL statement may wait for a table lock before the migration fails.",
)
@connect_retry_option
def migrate_command(rt: Runtime, dry_run: bool, lock_timeout: float, connect_retry: float) -> None:
    """Apply the pending SQL migrations, in order (on the direct URL when one is set)."""
    ctx = click.get_current_context()
    if ctx.invoked_subcommand is not None:
        ctx.obj = rt  # the subcommand takes the database URLs given here
        return
    url, direct = _session_url(rt)
    with _sql_errors(), open_db(rt, url, retry_for_s=connect_retry) as conn:
        if not direct:
            _refuse_pooler(conn, url)
        elif pooler_between(conn):
            log.warning(
                "direct_url_through_pooler",
                target=describe(url),
                message="the direct URL goes through a connection pooler: fine in session mode"
                " (one server connection per client), not in transaction mode",
            )
        with one_line_errors(migrator.MigrationError):
            result = migrator.migrate(conn, dry_run=dry_run, lock_timeout_s=lock_timeout)
    echo_lines(plan_lines(result) if dry_run else migration_lines(result))


@migrate_command.command("status")
@pass_runtime
@direct_url_option
@connect_retry_option
def status_command(rt: Runtime, connect_retry: float) -> None:
    """List applied and pending migrations; exit 1 when any is pending."""
    rt.inherit(click.get_current_context().obj)
    url, _ = _session_url(rt)
    with _sql_errors(), open_db(rt, url, retry_for_s=connect_retry) as conn:
        states = migrator.migration_states(conn)
    echo_lines(state_lines(states))
    if any(s.applied is None or s.changed for s in states):
        click.get_current_context().exit(EXIT_FAILURE)
