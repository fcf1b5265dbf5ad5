"""``websurf prune``: delete finished tasks past the retention period."""

from __future__ import annotations

from datetime import timedelta

import click
import psycopg

from websurf.cli.options import (
    DURATION,
    Runtime,
    json_option,
    open_db,
    option,
    pass_runtime,
)
from websurf.cli.render import CommandError, echo, first_line, one_line_errors
from websurf.cli.render.tasks import prune_report
from websurf.worker.maintenance import pruner


@click.command("prune")
@pass_runtime
@option(
    "--older-than",
    required=True,
    type=DURATION,
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
@json_option("Print the counts as JSON.")
def prune_command(rt: Runtime, older_than: timedelta, batch_size: int, as_json: bool) -> None:
    """Delete finished tasks older than --older-than, in batches.

    Audit rows of deleted tasks are kept, with their task_id set to NULL: the cells'
    history stays whole. Pending and running tasks are never deleted. Only one prune
    runs at a time across all hosts; a second one exits 1 without deleting anything.
    """
    with (
        open_db(rt) as conn,
        one_line_errors(psycopg.Error, prefix="prune failed: ", detail=first_line),
    ):
        counts = pruner.run_once(conn, older_than, batch_size=batch_size)
    if not counts.ran:
        raise CommandError("another prune is running (on this or another host); try later")
    echo(prune_report(counts, as_json=as_json))
