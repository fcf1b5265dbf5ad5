"""The overview's numbers: per-bucket counts that stay right across requests.

The day chart keeps the counts of ended buckets between requests (reads.ClosedBuckets)
and reads only what finished since: a second request must count each task once.
"""

from __future__ import annotations

from typing import Any

import psycopg

from websurf.worker.dashboard import reads


def finish(conn: psycopg.Connection[Any], task_type: str, status: str, ago: str, n: int) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status, updated_at)"
        " SELECT %s, '{}', %s, now() - %s::interval FROM generate_series(1, %s)",
        (task_type, status, ago, n),
    )


def totals(found: reads.Throughput) -> dict[str, dict[str, float]]:
    return {
        "completed": {s.name: sum(s.values) for s in found.completed},
        "failed": {s.name: sum(s.values) for s in found.failed},
    }


def test_ended_buckets_are_kept_and_each_task_counted_once(conn: psycopg.Connection[Any]) -> None:
    finish(conn, "web_title", "completed", "3 hours", 5)
    finish(conn, "web_title", "failed", "2 hours", 2)
    finish(conn, "uppercase", "completed", "0 seconds", 1)
    finish(conn, "uppercase", "completed", "2 days", 7)  # outside the day
    closed = reads.ClosedBuckets()

    first = reads.throughput(conn, reads.DAY_S, reads.DAY_BUCKET_S, closed)
    finish(conn, "uppercase", "completed", "0 seconds", 2)
    second = reads.throughput(conn, reads.DAY_S, reads.DAY_BUCKET_S, closed)

    assert totals(first) == {
        "completed": {"uppercase": 1.0, "web_title": 5.0},
        "failed": {"web_title": 2.0},
    }
    assert totals(second) == {
        "completed": {"uppercase": 3.0, "web_title": 5.0},
        "failed": {"web_title": 2.0},
    }
    assert len(second.buckets) == 97  # a day of quarter hours, and the one under way
    assert second.completed[0].values[-1] == 3.0  # the newest bucket holds the new ones


def test_an_empty_queue_draws_empty_charts(conn: psycopg.Connection[Any]) -> None:
    found = reads.overview(conn)

    assert found.hour.completed == () and found.depth == [] and found.workers == []
    assert len(found.latency.mean_s.values) == 61
