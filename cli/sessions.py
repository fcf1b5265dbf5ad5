"""``websurf sessions``: list, show, start, resume and cancel transformer sessions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import psycopg

from websurf.cli.options import CommandError, common_options, database_errors, echo, option, runtime
from websurf.sql.database import connect
from websurf.worker.app import transformers
from websurf.worker.app.transformers import STATES, Session, SessionError
from websurf.worker.core.payloads import PayloadError, parse_object
from websurf.worker.core.registry import OperatorError, load_operators

_operators_option = option(
    "--operators",
    "operator_modules",
    multiple=True,
    default=(),
    help="Module that registers operators and transformers (repeatable).",
)


@contextmanager
def _session_conn(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    operator_modules: tuple[str, ...] = (),
) -> Iterator[psycopg.Connection[Any]]:
    rt = runtime(ctx, database_url, log_level, log_format)
    try:
        load_operators(operator_modules)
    except OperatorError as exc:
        raise CommandError(str(exc), 2) from None
    with database_errors(), connect(rt.database().url, autocommit=True) as conn:
        try:
            yield conn
        except SessionError as exc:
            raise CommandError(str(exc)) from None


def _summary(session: Session) -> str:
    step = f"step {session.current_step}/{session.total_steps or '?'}"
    line = f"{session.id}  {session.session_name:<20} {session.state:<9} {step}"
    if session.requires_user_input:
        line += f"  asks: {session.user_input_prompt}"
    if session.error_message:
        line += f"  error: {session.error_message}"
    return line


def _as_json(session: Session) -> dict[str, Any]:
    return {
        "id": str(session.id),
        "transformer": session.session_name,
        "state": session.state,
        "current_step": session.current_step,
        "total_steps": session.total_steps,
        "initial_input": session.initial_input,
        "step_data": session.step_data,
        "requires_user_input": session.requires_user_input,
        "user_input_prompt": session.user_input_prompt,
        "error_message": session.error_message,
        "created_at": session.created_at.isoformat() if session.created_at else None,
        "completed_at": session.completed_at.isoformat() if session.completed_at else None,
        "cancelled_at": session.cancelled_at.isoformat() if session.cancelled_at else None,
    }


def _show(session: Session) -> None:
    echo(_summary(session))
    echo(f"  input: {json.dumps(session.initial_input)}")
    for number, result in sorted(session.results.items()):
        echo(f"  step {number}: {json.dumps(result)}")
    for asked, answer in sorted(session.inputs.items()):
        echo(f"  answer to step {asked}: {answer}")
    if session.completed_at:
        echo(f"  completed at {session.completed_at.isoformat()}")
    if session.cancelled_at:
        echo(f"  cancelled at {session.cancelled_at.isoformat()}")


@click.group("sessions")
def sessions_group() -> None:
    """Transformer sessions: multi-step processes that may wait for a person."""


@sessions_group.command("list")
@common_options
@option("--state", type=click.Choice(STATES), default=None, help="Only sessions in this state.")
@option("--limit", type=click.IntRange(1, 10000), default=50, help="Most sessions to list.")
@option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
@click.pass_context
def list_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    state: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List sessions, newest first."""
    with _session_conn(ctx, database_url, log_level, log_format) as conn:
        found = transformers.list_sessions(conn, state, limit)
    if as_json:
        echo(json.dumps([_as_json(s) for s in found], indent=2))
        return
    for session in found:
        echo(_summary(session))
    if not found:
        echo("no sessions")


@sessions_group.command("show")
@common_options
@click.argument("session_id")
@option("--json", "as_json", is_flag=True, default=False, help="Print JSON.")
@click.pass_context
def show_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    session_id: str,
    as_json: bool,
) -> None:
    """Show one session: its state, each step's result and the answers given."""
    with _session_conn(ctx, database_url, log_level, log_format) as conn:
        session = transformers.get_session(conn, session_id)
    if as_json:
        echo(json.dumps(_as_json(session), indent=2))
    else:
        _show(session)


@sessions_group.command("start")
@common_options
@click.argument("transformer")
@option("--input", "given", default="{}", help="The initial input, as JSON.")
@_operators_option
@click.pass_context
def start_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    transformer: str,
    given: str,
    operator_modules: tuple[str, ...],
) -> None:
    """Start a session of TRANSFORMER; its first step is queued for the workers."""
    try:
        initial = parse_object(given)
    except PayloadError as exc:
        raise CommandError(f"--input {exc}", 2) from None
    with _session_conn(ctx, database_url, log_level, log_format, operator_modules) as conn:
        session = transformers.start_session(conn, transformer, initial)
    echo(str(session.id))


@sessions_group.command("resume")
@common_options
@click.argument("session_id")
@option("--input", "answer", default=None, help="The answer to the question the session asks.")
@_operators_option
@click.pass_context
def resume_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    session_id: str,
    answer: str | None,
    operator_modules: tuple[str, ...],
) -> None:
    """Answer a waiting session (or retry a failed step) and let it go on."""
    with _session_conn(ctx, database_url, log_level, log_format, operator_modules) as conn:
        session = transformers.resume_session(conn, session_id, answer)
    echo(_summary(session))


@sessions_group.command("cancel")
@common_options
@click.argument("session_id")
@click.pass_context
def cancel_command(
    ctx: click.Context, database_url: str | None, log_level: str, log_format: str, session_id: str
) -> None:
    """Cancel a session: no further step runs."""
    with _session_conn(ctx, database_url, log_level, log_format) as conn:
        session = transformers.cancel_session(conn, session_id)
    echo(_summary(session))
