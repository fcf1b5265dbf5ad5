"""``websurf status``: what the queue and its workers are doing, for the person on call.

The snapshot is read by :mod:`websurf.worker.core.snapshot`; this command adds which
path each kind of connection takes and prints it.
"""

from __future__ import annotations

from dataclasses import replace

import click

from websurf.cli.options import (
    Runtime,
    direct_url_option,
    json_option,
    open_db,
    option,
    pass_runtime,
)
from websurf.cli.render import echo, to_json
from websurf.cli.render.status import status_report
from websurf.sql.database import resolve_paths
from websurf.worker.core.snapshot import FINISHED_WINDOW_S, status_snapshot


@click.command("status")
@pass_runtime
@direct_url_option
@json_option("Print one JSON object.")
@option(
    "--window",
    type=click.FloatRange(1, 7 * 86400),
    default=FINISHED_WINDOW_S,
    help="Seconds over which finished and failed tasks are counted.",
)
def status_command(rt: Runtime, as_json: bool, window: float) -> None:
    """Tasks by state and type, oldest wait, throughput, failures, live workers, and which
    path each kind of connection takes."""
    direct = rt.direct_database()
    with open_db(rt) as conn:
        snapshot = status_snapshot(conn, window_s=window)
        routes = resolve_paths(conn, rt.database().url, direct.url if direct else None).routes()
    snapshot = replace(snapshot, connections=routes)
    echo(to_json(snapshot) if as_json else status_report(snapshot))
