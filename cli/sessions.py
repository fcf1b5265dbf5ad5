"""``websurf sessions``: list, show, start, resume and cancel transformer sessions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import psycopg

from websurf.cli.options import (
    JSON_OBJECT,
    Runtime,
    argument,
    json_option,
    open_db,
    operators_option,
    option,
    pass_runtime,
)
from websurf.cli.render import EXIT_USAGE, echo, echo_lines, one_line_errors
from websurf.cli.render.sessions import (
    session_detail,
    session_json,
    session_line,
    sessions_json,
)
from websurf.worker.app import transformers
from websurf.worker.app.transformers import STATES, SessionError
from websurf.worker.core.registry import OperatorError, load_operators

_operators_option = operators_option(
    "Module that registers operators and transformers (repeatable)."
)


@contextmanager
def _session_conn(
    rt: Runtime, operator_modules: tuple[str, ...] = ()
) -> Iterator[psycopg.Connection[Any]]:
    with one_line_errors(OperatorError, exit_code=EXIT_USAGE):
        load_operators(operator_modules)
    with open_db(rt) as conn, one_line_errors(SessionError):
        yield conn


@click.group("sessions")
def sessions_group() -> None:
    """Transformer sessions: multi-step processes that may wait for a person."""


@sessions_group.command("list")
@pass_runtime
@option("--state", type=click.Choice(STATES), default=None, help="Only sessions in this state.")
@option("--limit", type=click.IntRange(1, 10000), default=50, help="Most sessions to list.")
@json_option("Print JSON.")
def list_command(rt: Runtime, state: str | None, limit: int, as_json: bool) -> None:
    """List sessions, newest first."""
    with _session_conn(rt) as conn:
        found = transformers.list_sessions(conn, state, limit)
    if as_json:
        echo(sessions_json(found))
        return
    echo_lines([session_line(s) for s in found] or ["no sessions"])


@sessions_group.command("show")
@pass_runtime
@argument("session_id")
@json_option("Print JSON.")
def show_command(rt: Runtime, session_id: str, as_json: bool) -> None:
    """Show one session: its state, each step's result and the answers given."""
    with _session_conn(rt) as conn:
        session = transformers.get_session(conn, session_id)
    echo_lines([session_json(session)] if as_json else session_detail(session))


@sessions_group.command("start")
@pass_runtime
@argument("transformer")
@option("--input", "given", type=JSON_OBJECT, default="{}", help="The initial input, as JSON.")
@_operators_option
def start_command(
    rt: Runtime, transformer: str, given: dict[str, Any], operator_modules: tuple[str, ...]
) -> None:
    """Start a session of TRANSFORMER; its first step is queued for the workers."""
    with _session_conn(rt, operator_modules) as conn:
        session = transformers.start_session(conn, transformer, given)
    echo(str(session.id))


@sessions_group.command("resume")
@pass_runtime
@argument("session_id")
@option("--input", "answer", default=None, help="The answer to the question the session asks.")
@_operators_option
def resume_command(
    rt: Runtime, session_id: str, answer: str | None, operator_modules: tuple[str, ...]
) -> None:
    """Answer a waiting session (or retry a failed step) and let it go on."""
    with _session_conn(rt, operator_modules) as conn:
        session = transformers.resume_session(conn, session_id, answer)
    echo(session_line(session))


@sessions_group.command("cancel")
@pass_runtime
@argument("session_id")
def cancel_command(rt: Runtime, session_id: str) -> None:
    """Cancel a session: no further step runs."""
    with _session_conn(rt) as conn:
        session = transformers.cancel_session(conn, session_id)
    echo(session_line(session))
