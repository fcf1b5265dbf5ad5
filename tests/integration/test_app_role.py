"""The web app's least-privilege role: a login that is a member of websurf_app does its job.

What a user would notice: the web app, logged in with only websurf_app, signs people
up, creates and edits spreadsheets (its edits enqueue their robots), enqueues and cancels
tasks, runs transformer sessions, reads tasks and both audit trails, and deletes a
spreadsheet naming who did; while it cannot write robot rows, change or erase any audit
row, change the schema or read the applied migrations.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors

from websurf.worker.app import sheets, transformers
from websurf.worker.app.operators import text  # noqa: F401  (registers word_stats)
from websurf.worker.core import queue


@pytest.fixture
def app_url(make_login: Callable[..., str]) -> str:
    return make_login("websurf_app")


def test_the_web_app_works_with_only_the_app_role(
    app_url: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(app_url, autocommit=True) as app:
        user = sheets.ensure_user(app, "ada@example.test", "Ada")
        sheet = sheets.create_spreadsheet(app, user, "Plan", columns=2, rows=2)
        a, b = sheets.list_columns(app, sheet.id)
        sheets.set_column_operator(app, b.id, "uppercase", source_column_id=a.id)
        sheets.edit_cell(app, sheet.id, a.id, 1, "hello", user_id=user)
        task = queue.enqueue(app, "noop", {"n": 1})
        with app.transaction():  # cancel a pending task, as the app's cancel button does
            app.execute(
                "UPDATE websurfing_task_queue SET status = 'cancelled', updated_at = now()"
                " WHERE id = %s AND status = 'pending'",
                (task,),
            )
        session = transformers.start_session(app, "word_stats", {"text": "x"})
        assert transformers.get_session(app, session.id).id == session.id

        edits = app.execute("SELECT count(*) FROM websurfing_cell_edit_event").fetchone()
        tasks = app.execute(
            "SELECT task_type, status FROM websurfing_task_queue ORDER BY task_type, status"
        ).fetchall()
        assert app.execute("SELECT count(*) FROM websurfing_robot_input_event").fetchone()
        assert sheets.audit_trail(app, sheet.id)
        assert app.execute("SELECT count(*) FROM websurf.worker").fetchone() == (0,)

        with app.transaction():
            sheets.name_author(app, user)
            app.execute("DELETE FROM websurfing_spreadsheet WHERE id = %s", (sheet.id,))

    assert edits == (1,)
    assert ("noop", "cancelled") in tasks and ("uppercase", "pending") in tasks
    deleted = conn.execute(
        "SELECT user_id, action, content FROM websurfing_cell_position_event"
    ).fetchall()
    assert deleted == [(user, "deleted", "hello")]
    assert conn.execute("SELECT count(*) FROM websurfing_cell").fetchone() == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO websurfing_robot_input_event (cell_id, operator_type)"
        " VALUES (gen_random_uuid(), 'x')",
        "UPDATE websurfing_robot_input_event SET success = true",
        "DELETE FROM websurfing_robot_input_event",
        "INSERT INTO websurfing_cell_edit_event (cell_id, new_content)"  # only triggers do
        " VALUES (gen_random_uuid(), 'x')",
        "INSERT INTO websurfing_cell_position_event (cell_id, user_id, action, spreadsheet_id,"
        " column_id, row_number) VALUES (gen_random_uuid(), 'u', 'deleted', gen_random_uuid(),"
        " gen_random_uuid(), 1)",
        "UPDATE websurfing_cell_edit_event SET new_content = 'x'",
        "DELETE FROM websurfing_cell_edit_event",
        "UPDATE websurfing_cell_position_event SET content = 'x'",
        "DELETE FROM websurfing_cell_position_event",
        "UPDATE websurfing_task_queue SET payload = '{}'",
        "UPDATE websurfing_task_queue SET status = 'processing', worker_id = 'me'",
        "DELETE FROM websurfing_task_queue",
        "TRUNCATE websurfing_cell_edit_event",
        "ALTER TABLE websurfing_cell DISABLE TRIGGER USER",
        "SET session_replication_role = replica",  # would skip every trigger
        "CREATE TABLE websurfing_mine (id int)",
        "SELECT * FROM websurf.schema_migrations",
    ],
)
def test_the_app_role_cannot_forge_or_erase_audit_rows_or_change_the_schema(
    app_url: str, statement: str
) -> None:
    with (
        psycopg.connect(app_url, autocommit=True) as app,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        app.execute(statement)


def test_the_app_names_an_author_or_its_cell_changes_are_refused(
    app_url: str, conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    user = make_user()
    sheet = sheets.create_spreadsheet(conn, user, "Plan", columns=1, rows=1)
    [a] = sheets.list_columns(conn, sheet.id)
    cell = sheets.edit_cell(conn, sheet.id, a.id, 1, "kept", user_id=user)

    with psycopg.connect(app_url, autocommit=True) as app:
        for statement in (
            "UPDATE websurfing_cell SET content = 'x' WHERE id = %s",
            "UPDATE websurfing_cell SET row_number = 5 WHERE id = %s",
            "DELETE FROM websurfing_cell WHERE id = %s",
        ):
            with pytest.raises(errors.CheckViolation):
                app.execute(statement, (cell.id,))
        with pytest.raises(errors.ForeignKeyViolation), app.transaction():  # no such person
            sheets.name_author(app, str(uuid.uuid4()))
            app.execute("DELETE FROM websurfing_cell WHERE id = %s", (cell.id,))

    assert sheets.get_cell_by_id(conn, cell.id) == cell
