"""Transformers: multi-step processes whose steps run as tasks (SPEC section 8).

Design note
-----------
* A transformer is a name and a list of step functions, registered with
  :func:`register_transformer`. That also registers the operator
  ``transformer.<name>``: each step is a task of that type with payload
  ``{"session_id": …, "step": n}``, so only workers that know the transformer claim it.
* Session state lives in ``websurfing_transformer_session``: ``current_step`` is the
  step to run next, ``step_data`` holds each finished step's result under its number
  (``{"1": …, "2": …}``) and the people's answers under ``"inputs"``
  (``{"inputs": {"2": "…"}}``).
* A step function gets a :class:`StepInput` (the initial input, earlier results, the
  answer to its question when resumed) and the task's Context. It returns its result
  (JSON), or :class:`Ask` to wait for a person: the session gets
  ``requires_user_input`` and ``user_input_prompt``, and :func:`resume_session` stores
  the answer and runs the same step again with it.
* Atomicity: the step's handler records the result and enqueues the next step in one
  transaction of its own (a pooled connection from the Context), under a row lock on
  the session, after re-checking that the session still expects this step. The
  worker's fenced finish of the task commits separately, afterwards. If the process
  dies between the two, the task is re-run later; the re-run finds the step already
  recorded and returns without running it again. Two runs of one step (a task handed
  back while still running) may both run the step function, but only the first records
  its result. Step functions therefore should be safe to repeat, like any handler.
* A step that fails for good (a permanent error, or its last attempt) records the error
  in ``error_message``; :func:`resume_session` retries that step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row, scalar_row
from psycopg.types.json import Jsonb

from websurf.sql import QUERIES
from websurf.worker.core import payloads, queue
from websurf.worker.core.model import retry_or_fail
from websurf.worker.core.registry import (
    MAX_ATTEMPTS,
    TIMEOUT_S,
    Backoff,
    Context,
    PermanentError,
    Registry,
    Task,
    registry,
)

TASK_TYPE_PREFIX = "transformer."
NAME_MAX_LENGTH = 88  # task types are at most 100 characters
STEP_PRIORITY = 6  # a session is usually something a person is waiting for
INPUTS_KEY = "inputs"
LIST_LIMIT = 50
STATES = ("running", "waiting", "completed", "failed", "cancelled")


class SessionError(ValueError):
    """A session operation was refused; the message says why."""


@dataclass(frozen=True)
class Ask:
    """Returned by a step to wait for a person's answer to ``prompt``."""

    prompt: str


@dataclass(frozen=True)
class StepInput:
    """What a step function is given."""

    session_id: UUID
    step: int
    initial_input: Any
    results: dict[int, Any]  # earlier steps' results by step number
    answer: str | None = None  # the person's answer to this step's question, once resumed


Step = Callable[[StepInput, Context], Any]


@dataclass(frozen=True)
class Transformer:
    name: str
    steps: tuple[Step, ...]

    @property
    def task_type(self) -> str:
        return TASK_TYPE_PREFIX + self.name


_transformers: dict[str, Transformer] = {}


def register_transformer(
    name: str,
    steps: Sequence[Step],
    *,
    timeout_s: float | None = TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
    retry: Backoff | None = None,
    permanent_errors: tuple[type[BaseException], ...] = (),
    operators: Registry = registry,
) -> Transformer:
    """Register a transformer and the operator ``transformer.<name>`` that runs its steps."""
    if not name or len(name) > NAME_MAX_LENGTH:
        raise ValueError(f"transformer name {name!r} must be 1 to {NAME_MAX_LENGTH} characters")
    if not steps:
        raise ValueError(f"transformer {name!r} needs at least one step")
    existing = _transformers.get(name)
    if existing is not None and existing.steps != tuple(steps):
        raise ValueError(f"transformer {name!r} is registered twice")
    transformer = existing or Transformer(name, tuple(steps))
    _transformers[name] = transformer
    if operators.get(transformer.task_type) is None:
        operators.register(
            transformer.task_type,
            _step_handler(transformer, permanent_errors),
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            retry=retry,
            permanent_errors=permanent_errors,
        )
    return transformer


def get_transformer(name: str) -> Transformer:
    found = _transformers.get(name)
    if found is None:
        known = ", ".join(sorted(_transformers)) or "none"
        raise SessionError(f"no transformer {name!r} is registered (known: {known})")
    return found


def transformer_names() -> list[str]:
    return sorted(_transformers)


@dataclass
class Session:
    id: UUID
    session_name: str
    initial_input: Any
    current_step: int
    total_steps: int | None
    step_data: dict[str, Any]
    is_completed: bool
    requires_user_input: bool
    user_input_prompt: str | None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    error_message: str | None = None
    cancelled: bool = field(init=False)

    def __post_init__(self) -> None:
        self.step_data = dict(self.step_data or {})
        self.is_completed = bool(self.is_completed)
        self.requires_user_input = bool(self.requires_user_input)
        self.cancelled = self.cancelled_at is not None

    @property
    def state(self) -> str:
        if self.cancelled:
            return "cancelled"
        if self.is_completed:
            return "completed"
        if self.error_message is not None:
            return "failed"
        if self.requires_user_input:
            return "waiting"
        return "running"

    @property
    def results(self) -> dict[int, Any]:
        return {int(k): v for k, v in self.step_data.items() if k.isdigit()}

    @property
    def inputs(self) -> dict[str, Any]:
        found = self.step_data.get(INPUTS_KEY)
        return dict(found) if isinstance(found, dict) else {}


def _session(row: dict[str, Any] | None) -> Session | None:
    return Session(**row) if row is not None else None


def _fetch(conn: psycopg.Connection[Any], query: str, session_id: UUID | str) -> Session | None:
    try:
        sid = UUID(str(session_id))
    except ValueError:
        raise SessionError(f"{session_id!r} is not a session id") from None
    with conn.cursor(row_factory=dict_row) as cur:
        return _session(cur.execute(QUERIES[query], {"id": sid}).fetchone())


def _save(conn: psycopg.Connection[Any], session: Session) -> None:
    conn.execute(
        QUERIES["save_session"],
        {
            "id": session.id,
            "current_step": session.current_step,
            "step_data": Jsonb(session.step_data),
            "is_completed": session.is_completed,
            "requires_user_input": session.requires_user_input,
            "user_input_prompt": session.user_input_prompt,
            "cancelled": session.cancelled,
            "error_message": session.error_message,
        },
    )


def _enqueue_step(
    conn: psycopg.Connection[Any], transformer: Transformer, session: Session
) -> None:
    queue.enqueue(
        conn,
        transformer.task_type,
        {"session_id": str(session.id), "step": session.current_step},
        priority=STEP_PRIORITY,
        registry=registry,
    )


# -- the Python API ------------------------------------------------------------------


def start_session(conn: psycopg.Connection[Any], name: str, initial_input: Any) -> Session:
    """Create a session of transformer ``name`` and enqueue its first step, atomically."""
    transformer = get_transformer(name)
    if not isinstance(initial_input, dict):
        raise SessionError(
            f"the initial input must be a JSON object, not {type(initial_input).__name__}"
        )
    reason = payloads.problem(initial_input)
    if reason:
        raise SessionError(f"the initial input {reason}")
    with conn.transaction():
        with conn.cursor(row_factory=scalar_row) as cur:
            session_id = cur.execute(
                QUERIES["insert_session"],
                {
                    "session_name": name,
                    "initial_input": Jsonb(initial_input),
                    "total_steps": len(transformer.steps),
                },
            ).fetchone()
        assert session_id is not None
        session = _fetch(conn, "get_session", session_id)
        assert session is not None
        _enqueue_step(conn, transformer, session)
    return session


def get_session(conn: psycopg.Connection[Any], session_id: UUID | str) -> Session:
    session = _fetch(conn, "get_session", session_id)
    if session is None:
        raise SessionError(f"no session {session_id}")
    return session


def list_sessions(
    conn: psycopg.Connection[Any], state: str | None = None, limit: int = LIST_LIMIT
) -> list[Session]:
    if state is not None and state not in STATES:
        raise SessionError(f"state must be one of {', '.join(STATES)}")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(QUERIES["list_sessions"], {"state": state, "limit": limit}).fetchall()
    return [Session(**row) for row in rows]


def resume_session(
    conn: psycopg.Connection[Any], session_id: UUID | str, answer: str | None = None
) -> Session:
    """Record a person's answer to a waiting session (or retry a failed step) and go on."""
    with conn.transaction():
        session = _fetch(conn, "lock_session", session_id)
        if session is None:
            raise SessionError(f"no session {session_id}")
        if session.state in ("cancelled", "completed"):
            raise SessionError(f"session {session.id} is {session.state}: nothing to resume")
        if session.state == "running":
            raise SessionError(f"session {session.id} is running, not waiting for input")
        transformer = get_transformer(session.session_name)
        if session.state == "waiting":
            if answer is None:
                raise SessionError(
                    f"session {session.id} waits for an answer to: {session.user_input_prompt}"
                )
            session.step_data[INPUTS_KEY] = {**session.inputs, str(session.current_step): answer}
            session.requires_user_input = False
            session.user_input_prompt = None
        session.error_message = None
        _save(conn, session)
        _enqueue_step(conn, transformer, session)
    return get_session(conn, session.id)


def cancel_session(conn: psycopg.Connection[Any], session_id: UUID | str) -> Session:
    """Stop a session: it runs no further step, and its pending step task is cancelled."""
    with conn.transaction():
        session = _fetch(conn, "lock_session", session_id)
        if session is None:
            raise SessionError(f"no session {session_id}")
        if session.state in ("cancelled", "completed"):
            raise SessionError(f"session {session.id} is already {session.state}")
        session.cancelled = True
        session.requires_user_input = False
        session.user_input_prompt = None
        _save(conn, session)
        conn.execute(
            QUERIES["cancel_session_tasks"],
            {"task_type": TASK_TYPE_PREFIX + session.session_name, "session_id": session.id},
        )
    return get_session(conn, session.id)


# -- running a step (inside the worker) --------------------------------------------------


def _stale(session: Session | None, step: int) -> str | None:
    """Why the session no longer expects ``step`` to run, or None when it does."""
    if session is None:
        return "the session no longer exists"
    if session.state != "running":
        return f"the session is {session.state}"
    if session.current_step != step:
        return f"the session is at step {session.current_step}"
    return None


def _step_handler(
    transformer: Transformer, permanent_errors: tuple[type[BaseException], ...] = ()
) -> Callable[[Task, Context], Any]:
    permanent: tuple[type[BaseException], ...] = (PermanentError, *permanent_errors)

    def run_step(task: Task, context: Context) -> Any:
        try:
            session_id = str(task.payload["session_id"])
            step = int(task.payload["step"])
        except (KeyError, TypeError, ValueError):
            raise PermanentError("a step task needs session_id and step in its payload") from None
        if not 1 <= step <= len(transformer.steps):
            raise PermanentError(f"{transformer.name} has no step {step}")
        with context.connection() as conn:
            session = _fetch(conn, "get_session", session_id)
        reason = _stale(session, step)
        if reason is not None or session is None:
            context.log.info("transformer_step_skipped", step=step, reason=reason)
            return {"step": step, "skipped": reason}
        given = StepInput(
            session.id,
            step,
            session.initial_input,
            session.results,
            session.inputs.get(str(step)),
        )
        try:
            result = transformer.steps[step - 1](given, context)
        except Exception as exc:
            # The worker decides by the same rule whether this attempt was the last.
            decision = retry_or_fail(
                task.attempt,
                task.max_attempts,
                now=datetime.now(UTC),
                permanent=isinstance(exc, permanent),
            )
            if not decision.retries:
                _record_failure(context, session.id, step, exc)
            raise
        try:
            json.dumps(result.prompt if isinstance(result, Ask) else result)
        except (TypeError, ValueError) as exc:
            error = PermanentError(f"the result of step {step} is not JSON: {exc}")
            _record_failure(context, session.id, step, error)
            raise error from None
        return _record_step(context, transformer, session.id, step, result)

    return run_step


def _record_failure(context: Context, session_id: UUID, step: int, exc: BaseException) -> None:
    with context.connection() as conn, conn.transaction():
        session = _fetch(conn, "lock_session", session_id)
        if _stale(session, step) is None and session is not None:
            session.error_message = f"step {step}: {type(exc).__name__}: {exc}"[:2000]
            _save(conn, session)


def _record_step(
    context: Context, transformer: Transformer, session_id: UUID, step: int, result: Any
) -> dict[str, Any]:
    with context.connection() as conn, conn.transaction():
        session = _fetch(conn, "lock_session", session_id)
        reason = _stale(session, step)
        if reason is not None or session is None:
            context.log.info("transformer_step_discarded", step=step, reason=reason)
            return {"step": step, "skipped": reason}
        if isinstance(result, Ask):
            session.requires_user_input = True
            session.user_input_prompt = result.prompt
            _save(conn, session)
            context.log.info("transformer_waiting", step=step)
            return {"step": step, "asked": result.prompt}
        session.step_data[str(step)] = result
        if step >= len(transformer.steps):
            session.is_completed = True
            _save(conn, session)
            context.log.info("transformer_completed", steps=step)
        else:
            session.current_step = step + 1
            _save(conn, session)
            _enqueue_step(conn, transformer, session)
        return {"step": step, "result": result}
