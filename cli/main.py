"""The ``websurf`` command group."""

from __future__ import annotations

from importlib.metadata import version

import click

from websurf.cli import (
    bench,
    demo,
    enqueue,
    migrate,
    prune,
    sessions,
    sheets,
    status,
    tasks,
    worker,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(version("websurf"), prog_name="websurf")
def cli() -> None:
    """websurf: the PostgreSQL data layer and background worker of Websurfing.

    Every option can also be set with an environment variable WEBSURF_<OPTION>;
    with no database URL configured, commands use an embedded PostgreSQL.
    """


cli.add_command(migrate.migrate_command)
cli.add_command(worker.worker_command)
cli.add_command(enqueue.enqueue_command)
cli.add_command(sheets.sheets_group)
cli.add_command(sessions.sessions_group)
cli.add_command(demo.demo_command)
cli.add_command(status.status_command)
cli.add_command(tasks.tasks_command)
cli.add_command(prune.prune_command)
cli.add_command(bench.bench_command)


def main() -> None:
    cli(prog_name="websurf")
