"""The reaper, driven directly: rows arranged by SQL, one ``run_once`` pass, then the rows.

What a user would notice: a task whose worker died comes back (or fails when its attempts
are used up) with a message saying why and an audit row on its cell; a live worker's
task is left alone; a task that ran past its timeout is retried or failed; only one
reaper works at a time; a late worker cannot overwrite the newer attempt.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import psycopg
import pytest
import structlog
from structlog.testing import capture_logs
from support.rows import new_column

from websurf.worker.core import queue
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.registry import Task
from websurf.worker.maintenance import reaper

STALE_AFTER_S = 2
LONG_AGO = "1 hour"
SERVER_UP_S = 8.0  # staleness and timeouts count from the server's start: 5 s grace + 1 s + slack


@pytest.fixture(autouse=True)
def server_up_long_enough(conn: psycopg.Connection[Any]) -> None:
    """Wait (once per fresh server) until it has been up longer than any window used here."""
    deadline = time.monotonic() + SERVER_UP_S + 5
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT extract(epoch FROM now() - pg_postmaster_start_time())"
        ).fetchone()
        if row is not None and float(row[0]) > SERVER_UP_S:
            return
        time.sleep(0.1)
    pytest.fail("the test server did not stay up")


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    """The reaper's log events during the test (a fresh logger, so caching cannot hide them)."""
    with capture_logs() as captured:
        monkeypatch.setattr(reaper, "log", structlog.get_logger("websurf.reaper"))
        yield captured


@pytest.fixture
def cell(conn: psycopg.Connection[Any], make_user: Callable[..., str]) -> str:
    """A cell of a fresh spreadsheet; returns its id."""
    owner = make_user()
    sheet, column = new_column(conn, owner)
    with conn.transaction():  # a person's edit must name its author (cell audit trigger)
        conn.execute("SELECT set_config('websurf.user_id', %s, true)", (owner,))
        row = conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, content)"
            " VALUES (%s, %s, 1, 'before') RETURNING id",
            (sheet, column),
        ).fetchone()
    assert row is not None
    return str(row[0])


def add_worker(
    conn: psycopg.Connection[Any],
    *,
    heartbeat_age: str = "0 seconds",
    hostname: str = "host-a",
    pid: int = 4242,
    worker_id: str | None = None,
) -> str:
    worker_id = worker_id or f"{hostname}/0/{uuid.uuid4().hex[:12]}"
    conn.execute(
        "INSERT INTO websurf.worker (id, hostname, pid, task_types, stale_after_s,"
        " started_at, last_heartbeat_at)"
        " VALUES (%s, %s, %s, '{chaos}', %s, now() - %s::interval, now() - %s::interval)",
        (worker_id, hostname, pid, STALE_AFTER_S, heartbeat_age, heartbeat_age),
    )
    return worker_id


def add_task(
    conn: psycopg.Connection[Any],
    worker_id: str | None,
    *,
    attempts: int = 1,
    max_attempts: int = 3,
    started_age: str = "1 second",
    task_type: str = "chaos",
    cell_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> uuid.UUID:
    if payload is None:
        payload = {"n": 1} if cell_id is None else {"cell_id": cell_id}
    row = conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status, attempts, max_attempts,"
        " started_at, worker_id)"
        " VALUES (%s, %s::jsonb, 'processing', %s, %s, now() - %s::interval, %s) RETURNING id",
        (
            task_type,
            psycopg.types.json.Jsonb(payload),
            attempts,
            max_attempts,
            started_age,
            worker_id,
        ),
    ).fetchone()
    assert row is not None
    task_id: uuid.UUID = row[0]
    return task_id


def task_row(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT status, attempts, error_message, worker_id, scheduled_for <= now() AS due"
        " FROM websurfing_task_queue WHERE id = %s",
        (task_id,),
    )
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


def audit_rows(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT cell_id::text, success, error_message, operator_type"
        " FROM websurfing_robot_input_event WHERE task_id = %s",
        (task_id,),
    ).fetchall()


def registered(conn: psycopg.Connection[Any]) -> set[str]:
    return {r[0] for r in conn.execute("SELECT id FROM websurf.worker").fetchall()}


def test_dead_workers_tasks_are_handed_back_or_failed_with_a_trace(
    conn: psycopg.Connection[Any], cell: str, logs: list[MutableMapping[str, Any]]
) -> None:
    dead = add_worker(conn, heartbeat_age=LONG_AGO)
    retry = add_task(conn, dead, attempts=1, cell_id=cell)
    used_up = add_task(conn, dead, attempts=3, max_attempts=3)

    counts = reaper.run_once(conn, {})

    assert counts == reaper.ReapCounts(ran=True, dead_workers=1, handed_back=1, failed=1)
    assert dead not in registered(conn)
    back = task_row(conn, retry)
    assert back["status"] == "pending" and back["due"] and back["attempts"] == 1
    assert "stopped heartbeating" in back["error_message"]
    assert dead in back["error_message"]
    failed = task_row(conn, used_up)
    assert failed["status"] == "failed"
    assert "attempt 3 of 3" in failed["error_message"]
    # the task with a cell leaves an audit row saying what happened; the cell is untouched
    [(cell_id, success, error, operator_type)] = audit_rows(conn, retry)
    assert (cell_id, success, operator_type) == (cell, False, "chaos")
    assert "stopped heartbeating" in error
    assert audit_rows(conn, used_up) == []  # no cell, no audit row
    content = conn.execute("SELECT content FROM websurfing_cell WHERE id = %s", (cell,)).fetchone()
    assert content == ("before",)
    # and a log line for the dead worker and for each task
    events = [e["event"] for e in logs]
    assert events.count("worker_presumed_dead") == 1
    recovered = {e["task_id"]: e for e in logs if e["event"] == "task_recovered"}
    assert recovered.keys() == {str(retry), str(used_up)}
    assert recovered[str(used_up)]["status"] == "failed"
    assert recovered[str(retry)]["worker_id"] == dead


def test_live_workers_tasks_are_left_alone(
    conn: psycopg.Connection[Any], logs: list[MutableMapping[str, Any]]
) -> None:
    alive = add_worker(conn, heartbeat_age="0.5 seconds")
    task = add_task(conn, alive, started_age="10 minutes")

    counts = reaper.run_once(conn, {})

    assert counts == reaper.ReapCounts(ran=True)
    assert registered(conn) == {alive}
    assert task_row(conn, task)["status"] == "processing"
    assert [e for e in logs if e["event"] == "task_recovered"] == []


def test_reused_hostname_and_pid_do_not_hide_a_dead_worker(conn: psycopg.Connection[Any]) -> None:
    """A restarted container gets the same hostname and pid but a new worker id."""
    dead = add_worker(conn, heartbeat_age=LONG_AGO, hostname="pod-1", pid=7)
    alive = add_worker(conn, heartbeat_age="0 seconds", hostname="pod-1", pid=7)
    orphan = add_task(conn, dead)
    held = add_task(conn, alive)

    counts = reaper.run_once(conn, {})

    assert (counts.dead_workers, counts.handed_back) == (1, 1)
    assert registered(conn) == {alive}
    assert task_row(conn, orphan)["status"] == "pending"
    assert task_row(conn, held)["status"] == "processing"


def test_a_task_held_by_an_unregistered_worker_is_recovered(conn: psycopg.Connection[Any]) -> None:
    """The row was already removed (a predecessor deregistered by its replacement)."""
    task = add_task(conn, "host-a/0/gone")

    counts = reaper.run_once(conn, {})

    assert (counts.dead_workers, counts.handed_back) == (0, 1)
    assert task_row(conn, task)["status"] == "pending"


def test_only_one_reaper_runs_at_a_time(conn: psycopg.Connection[Any], database_url: str) -> None:
    dead = add_worker(conn, heartbeat_age=LONG_AGO)
    task = add_task(conn, dead)
    with psycopg.connect(database_url) as other, other.transaction():
        got = other.execute("SELECT pg_try_advisory_xact_lock(%s)", (reaper.LOCK_KEY,)).fetchone()
        assert got == (True,)

        assert reaper.run_once(conn, {}) == reaper.ReapCounts(ran=False)
        assert task_row(conn, task)["status"] == "processing"
        assert dead in registered(conn)

    assert reaper.run_once(conn, {}).handed_back == 1  # the lock is free again
    assert task_row(conn, task)["status"] == "pending"


def test_tasks_past_their_timeout_are_retried_or_failed(
    conn: psycopg.Connection[Any], cell: str, logs: list[MutableMapping[str, Any]]
) -> None:
    alive = add_worker(conn)  # the worker is alive: its handler hangs
    late = add_task(conn, alive, started_age="20 seconds", cell_id=cell)
    late_last = add_task(conn, alive, started_age="20 seconds", attempts=2, max_attempts=2)
    in_time = add_task(conn, alive, started_age="3 seconds")
    other_type = add_task(conn, alive, started_age="20 seconds", task_type="untimed")

    counts = reaper.run_once(conn, {"chaos": 1.0}, grace_s=5.0)

    assert counts == reaper.ReapCounts(ran=True, handed_back=1, failed=1, timed_out=2)
    retried = task_row(conn, late)
    assert retried["status"] == "pending" and "ran past its timeout" in retried["error_message"]
    assert task_row(conn, late_last)["status"] == "failed"
    assert task_row(conn, in_time)["status"] == "processing"  # 3 s < 1 s timeout + 5 s grace
    assert task_row(conn, other_type)["status"] == "processing"  # no timeout for this type
    assert registered(conn) == {alive}
    [(_, success, error, _)] = audit_rows(conn, late)
    assert success is False and "timeout" in error
    assert {e["task_id"] for e in logs if e["event"] == "task_recovered"} == {
        str(late),
        str(late_last),
    }


def test_a_late_worker_cannot_overwrite_the_newer_attempt(
    conn: psycopg.Connection[Any], make_robot_cell: Callable[[str], dict[str, Any]]
) -> None:
    """The dead worker comes back after its task was reaped and claimed again."""
    dead = add_worker(conn, heartbeat_age=LONG_AGO)
    payload = make_robot_cell("chaos")
    cell = payload["cell_id"]
    task_id = add_task(conn, dead, attempts=1, payload=payload)
    reaper.run_once(conn, {})
    newer = add_worker(conn)
    [claimed] = queue.claim(conn, newer, ["chaos"], 10)
    assert (claimed.id, claimed.attempt) == (task_id, 2)

    stale = Task(task_id, "chaos", payload, attempt=1, max_attempts=3)
    late = Outcome(stale, Status.COMPLETED, "chaos", writes_cell=True, cell_content="stale")
    with conn.transaction():
        recorded = queue.finish(conn, dead, [late])
        queue.record_robot_events(conn, [o for o in [late] if o.task.id in recorded])
    assert recorded == set()
    assert task_row(conn, task_id)["status"] == "processing"

    fresh = Outcome(claimed, Status.COMPLETED, "chaos", writes_cell=True, cell_content="fresh")
    with conn.transaction():
        recorded = queue.finish(conn, newer, [fresh])
        queue.record_robot_events(conn, [fresh])
    assert recorded == {task_id}
    assert task_row(conn, task_id)["status"] == "completed"
    content = conn.execute("SELECT content FROM websurfing_cell WHERE id = %s", (cell,)).fetchone()
    assert content == ("fresh",)
    successes = [r for r in audit_rows(conn, task_id) if r[1]]
    assert len(successes) == 1


def test_a_worker_known_dead_counts_only_the_attempt_it_died_in(
    conn: psycopg.Connection[Any], cell: str, logs: list[MutableMapping[str, Any]]
) -> None:
    """The supervisor saw the child die inside a handler: its batch-mates go back free."""
    dead = add_worker(conn)  # still fresh: the replacement does not wait for staleness
    culprit = add_task(conn, dead, attempts=3, max_attempts=3, cell_id=cell)
    neighbour = add_task(conn, dead, attempts=3, max_attempts=3)
    unstarted = add_task(conn, dead, attempts=1)

    counts = reaper.recover_dead_worker(
        conn, dead, how="killed by SIGSEGV", running=[(str(culprit), 3)]
    )

    assert counts == reaper.ReapCounts(ran=True, dead_workers=1, handed_back=2, failed=1)
    assert dead not in registered(conn)
    failed = task_row(conn, culprit)
    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert failed["error_message"] == (
        f"worker {dead} died (killed by SIGSEGV) during attempt 3 of 3"
    )
    [(_, success, error, _)] = audit_rows(conn, culprit)
    assert success is False and "SIGSEGV" in error
    for task, attempts in ((neighbour, 2), (unstarted, 0)):
        row = task_row(conn, task)
        assert (row["status"], row["attempts"], row["due"]) == ("pending", attempts, True)
        assert row["error_message"] is None
        assert audit_rows(conn, task) == []
    assert {e["task_id"] for e in logs if e["event"] == "task_recovered"} == {
        str(culprit),
        str(neighbour),
        str(unstarted),
    }


def test_a_worker_known_dead_outside_a_handler_charges_nobody(
    conn: psycopg.Connection[Any],
) -> None:
    """No handler code ran (the OOM killer, kill -9 while all waited on I/O): all go back."""
    dead = add_worker(conn)
    tasks = [add_task(conn, dead, attempts=1), add_task(conn, dead, attempts=3, max_attempts=3)]
    elsewhere = add_task(conn, add_worker(conn), attempts=1)

    counts = reaper.recover_dead_worker(conn, dead, how="killed by SIGKILL")

    assert (counts.handed_back, counts.failed) == (2, 0)
    first, last = (task_row(conn, t) for t in tasks)
    assert (first["status"], first["attempts"]) == ("pending", 0)
    assert (last["status"], last["attempts"]) == ("pending", 2)
    assert task_row(conn, elsewhere)["status"] == "processing"


def test_a_stale_culprit_record_counts_nothing_twice(conn: psycopg.Connection[Any]) -> None:
    """The noted attempt is no longer this worker's (the reaper got there first)."""
    dead = add_worker(conn)
    other = add_worker(conn)
    task = add_task(conn, other, attempts=2)

    counts = reaper.recover_dead_worker(
        conn, dead, how="killed by SIGKILL", running=[(str(task), 1)]
    )

    assert counts.handed_back == counts.failed == 0
    assert task_row(conn, task)["status"] == "processing"
