"""``websurf prune``: delete finished tasks past the retention period."""

from __future__ import annotations

import json

import click
import psycopg

from websurf.cli.options import (
    CommandError,
    common_options,
    database_errors,
    echo,
    option,
    parse_duration,
    runtime,
)
from websurf.sql.database import connect
from websurf.worker.maintenance import pruner


@click.command("prune")
@common_options
@option(
    "--older-than",
    required=True,
    envvar="WEBSURF_PRUNE_OLDER_THAN",
    help="Delete completed, failed and cancelled tasks created and finished longer ago"
    " than this, e.g. 7d, 12h.",
)
@option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    envvar="WEBSURF_PRUNE_BATCH_SIZE",
    default=pruner.BATCH_SIZE,
    help="Tasks deleted per transaction.",
)
@option("--json", "as_json", is_flag=True, default=False, help="Print the counts as JSON.")
@click.pass_context
def prune_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    older_than: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Delete finished tasks older than --older-than, in batches.

    Audit rows of deleted tasks are kept, with their task_id set to NULL: the cells'
    history stays whole. Pending and running tasks are never deleted. Only one prune
    runs at a time across all hosts; a second one exits 1 without deleting anything.
    """
    rt = runtime(ctx, database_url, log_level, log_format)
    try:
        age = parse_duration(older_than)
    except click.BadParameter as exc:
        raise CommandError(f"--older-than {exc.message}", 2) from None
    with database_errors(), connect(rt.database().url, autocommit=True) as conn:
        try:
            counts = pruner.run_once(conn, age, batch_size=batch_size)
        except psycopg.Error as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"prune failed: {detail}") from None
    if not counts.ran:
        raise CommandError("another prune is running (on this or another host); try later")
    if as_json:
        echo(
            json.dumps(
                {
                    "deleted": counts.deleted,
                    "audit_rows_detached": counts.audit_rows_detached,
                    "batches": counts.batches,
                    "cutoff": counts.cutoff.isoformat() if counts.cutoff else None,
                }
            )
        )
        return
    cutoff = f"{counts.cutoff:%Y-%m-%d %H:%M:%S%z}" if counts.cutoff else "?"
    echo(
        f"deleted {counts.deleted} finished task(s) older than {cutoff}"
        f" in {counts.batches} batch(es); {counts.audit_rows_detached} audit row(s) kept,"
        " detached from their task"
    )
