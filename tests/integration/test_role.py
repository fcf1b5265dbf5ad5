"""The least-privilege role: a worker logged in as a member of websurf_worker does its job.

What a user would notice: a daemon whose database login has only the websurf_worker role
boots (its schema check reads websurf.schema_migrations), claims and finishes tasks,
writes a cell and its audit row, heartbeats, and prunes; while that login cannot
change the schema or read the people's tables.

Role names are global to the server and other test sessions share it: the migration
creates websurf_worker only where missing (never dropped here); each test makes its own
randomly named login and drops it at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, errors, sql
from psycopg.types.json import Jsonb
from support.daemon import Daemons
from support.rows import robot_payloads

from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.queue import claim, enqueue, finish
from websurf.worker.core.snapshot import status_snapshot
from websurf.worker.maintenance import pruner


@pytest.fixture
def worker_url(database_url: str, pg_server: str) -> Iterator[str]:
    """URL of the test database as a fresh LOGIN member of websurf_worker."""
    name = f"websurf_test_worker_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE websurf_worker").format(sql.Identifier(name))
        )
    try:
        yield conninfo.make_conninfo(database_url, user=name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            # Its sessions are gone with the daemon; rows it wrote belong to no one.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_the_worker_runs_with_only_the_worker_role(
    worker_url: str, conn: psycopg.Connection[Any], daemons: Daemons
) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload)"
        " SELECT 'noop', '{}' FROM generate_series(1, 50)"
    )
    [robot] = robot_payloads(conn, "uppercase", 1)  # its source cell holds 'input 1'
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('uppercase', %s)",
        (Jsonb(robot),),
    )
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status, created_at, updated_at)"
        " VALUES ('noop', '{}', 'completed', now() - interval '30 days',"
        " now() - interval '30 days')"
    )
    worker = daemons.worker(
        worker_url, "-c", "2", "--heartbeat-interval", "0.2", "--prune-older-than", "7d"
    )

    def all_done() -> bool:
        if not worker.alive():
            raise AssertionError(f"worker exited: {worker.log_tail()}")
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status <> 'completed'), count(*)"
            " FROM websurfing_task_queue"
        ).fetchone()
        return row == (0, 51)  # 51 done, the 30-day-old one pruned

    worker.wait_for(all_done, "every task completed and the old one pruned")
    workers = conn.execute("SELECT count(*) FROM websurf.worker").fetchone()
    assert worker.stop() == 0, worker.log_tail()

    assert workers == (2,)
    content = conn.execute(
        "SELECT content FROM websurfing_cell WHERE id = %s", (robot["cell_id"],)
    ).fetchone()
    audit = conn.execute(
        "SELECT success FROM websurfing_robot_input_event WHERE cell_id = %s", (robot["cell_id"],)
    ).fetchall()
    assert content == ("INPUT 1",) and audit == [(True,)]
    assert "permission denied" not in worker.log()


def test_the_worker_role_reads_status_and_prunes(
    worker_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status, created_at, updated_at)"
        " VALUES ('noop', '{}', 'failed', now() - interval '30 days', now() - interval '30 days')"
    )
    with psycopg.connect(worker_url, autocommit=True) as worker:
        assert pruner.run_once(worker, timedelta(days=7)).deleted == 1
        assert status_snapshot(worker).types == {}


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE websurfing_mine (id int)",
        "ALTER TABLE websurfing_task_queue ADD COLUMN extra int",
        "DROP INDEX task_queue_fair_idx",
        "CREATE TABLE websurf.mine (id int)",
        "TRUNCATE websurfing_task_queue",
        "SELECT email FROM websurfing_user",
        "SELECT * FROM websurfing_session",
        "DELETE FROM websurf.schema_migrations",
    ],
)
def test_the_worker_role_cannot_change_the_schema_or_read_peoples_data(
    worker_url: str, statement: str
) -> None:
    with (
        psycopg.connect(worker_url, autocommit=True) as worker,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        worker.execute(statement)


def test_a_hand_back_by_the_worker_role_keeps_the_tasks_key(
    worker_url: str, conn: psycopg.Connection[Any]
) -> None:
    task_id = enqueue(conn, "noop", {"n": 1}, unique_key="cell:role")
    with psycopg.connect(worker_url, autocommit=True) as worker:
        [task] = claim(worker, "role-test", ["noop"], 1)
        finish(worker, "role-test", [Outcome(task, Status.PENDING, "noop", handed_back=True)])

    row = conn.execute(
        "SELECT status, attempts, unique_key FROM websurfing_task_queue WHERE id = %s", (task_id,)
    ).fetchone()
    assert row == ("pending", 0, "cell:role")
