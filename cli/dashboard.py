"""``websurf dashboard``: serve the operators' web dashboard (the ``dashboard`` extra).

The app is :mod:`websurf.worker.dashboard`; this command checks where it may listen
(:func:`~websurf.worker.dashboard.server.check_bind`), prints its address and serves it.
"""

from __future__ import annotations

import os

import click

from websurf.cli.options import Runtime, direct_url_option, open_db, option, pass_runtime
from websurf.cli.render import EXIT_FAILURE, EXIT_USAGE, CommandError, echo
from websurf.sql.migrate import pending_migrations

try:
    from websurf.worker.dashboard import server
except ImportError:  # pragma: no cover - the dashboard extra is not installed
    server = None  # type: ignore[assignment]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750


def dashboard_url(host: str, port: int) -> str:
    """The address a browser opens for a dashboard listening on ``host``:``port``."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


@click.command("dashboard")
@pass_runtime
@direct_url_option
@option(
    "--host",
    default=DEFAULT_HOST,
    envvar="WEBSURF_DASHBOARD_HOST",
    help="Address to listen on. Any other than loopback needs WEBSURF_DASHBOARD_TOKEN"
    " or WEBSURF_DASHBOARD_USER and WEBSURF_DASHBOARD_PASSWORD.",
)
@option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    envvar="WEBSURF_DASHBOARD_PORT",
    help="Port to listen on.",
)
@option(
    "--read-only",
    is_flag=True,
    default=False,
    envvar="WEBSURF_DASHBOARD_READ_ONLY",
    help="Show everything, change nothing (no action buttons; actions refused).",
)
def dashboard_command(rt: Runtime, host: str, port: int, read_only: bool) -> None:
    """Serve the web dashboard: the queue, failures, tasks and schedules, live.

    Credentials come from the environment only (never the command line, which other
    users can read): WEBSURF_DASHBOARD_TOKEN, or WEBSURF_DASHBOARD_USER and
    WEBSURF_DASHBOARD_PASSWORD; WEBSURF_DASHBOARD_USER_HEADER names the header a reverse
    proxy puts the logged-in person's name in.
    """
    if server is None:
        raise CommandError(
            "the dashboard is not installed: pip install 'websurf[dashboard]'", EXIT_FAILURE
        )
    from websurf.worker.dashboard.app import DashboardConfig, create_app

    try:
        access = server.access_from(os.environ)
        server.check_bind(host, access)
    except server.BindRefused as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    direct = rt.direct_database()
    database = rt.database()
    with open_db(rt) as conn:
        pending = pending_migrations(conn)
    if pending:
        raise CommandError(
            f"the database needs `websurf migrate` first ({pending[0].name})", EXIT_FAILURE
        )
    config = DashboardConfig(
        database_url=database.url,
        listen_url=direct.url if direct else database.url,
        access=access,
        read_only=read_only,
    )
    shown = dashboard_url(host, port) + (" (read-only)" if read_only else "")
    echo(f"websurf dashboard at {shown}")
    server.serve(create_app(config), host, port)
