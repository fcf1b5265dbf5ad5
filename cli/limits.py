"""``websurf limits set|list|remove``: limits across the cluster, by operator and key.

Thin: the work is done by :mod:`websurf.worker.core.limits`; a :class:`LimitError`
becomes a one-line error.
"""

from __future__ import annotations

from datetime import timedelta

import click

from websurf.cli.options import (
    DURATION,
    Runtime,
    argument,
    json_option,
    open_db,
    option,
    pass_runtime,
)
from websurf.cli.render import EXIT_USAGE, echo, one_line_errors, to_json
from websurf.cli.render.limits import limit_lines, limit_name
from websurf.worker.core import limits
from websurf.worker.core.registry import Limit, LimitError


@click.group("limits")
def limits_group() -> None:
    """Limits across the cluster: tasks running at once, starts per period, pauses."""


@limits_group.command("set")
@pass_runtime
@argument("operator")
@option("--key", default=None, help="Only tasks with this limit key [default: all].")
@option("--max-running", type=int, default=None, help="At most this many running at once.")
@option("--rate", type=int, default=None, help="At most this many started per period.")
@option("--per", type=DURATION, default=None, help="The rate's period, e.g. 1s, 1m, 1h.")
@option("--burst", type=int, default=None, help="At most this many in burst/rate of it.")
def set_command(
    rt: Runtime,
    operator: str,
    key: str | None,
    max_running: int | None,
    rate: int | None,
    per: timedelta | None,
    burst: int | None,
) -> None:
    """Limit OPERATOR (or its tasks with --key) on every worker; replaces its limit."""
    per_s = per.total_seconds() if per is not None else None
    limit = Limit(max_running=max_running, rate=rate, per_s=per_s, burst=burst, key=key)
    with one_line_errors(LimitError, exit_code=EXIT_USAGE):
        limit.validate(operator)
    with open_db(rt) as conn, one_line_errors(LimitError, exit_code=EXIT_USAGE):
        limits.set_limit(conn, operator, limit)
    echo(f"{limit_name(operator, key)}: {limit.describe()}")


@limits_group.command("list")
@pass_runtime
@json_option("Print a JSON array.")
def list_command(rt: Runtime, as_json: bool) -> None:
    """Every limit, what runs and waits under it, and why tasks wait."""
    with open_db(rt) as conn:
        states = limits.limit_states(conn)
    if as_json:
        echo(to_json(states, indent=2))
    else:
        echo("\n".join(limit_lines(states)) if states else "no limits")


@limits_group.command("remove")
@pass_runtime
@argument("operator")
@option("--key", default=None, help="The key's limit [default: the operator's own].")
def remove_command(rt: Runtime, operator: str, key: str | None) -> None:
    """Delete the limit of OPERATOR (or of its --key). A limit declared in code comes back
    when a worker starts: remove it from the code too."""
    with open_db(rt) as conn, one_line_errors(LimitError):
        source = limits.remove_limit(conn, operator, key)
    echo(
        f"{limit_name(operator, key)}: removed"
        + (" (declared in code)" if source == "code" else "")
    )
