"""The worker registry, seen from the database while a real worker process runs.

A booted worker registers, refreshes its heartbeat, re-registers if the registry forgot
it (presumed dead), and removes its row when it stops cleanly. The process is the one the
supervisor starts (``python -m websurf.worker.daemon.child``), fed its settings on stdin.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from support.daemon import Daemon, Daemons

from websurf.sql import QUERIES
from websurf.worker.config import WorkerConfig

HEARTBEAT_S = 0.2
CHILD = [sys.executable, "-m", "websurf.worker.daemon.child"]


@dataclasses.dataclass
class Child:
    process: Daemon
    worker_id: str


@pytest.fixture
def start_child(database_url: str, daemons: Daemons) -> Callable[[], Child]:
    def start() -> Child:
        worker_id = f"test-host/0/{uuid.uuid4().hex[:12]}"
        config = WorkerConfig(
            database_url=database_url,
            concurrency=1,
            heartbeat_interval_s=HEARTBEAT_S,
            stale_after_s=30.0,
            reaper_interval_s=60.0,
            poll_interval_s=0.2,
            shutdown_timeout_s=5.0,
            log_format="json",
            hostname="test-host",
        )
        settings = dataclasses.asdict(config) | {"worker_id": worker_id, "predecessors": []}
        process = daemons.launch(CHILD, url=database_url, stdin=json.dumps(settings).encode())
        process.wait_for(lambda: process.output() or not process.alive(), "the child to answer")
        assert process.output().strip() == "ready", process.log_tail()
        return Child(process, worker_id)

    return start


def worker_row(conn: psycopg.Connection[Any], worker_id: str) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT hostname, pid, task_types, last_heartbeat_at FROM websurf.worker WHERE id = %s",
        (worker_id,),
    ).fetchone()


def test_a_booted_worker_registers_and_heartbeats(
    conn: psycopg.Connection[Any], start_child: Callable[[], Child]
) -> None:
    child = start_child()

    row = worker_row(conn, child.worker_id)
    assert row is not None
    hostname, pid, task_types, first_beat = row
    assert (hostname, pid) == ("test-host", child.process.pid)
    assert "noop" in task_types

    def later_beat() -> datetime | None:
        now = worker_row(conn, child.worker_id)
        return now[3] if now is not None and now[3] > first_beat else None

    child.process.wait_for(later_beat, "a newer heartbeat", 10 * HEARTBEAT_S + 5)
    listed = conn.execute(QUERIES["list_workers"]).fetchall()
    assert [(r[0], r[6]) for r in listed] == [(child.worker_id, False)]  # not stale


def test_a_clean_exit_deregisters(
    conn: psycopg.Connection[Any], start_child: Callable[[], Child]
) -> None:
    child = start_child()
    assert worker_row(conn, child.worker_id) is not None

    assert child.process.stop() == 0
    assert worker_row(conn, child.worker_id) is None
    assert child.process.events("worker_stopped")


def test_a_worker_the_registry_forgot_registers_again(
    conn: psycopg.Connection[Any], start_child: Callable[[], Child]
) -> None:
    """The reaper presumed it dead (a long network cut, say) while it was alive."""
    child = start_child()
    conn.execute("DELETE FROM websurf.worker WHERE id = %s", (child.worker_id,))

    row = child.process.wait_for(lambda: worker_row(conn, child.worker_id), "the row to come back")

    assert row[1] == child.process.pid
    child.process.wait_for(lambda: child.process.events("worker_reregistered"), "the log line")


def test_a_killed_worker_stays_registered_until_the_reaper_finds_it(
    conn: psycopg.Connection[Any], start_child: Callable[[], Child]
) -> None:
    """No clean exit, no deregistration: only the stale heartbeat tells."""
    child = start_child()
    child.process.kill_all()

    row = worker_row(conn, child.worker_id)
    assert row is not None
    listed = conn.execute(
        "SELECT count(*) FROM websurf.worker WHERE hostname = 'test-host'"
    ).fetchone()
    assert listed == (1,)
