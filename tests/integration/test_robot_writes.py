"""Trust no row (issue 21): a robot writes only what its cell asked for, and the queue's
outcomes are the workers' to decide (sql/migrations/0024).

What a user would notice: a task the web app makes up (a person's cell, another
column's operator, another row's source, an input_version no edit took) is recorded
but never written, and the database refuses the write even from the worker's own
role; a cell cannot be frozen; the web app's role enqueues and cancels but cannot
set a task's outcome; the worker's role cannot insert finished tasks or forge a
person's edit; erasing a cell's history leaves a record or is refused; and functions
an application creates in `public` never run inside websurf's triggers. Roles are real
logins (CREATE ROLE … LOGIN), created per test.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb
from support.rows import robot_payloads

from websurf.worker.app import sheets
from websurf.worker.core import queue
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.registry import Task

WORKER = "test/robot-writes"
OPERATOR = "shout"


@pytest.fixture
def app_url(make_login: Callable[..., str]) -> str:
    return make_login("websurf_app")


@pytest.fixture
def worker_url(make_login: Callable[..., str]) -> str:
    return make_login("websurf_worker")


@pytest.fixture
def person_cell(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> tuple[str, sheets.Spreadsheet, sheets.Cell]:
    """A user's sheet and its cell A1 holding what that user typed."""
    user = make_user()
    sheet = sheets.create_spreadsheet(conn, user, "Mine", columns=1, rows=2)
    [column] = sheets.list_columns(conn, sheet.id)
    cell = sheets.edit_cell(conn, sheet.id, column.id, 1, "typed by a person", user_id=user)
    return user, sheet, cell


def _enqueue(conn: psycopg.Connection[Any], task_type: str, payload: dict[str, Any]) -> None:
    """The web app's plain INSERT."""
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload) VALUES (%s, %s)",
        (task_type, Jsonb(payload)),
    )


def _run(conn: psycopg.Connection[Any], task_type: str, content: str) -> tuple[Task, int]:
    """Claim the one pending task of ``task_type`` and record a result that writes
    ``content``, as the worker's recorder does (finish and audit in one transaction)."""
    [task] = queue.claim(conn, WORKER, [task_type], 1)
    done = Outcome(task, Status.COMPLETED, task_type, writes_cell=True, cell_content=content)
    with conn.transaction():
        assert queue.finish(conn, WORKER, [done]) == {task.id}
        written = queue.record_robot_events(conn, [done])
    return task, written


def _content(conn: psycopg.Connection[Any], cell_id: Any) -> Any:
    row = conn.execute(
        "SELECT content, input_version FROM websurfing_cell WHERE id = %s", (cell_id,)
    ).fetchone()
    assert row is not None
    return row


def _robot_row(conn: psycopg.Connection[Any], task: Task) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT success, superseded, error_message FROM websurfing_robot_input_event"
        " WHERE task_id = %s",
        (task.id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_real_robot_task_writes_its_cell_with_its_input_version(
    conn: psycopg.Connection[Any],
) -> None:
    [payload] = robot_payloads(conn, OPERATOR, 1)
    _enqueue(conn, OPERATOR, payload)
    task, written = _run(conn, OPERATOR, "INPUT 1")
    assert written == 1
    assert _content(conn, payload["cell_id"]) == ("INPUT 1", payload["input_version"])
    assert _robot_row(conn, task) == (True, False, None)


def test_the_issues_forgery_into_a_persons_cell_is_recorded_but_never_written(
    conn: psycopg.Connection[Any], app_url: str, person_cell: Any
) -> None:
    _user, _sheet, cell = person_cell
    with psycopg.connect(app_url, autocommit=True) as app:
        _enqueue(app, "noop", {"cell_id": str(cell.id), "cell_content": "FORGED"})
    task, written = _run(conn, "noop", "FORGED")
    assert written == 0
    assert _content(conn, cell.id)[0] == "typed by a person"
    success, superseded, error = _robot_row(conn, task)
    assert (success, superseded) == (False, False)
    assert error.startswith("not written: the task is not a robot task of this cell")


@pytest.mark.parametrize(
    "forgery",
    [
        "another operator",
        "the source cell of another row",
        "an input_version no edit took",
        "the freezing input_version 9e18",
        "no input_version",
        "another sheet's robot cell",
    ],
)
def test_a_task_that_is_not_its_cells_robot_task_never_writes_it(
    conn: psycopg.Connection[Any], app_url: str, forgery: str
) -> None:
    first, second = robot_payloads(conn, OPERATOR, 2)
    [elsewhere] = robot_payloads(conn, OPERATOR, 1)
    task_type, payload = OPERATOR, dict(first)
    if forgery == "another operator":
        task_type = "noop"
    elif forgery == "the source cell of another row":
        payload["source_cell_id"] = second["source_cell_id"]
        payload["input_version"] = second["input_version"]
    elif forgery == "an input_version no edit took":
        payload["input_version"] = second["input_version"]
    elif forgery == "the freezing input_version 9e18":
        payload["input_version"] = 9 * 10**18
    elif forgery == "no input_version":
        del payload["input_version"]
    else:
        payload["source_cell_id"] = elsewhere["source_cell_id"]
        payload["input_version"] = elsewhere["input_version"]
    with psycopg.connect(app_url, autocommit=True) as app:
        _enqueue(app, task_type, payload)
    _task, written = _run(conn, task_type, "FORGED")
    assert written == 0
    assert _content(conn, first["cell_id"]) == (None, None)

    # The cell is not frozen: its real task still writes it.
    _enqueue(conn, OPERATOR, first)
    _task, written = _run(conn, OPERATOR, "REAL")
    assert (written, _content(conn, first["cell_id"])) == (1, ("REAL", first["input_version"]))


def test_the_database_refuses_a_forged_write_even_from_the_worker_role(
    conn: psycopg.Connection[Any], worker_url: str, person_cell: Any
) -> None:
    """What record_robot_events would refuse to do, done by hand: the cell guard stops it."""
    _user, _sheet, cell = person_cell
    [payload] = robot_payloads(conn, OPERATOR, 1)
    _enqueue(conn, "noop", {"cell_id": str(cell.id)})
    _enqueue(conn, OPERATOR, {**payload, "input_version": 9 * 10**18})
    with psycopg.connect(worker_url, autocommit=True) as worker:
        tasks = {t.task_type: t for t in queue.claim(worker, WORKER, ["noop", OPERATOR], 2)}
        for task_type, target, version in [
            ("noop", cell.id, None),
            (OPERATOR, payload["cell_id"], 9 * 10**18),
        ]:
            task = tasks[task_type]
            with (
                pytest.raises(errors.CheckViolation, match=r"must name their author|input_version"),
                worker.transaction(),
            ):
                worker.execute(
                    "UPDATE websurfing_task_queue SET status = 'completed' WHERE id = %s",
                    (task.id,),
                )
                worker.execute(
                    "INSERT INTO websurfing_robot_input_event (cell_id, task_id, operator_type)"
                    " VALUES (%s, %s, %s)",
                    (target, task.id, task_type),
                )
                worker.execute(
                    "UPDATE websurfing_cell SET content = 'FORGED',"
                    " input_version = coalesce(%s, input_version) WHERE id = %s",
                    (version, target),
                )
    assert _content(conn, cell.id)[0] == "typed by a person"
    assert _content(conn, payload["cell_id"]) == (None, None)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE websurfing_cell SET input_version = 9e15 WHERE id = %(cell)s",
        "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, input_version)"
        " SELECT spreadsheet_id, column_id, 99, 9e15 FROM websurfing_cell WHERE id = %(cell)s",
    ],
)
def test_the_web_app_cannot_freeze_a_robot_cell(
    conn: psycopg.Connection[Any], app_url: str, statement: str
) -> None:
    [payload] = robot_payloads(conn, OPERATOR, 1)
    user = conn.execute(
        "SELECT owner_id FROM websurfing_spreadsheet WHERE id = %s", (payload["spreadsheet_id"],)
    ).fetchone()
    assert user is not None
    with psycopg.connect(app_url, autocommit=True) as app:
        for author in ("", user[0]):  # with or without a person named
            with (
                pytest.raises(errors.CheckViolation, match="input_version is written only"),
                app.transaction(),
            ):
                app.execute("SELECT set_config('websurf.user_id', %s, true)", (author,))
                app.execute(statement, {"cell": payload["cell_id"]})
    _enqueue(conn, OPERATOR, payload)
    assert _run(conn, OPERATOR, "STILL WRITTEN")[1] == 1


@pytest.mark.parametrize(
    ("role", "before", "column", "value"),
    [
        # the web app: only pending -> cancelled
        ("websurf_app", "completed", "status", "pending"),  # a rerun
        ("websurf_app", "pending", "status", "completed"),  # done, never run
        ("websurf_app", "pending", "status", "processing"),  # stuck, invisible
        ("websurf_app", "pending", "status", "failed"),
        ("websurf_app", "failed", "status", "pending"),
        ("websurf_app", "cancelled", "status", "pending"),
        ("websurf_app", "processing", "status", "cancelled"),
        # the worker: only along a task's life
        ("websurf_worker", "completed", "status", "pending"),
        ("websurf_worker", "completed", "status", "processing"),
        ("websurf_worker", "pending", "status", "completed"),
        ("websurf_worker", "cancelled", "status", "completed"),
    ],
)
def test_only_the_workers_move_a_task_and_only_along_its_life(
    conn: psycopg.Connection[Any],
    make_login: Callable[..., str],
    role: str,
    before: str,
    column: str,
    value: Any,
) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status) VALUES ('noop', '{}', %s)",
        (before,),
    )
    with (
        psycopg.connect(make_login(role), autocommit=True) as login,
        pytest.raises(errors.InsufficientPrivilege, match="workers' to decide"),
    ):
        login.execute(
            sql.SQL("UPDATE websurfing_task_queue SET {} = %s").format(sql.Identifier(column)),
            (value,),
        )
    assert conn.execute("SELECT status FROM websurfing_task_queue").fetchall() == [(before,)]


@pytest.mark.parametrize("role", ["websurf_app", "websurf_worker"])
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("status", "completed"),
        ("status", "processing"),
        ("status", "failed"),
        ("attempts", 2),
        ("worker_id", "made-up/0"),
        ("started_at", datetime.now(UTC)),
        ("completed_at", datetime.now(UTC)),
        ("failed_at", datetime.now(UTC)),
        ("error_message", "made up"),
    ],
)
def test_a_new_task_is_plain_pending_work(
    conn: psycopg.Connection[Any],
    make_login: Callable[..., str],
    role: str,
    column: str,
    value: Any,
) -> None:
    statement = sql.SQL(
        "INSERT INTO websurfing_task_queue (task_type, payload, {}) VALUES ('noop', '{{}}', %s)"
    ).format(sql.Identifier(column))
    with psycopg.connect(make_login(role), autocommit=True) as login:
        with pytest.raises(errors.CheckViolation, match="must be plain pending work"):
            login.execute(statement, (value,))
        # The same insert without it goes in, as every enqueue does.
        login.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('noop', '{}')"
        )
    assert conn.execute("SELECT status, attempts FROM websurfing_task_queue").fetchall() == [
        ("pending", 0)
    ]


def test_the_web_app_still_enqueues_and_cancels_pending_tasks(
    conn: psycopg.Connection[Any], app_url: str
) -> None:
    with psycopg.connect(app_url, autocommit=True) as app:
        task = queue.enqueue(app, "noop", {"n": 1})
        app.execute(
            "UPDATE websurfing_task_queue SET status = 'cancelled', updated_at = now()"
            " WHERE id = %s AND status = 'pending'",
            (task,),
        )
    assert conn.execute("SELECT status FROM websurfing_task_queue").fetchall() == [("cancelled",)]


def test_the_worker_role_cannot_forge_a_persons_edit(
    conn: psycopg.Connection[Any], worker_url: str, person_cell: Any
) -> None:
    user, _sheet, cell = person_cell
    with (
        psycopg.connect(worker_url, autocommit=True) as worker,
        pytest.raises(errors.InsufficientPrivilege, match="cannot make a person's edit"),
        worker.transaction(),
    ):
        sheets.name_author(worker, user)
        worker.execute("UPDATE websurfing_cell SET content = 'forged' WHERE id = %s", (cell.id,))
    history = conn.execute(
        "SELECT new_content FROM websurfing_cell_edit_event WHERE cell_id = %s", (cell.id,)
    ).fetchall()
    assert (_content(conn, cell.id)[0], history) == ("typed by a person", [("typed by a person",)])


def test_blanking_then_deleting_a_cell_leaves_a_record_and_keeps_its_author(
    conn: psycopg.Connection[Any], app_url: str, make_user: Callable[..., str], person_cell: Any
) -> None:
    """The issue's erasure: blank the cell as a throwaway user, delete the blank cell
    without an author, delete the throwaway user."""
    _owner, _sheet, cell = person_cell
    throwaway = make_user("Throwaway")
    with psycopg.connect(app_url, autocommit=True) as app:
        with app.transaction():
            sheets.name_author(app, throwaway)
            app.execute("UPDATE websurfing_cell SET content = NULL WHERE id = %s", (cell.id,))
        with (
            pytest.raises(errors.CheckViolation, match="deleting a cell with content"),
            app.transaction(),
        ):
            app.execute("DELETE FROM websurfing_cell WHERE id = %s", (cell.id,))
        with app.transaction():
            sheets.name_author(app, throwaway)
            app.execute("DELETE FROM websurfing_cell WHERE id = %s", (cell.id,))
        with pytest.raises(errors.ForeignKeyViolation):
            app.execute("DELETE FROM websurfing_user WHERE id = %s", (throwaway,))
    records = conn.execute(
        "SELECT user_id, action, content FROM websurfing_cell_position_event WHERE cell_id = %s",
        (cell.id,),
    ).fetchall()
    assert records == [(throwaway, "deleted", None)]


def test_a_column_cannot_move_to_another_spreadsheet(
    conn: psycopg.Connection[Any], app_url: str, person_cell: Any
) -> None:
    user, sheet, cell = person_cell
    other = sheets.create_spreadsheet(conn, user, "Other", columns=1, rows=1)
    with psycopg.connect(app_url, autocommit=True) as app:
        with pytest.raises(errors.CheckViolation, match="cannot move to another spreadsheet"):
            app.execute(
                "UPDATE websurfing_column SET spreadsheet_id = %s WHERE id = %s",
                (other.id, cell.column_id),
            )
        with pytest.raises(errors.CheckViolation, match="its column's spreadsheet"):
            app.execute(  # nor can a blank cell sit in a sheet its column is not in
                "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
                " VALUES (%s, %s, 7)",
                (other.id, cell.column_id),
            )
    mismatched = conn.execute(
        "SELECT count(*) FROM websurfing_cell AS c JOIN websurfing_column AS k"
        " ON k.id = c.column_id WHERE c.spreadsheet_id <> k.spreadsheet_id"
    ).fetchone()
    assert mismatched == (0,)
    assert sheets.get_column(conn, cell.column_id).spreadsheet_id == sheet.id


def test_functions_the_web_app_creates_in_public_never_run_in_websurfs_triggers(
    conn: psycopg.Connection[Any], app_url: str, person_cell: Any
) -> None:
    """The default before PostgreSQL 15: public grants CREATE. The issue's
    public.current_setting(text, boolean), and an exact-type overload of
    jsonb_build_object (which beats pg_catalog's VARIADIC "any" one) as the edit
    trigger calls it, each note when they run."""
    user, _sheet, cell = person_cell
    conn.execute("GRANT CREATE ON SCHEMA public TO websurf_app")
    try:
        [robot] = robot_payloads(conn, OPERATOR, 1)
        with psycopg.connect(app_url, autocommit=True) as app:
            app.execute("CREATE TABLE public.ran (what text)")
            app.execute("GRANT INSERT ON public.ran TO PUBLIC")
            app.execute(
                "CREATE FUNCTION public.current_setting(text, boolean) RETURNS text"
                " LANGUAGE sql AS $$ INSERT INTO public.ran VALUES ('current_setting');"
                " SELECT pg_catalog.current_setting($1, $2) $$"
            )
            app.execute(
                "CREATE FUNCTION public.jsonb_build_object(text, uuid, text, uuid, text, text,"
                " text, bigint, text, uuid, text, uuid, text, integer) RETURNS jsonb"
                " LANGUAGE sql AS $$ INSERT INTO public.ran VALUES ('jsonb_build_object');"
                " SELECT '{}'::jsonb $$"
            )
            source = conn.execute(
                "SELECT column_id, row_number FROM websurfing_cell WHERE id = %s",
                (robot["source_cell_id"],),
            ).fetchone()
            assert source is not None
            owner = conn.execute(
                "SELECT owner_id FROM websurfing_spreadsheet WHERE id = %s",
                (robot["spreadsheet_id"],),
            ).fetchone()
            assert owner is not None
            # An edit that feeds a robot, a move and a delete: every SECURITY DEFINER trigger.
            sheets.edit_cell(
                app, robot["spreadsheet_id"], source[0], source[1], "edited", user_id=owner[0]
            )
            with app.transaction():
                sheets.name_author(app, user)
                app.execute("UPDATE websurfing_cell SET row_number = 5 WHERE id = %s", (cell.id,))
                app.execute("DELETE FROM websurfing_cell WHERE id = %s", (cell.id,))
            ran = app.execute("SELECT what FROM public.ran").fetchall()
        assert ran == []
        [task] = conn.execute(
            "SELECT payload FROM websurfing_task_queue WHERE task_type = %s", (OPERATOR,)
        ).fetchall()
        assert task[0]["input"] == "edited"
        records = conn.execute(
            "SELECT action FROM websurfing_cell_position_event WHERE user_id = %s ORDER BY 1",
            (user,),
        ).fetchall()
        assert records == [("deleted",), ("moved",)]
    finally:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM websurf_app")
        conn.execute("DROP FUNCTION IF EXISTS public.current_setting(text, boolean)")
        conn.execute(
            "DROP FUNCTION IF EXISTS public.jsonb_build_object(text, uuid, text, uuid, text,"
            " text, text, bigint, text, uuid, text, uuid, text, integer)"
        )
        conn.execute("DROP TABLE IF EXISTS public.ran")


def test_every_websurf_function_searches_only_pg_catalog(conn: psycopg.Connection[Any]) -> None:
    """Each function in schema websurf that a trigger or another role runs fixes
    search_path = pg_catalog, pg_temp (the IMMUTABLE SQL helpers are inlined into their
    callers and resolved there)."""
    loose = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p"
        " WHERE p.pronamespace = 'websurf'::regnamespace"
        "   AND NOT (p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'sql')"
        "            AND p.provolatile = 'i' AND p.proconfig IS NULL)"
        "   AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY(p.proconfig), false)"
        " ORDER BY 1"
    ).fetchall()
    assert loose == []


def test_no_websurf_function_jit_compiles_its_queries(conn: psycopg.Connection[Any]) -> None:
    """Each PL/pgSQL function in schema websurf runs with jit = off (0033): its queries
    touch a few rows, and a stale estimate once made every edit compile machine code."""
    compiling = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc AS p"
        " WHERE p.pronamespace = 'websurf'::regnamespace"
        "   AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')"
        "   AND NOT coalesce('jit=off' = ANY(p.proconfig), false)"
        " ORDER BY 1"
    ).fetchall()
    assert compiling == []


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED])
def test_the_worker_role_cancels_a_finished_task_whose_cell_went_while_it_ran(
    conn: psycopg.Connection[Any], worker_url: str, status: Status
) -> None:
    """The one move out of a finished state: in the transaction that finished it."""
    [payload] = robot_payloads(conn, OPERATOR, 1)
    _enqueue(conn, OPERATOR, payload)
    with psycopg.connect(worker_url, autocommit=True) as worker:
        [task] = queue.claim(worker, WORKER, [OPERATOR], 1)
        conn.execute("DELETE FROM websurfing_cell WHERE id = %s", (payload["cell_id"],))
        outcome = Outcome(task, status, OPERATOR, error=None if status == "completed" else "x")
        with worker.transaction():
            assert queue.finish(worker, WORKER, [outcome]) == {task.id}
            assert queue.record_robot_events(worker, [outcome]) == 0
    row = conn.execute(
        "SELECT status, error_message FROM websurfing_task_queue WHERE id = %s", (task.id,)
    ).fetchone()
    assert row is not None
    assert row[0] == "cancelled" and "its cell was deleted" in row[1]
