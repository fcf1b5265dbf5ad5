"""Retention: ``pruner.run_once`` and ``websurf prune`` delete old finished tasks only.

What a user would notice: old completed, failed and cancelled tasks disappear in bounded
batches; pending and running tasks, and recently finished ones, stay whatever their age;
the cells' audit rows survive with their task reference cleared; one pruner at a time.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import structlog
from click.testing import CliRunner
from structlog.testing import capture_logs

from websurf.cli.prune import prune_command
from websurf.worker.core import queue
from websurf.worker.core.model import Outcome, Status
from websurf.worker.maintenance import pruner

WEEK = timedelta(days=7)


def add_task(
    conn: psycopg.Connection[Any], status: str, created_days_ago: float, finished_days_ago: float
) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status, created_at, updated_at)"
        " VALUES ('noop', '{}', %s, now() - make_interval(days => %s),"
        " now() - make_interval(days => %s)) RETURNING id",
        (status, created_days_ago, finished_days_ago),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def remaining(conn: psycopg.Connection[Any]) -> set[uuid.UUID]:
    return {uuid.UUID(str(r[0])) for r in conn.execute("SELECT id FROM websurfing_task_queue")}


@pytest.fixture
def cell(conn: psycopg.Connection[Any], make_user: Callable[..., str]) -> str:
    owner = make_user()
    row = conn.execute(
        "WITH s AS (INSERT INTO websurfing_spreadsheet (name, owner_id) VALUES ('s', %s)"
        " RETURNING id), c AS (INSERT INTO websurfing_column (spreadsheet_id, position, title)"
        " SELECT id, 0, 'A' FROM s RETURNING id, spreadsheet_id)"
        " INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
        " SELECT spreadsheet_id, id, 1 FROM c RETURNING id",
        (owner,),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_old_finished_tasks_go_and_everything_else_stays(conn: psycopg.Connection[Any]) -> None:
    old = [add_task(conn, s, 10, 9) for s in ("completed", "failed", "cancelled")]
    keep = [
        add_task(conn, "pending", 30, 30),  # waiting for a month: never pruned
        add_task(conn, "processing", 30, 30),
        add_task(conn, "completed", 1, 1),
        add_task(conn, "failed", 10, 1),  # created long ago but failed yesterday
    ]

    counts = pruner.run_once(conn, WEEK)

    assert counts.ran
    assert counts.deleted == 3
    assert remaining(conn) == set(keep)
    assert not set(old) & remaining(conn)


def test_audit_rows_of_pruned_tasks_survive_without_their_task_reference(
    conn: psycopg.Connection[Any], cell: str
) -> None:
    task = add_task(conn, "completed", 10, 10)
    with conn.transaction():  # rows of the past: the robot-row guard checks only new work
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO websurfing_robot_input_event (cell_id, task_id, operator_type, success)"
            " VALUES (%s, %s, 'noop', false), (%s, %s, 'noop', true)",
            (cell, task, cell, task),
        )

    counts = pruner.run_once(conn, WEEK)

    assert (counts.deleted, counts.audit_rows_detached) == (1, 2)
    rows = conn.execute(
        "SELECT task_id, success FROM websurfing_robot_input_event WHERE cell_id = %s"
        " ORDER BY success",
        (cell,),
    ).fetchall()
    assert rows == [(None, False), (None, True)]


def test_a_pruned_task_takes_its_attempts_with_it(conn: psycopg.Connection[Any]) -> None:
    """Its attempt log (0029) goes too, also when the worker's role prunes (a cascade)."""
    task_id = queue.enqueue(conn, "noop", {})
    keep_id = queue.enqueue(conn, "noop", {})
    for _ in range(2):  # each fails once and is retried at once
        for task in queue.claim(conn, "w", ["noop"], 2):
            queue.finish(conn, "w", [Outcome(task, Status.PENDING, "noop", error="E: once")])
    conn.execute(
        "UPDATE websurfing_task_queue SET status = 'completed', completed_at = now(),"
        " created_at = now() - interval '10 days', updated_at = now() - interval '9 days'"
        " WHERE id = %s",
        [task_id],
    )
    logged = "SELECT task_id, count(*) FROM websurfing_task_attempt GROUP BY task_id"
    assert dict(conn.execute(logged).fetchall()) == {task_id: 2, keep_id: 2}

    conn.execute("SET ROLE websurf_worker")
    try:
        counts = pruner.run_once(conn, WEEK)
    finally:
        conn.execute("RESET ROLE")

    assert counts.deleted == 1
    assert remaining(conn) == {keep_id}
    assert dict(conn.execute(logged).fetchall()) == {keep_id: 2}


def test_deletes_in_bounded_batches_until_done(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status, created_at, updated_at)"
        " SELECT 'noop', '{}', 'completed', now() - interval '30 days', now() - interval '30 days'"
        " FROM generate_series(1, 25)"
    )

    counts = pruner.run_once(conn, WEEK, batch_size=10)

    # completed/failed: 10 + 10 + 5; cancelled: one empty batch.
    assert (counts.deleted, counts.batches, counts.more) == (25, 4, False)
    assert remaining(conn) == set()


def test_an_injected_clock_sets_the_cutoff(conn: psycopg.Connection[Any]) -> None:
    task = add_task(conn, "completed", 3, 3)
    now = conn.execute("SELECT now()").fetchone()
    assert now is not None

    assert pruner.run_once(conn, WEEK, now=now[0]).deleted == 0
    assert pruner.run_once(conn, WEEK, now=now[0] + timedelta(days=5)).deleted == 1
    assert task not in remaining(conn)


def test_a_run_past_its_deadline_stops_and_says_there_is_more(
    conn: psycopg.Connection[Any],
) -> None:
    add_task(conn, "completed", 30, 30)

    counts = pruner.run_once(conn, WEEK, deadline=0.0)

    assert counts.ran and counts.more and counts.deleted == 0
    assert len(remaining(conn)) == 1


def test_only_one_pruner_runs_at_a_time(conn: psycopg.Connection[Any], database_url: str) -> None:
    add_task(conn, "completed", 30, 30)
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (pruner.LOCK_KEY,))

        counts = pruner.run_once(conn, WEEK)

        assert not counts.ran
        assert len(remaining(conn)) == 1
        other.execute("SELECT pg_advisory_unlock(%s)", (pruner.LOCK_KEY,))
        assert pruner.run_once(conn, WEEK).deleted == 1


def test_each_run_logs_one_summary(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    add_task(conn, "failed", 30, 30)

    with capture_logs() as logs:
        # A fresh logger, so a logger cached before capture_logs cannot hide the event.
        monkeypatch.setattr(pruner, "log", structlog.get_logger("websurf.pruner"))
        pruner.run_once(conn, WEEK)

    summaries = [e for e in logs if e["event"] == "pruner_ran"]
    assert len(summaries) == 1
    assert summaries[0]["deleted"] == 1


def test_prune_command_reports_counts(conn: psycopg.Connection[Any], database_url: str) -> None:
    add_task(conn, "completed", 30, 30)
    add_task(conn, "completed", 1, 1)

    result = CliRunner().invoke(
        prune_command, ["--database-url", database_url, "--older-than", "7d", "--json"]
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["deleted"] == 1
    assert len(remaining(conn)) == 1


def test_prune_command_refuses_a_malformed_age(database_url: str) -> None:
    result = CliRunner().invoke(
        prune_command, ["--database-url", database_url, "--older-than", "a week"]
    )

    assert result.exit_code == 2
    assert "not a duration" in result.output
