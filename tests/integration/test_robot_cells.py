"""What robot cells do when their input is cleared or their spreadsheet is deleted."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import structlog
from psycopg import conninfo, sql

from websurf.sql import QUERIES
from websurf.worker.app import sheets
from websurf.worker.app.operators.text import uppercase, word_count
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.queue import claim, finish, record_robot_events
from websurf.worker.core.registry import Context

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
                Status.COMPLETED,
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

    with conn.transaction():  # deleting cells with content names its author (issue 11)
        sheets.name_author(conn, user)
        conn.execute("DELETE FROM websurfing_spreadsheet WHERE id = %s", (created.id,))

    rows = conn.execute("SELECT status, error_message FROM websurfing_task_queue").fetchall()
    assert [status for status, _ in rows] == ["cancelled"] * 4
    assert all("its cell was deleted" in error for _, error in rows)
    assert claim(conn, WORKER, list(HANDLERS), 100) == []


@pytest.fixture
def app_url(database_url: str, pg_server: str) -> Iterator[str]:
    """The test database as a web-app role that may only read and change sheets and cells."""
    name = f"websurf_test_app_{uuid.uuid4().hex[:10]}"
    role = sql.Identifier(name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
    with psycopg.connect(database_url, autocommit=True) as owner:
        owner.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON websurfing_spreadsheet,"
                " websurfing_column, websurfing_cell TO {}"
            ).format(role)
        )
        owner.execute(sql.SQL("GRANT SELECT ON websurfing_task_queue TO {}").format(role))
    try:
        yield conninfo.make_conninfo(database_url, user=name)
    finally:
        with psycopg.connect(database_url, autocommit=True) as owner:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(role))
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))


def test_a_role_that_may_only_edit_cells_gets_audit_tasks_and_cancellation(
    conn: psycopg.Connection[Any], sheet: tuple[str, Any], app_url: str
) -> None:
    """The edit trigger (coalescing upsert, version sequence) and the delete trigger run as
    the schema owner: the web app's role needs no rights on the queue or audit tables."""
    user, created = sheet
    a = sheets.list_columns(conn, created.id)[0]
    with psycopg.connect(app_url) as app:
        for text in ("first", "second"):  # the second coalesces into the first's tasks
            app.execute("SELECT set_config('websurf.user_id', %s, true)", (user,))
            app.execute(
                "UPDATE websurfing_cell SET content = %s WHERE column_id = %s AND row_number = 1",
                (text, a.id),
            )
            app.commit()
        tasks = app.execute("SELECT task_type, payload->>'input' FROM websurfing_task_queue")
        assert sorted(tasks.fetchall()) == [("uppercase", "second"), ("word_count", "second")]
        assert conn.execute("SELECT count(*) FROM websurfing_cell_edit_event").fetchone() == (2,)

        app.execute("SELECT set_config('websurf.user_id', %s, true)", (user,))  # issue 11
        app.execute("DELETE FROM websurfing_spreadsheet WHERE id = %s", (created.id,))
        app.commit()
        statuses = app.execute("SELECT DISTINCT status FROM websurfing_task_queue").fetchall()
    assert statuses == [("cancelled",)]


def _scans(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "Relation Name" in plan:
        yield plan["Node Type"], plan["Relation Name"]
    for child in plan.get("Plans", []):
        yield from _scans(child)


def _results_on_a_big_sheet(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> dict[str, Any]:
    """The parameters of a batch of 500 robot results for cells of a 20,000-cell sheet."""
    created = sheets.create_spreadsheet(conn, make_user(), "big", columns=1, rows=1)
    [column] = sheets.list_columns(conn, created.id)
    conn.execute(
        "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
        " SELECT %s, %s, n FROM generate_series(2, 20000) AS n",
        (created.id, column.id),
    )
    conn.execute("ANALYZE websurfing_cell")
    cells = [row[0] for row in conn.execute("SELECT id FROM websurfing_cell LIMIT 500")]
    n = len(cells)
    return {
        "cell_ids": cells,
        "task_ids": [uuid.uuid4() for _ in cells],
        "operator_types": ["uppercase"] * n,
        "inputs": [None] * n,
        "outputs": [None] * n,
        "durations_ms": [1] * n,
        "successes": [True] * n,
        "errors": [None] * n,
        "writes": [True] * n,
        "versions": [None] * n,
        "cancelled": None,
        "contents": ["X"] * n,
    }


def test_a_batch_of_cell_writes_finds_its_cells_by_key_on_a_big_sheet(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    """500 results on a sheet of 20,000 cells: the recorder's cell write probes the cells'
    primary key. Given 500 ids the planner read the whole table instead (the benchmark's
    audited cell tasks: 12,900 tasks/s from worker start with it, 14,400/s without)."""
    params = _results_on_a_big_sheet(conn, make_user)

    row = conn.execute(
        sql.SQL("EXPLAIN (FORMAT JSON) ") + QUERIES["write_robot_cells"], params, prepare=False
    ).fetchone()

    assert row is not None
    scans = list(_scans(row[0][0]["Plan"]))
    assert ("Seq Scan", "websurfing_cell") not in scans, scans


def test_a_batch_of_robot_rows_finds_its_cells_by_key_on_a_big_sheet(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    """The same batch recorded: websurf.record_robot_results (0036) judges it inside the
    database, out of EXPLAIN's reach, so the transaction's own scan counts tell how it
    read the cells: by their primary key, never the whole table."""
    params = _results_on_a_big_sheet(conn, make_user)
    counts = "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relid = %s::regclass"

    with conn.transaction():
        # the tasks are made up: no guards or foreign keys, only the statement's reads
        conn.execute("SET LOCAL session_replication_role = replica")
        before = conn.execute(counts, ("websurfing_cell",)).fetchone()
        recorded = conn.execute(
            QUERIES["insert_judged_robot_events"], params, prepare=False
        ).fetchall()
        after = conn.execute(counts, ("websurfing_cell",)).fetchone()
        raise psycopg.Rollback()  # nothing of it is kept

    assert len(recorded) == 500 and not any(writable for _, writable, _ in recorded)
    assert before is not None and after is not None
    assert after[0] == before[0], "record_robot_results read websurfing_cell whole"
    assert after[1] > before[1]
