"""Limits under faults: a worker process killed (SIGKILL) while it holds capped tasks,
and PostgreSQL restarted in the middle of a rate window. Counted from the handlers' own
notes: never more running than the cap, never more started in any window than the rate,
and every task completes (nothing lost, the dead process's share comes back).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faults.faultkit import DB_ERRORS, FaultServer
from faults.limit_operators import CAP, EVENTS_ENV, PERIOD_S, RATE
from support.daemon import Daemon, query
from support.waiting import wait_for

from websurf.worker.bench.limits import most_in_window

FAST = (
    "--concurrency", "2", "--heartbeat-interval", "0.2", "--stale-after", "1",
    "--reaper-interval", "0.2", "--shutdown-timeout", "5", "--poll-interval", "0.2",
)  # fmt: skip
CAPPED_TASKS = 40
RATED_TASKS = 60
JITTER_S = 0.1  # a handler starts a little after its claim (the claim holds exactly)
DEADLINE_S = 120.0


def _enqueue(url: str, operator: str, count: int) -> None:
    query(
        url,
        "INSERT INTO websurfing_task_queue (task_type, payload)"
        " SELECT %s, jsonb_build_object('n', n) FROM generate_series(1, %s) AS n",
        operator,
        count,
    )


def _events(path: Path) -> list[tuple[str, str, str, float, int]]:
    rows = []
    for line in path.read_text().splitlines():
        event, operator, task, at, pid = line.split()
        rows.append((event, operator, task, float(at), int(pid)))
    return rows


def _peak_running(events: list[tuple[str, str, str, float, int]], killed: dict[int, float]) -> int:
    """The most capped handlers running at once; one in a killed process ended at the kill."""
    ends = {(task, pid): at for event, _, task, at, pid in events if event == "end"}
    changes = []
    for event, operator, task, at, pid in events:
        if event == "start" and operator == "capped":
            end = ends.get((task, pid), killed.get(pid))
            assert end is not None, f"capped task {task} never ended in a live process {pid}"
            changes += [(at, 1), (end, -1)]
    running = peak = 0
    for _, change in sorted(changes):
        running += change
        peak = max(peak, running)
    return peak


def _unfinished(url: str) -> int:
    rows = query(url, "SELECT count(*) FROM websurfing_task_queue WHERE status <> 'completed'")
    return int(rows[0][0])


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_caps_and_windows_hold_through_a_killed_holder_and_a_database_restart(
    fault_server: FaultServer,
    fault_database: str,
    start_worker: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    url = fault_database
    notes = tmp_path / "limit-events"
    env = {EVENTS_ENV: str(notes)}
    daemons = [
        start_worker(url, *FAST, "--operators", "limit_operators", env=env) for _ in range(2)
    ]
    for daemon in daemons:
        daemon.wait_for(lambda d=daemon: len(d.children()) == 2, "two workers", 30)
    _enqueue(url, "capped", CAPPED_TASKS)
    _enqueue(url, "rated", RATED_TASKS)

    # kill -9 a worker process while it holds capped tasks
    def holder() -> list[tuple[Any, ...]]:
        return query(
            url,
            "SELECT w.pid FROM websurf.worker w JOIN websurfing_task_queue t"
            " ON t.worker_id = w.id AND t.status = 'processing' AND t.task_type = 'capped'"
            " LIMIT 1",
        )

    [(pid,)] = wait_for(holder, "a worker process holding capped tasks", 30)
    os.kill(pid, signal.SIGKILL)
    killed = {pid: time.time()}

    # restart PostgreSQL in the middle of a rate window
    wait_for(
        lambda: (
            notes.exists()
            and sum(" rated " in line for line in notes.read_text().splitlines()) > RATE
        ),
        "the rated tasks into their second window",
        30,
    )
    fault_server.server.restart()

    wait_for(
        lambda: _unfinished(url) == 0,
        "every task completed",
        DEADLINE_S,
        poll=0.2,
        tolerate=DB_ERRORS,
        details=lambda: "\n".join(d.log_tail() for d in daemons),
    )
    for daemon in daemons:
        assert daemon.stop() == 0

    events = _events(notes)
    assert _peak_running(events, killed) <= CAP
    rated_starts = [at for event, op, _, at, _ in events if event == "start" and op == "rated"]
    assert most_in_window(rated_starts, PERIOD_S - JITTER_S) <= RATE
    # from the rows too, exactly: claims on the database clock
    claimed = [
        row[0].timestamp()
        for row in query(
            url, "SELECT started_at FROM websurfing_task_queue WHERE task_type = 'rated'"
        )
    ]
    assert most_in_window(claimed, PERIOD_S) <= RATE
    completed = query(
        url, "SELECT task_type, count(*) FROM websurfing_task_queue GROUP BY 1 ORDER BY 1"
    )
    assert completed == [("capped", CAPPED_TASKS), ("rated", RATED_TASKS)]  # nothing lost
