"""The audit trail cannot be forged or erased by the roles that write cells.

What a user would notice: a robot row (and with it a robot's write of a cell) is
accepted only from the worker's role and only for a task that same transaction ended
for that cell; moving or deleting a cell with content, also by deleting its spreadsheet,
names its author or is refused, and the record of it outlives the cell; robot rows
cannot be rewritten. Roles are real logins (CREATE ROLE … LOGIN), created per test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb
from support.rows import robot_payloads

from websurf.worker.app import sheets
from websurf.worker.core import queue
from websurf.worker.core.model import Outcome, Status

WORKER = "test/guard"


@pytest.fixture
def sheet(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> tuple[str, sheets.Spreadsheet, sheets.Column, sheets.Cell]:
    """A user, a 1x2 sheet and its cell A1 holding 'alice wrote this' (by that user)."""
    user = make_user()
    created = sheets.create_spreadsheet(conn, user, "Guarded", columns=1, rows=2)
    [column] = sheets.list_columns(conn, created.id)
    cell = sheets.edit_cell(conn, created.id, column.id, 1, "alice wrote this", user_id=user)
    return user, created, column, cell


def _claim(conn: psycopg.Connection[Any], payload: dict[str, Any]) -> Any:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('alpha', %s)",
        (Jsonb(payload),),
    )
    [task] = queue.claim(conn, WORKER, ["alpha"], 1)
    return task


def _content(conn: psycopg.Connection[Any], cell_id: Any) -> Any:
    row = conn.execute("SELECT content FROM websurfing_cell WHERE id = %s", (cell_id,)).fetchone()
    return row[0] if row else None


def _robot_row(conn: psycopg.Connection[Any], cell_id: Any, task_id: Any = None) -> None:
    conn.execute(
        "INSERT INTO websurfing_robot_input_event (cell_id, task_id, operator_type)"
        " VALUES (%s, %s, 'uppercase')",
        (cell_id, task_id),
    )


def test_the_forgery_from_the_issue_is_refused_at_each_step(
    conn: psycopg.Connection[Any], sheet: Any
) -> None:
    """Delete the cell, recreate it empty, claim a robot wrote it: all as a superuser."""
    _user, created, column, cell = sheet
    with pytest.raises(errors.CheckViolation, match="deleting a cell with content must name"):
        conn.execute("DELETE FROM websurfing_cell WHERE id = %s", (cell.id,))
    with conn.transaction():
        blank = conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
            " VALUES (%s, %s, 3) RETURNING id",
            (created.id, column.id),
        ).fetchone()
    assert blank is not None
    with pytest.raises(errors.CheckViolation, match="must belong to a task"):
        _robot_row(conn, blank[0])
    with pytest.raises(errors.CheckViolation, match="must name their author"):
        conn.execute(
            "UPDATE websurfing_cell SET content = 'mallory wrote this' WHERE id = %s", (blank[0],)
        )
    assert _content(conn, cell.id) == "alice wrote this"
    assert _content(conn, blank[0]) is None


def test_a_robot_row_needs_a_task_this_transaction_ended_for_that_cell(
    conn: psycopg.Connection[Any],
) -> None:
    first, second = robot_payloads(conn, "alpha", 2)
    cell, other = (sheets.get_cell_by_id(conn, p["cell_id"]) for p in (first, second))
    assert cell is not None and other is not None
    task = _claim(conn, first)

    # held in processing, but not ended by this transaction
    with pytest.raises(errors.CheckViolation, match="must belong to a task"):
        _robot_row(conn, cell.id, task.id)
    # ended here, but its payload names another cell
    with pytest.raises(errors.CheckViolation, match="must belong to a task"), conn.transaction():
        queue.finish(conn, WORKER, [Outcome(task, Status.COMPLETED, "alpha")])
        _robot_row(conn, other.id, task.id)
    # a failed attempt's row does not excuse a write of the cell
    with pytest.raises(errors.CheckViolation, match="must name their author"), conn.transaction():
        queue.finish(conn, WORKER, [Outcome(task, Status.FAILED, "alpha", error="x")])
        queue.record_robot_events(conn, [Outcome(task, Status.FAILED, "alpha", error="x")])
        conn.execute("UPDATE websurfing_cell SET content = 'forged' WHERE id = %s", (cell.id,))
    # the worker's own path: finish, then its robot row and the write, in one transaction
    done = Outcome(task, Status.COMPLETED, "alpha", writes_cell=True, cell_content="ROBOT")
    with conn.transaction():
        assert queue.finish(conn, WORKER, [done]) == {task.id}
        assert queue.record_robot_events(conn, [done]) == 1
    assert _content(conn, cell.id) == "ROBOT"
    # and once ended, the task excuses nothing more
    with pytest.raises(errors.CheckViolation, match="must belong to a task"):
        _robot_row(conn, cell.id, task.id)


def test_robot_rows_cannot_be_rewritten_only_detached(conn: psycopg.Connection[Any]) -> None:
    task = _claim(conn, robot_payloads(conn, "alpha", 1)[0])
    done = Outcome(task, Status.COMPLETED, "alpha", writes_cell=True, cell_content="ROBOT")
    with conn.transaction():
        queue.finish(conn, WORKER, [done])
        queue.record_robot_events(conn, [done])

    for change in (
        "UPDATE websurfing_robot_input_event SET success = false",
        "UPDATE websurfing_robot_input_event SET error_message = 'x'",
        "UPDATE websurfing_robot_input_event SET task_id = gen_random_uuid()",
    ):
        with pytest.raises(errors.CheckViolation, match="append-only"):
            conn.execute(change)
    conn.execute("UPDATE websurfing_robot_input_event SET task_id = NULL")  # what prune does
    assert conn.execute("SELECT task_id, success FROM websurfing_robot_input_event").fetchall() == [
        (None, True)
    ]


def test_moving_a_cell_with_content_names_its_author(
    conn: psycopg.Connection[Any], sheet: Any, make_user: Callable[..., str]
) -> None:
    user, created, _column, cell = sheet
    elsewhere = sheets.create_spreadsheet(conn, make_user(), "Other", columns=1, rows=0)
    [target] = sheets.list_columns(conn, elsewhere.id)
    move = (
        "UPDATE websurfing_cell SET spreadsheet_id = %s, column_id = %s, row_number = 7"
        " WHERE id = %s"
    )

    with pytest.raises(errors.CheckViolation, match="moving a cell with content must name"):
        conn.execute(move, (elsewhere.id, target.id, cell.id))
    with conn.transaction():
        sheets.name_author(conn, user)
        conn.execute(move, (elsewhere.id, target.id, cell.id))
    # a blank cell moves freely
    conn.execute("UPDATE websurfing_cell SET row_number = 9 WHERE content IS NULL")

    rows = conn.execute(
        "SELECT cell_id, user_id, action, content, spreadsheet_id, row_number,"
        " new_spreadsheet_id, new_column_id, new_row_number"
        " FROM websurfing_cell_position_event"
    ).fetchall()
    assert rows == [
        (cell.id, user, "moved", "alice wrote this", created.id, 1, elsewhere.id, target.id, 7)
    ]


def test_deleting_cells_with_content_names_its_author_and_the_record_outlives_them(
    conn: psycopg.Connection[Any], sheet: Any
) -> None:
    user, created, column, cell = sheet
    blank = sheets.create_spreadsheet(conn, user, "Blank", columns=2, rows=3)

    conn.execute("DELETE FROM websurfing_spreadsheet WHERE id = %s", (blank.id,))  # no content
    for statement, target in (
        ("DELETE FROM websurfing_column WHERE id = %s", column.id),
        ("DELETE FROM websurfing_spreadsheet WHERE id = %s", created.id),
    ):
        with pytest.raises(errors.CheckViolation, match="deleting a cell with content must name"):
            conn.execute(statement, (target,))
    with conn.transaction():
        sheets.name_author(conn, user)
        conn.execute("DELETE FROM websurfing_spreadsheet WHERE id = %s", (created.id,))

    assert _content(conn, cell.id) is None  # the cell is gone, with its edit history
    rows = conn.execute(
        "SELECT cell_id, user_id, action, content, spreadsheet_id, column_id, row_number"
        " FROM websurfing_cell_position_event"
    ).fetchall()
    assert rows == [(cell.id, user, "deleted", "alice wrote this", created.id, column.id, 1)]
    [deletion, *_edits] = sheets.audit_trail(conn, created.id)  # newest first
    assert (deletion["action"], deletion["old_content"], deletion["row_number"]) == (
        "deleted",
        "alice wrote this",
        1,
    )
    assert [h["action"] for h in sheets.cell_history(conn, cell.id)] == ["deleted"]


def test_a_robot_row_only_from_the_worker_role(
    conn: psycopg.Connection[Any], sheet: Any, make_login: Callable[..., str]
) -> None:
    """The web app's role, a non-superuser owner of the tables, and the worker's role."""
    _user, _created, _column, cell = sheet
    [payload] = robot_payloads(conn, "alpha", 1)
    task = _claim(conn, payload)
    app_url = make_login("websurf_app")
    owner_url = make_login(owns=("websurfing_robot_input_event", "websurfing_task_queue"))
    worker_url = make_login("websurf_worker")

    with psycopg.connect(app_url, autocommit=True) as app:
        with pytest.raises(errors.InsufficientPrivilege):
            _robot_row(app, payload["cell_id"], task.id)
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute("DELETE FROM websurfing_robot_input_event")
    with psycopg.connect(owner_url, autocommit=True) as owner, owner.transaction():
        owner.execute(
            "UPDATE websurfing_task_queue SET status = 'completed' WHERE id = %s", (task.id,)
        )
        with pytest.raises(errors.InsufficientPrivilege, match="not a member of websurf_worker"):
            _robot_row(owner, payload["cell_id"], task.id)
    with psycopg.connect(worker_url, autocommit=True) as worker:
        with pytest.raises(errors.CheckViolation, match="must belong to a task"):
            _robot_row(worker, payload["cell_id"], task.id)  # a task it did not end here
        with pytest.raises(errors.InsufficientPrivilege):
            worker.execute("UPDATE websurfing_cell SET row_number = 5 WHERE id = %s", (cell.id,))
        with pytest.raises(errors.InsufficientPrivilege):
            worker.execute("DELETE FROM websurfing_cell WHERE id = %s", (cell.id,))
        done = Outcome(task, Status.COMPLETED, "alpha", writes_cell=True, cell_content="ROBOT")
        with worker.transaction():
            assert queue.finish(worker, WORKER, [done]) == {task.id}
            assert queue.record_robot_events(worker, [done]) == 1
    assert _content(conn, payload["cell_id"]) == "ROBOT"


def test_a_temporary_table_cannot_stand_in_for_the_audit_tables(
    conn: psycopg.Connection[Any], sheet: Any, make_login: Callable[..., str]
) -> None:
    """pg_temp comes first in the default search_path: the guards must not look there."""
    user, _created, _column, cell = sheet
    with psycopg.connect(make_login("websurf_app"), autocommit=True) as app:
        with (
            pytest.raises(errors.CheckViolation, match="must name their author"),
            app.transaction(),
        ):
            app.execute(
                "CREATE TEMP TABLE websurfing_robot_input_event"
                " (cell_id uuid, success boolean, created_at timestamptz DEFAULT now())"
            )
            app.execute(
                "INSERT INTO websurfing_robot_input_event (cell_id, success) VALUES (%s, true)",
                (cell.id,),
            )
            app.execute("UPDATE websurfing_cell SET content = 'forged' WHERE id = %s", (cell.id,))
        for table in ("websurfing_cell_edit_event", "websurfing_cell_position_event"):
            app.execute(  # for the rest of the session, shadowing the real ones
                sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                    sql.Identifier(table), sql.Identifier("public", table)
                )
            )
        with app.transaction():
            sheets.name_author(app, user)
            app.execute("UPDATE websurfing_cell SET content = 'edited' WHERE id = %s", (cell.id,))
        edits = conn.execute(
            "SELECT new_content FROM websurfing_cell_edit_event WHERE cell_id = %s"
            " ORDER BY created_at",
            (cell.id,),
        ).fetchall()
        with app.transaction():
            sheets.name_author(app, user)
            app.execute("DELETE FROM websurfing_cell WHERE id = %s", (cell.id,))

    # the audit rows went to the real tables, not to the session's stand-ins
    assert edits == [("alice wrote this",), ("edited",)]
    deletions = conn.execute(
        "SELECT content FROM websurfing_cell_position_event WHERE cell_id = %s", (cell.id,)
    ).fetchall()
    assert deletions == [("edited",)]


def test_only_the_database_says_what_a_robot_row_may_write(
    conn: psycopg.Connection[Any], sheet: Any, make_login: Callable[..., str]
) -> None:
    """A robot row's written_version, which the cell guards trust (0036), is set only by
    websurf.record_robot_results: the worker's role may not name it, and without it no
    robot row excuses a cell write, however the rest of the row reads."""
    [payload] = robot_payloads(conn, "alpha", 1)
    task = _claim(conn, payload)
    cell_id = payload["cell_id"]
    done = Outcome(task, Status.COMPLETED, "alpha", writes_cell=True, cell_content="ROBOT")

    with (
        psycopg.connect(make_login("websurf_app"), autocommit=True) as app,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        app.execute(
            "SELECT websurf.record_robot_results(ARRAY[%s]::uuid[], ARRAY[%s]::uuid[],"
            " '{alpha}', '{null}', '{null}', '{1}', '{t}', '{null}', '{t}', NULL)",
            (cell_id, task.id),
        )
    with psycopg.connect(make_login("websurf_worker"), autocommit=True) as worker:
        with pytest.raises(errors.InsufficientPrivilege), worker.transaction():
            assert queue.finish(worker, WORKER, [done]) == {task.id}
            worker.execute(
                "INSERT INTO websurfing_robot_input_event"
                " (cell_id, task_id, operator_type, written_version) VALUES (%s, %s, 'alpha', %s)",
                (cell_id, task.id, payload["input_version"]),
            )
        with (
            pytest.raises(errors.CheckViolation, match="input_version is written only"),
            worker.transaction(),
        ):
            assert queue.finish(worker, WORKER, [done]) == {task.id}
            _robot_row(worker, cell_id, task.id)  # a row of its own making: no verdict
            worker.execute(
                "UPDATE websurfing_cell SET content = 'ROBOT', input_version = %s WHERE id = %s",
                (payload["input_version"], cell_id),
            )
        assert _content(conn, cell_id) is None
        with worker.transaction():
            assert queue.finish(worker, WORKER, [done]) == {task.id}
            assert queue.record_robot_events(worker, [done]) == 1
    assert _content(conn, cell_id) == "ROBOT"
    written = conn.execute(
        "SELECT written_version FROM websurfing_robot_input_event WHERE task_id = %s", (task.id,)
    ).fetchall()
    assert written == [(payload["input_version"],)]
