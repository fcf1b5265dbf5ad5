"""Cancelling running tasks (issue 22, item 4; sql/migrations/0027).

What a user would notice: a task cancelled from SQL (``websurf.cancel_task``) or the
terminal (``websurf tasks cancel``) stops within a second however long its handler would
have run, on whichever worker runs it; a newer edit of a source cell stops the robot
task still working on the old text, and the cell ends with the newer output; a plain
function learns of it through its context; none of it spends an attempt, and a handler
that finishes anyway never writes its cell.

Long-running handlers await an ``asyncio.Event`` nobody sets (or, plain, poll their
context's flag): only a cancel ends them.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.rows import dict_row
from support.rows import robot_sheet
from support.serving import Serving
from support.waiting import wait_for

from websurf.cli.tasks import tasks_command
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.queue import claim, enqueue, finish, record_robot_events
from websurf.worker.core.registry import Context, Registry, Result, Task
from websurf.worker.maintenance import reaper
from websurf.worker.process.runner import Runner

DEADLINE_S = 30.0
CANCEL_WITHIN_S = 1.0


class Seen:
    """What the handlers saw, by task id (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: dict[str, float] = {}
        self.cancelled: dict[str, float] = {}  # monotonic time of the CancelledError
        self.flagged: dict[str, float] = {}  # a plain handler saw its flag

    def note(self, where: dict[str, float], task: Task) -> None:
        with self.lock:
            where[str(task.id)] = time.monotonic()


def _registry(seen: Seen) -> Registry:
    reg = Registry()

    async def hangs(task: Task, context: Context) -> Any:
        seen.note(seen.started, task)
        try:
            await asyncio.Event().wait()  # never set: only a cancel ends it
        except asyncio.CancelledError:
            seen.note(seen.cancelled, task)
            raise

    async def shout(task: Task, context: Context) -> Any:
        """A robot: hangs on the text 'slow', answers any other text at once."""
        text = str(task.payload.get("input"))
        if text == "slow":
            await hangs(task, context)
        return Result(output={"input": text}, cell_content=text.upper())

    def plain(task: Task, context: Context) -> Any:
        """A plain function that checks its flag, and then finishes anyway."""
        seen.note(seen.started, task)
        while not context.cancel_requested():
            time.sleep(0.005)  # the handler's own polling, not the test's
        seen.note(seen.flagged, task)
        return Result(output={"finished": "anyway"}, cell_content="written anyway")

    reg.register("hangs", hangs, timeout_s=None)
    reg.register("shout", shout, timeout_s=None)
    reg.register("plain", plain, timeout_s=None)
    return reg


Serve = Callable[..., Runner]


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def serve(database_url: str, seen: Seen) -> Iterator[Serve]:
    """Boot and serve Runners on threads; stop and join them at the end of the test."""
    serving = Serving(database_url, lambda: _registry(seen))
    yield serving.start
    serving.close()


def _task(conn: psycopg.Connection[Any], task_id: uuid.UUID | str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT status, attempts, worker_id, error_message, completed_at, failed_at,"
            " cancel_requested_at FROM websurfing_task_queue WHERE id = %s",
            (task_id,),
        ).fetchone()
    assert row is not None
    return row


def _status(conn: psycopg.Connection[Any], task_id: uuid.UUID | str) -> str:
    return str(_task(conn, task_id)["status"])


def _cancel(conn: psycopg.Connection[Any], task_id: uuid.UUID | str) -> str | None:
    row = conn.execute("SELECT websurf.cancel_task(%s)", (task_id,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _started(seen: Seen, task_id: uuid.UUID | str) -> Callable[[], bool]:
    return lambda: str(task_id) in seen.started


# -- a person's cancel -----------------------------------------------------------------


def test_an_async_handler_is_cancelled_within_a_second_and_spends_no_attempt(
    serve: Serve, conn: psycopg.Connection[Any], seen: Seen
) -> None:
    serve()
    task = enqueue(conn, "hangs", {})
    wait_for(_started(seen, task), "the handler to start")

    asked = time.monotonic()
    assert _cancel(conn, task) == "cancel_requested"

    wait_for(lambda: str(task) in seen.cancelled, "the handler's CancelledError")
    assert seen.cancelled[str(task)] - asked < CANCEL_WITHIN_S
    wait_for(lambda: _status(conn, task) == "cancelled", "the cancel to be recorded")
    row = _task(conn, task)
    assert row["attempts"] == 0  # stopped by a person: not a failed attempt
    assert row["error_message"] == "cancelled while running (websurf.cancel_task)"
    assert row["completed_at"] is None and row["failed_at"] is None


def test_cancel_task_cancels_a_pending_task_at_once_and_leaves_finished_ones(
    conn: psycopg.Connection[Any],
) -> None:
    pending = enqueue(conn, "hangs", {})
    assert _cancel(conn, pending) == "cancelled"
    assert _status(conn, pending) == "cancelled"

    assert _cancel(conn, pending) is None  # finished: nothing to stop
    assert _cancel(conn, uuid.uuid4()) is None  # no such task


def test_asking_twice_keeps_the_first_request_and_its_reason(
    conn: psycopg.Connection[Any], sheet: dict[str, Any]
) -> None:
    _edit(conn, sheet, "slow")
    old = _robot_task(conn, "slow")
    claim(conn, "w", ["shout"], 1)
    _edit(conn, sheet, "newer")  # supersedes the running task
    first = _task(conn, old)

    assert _cancel(conn, old) == "cancel_requested"  # a person asks too

    again = _task(conn, old)
    assert again["cancel_requested_at"] == first["cancel_requested_at"] is not None
    assert again["error_message"] == first["error_message"]
    assert again["error_message"].startswith("superseded while running")


def test_a_cancel_reaches_the_worker_running_the_task_whoever_asks(
    serve: Serve, conn: psycopg.Connection[Any], seen: Seen
) -> None:
    """Two workers (as on two hosts) listen; the one holding the task stops it."""
    # Three tasks at most each: six tasks are then held by both, whichever claims first.
    serve("host-a/0/cancel", tasks_per_process=3)
    serve("host-b/0/cancel", tasks_per_process=3)
    tasks = [enqueue(conn, "hangs", {"n": n}) for n in range(6)]
    for task in tasks:
        wait_for(_started(seen, task), "every handler to start")
    holders = {_task(conn, t)["worker_id"] for t in tasks}
    assert holders == {"host-a/0/cancel", "host-b/0/cancel"}, "both workers hold tasks"

    for task in tasks:
        assert _cancel(conn, task) == "cancel_requested"

    for task in tasks:
        wait_for(lambda t=task: _status(conn, t) == "cancelled", "every task cancelled")
    assert set(seen.cancelled) == {str(t) for t in tasks}


def test_a_missed_notification_is_caught_at_the_next_heartbeat(
    serve: Serve, conn: psycopg.Connection[Any], seen: Seen
) -> None:
    """A cancel asked while the worker's listener was away (no NOTIFY reaches it)."""
    serve(heartbeat_interval_s=0.2)
    task = enqueue(conn, "hangs", {})
    wait_for(_started(seen, task), "the handler to start")

    conn.execute(  # what cancel_task writes, without its notification
        "UPDATE websurfing_task_queue SET cancel_requested_at = now(),"
        " error_message = 'cancelled while running (websurf.cancel_task)' WHERE id = %s",
        (task,),
    )

    wait_for(lambda: str(task) in seen.cancelled, "the handler's CancelledError")
    wait_for(lambda: _status(conn, task) == "cancelled", "the cancel to be recorded")


def test_websurf_tasks_cancel_stops_a_running_task(
    serve: Serve, conn: psycopg.Connection[Any], seen: Seen, database_url: str
) -> None:
    serve()
    task = enqueue(conn, "hangs", {})
    wait_for(_started(seen, task), "the handler to start")

    result = CliRunner().invoke(
        tasks_command, ["cancel", "--database-url", database_url, str(task)]
    )

    assert result.exit_code == 0, result.output
    # (the in-process worker's log lines may land in the captured output too)
    assert f"task {task} is running: asked its worker to stop it" in result.output.splitlines()
    wait_for(lambda: _status(conn, task) == "cancelled", "the cancel to be recorded")
    assert str(task) in seen.cancelled


def test_a_task_cancelled_while_running_can_be_retried_and_then_runs(
    serve: Serve,
    conn: psycopg.Connection[Any],
    seen: Seen,
    make_robot_cell: Callable[[str], dict[str, Any]],
    database_url: str,
) -> None:
    serve()
    robot = make_robot_cell("shout")  # a robot task of its cell: its result may be written
    cell = robot["cell_id"]
    task = enqueue(conn, "shout", {**robot, "input": "slow"})
    wait_for(_started(seen, task), "the handler to start")
    _cancel(conn, task)
    wait_for(lambda: _status(conn, task) == "cancelled", "the cancel to be recorded")

    conn.execute(  # the next attempt answers at once
        'UPDATE websurfing_task_queue SET payload = payload || \'{"input": "fast"}\' WHERE id = %s',
        (task,),
    )
    result = CliRunner().invoke(tasks_command, ["retry", "--database-url", database_url, str(task)])
    assert result.exit_code == 0, result.output

    wait_for(lambda: _status(conn, task) == "completed", "the retried task to complete")
    assert conn.execute(
        "SELECT content FROM websurfing_cell WHERE id = %s", (cell,)
    ).fetchone() == ("FAST",)


def test_a_task_cancelled_while_its_worker_died_ends_cancelled_when_reaped(
    conn: psycopg.Connection[Any],
) -> None:
    """No worker will record it: the reaper's recovery honours the cancel instead."""
    task_id = enqueue(conn, "hangs", {})
    [task] = claim(conn, "gone-host/0/dead", ["hangs"], 1)  # a worker not on the roster
    assert _cancel(conn, task.id) == "cancel_requested"

    reaper.run_once(conn, {})

    row = _task(conn, task_id)
    assert (row["status"], row["attempts"]) == ("cancelled", 0)
    assert row["error_message"].startswith("cancelled while running (websurf.cancel_task)")
    assert "stopped heartbeating" in row["error_message"]  # what the recovery said, after it


# -- a plain function ------------------------------------------------------------------


def test_a_plain_function_sees_its_flag_and_its_late_result_is_not_written(
    serve: Serve, conn: psycopg.Connection[Any], seen: Seen, make_cell: Callable[[], str]
) -> None:
    serve()
    cell = make_cell()
    task = enqueue(conn, "plain", {"cell_id": cell})
    wait_for(_started(seen, task), "the handler to start")

    asked = time.monotonic()
    _cancel(conn, task)

    wait_for(lambda: str(task) in seen.flagged, "the handler to see its flag")
    assert seen.flagged[str(task)] - asked < CANCEL_WITHIN_S
    wait_for(lambda: _status(conn, task) == "cancelled", "the cancel to be recorded")
    assert _task(conn, task)["attempts"] == 0
    content = conn.execute("SELECT content FROM websurfing_cell WHERE id = %s", (cell,)).fetchone()
    assert content == (None,), "a result that came after the cancel must not be written"
    [event] = conn.execute(
        "SELECT success, superseded FROM websurfing_robot_input_event WHERE task_id = %s",
        (task,),
    ).fetchall()
    assert event == (False, True)


def test_a_result_recorded_after_a_cancel_the_worker_never_heard_of_is_not_written(
    conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    """The finish itself honours the request (a handler that returned just as it came)."""
    cell = make_cell()
    enqueue(conn, "shout", {"cell_id": cell, "input": "x"})
    [task] = claim(conn, "w", ["shout"], 1)
    _cancel(conn, task.id)

    outcome = Outcome(
        task, Status.COMPLETED, "shout", output={}, writes_cell=True, cell_content="X"
    )
    with conn.transaction():
        recorded = finish(conn, "w", [outcome])
        record_robot_events(conn, [outcome])

    assert recorded == {task.id}
    assert outcome.status == Status.CANCELLED
    assert _task(conn, task.id)["status"] == "cancelled"
    assert conn.execute(
        "SELECT content FROM websurfing_cell WHERE id = %s", (cell,)
    ).fetchone() == (None,)


# -- a newer edit supersedes the running robot task -------------------------------------


@pytest.fixture
def sheet(conn: psycopg.Connection[Any], make_user: Callable[..., str]) -> dict[str, Any]:
    """A spreadsheet with a source column and a 'shout' robot column over it."""
    user = make_user()
    spreadsheet, source, robot = robot_sheet(conn, user, "shout")
    return {"sheet": spreadsheet, "source": source, "robot": robot, "user": user}


def _edit(conn: psycopg.Connection[Any], sheet: dict[str, Any], text: str) -> None:
    """A person's edit of row 1's source cell, as the web app writes it."""
    with conn.transaction():
        conn.execute("SELECT set_config('websurf.user_id', %s, true)", (sheet["user"],))
        conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, content)"
            " VALUES (%s, %s, 1, %s)"
            " ON CONFLICT (spreadsheet_id, column_id, row_number)"
            " DO UPDATE SET content = EXCLUDED.content",
            (sheet["sheet"], sheet["source"], text),
        )


def _robot_task(conn: psycopg.Connection[Any], text: str) -> str:
    row = conn.execute(
        "SELECT id FROM websurfing_task_queue WHERE payload ->> 'input' = %s", (text,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_newer_edit_stops_the_running_robot_task_and_its_output_wins(
    serve: Serve, conn: psycopg.Connection[Any], seen: Seen, sheet: dict[str, Any]
) -> None:
    serve()
    _edit(conn, sheet, "slow")
    old = _robot_task(conn, "slow")
    wait_for(_started(seen, old), "the first edit's robot to start")

    asked = time.monotonic()
    _edit(conn, sheet, "newer")

    wait_for(lambda: old in seen.cancelled, "the old robot task's CancelledError")
    assert seen.cancelled[old] - asked < CANCEL_WITHIN_S
    new = _robot_task(conn, "newer")
    wait_for(lambda: _status(conn, new) == "completed", "the newer edit's robot task")
    robot_cell = conn.execute(
        "SELECT content FROM websurfing_cell WHERE column_id = %s AND row_number = 1",
        (sheet["robot"],),
    ).fetchone()
    assert robot_cell == ("NEWER",)
    row = _task(conn, old)
    assert (row["status"], row["attempts"]) == ("cancelled", 0)
    assert row["error_message"].startswith("superseded while running")
    [event] = conn.execute(
        "SELECT success, superseded, error_message FROM websurfing_robot_input_event"
        " WHERE task_id = %s",
        (old,),
    ).fetchall()
    assert event[:2] == (False, True)
    assert event[2].startswith("superseded while running")


# -- privileges ------------------------------------------------------------------------


def test_the_app_role_can_cancel_a_running_task_but_not_otherwise_touch_it(
    make_login: Callable[..., str],  # first: its roles are dropped after the worker stops
    serve: Serve,
    conn: psycopg.Connection[Any],
    seen: Seen,
) -> None:
    serve(url=make_login("websurf_worker"))
    task = enqueue(conn, "hangs", {})
    wait_for(_started(seen, task), "the handler to start")
    app_url = make_login("websurf_app")

    with psycopg.connect(app_url, autocommit=True) as app:
        for change in (
            "cancel_requested_at = now()",
            "error_message = 'cancelled'",
            "attempts = 0",
            "worker_id = NULL",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(
                    sql.SQL("UPDATE websurfing_task_queue SET {} WHERE id = %s").format(
                        sql.SQL(change)
                    ),
                    (task,),
                )
        assert _task(conn, task)["cancel_requested_at"] is None
        assert _status(conn, task) == "processing"
        assert app.execute("SELECT websurf.cancel_task(%s)", (task,)).fetchone() == (
            "cancel_requested",
        )

    wait_for(lambda: _status(conn, task) == "cancelled", "the cancel to be recorded")
    assert str(task) in seen.cancelled
