"""The overview's numbers: per-bucket counts that stay right across requests.

The day chart keeps the counts of ended buckets between requests (history.ClosedBuckets)
and reads only what finished since: a second request must count each task once.
"""

from __future__ import annotations

from typing import Any

import psycopg

from websurf.worker.dashboard import history, reads


def finish(
    conn: psycopg.Connection[Any], task_type: str, status: str, ago: str, n: int, waited: str = "1s"
) -> None:
    """n tasks finished ``ago``, each started ``waited`` after it was due."""
    conn.execute(
        "INSERT INTO websurfing_task_queue"
        " (task_type, payload, status, created_at, scheduled_for, started_at, updated_at)"
        " SELECT %(type)s, '{}', %(status)s, t - %(waited)s::interval - interval '1s',"
        "        t - %(waited)s::interval, t, t"
        " FROM (SELECT now() - %(ago)s::interval AS t FROM generate_series(1, %(n)s)) AS s",
        {"type": task_type, "status": status, "ago": ago, "n": n, "waited": waited},
    )


def totals(found: history.Throughput) -> dict[str, dict[str, float]]:
    return {
        "completed": {s.name: sum(s.values) for s in found.completed},
        "failed": {s.name: sum(s.values) for s in found.failed},
    }


def test_ended_buckets_are_kept_and_each_task_counted_once(conn: psycopg.Connection[Any]) -> None:
    finish(conn, "web_title", "completed", "3 hours", 5)
    finish(conn, "web_title", "failed", "2 hours", 2)
    finish(conn, "uppercase", "completed", "0 seconds", 1)
    finish(conn, "uppercase", "completed", "2 days", 7)  # outside the day
    closed = history.ClosedBuckets()

    first = history.throughput(conn, reads.DAY_S, reads.DAY_BUCKET_S, closed)
    finish(conn, "uppercase", "completed", "0 seconds", 2)
    second = history.throughput(conn, reads.DAY_S, reads.DAY_BUCKET_S, closed)

    assert totals(first) == {
        "completed": {"uppercase": 1.0, "web_title": 5.0},
        "failed": {"web_title": 2.0},
    }
    assert totals(second) == {
        "completed": {"uppercase": 3.0, "web_title": 5.0},
        "failed": {"web_title": 2.0},
    }
    assert len(second.buckets) == 97  # a day of quarter hours, and the one under way


def test_pickup_latency_is_the_wait_from_due_to_started(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():  # one now(): all four finish in the same minute
        finish(conn, "web_title", "completed", "0 seconds", 3, waited="2 seconds")
        finish(conn, "uppercase", "failed", "0 seconds", 1, waited="6 seconds")

    found = history.throughput(conn, reads.HOUR_S, reads.HOUR_BUCKET_S)

    assert [v for v in found.mean_wait_s.values if v] == [3.0]  # (3 x 2 s + 6 s) / 4
    assert [v for v in found.max_wait_s.values if v] == [6.0]


def test_an_empty_queue_draws_empty_charts(conn: psycopg.Connection[Any]) -> None:
    found = reads.overview(conn)

    assert found.hour.completed == () and found.depth == [] and found.workers == []
    assert len(found.hour.mean_wait_s.values) == 61 and not any(found.hour.max_wait_s.values)
