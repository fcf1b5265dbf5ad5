"""When a worker process prunes: ``pruner.Cadence``, driven turn by turn.

A turn's ``now`` is a monotonic time (the run's deadline is ``now`` plus its budget), so
the turns here are offsets from the real monotonic clock.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import psycopg

from websurf.worker.maintenance import pruner


def add_old_completed(conn: psycopg.Connection[Any], count: int) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status, created_at, updated_at)"
        " SELECT 'noop', '{}', 'completed', now() - interval '30 days', now() - interval '30 days'"
        " FROM generate_series(1, %s)",
        (count,),
    )


def left(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM websurfing_task_queue").fetchone()
    assert row is not None
    return int(row[0])


def test_pruning_runs_at_the_first_turn_then_once_per_interval(
    conn: psycopg.Connection[Any],
) -> None:
    cadence = pruner.Cadence(timedelta(days=7), batch_size=100, interval_s=60.0, budget_s=10.0)
    add_old_completed(conn, 5)
    start = time.monotonic()

    first = cadence.run_if_due(conn, now=start)
    assert first is not None and first.deleted == 5 and left(conn) == 0

    add_old_completed(conn, 3)
    assert cadence.run_if_due(conn, now=start + 59.0) is None  # within the interval
    assert left(conn) == 3
    later = cadence.run_if_due(conn, now=start + 60.0)
    assert later is not None and later.deleted == 3 and left(conn) == 0


def test_a_run_cut_short_by_its_budget_continues_at_the_next_turn(
    conn: psycopg.Connection[Any],
) -> None:
    # A budget spent before the first batch: the run stops at once and says more is left.
    cadence = pruner.Cadence(timedelta(days=7), batch_size=2, interval_s=3600.0, budget_s=-1.0)
    add_old_completed(conn, 5)
    start = time.monotonic()

    first = cadence.run_if_due(conn, now=start)
    assert first is not None and first.more and left(conn) == 5
    cadence.budget_s = 60.0
    second = cadence.run_if_due(conn, now=start + 0.5)  # long before the interval
    assert second is not None and not second.more and left(conn) == 0
    assert cadence.run_if_due(conn, now=start + 1.0) is None  # done: the interval again
