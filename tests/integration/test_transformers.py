"""Transformer sessions: steps as tasks, step_data, waiting for a person, resume, cancel."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
import structlog
from click.testing import CliRunner

from websurf.cli.main import cli
from websurf.worker.app import transformers
from websurf.worker.app.operators import text  # noqa: F401  (registers word_stats, run alone too)
from websurf.worker.app.transformers import SessionError, StepInput
from websurf.worker.core import queue
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.registry import Context, PermanentError, load_operators

CALLS: dict[str, int] = {"once": 0}
FLAKY = {"broken": True}


def _once(step: StepInput, context: Context) -> dict[str, int]:
    CALLS["once"] += 1
    return {"calls": CALLS["once"]}


def _fragile(step: StepInput, context: Context) -> str:
    if FLAKY["broken"]:
        raise PermanentError("the service said no")
    return "fine"


transformers.register_transformer("test_once", [_once])
transformers.register_transformer("test_fragile", [_once, _fragile])


def drain(url: str, worker_id: str = "test/transformers") -> list[Any]:
    """Run due tasks through claim, handler and the fenced finish; return the outputs."""
    registry = load_operators(())
    outputs: list[Any] = []
    with psycopg.connect(url, autocommit=True) as conn:
        while tasks := queue.claim(conn, worker_id, registry.names(), 10):
            outcomes = []
            for task in tasks:
                op = registry.get(task.task_type)
                assert op is not None
                ctx = Context(
                    log=structlog.get_logger("test"),
                    deadline=time.monotonic() + 30,
                    worker_id=worker_id,
                    _connection=lambda: psycopg.connect(url, autocommit=True),
                )
                try:
                    output = op.handler(task, ctx)
                except Exception as exc:
                    outcomes.append(Outcome(task, Status.FAILED, op.name, error=str(exc)))
                    outputs.append({"error": str(exc)})
                    continue
                outcomes.append(Outcome(task, Status.COMPLETED, op.name, output=output))
                outputs.append(output)
            with conn.transaction():
                queue.finish(conn, worker_id, outcomes)
    return outputs


def _task_states(conn: psycopg.Connection[Any]) -> list[tuple[str, Any, str]]:
    rows = conn.execute(
        "SELECT task_type, payload->'step', status FROM websurfing_task_queue ORDER BY created_at"
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_a_session_runs_its_steps_waits_for_a_person_and_completes(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    started = transformers.start_session(conn, "word_stats", {"text": "the cat saw the hat"})
    assert _task_states(conn) == [("transformer.word_stats", 1, "pending")]

    drain(database_url)
    waiting = transformers.get_session(conn, started.id)

    assert waiting.state == "waiting"
    assert waiting.requires_user_input and waiting.current_step == 2
    assert waiting.user_input_prompt == "Which word should I count?"
    assert waiting.step_data == {"1": {"words": 5}}

    resumed = transformers.resume_session(conn, started.id, "The")
    assert (resumed.state, resumed.requires_user_input, resumed.user_input_prompt) == (
        "running",
        False,
        None,
    )
    drain(database_url)
    done = transformers.get_session(conn, started.id)

    assert done.state == "completed" and done.is_completed and done.completed_at is not None
    assert done.step_data == {
        "1": {"words": 5},
        "2": {"word": "The"},
        "3": {"word": "the", "count": 2, "of_words": 5},
        "inputs": {"2": "The"},
    }
    assert (done.current_step, done.total_steps) == (3, 3)
    assert [s for _, _, s in _task_states(conn)] == ["completed"] * 4


def test_resume_needs_a_waiting_session_and_an_answer(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    started = transformers.start_session(conn, "word_stats", {"text": "a b c"})

    with pytest.raises(SessionError, match="is running, not waiting"):
        transformers.resume_session(conn, started.id, "a")
    drain(database_url)
    with pytest.raises(SessionError, match="waits for an answer to: Which word"):
        transformers.resume_session(conn, started.id)
    with pytest.raises(SessionError, match="no session"):
        transformers.resume_session(conn, "00000000-0000-0000-0000-000000000000", "a")


def test_a_cancelled_session_runs_no_further_step(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    started = transformers.start_session(conn, "word_stats", {"text": "x"})

    cancelled = transformers.cancel_session(conn, started.id)

    assert cancelled.state == "cancelled" and cancelled.cancelled_at is not None
    assert _task_states(conn) == [("transformer.word_stats", 1, "cancelled")]
    assert drain(database_url) == []
    with pytest.raises(SessionError, match="is cancelled: nothing to resume"):
        transformers.resume_session(conn, started.id, "x")
    with pytest.raises(SessionError, match="already cancelled"):
        transformers.cancel_session(conn, started.id)


def test_a_step_that_already_ran_is_not_run_again_by_a_repeated_task(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    started = transformers.start_session(conn, "test_once", {})
    drain(database_url)
    calls = CALLS["once"]

    # As if the worker died after the step recorded its result but before its finish.
    queue.enqueue(conn, "transformer.test_once", {"session_id": str(started.id), "step": 1})
    outputs = drain(database_url)

    assert outputs == [{"step": 1, "skipped": "the session is completed"}]
    assert CALLS["once"] == calls
    assert transformers.get_session(conn, started.id).step_data == {"1": {"calls": calls}}


def test_a_failed_step_is_shown_and_resume_retries_it(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    FLAKY["broken"] = True
    started = transformers.start_session(conn, "test_fragile", {})
    drain(database_url)

    failed = transformers.get_session(conn, started.id)
    assert failed.state == "failed"
    assert failed.error_message == "step 2: PermanentError: the service said no"
    assert [s.id for s in transformers.list_sessions(conn, "failed")] == [started.id]

    FLAKY["broken"] = False
    transformers.resume_session(conn, started.id)
    drain(database_url)

    done = transformers.get_session(conn, started.id)
    assert (done.state, done.error_message, done.step_data["2"]) == ("completed", None, "fine")


def test_the_sessions_command_lists_shows_resumes_and_cancels(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    waiting = transformers.start_session(conn, "word_stats", {"text": "to be or not to be"})
    other = transformers.start_session(conn, "word_stats", {"text": "x"})
    drain(database_url)
    runner = CliRunner()
    base = ["--database-url", database_url]

    listed = runner.invoke(cli, ["sessions", "list", "--state", "waiting", *base])
    shown = runner.invoke(cli, ["sessions", "show", str(waiting.id), *base])
    resumed = runner.invoke(cli, ["sessions", "resume", str(waiting.id), "--input", "be", *base])
    cancelled = runner.invoke(cli, ["sessions", "cancel", str(other.id), *base])
    again = runner.invoke(cli, ["sessions", "cancel", str(other.id), *base])
    drain(database_url)

    assert listed.exit_code == 0 and str(waiting.id) in listed.output
    assert "waiting" in listed.output
    assert shown.exit_code == 0 and "Which word should I count?" in shown.output
    assert resumed.exit_code == 0 and "running" in resumed.output
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    assert again.exit_code == 1 and "already cancelled" in again.output
    done = transformers.get_session(conn, waiting.id)
    assert done.step_data["3"] == {"word": "be", "count": 2, "of_words": 6}
