"""Rows no client should write, and what websurf does when one is there anyway.

What a user would notice: the database refuses a task payload that is not a JSON object
(whoever inserts it); a database that already holds such rows migrates, failing the
pending ones with a message; and a task whose row the reaper cannot make sense of (no
object, a cell id that is no UUID, a deleted cell) is still recovered, just without an
audit row, while its well-formed batch-mates keep theirs.

The malformed rows are inserted after dropping the CHECK in this test's own database,
which is how they exist in a database that predates it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from websurf.sql.migrate import migrate, shipped_migrations
from websurf.worker.maintenance import reaper

NOT_OBJECTS = ["[1]", '"text"', "1", "null", "true"]
PAYLOAD_CHECK_VERSION = 14


@pytest.mark.parametrize("payload", NOT_OBJECTS)
def test_the_database_refuses_a_payload_that_is_not_an_object(
    conn: psycopg.Connection[Any], payload: str
) -> None:
    with pytest.raises(errors.CheckViolation, match="task_queue_payload_object"):
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('noop', %s::jsonb)",
            (payload,),
        )
    conn.execute("INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('noop', '{}')")
    with pytest.raises(errors.CheckViolation, match="task_queue_payload_object"):
        conn.execute("UPDATE websurfing_task_queue SET payload = %s::jsonb", (payload,))
    rows = conn.execute("SELECT payload FROM websurfing_task_queue").fetchall()
    assert rows == [({},)]


def test_a_database_holding_such_rows_migrates_and_fails_the_pending_ones(
    empty_database_url: str,
) -> None:
    before = [m for m in shipped_migrations() if m.version < PAYLOAD_CHECK_VERSION]
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        migrate(conn, shipped=before)
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, status) VALUES"
            " ('noop', '[1]', 'pending'), ('noop', '\"x\"', 'processing'),"
            " ('noop', '2', 'completed'), ('noop', '{\"n\": 1}', 'pending')"
        )

        migrate(conn)

        rows = conn.execute(
            "SELECT payload, status, error_message FROM websurfing_task_queue"
            " ORDER BY payload::text"
        ).fetchall()
    assert rows[0] == ({"n": 1}, "pending", None)  # a good row is untouched
    repaired = {str(p["payload"]): (s, e) for p, s, e in rows[1:]}
    assert repaired.keys() == {"[1]", "x", "2"}  # the old value is kept under "payload"
    assert repaired["2"] == ("completed", None)  # history is not rewritten
    for status, error in (repaired["[1]"], repaired["x"]):
        assert status == "failed"
        assert error.startswith("payload is not a JSON object")


@pytest.fixture
def unchecked(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """This test's database as one that predates the payload CHECK."""
    conn.execute("ALTER TABLE websurfing_task_queue DROP CONSTRAINT task_queue_payload_object")
    return conn


def _malformed_tasks(
    conn: psycopg.Connection[Any], worker_id: str, make_cell: Callable[[], str]
) -> dict[str, uuid.UUID]:
    """One task per malformed shape plus a good one, all held by ``worker_id``."""
    deleted = make_cell()
    conn.execute("DELETE FROM websurfing_cell WHERE id = %s", (deleted,))
    payloads: dict[str, Any] = {
        "good": {"cell_id": make_cell(), "input": "x"},
        "list": [1],
        "string": "text",
        "not a uuid": {"cell_id": "not-a-uuid", "cell_content": "x"},
        "number id": {"cell_id": 5},
        "object id": {"cell_id": {"id": 1}},
        "deleted cell": {"cell_id": deleted},
        "no cell": {"n": 1},
    }
    ids = {}
    for name, payload in payloads.items():
        row = conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, status, attempts,"
            " max_attempts, started_at, worker_id)"
            " VALUES ('noop', %s, 'processing', 1, 1, now() - interval '1 minute', %s)"
            " RETURNING id",
            (Jsonb(payload), worker_id),
        ).fetchone()
        assert row is not None
        ids[name] = row[0]
    return ids


def _outcomes(conn: psycopg.Connection[Any], ids: dict[str, uuid.UUID]) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT t.id, t.status, t.error_message, count(e.id)"
        " FROM websurfing_task_queue AS t"
        " LEFT JOIN websurfing_robot_input_event AS e ON e.task_id = t.id"
        " WHERE t.id = ANY(%s) GROUP BY t.id",
        (list(ids.values()),),
    ).fetchall()
    by_id = {r[0]: r[1:] for r in rows}
    return {name: by_id[task_id] for name, task_id in ids.items()}


def test_the_reaper_recovers_tasks_whose_rows_it_cannot_read(
    unchecked: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    conn = unchecked
    ids = _malformed_tasks(conn, "host-a/0/gone", make_cell)  # no registry row: orphaned

    counts = reaper.run_once(conn, {})

    assert counts.failed == len(ids)
    outcomes = _outcomes(conn, ids)
    for name, (status, error, audit_rows) in outcomes.items():
        assert status == "failed", name
        assert "stopped heartbeating" in error, name
        assert audit_rows == (1 if name == "good" else 0), name


def test_a_replacement_recovers_its_predecessors_malformed_tasks(
    unchecked: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    conn = unchecked
    dead = "host-a/0/dead"
    ids = _malformed_tasks(conn, dead, make_cell)

    # As if each ran in a handler thread when the process died: every attempt counts.
    running = [(str(task_id), 1) for task_id in ids.values()]
    counts = reaper.recover_dead_worker(conn, dead, how="killed by SIGKILL", running=running)

    assert (counts.failed, counts.handed_back) == (len(ids), 0)
    outcomes = _outcomes(conn, ids)
    for name, (status, error, audit_rows) in outcomes.items():
        assert status == "failed", name
        assert "died (killed by SIGKILL)" in error, name
        assert audit_rows == (1 if name == "good" else 0), name
