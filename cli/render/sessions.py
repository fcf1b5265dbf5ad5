"""What ``websurf sessions`` prints: transformer sessions as lines or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from websurf.cli.render import to_json
from websurf.worker.app.transformers import Session


def session_line(session: Session) -> str:
    """One session in a line: id, transformer, state, step, and what it asks or why it failed."""
    step = f"step {session.current_step}/{session.total_steps or '?'}"
    line = f"{session.id}  {session.session_name:<20} {session.state:<9} {step}"
    if session.requires_user_input:
        line += f"  asks: {session.user_input_prompt}"
    if session.error_message:
        line += f"  error: {session.error_message}"
    return line


def _fields(session: Session) -> dict[str, Any]:
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
        "created_at": session.created_at,
        "completed_at": session.completed_at,
        "cancelled_at": session.cancelled_at,
    }


def sessions_json(sessions: Sequence[Session]) -> str:
    return to_json([_fields(s) for s in sessions], indent=2)


def session_json(session: Session) -> str:
    return to_json(_fields(session), indent=2)


def session_detail(session: Session) -> list[str]:
    """One session: its line, its input, each step's result and the answers given."""
    lines = [session_line(session), f"  input: {json.dumps(session.initial_input)}"]
    for number, result in sorted(session.results.items()):
        lines.append(f"  step {number}: {json.dumps(result)}")
    for asked, answer in sorted(session.inputs.items()):
        lines.append(f"  answer to step {asked}: {answer}")
    if session.completed_at:
        lines.append(f"  completed at {session.completed_at.isoformat()}")
    if session.cancelled_at:
        lines.append(f"  cancelled at {session.cancelled_at.isoformat()}")
    return lines
