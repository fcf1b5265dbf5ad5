"""The worker registry, seen from the database while a real worker process runs.

A booted worker registers, refreshes its heartbeat, re-registers if the registry forgot
it (presumed dead), and removes its row when it stops cleanly. The process is the one the
supervisor starts (``python -m websurf.worker.daemon.child``), fed its settings on stdin.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from websurf.sql import QUERIES
from websurf.worker.config import WorkerConfig

T = TypeVar("T")
HEARTBEAT_S = 0.2
DEADLINE_S = 20.0


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_S) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@dataclasses.dataclass
class Child:
    process: subprocess.Popen[bytes]
    worker_id: str
    log_path: Path

    def log_events(self) -> list[str]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line)["event"])
            except (ValueError, KeyError):
                continue
        return events


@pytest.fixture
def start_child(database_url: str) -> Iterator[Callable[[], Child]]:
    started: list[Child] = []
    log_dir = Path(tempfile.mkdtemp(prefix="websurf-child-log-"))

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
        log_path = log_dir / f"{len(started)}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "websurf.worker.daemon.child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(settings).encode())
        process.stdin.close()
        child = Child(process, worker_id, log_path)
        started.append(child)
        assert process.stdout.readline().strip() == b"ready", log_path.read_text()
        return child

    yield start
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait()
        if child.process.stdout is not None:
            child.process.stdout.close()


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

    wait_for("a newer heartbeat", later_beat, timeout=10 * HEARTBEAT_S + 5)
    listed = conn.execute(QUERIES["list_workers"]).fetchall()
    assert [(r[0], r[6]) for r in listed] == [(child.worker_id, False)]  # not stale


def test_a_clean_exit_deregisters(
    conn: psycopg.Connection[Any], start_child: Callable[[], Child]
) -> None:
    child = start_child()
    assert worker_row(conn, child.worker_id) is not None

    child.process.send_signal(signal.SIGTERM)

    assert child.process.wait(timeout=DEADLINE_S) == 0
    assert worker_row(conn, child.worker_id) is None
    assert "worker_stopped" in child.log_events()


def test_a_worker_the_registry_forgot_registers_again(
    conn: psycopg.Connection[Any], start_child: Callable[[], Child]
) -> None:
    """The reaper presumed it dead (a long network cut, say) while it was alive."""
    child = start_child()
    conn.execute("DELETE FROM websurf.worker WHERE id = %s", (child.worker_id,))

    row = wait_for("the row to come back", lambda: worker_row(conn, child.worker_id))

    assert row[1] == child.process.pid
    assert "worker_reregistered" in wait_for(
        "the log line", lambda: [e for e in child.log_events() if e == "worker_reregistered"]
    )


def test_a_killed_worker_stays_registered_until_the_reaper_finds_it(
    conn: psycopg.Connection[Any], start_child: Callable[[], Child]
) -> None:
    """No clean exit, no deregistration: only the stale heartbeat tells."""
    child = start_child()
    os.kill(child.process.pid, signal.SIGKILL)
    child.process.wait(timeout=DEADLINE_S)

    row = worker_row(conn, child.worker_id)
    assert row is not None
    listed = conn.execute(
        "SELECT count(*) FROM websurf.worker WHERE hostname = 'test-host'"
    ).fetchone()
    assert listed == (1,)
