"""The ``websurf`` command group.

Commands are imported when they are run, not when ``websurf`` starts: the worker's
supervisor then starts its processes without first importing every other command's
dependencies (a measurable part of the daemon's start-up).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from websurf.cli.render import usage_errors_in_one_line

# name -> (module, attribute); a command's module is imported only when it is used.
COMMANDS: dict[str, tuple[str, str]] = {
    "migrate": ("websurf.cli.migrate", "migrate_command"),
    "worker": ("websurf.cli.worker", "worker_command"),
    "enqueue": ("websurf.cli.enqueue", "enqueue_command"),
    "status": ("websurf.cli.status", "status_command"),
    "tasks": ("websurf.cli.tasks", "tasks_command"),
    "prune": ("websurf.cli.prune", "prune_command"),
    "schedules": ("websurf.cli.schedules", "schedules_group"),
    "limits": ("websurf.cli.limits", "limits_group"),
    "sheets": ("websurf.cli.sheets", "sheets_group"),
    "sessions": ("websurf.cli.sessions", "sessions_group"),
    "demo": ("websurf.cli.demo", "demo_command"),
    "bench": ("websurf.cli.bench", "bench_command"),
    "dashboard": ("websurf.cli.dashboard", "dashboard_command"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        command: Any = getattr(importlib.import_module(target[0]), target[1])
        assert isinstance(command, click.Command)
        return command

    # Every usage error below this group (a subcommand's options are parsed in invoke).
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with usage_errors_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with usage_errors_in_one_line():
            return super().invoke(ctx)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="websurf", prog_name="websurf")
def cli() -> None:
    """websurf: the PostgreSQL data layer and background worker of Websurfing.

    Every option can also be set with an environment variable WEBSURF_<OPTION>;
    with no database URL configured, commands use an embedded PostgreSQL.
    """


def main() -> None:
    cli(prog_name="websurf")
