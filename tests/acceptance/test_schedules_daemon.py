"""Schedules run by real ``websurf worker`` daemons, some of them killed across ticks.

What a user would notice: with several daemons running, each tick of a schedule enqueues
exactly one task; killing a daemon (SIGKILL, its whole process group) just before a tick
neither loses nor doubles that tick; when every daemon was down, the missed ticks run
once when one comes back; and ``/metrics`` shows whether the last run succeeded.

Every wait polls the database (or the metrics endpoint) with a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from support.daemon import Daemon, free_port

from websurf.worker.core import schedules
from websurf.worker.core.schedules import Spec

Start = Callable[..., Daemon]  # conftest's start_worker(database_url, *options)
EVERY = timedelta(seconds=2)
FAST = ("--heartbeat-interval", "0.2", "--poll-interval", "0.2")  # maintenance turn: 0.2 s


def _db_now(daemon: Any) -> datetime:
    now: datetime = daemon.query("SELECT now()")[0][0]
    return now


def _next_run_at(daemon: Any) -> datetime:
    at: datetime = daemon.query("SELECT next_run_at FROM websurf.schedule WHERE name = 'tick'")[0][
        0
    ]
    return at


def _ticks(daemon: Any) -> list[datetime]:
    return [r[0] for r in daemon.query(
        "SELECT scheduled_for FROM websurfing_task_queue WHERE task_type = 'noop'"
        " ORDER BY scheduled_for"
    )]  # fmt: skip


def _wait_ticks(daemon: Any, count: int) -> None:
    """Wait until ``count`` more ticks have been enqueued."""
    target = len(_ticks(daemon)) + count
    daemon.wait_for(lambda: len(_ticks(daemon)) >= target, f"{count} more tick(s)")


def _kill_just_before_the_next_tick(victim: Any) -> None:
    """SIGKILL a daemon's process group 50 ms before the schedule's next tick."""
    due = _next_run_at(victim)
    victim.wait_for(
        lambda: _db_now(victim) >= due - timedelta(milliseconds=50), "the eve of a tick"
    )
    victim.kill_all()


def test_killing_daemons_across_ticks_loses_and_doubles_no_tick(
    database_url: str, start_worker: Start
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        schedules.add_schedule(conn, Spec("tick", "noop", every=EVERY))
    a = first = start_worker(database_url, *FAST, concurrency=2)
    b = start_worker(database_url, *FAST, concurrency=2)
    a.wait_ready(2)
    _wait_ticks(a, 2)

    _kill_just_before_the_next_tick(a)  # b carries on alone
    _wait_ticks(b, 2)
    a = start_worker(database_url, *FAST, concurrency=2)
    _wait_ticks(a, 2)
    _kill_just_before_the_next_tick(b)
    _wait_ticks(a, 2)

    # Every daemon down for three ticks: one task for them when a daemon is back.
    _kill_just_before_the_next_tick(a)
    down_from = _next_run_at(a)
    a.wait_for(lambda: _db_now(a) >= down_from + 3 * EVERY, "three ticks with no daemon")
    ran_before = len(_ticks(a))
    c = start_worker(database_url, *FAST)
    _wait_ticks(c, 3)
    c.stop()

    ticks = _ticks(c)
    (row,) = c.query(
        "SELECT ticks_run, ticks_skipped, last_run_at FROM websurf.schedule WHERE name = 'tick'"
    )
    ticks_run, ticks_skipped, last_run_at = row
    assert len(set(ticks)) == len(ticks) == ticks_run  # none doubled
    expected = int((last_run_at - ticks[0]) / EVERY) + 1  # every tick from first to last
    assert ticks_run + ticks_skipped == expected  # none lost: each ran or was counted skipped
    catch_up = ticks[ran_before]  # the one task for the stretch with no daemon
    assert catch_up >= down_from + 2 * EVERY
    live = ticks[:ran_before]  # while at least one daemon ran: every tick, 2 s apart
    assert all(later - earlier == EVERY for earlier, later in itertools.pairwise(live))
    assert ticks_skipped == int((catch_up - ticks[ran_before - 1]) / EVERY) - 1 >= 2
    for daemon in (first, a, b, c):
        assert daemon.events("schedules_failed") == []
        assert daemon.events("heartbeat_failed") == []


def test_a_schedule_declared_in_code_runs_and_metrics_show_its_last_run(
    database_url: str, start_worker: Start
) -> None:
    port = free_port()
    daemon = start_worker(
        database_url,
        *FAST,
        "--operators",
        "scheduled_operators_for_tests",
        "--metrics-port",
        str(port),
    )

    def scrape() -> str:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response,
        ):
            return str(response.read().decode())
        return ""

    success = 'websurf_schedule_last_run_success{schedule="code-tick"} 1.0'
    text = daemon.wait_for(
        lambda: success in (t := scrape()) and t, "the last run to show as a success"
    )
    assert 'websurf_schedule_next_run_timestamp_seconds{schedule="code-tick"}' in text
    assert any(
        line.startswith("websurf_schedule_ticks_total{")
        and 'outcome="enqueued"' in line
        and 'schedule="code-tick"' in line
        for line in text.splitlines()
    )
    (row,) = daemon.query("SELECT source, every FROM websurf.schedule")
    assert row == ("code", timedelta(seconds=1))
    completed = daemon.query(
        "SELECT payload FROM websurfing_task_queue WHERE status = 'completed' LIMIT 1"
    )
    assert completed == [({"from": "code"},)]
