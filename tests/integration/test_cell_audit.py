"""Every cell change is audited by the database; a person's edit enqueues its robots.

The robot side is driven through the worker's own functions (claim, the operator's
handler, then finish + record_robot_events in one transaction, as the Runner does);
one test runs the real ``websurf worker`` and listens for its ``cell_updated``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import structlog
from psycopg import errors, sql
from support.daemon import Daemon, Daemons

from websurf.worker.app import sheets
from websurf.worker.core import queue
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.registry import Context, Result, load_operators

AUTHOR_MESSAGE = (
    "cell edits must name their author: run SET LOCAL websurf.user_id = '<user id>'"
    " (or select set_config('websurf.user_id', '<user id>', true)) in the same transaction"
)
WAIT_S = 30.0


def drain(url: str, worker_id: str = "test/audit") -> int:
    """Run every due task once through the worker's claim/handle/finish functions."""
    registry = load_operators(())
    ran = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while tasks := queue.claim(conn, worker_id, registry.names(), 50):
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
                    value = op.handler(task, ctx)
                except Exception as exc:
                    outcomes.append(Outcome(task, Status.FAILED, op.name, error=str(exc)))
                    continue
                result = value if isinstance(value, Result) else Result(output=value)
                outcomes.append(
                    Outcome(
                        task,
                        Status.COMPLETED,
                        op.name,
                        output=result.output,
                        writes_cell=result.writes_cell,
                        cell_content=result.cell_content,
                    )
                )
            with conn.transaction():
                recorded = queue.finish(conn, worker_id, outcomes)
                queue.record_robot_events(conn, [o for o in outcomes if o.task.id in recorded])
            ran += len(tasks)
    return ran


def _one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def sheet(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> tuple[str, sheets.Spreadsheet, sheets.Column, sheets.Column]:
    """A user and a 2x3 sheet whose column B is filled by `uppercase` from column A."""
    user = make_user()
    created = sheets.create_spreadsheet(conn, user, "Audit", rows=3)
    a, b = sheets.list_columns(conn, created.id)
    sheets.set_column_operator(conn, b.id, "uppercase", source_column_id=a.id)
    return user, created, a, b


def test_an_edit_that_names_no_author_is_refused_with_how_to_name_one(
    conn: psycopg.Connection[Any], sheet: Any
) -> None:
    _user, created, a, _b = sheet
    cell = sheets.get_cell(conn, created.id, a.id, 1)
    assert cell is not None

    with pytest.raises(errors.CheckViolation) as refused:
        conn.execute("UPDATE websurfing_cell SET content = 'sneaky' WHERE id = %s", (cell.id,))
    with pytest.raises(errors.CheckViolation, match="must name their author"):
        conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, content)"
            " VALUES (%s, %s, 9, 'sneaky')",
            (created.id, a.id),
        )

    assert str(refused.value).startswith(AUTHOR_MESSAGE)
    assert refused.value.diag.constraint_name == "cell_edit_author"
    assert "set_config('websurf.user_id'" in (refused.value.diag.message_hint or "")
    assert sheets.read_sheet(conn, created.id).rows[0] == [None, None]
    assert _one(conn, "SELECT count(*) FROM websurfing_task_queue") == 0


def test_a_persons_edit_is_audited_once_with_old_and_new_content(
    conn: psycopg.Connection[Any], sheet: Any
) -> None:
    user, created, a, _b = sheet

    sheets.edit_cell(conn, created.id, a.id, 1, "first", user_id=user)
    cell = sheets.edit_cell(conn, created.id, a.id, 1, "second", user_id=user, edit_type="paste")
    sheets.edit_cell(conn, created.id, a.id, 1, "second", user_id=user)  # no change: no row

    rows = conn.execute(
        "SELECT user_id, old_content, new_content, edit_type FROM websurfing_cell_edit_event"
        " WHERE cell_id = %s ORDER BY created_at, new_content",
        (cell.id,),
    ).fetchall()
    assert rows == [(user, None, "first", "manual"), (user, "first", "second", "paste")]


def test_the_web_apps_way_set_local_in_a_transaction_names_the_author_for_it_only(
    conn: psycopg.Connection[Any], sheet: Any
) -> None:
    user, created, a, _b = sheet
    cell = sheets.get_cell(conn, created.id, a.id, 2)
    assert cell is not None

    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL websurf.user_id = {}").format(user))  # as the web app
        conn.execute("UPDATE websurfing_cell SET content = 'typed' WHERE id = %s", (cell.id,))
    with pytest.raises(errors.CheckViolation):  # the name ended with its transaction
        conn.execute("UPDATE websurfing_cell SET content = 'later' WHERE id = %s", (cell.id,))

    assert _one(conn, "SELECT user_id FROM websurfing_cell_edit_event") == user
    assert sheets.get_cell_by_id(conn, cell.id).content == "typed"  # type: ignore[union-attr]


def test_an_edit_enqueues_the_robot_of_each_column_it_feeds(
    conn: psycopg.Connection[Any], sheet: Any
) -> None:
    user, created, a, b = sheet

    edited = sheets.edit_cell(conn, created.id, a.id, 2, "hello world", user_id=user)

    target = sheets.get_cell(conn, created.id, b.id, 2)
    assert target is not None
    task = conn.execute(
        "SELECT task_type, payload, priority, status, unique_key FROM websurfing_task_queue"
    )
    [(task_type, payload, priority, status, key)] = task.fetchall()
    assert isinstance(payload.pop("input_version"), int)  # the edit's place in line (0018)
    assert (task_type, payload, priority, status, key) == (
        "uppercase",
        {
            "cell_id": str(target.id),
            "source_cell_id": str(edited.id),
            "input": "hello world",
            "spreadsheet_id": str(created.id),
            "column_id": str(b.id),
            "row_number": 2,
        },
        8,
        "pending",
        f"cell:{target.id}",
    )


def test_an_edit_below_the_last_row_creates_both_cells_and_the_task(
    conn: psycopg.Connection[Any], sheet: Any
) -> None:
    user, created, a, b = sheet

    sheets.edit_cell(conn, created.id, a.id, 40, "new row", user_id=user)

    target = sheets.get_cell(conn, created.id, b.id, 40)
    assert target is not None and target.content is None
    payload = _one(conn, "SELECT payload FROM websurfing_task_queue")
    assert payload["cell_id"] == str(target.id)
    assert _one(conn, "SELECT count(*) FROM websurfing_cell_edit_event") == 1


def test_a_rolled_back_edit_leaves_no_audit_row_and_no_task(
    conn: psycopg.Connection[Any], sheet: Any
) -> None:
    user, created, a, _b = sheet

    with pytest.raises(RuntimeError), conn.transaction():
        sheets.edit_cell(conn, created.id, a.id, 1, "never saved", user_id=user)
        assert _one(conn, "SELECT count(*) FROM websurfing_task_queue") == 1
        raise RuntimeError("the request failed after the edit")

    assert _one(conn, "SELECT count(*) FROM websurfing_task_queue") == 0
    assert _one(conn, "SELECT count(*) FROM websurfing_cell_edit_event") == 0
    assert sheets.read_sheet(conn, created.id).rows[0] == [None, None]


def test_a_robots_write_is_audited_by_its_robot_row_only(
    conn: psycopg.Connection[Any], database_url: str, sheet: Any
) -> None:
    user, created, a, b = sheet
    sheets.edit_cell(conn, created.id, a.id, 1, "make me loud", user_id=user)

    assert drain(database_url) == 1

    target = sheets.get_cell(conn, created.id, b.id, 1)
    assert target is not None and target.content == "MAKE ME LOUD"
    history = sheets.cell_history(conn, target.id)
    assert [(h["kind"], h["author"], h["success"]) for h in history] == [
        ("robot", "uppercase", True)
    ]
    assert _one(conn, "SELECT count(*) FROM websurfing_cell_edit_event") == 1  # the person's
    trail = sheets.audit_trail(conn, created.id)
    assert [(t["kind"], t["column_title"], t["row_number"]) for t in trail] == [
        ("robot", "B", 1),
        ("person", "A", 1),
    ]


def test_a_robot_row_from_an_earlier_transaction_does_not_excuse_a_later_write(
    conn: psycopg.Connection[Any], database_url: str, sheet: Any
) -> None:
    user, created, a, b = sheet
    sheets.edit_cell(conn, created.id, a.id, 3, "ping", user_id=user)
    assert drain(database_url) == 1  # the robot wrote B3, with its robot row
    cell = sheets.get_cell(conn, created.id, b.id, 3)
    assert cell is not None and cell.content == "PING"

    with pytest.raises(errors.CheckViolation, match="must name their author"):
        conn.execute("UPDATE websurfing_cell SET content = 'forged' WHERE id = %s", (cell.id,))
    with pytest.raises(errors.CheckViolation, match="must belong to a task"), conn.transaction():
        conn.execute(  # a robot row of its own needs a task this transaction ended
            "INSERT INTO websurfing_robot_input_event (cell_id, operator_type) VALUES (%s, 'x')",
            (cell.id,),
        )
        conn.execute("UPDATE websurfing_cell SET content = 'robot' WHERE id = %s", (cell.id,))

    assert sheets.get_cell_by_id(conn, cell.id).content == "PING"  # type: ignore[union-attr]


def test_the_worker_tells_the_web_tier_which_cell_it_wrote(
    conn: psycopg.Connection[Any], database_url: str, sheet: Any
) -> None:
    user, created, a, b = sheet
    sheets.edit_cell(conn, created.id, a.id, 3, "ping", user_id=user)
    target = sheets.get_cell(conn, created.id, b.id, 3)
    assert target is not None

    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN cell_updated")
        drain(database_url)
        notices = list(listener.notifies(timeout=5.0, stop_after=1))

    assert [json.loads(n.payload) for n in notices] == [
        {
            "spreadsheet_id": str(created.id),
            "column_id": str(b.id),
            "row_number": 3,
            "cell_id": str(target.id),
        }
    ]


@pytest.fixture
def worker_daemon(database_url: str, daemons: Daemons) -> Daemon:
    """The real `websurf worker --concurrency 1` against this test's database."""
    return daemons.worker(database_url, "--poll-interval", "0.2", concurrency=1)


def test_the_real_worker_fills_the_robot_column_and_notifies(
    conn: psycopg.Connection[Any],
    database_url: str,
    sheet: Any,
    worker_daemon: Daemon,
) -> None:
    user, created, a, b = sheet
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN cell_updated")
        sheets.edit_cell(conn, created.id, a.id, 1, "from a person", user_id=user)
        notices = list(listener.notifies(timeout=WAIT_S, stop_after=1))

    assert notices, "no cell_updated notification from the worker"
    assert json.loads(notices[0].payload)["column_id"] == str(b.id)
    assert sheets.read_sheet(conn, created.id).cell(1, "B") == "FROM A PERSON"
