"""What robot cells do when their input is cleared or their spreadsheet is deleted."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import structlog

from websurf.worker import sheets
from websurf.worker.operators.text import uppercase, word_count
from websurf.worker.queue import COMPLETED, Outcome, claim, finish, record_robot_events
from websurf.worker.registry import Context

WORKER = "test-host/0/robots"
HANDLERS = {"uppercase": uppercase, "word_count": word_count}


def _run_pending(conn: psycopg.Connection[Any]) -> None:
    """Claim every pending task, run its built-in handler, record as the worker does."""
    tasks = claim(conn, WORKER, list(HANDLERS), 100)
    context = Context(
        log=structlog.get_logger("test"), deadline=time.monotonic() + 30, worker_id=WORKER
    )
    outcomes = []
    for task in tasks:
        result = HANDLERS[task.task_type](task, context)
        outcomes.append(
            Outcome(
                task,
                COMPLETED,
                task.task_type,
                output=result.output,
                writes_cell=result.writes_cell,
                cell_content=result.cell_content,
            )
        )
    with conn.transaction():
        finish(conn, WORKER, outcomes)
        record_robot_events(conn, outcomes)


@pytest.fixture
def sheet(conn: psycopg.Connection[Any], make_user: Callable[..., str]) -> tuple[str, Any]:
    """Column A feeds B (uppercase) and C (word_count)."""
    user = make_user()
    created = sheets.create_spreadsheet(conn, user, "robots", columns=3, rows=2)
    a, b, c = sheets.list_columns(conn, created.id)
    sheets.set_column_operator(conn, b.id, "uppercase", source_column_id=a.id)
    sheets.set_column_operator(conn, c.id, "word_count", source_column_id=a.id)
    return user, created


@pytest.mark.parametrize("cleared", [None, "", "   "])
def test_clearing_the_source_clears_its_robot_cells(
    conn: psycopg.Connection[Any], sheet: tuple[str, Any], cleared: str | None
) -> None:
    user, created = sheet
    a, b, c = sheets.list_columns(conn, created.id)
    sheets.edit_cell(conn, created.id, a.id, 1, "two words", user_id=user)
    _run_pending(conn)
    assert sheets.get_cell(conn, created.id, b.id, 1).content == "TWO WORDS"  # type: ignore[union-attr]
    assert sheets.get_cell(conn, created.id, c.id, 1).content == "2"  # type: ignore[union-attr]

    sheets.edit_cell(conn, created.id, a.id, 1, cleared, user_id=user)
    _run_pending(conn)

    assert sheets.get_cell(conn, created.id, b.id, 1).content is None  # type: ignore[union-attr]
    assert sheets.get_cell(conn, created.id, c.id, 1).content is None  # type: ignore[union-attr]


def test_deleting_a_spreadsheet_cancels_its_pending_robot_tasks(
    conn: psycopg.Connection[Any], sheet: tuple[str, Any]
) -> None:
    user, created = sheet
    a = sheets.list_columns(conn, created.id)[0]
    for row in (1, 2):
        sheets.edit_cell(conn, created.id, a.id, row, f"row {row}", user_id=user)
    assert conn.execute("SELECT count(*) FROM websurfing_task_queue").fetchone() == (4,)

    conn.execute("DELETE FROM websurfing_spreadsheet WHERE id = %s", (created.id,))

    rows = conn.execute("SELECT status, error_message FROM websurfing_task_queue").fetchall()
    assert [status for status, _ in rows] == ["cancelled"] * 4
    assert all("its cell was deleted" in error for _, error in rows)
    assert claim(conn, WORKER, list(HANDLERS), 100) == []
