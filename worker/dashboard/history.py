"""Finished tasks over time: the overview's charts of throughput and pickup latency.

Counts per time bucket come from one query (dashboard_finished_per_bucket) that
range-scans task_queue_finished_idx. A bucket that has ended is counted once per
dashboard process and kept (:class:`ClosedBuckets`), so a request reads only the tasks
finished since the last ended bucket.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from websurf.sql import QUERIES


@dataclass(frozen=True)
class Series:
    """One line of a chart: a name and its value per bucket (buckets shared by the chart)."""

    name: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class Throughput:
    """Completed and failed tasks per bucket and operator over a window, and their pickup
    latency (due to started) per bucket: mean and worst, in seconds."""

    window_s: float
    bucket_s: float
    buckets: tuple[datetime, ...]
    completed: tuple[Series, ...]
    failed: tuple[Series, ...]
    mean_wait_s: Series
    max_wait_s: Series


class ClosedBuckets:
    """Chart counts of buckets that are over, kept between requests by one dashboard process.

    A task's finish time does not change once it is past, so a bucket that has ended is
    counted once; each request then reads only the tasks finished since the last ended
    bucket (a minute or a quarter hour of them), not the whole day. Tasks are counted by
    their state when their bucket is read: a failure retried while its bucket is still
    under way (or before the process first read that bucket) is not counted as failed,
    one retried after its bucket ended stays counted where it failed, and a pruned task
    stays counted until the process restarts.
    """

    def __init__(self) -> None:
        self._kept: dict[tuple[float, float], tuple[datetime, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def rows(
        self, conn: psycopg.Connection[Any], now: datetime, window_s: float, bucket_s: float
    ) -> list[dict[str, Any]]:
        """Every bucket row of the window: the kept ended ones and the new ones read now."""
        buckets = _buckets(now, window_s, bucket_s)
        current = buckets[-1]
        with self._lock:
            until, kept = self._kept.get((window_s, bucket_s), (buckets[0], []))
        since = max(until, buckets[0])
        fresh = _rows(conn, since, bucket_s)
        ended = [r for r in kept if r["bucket"] >= buckets[0]]
        ended += [r for r in fresh if r["bucket"] < current]
        with self._lock:
            self._kept[(window_s, bucket_s)] = (current, ended)
        return ended + [r for r in fresh if r["bucket"] >= current]


def throughput(
    conn: psycopg.Connection[Any],
    window_s: float,
    bucket_s: float,
    closed: ClosedBuckets | None = None,
) -> Throughput:
    """Completed and failed per bucket and operator; buckets without a task read as 0."""
    now = database_now(conn)
    buckets = _buckets(now, window_s, bucket_s)
    rows = (closed or ClosedBuckets()).rows(conn, now, window_s, bucket_s)
    index = {b: i for i, b in enumerate(buckets)}
    counts: dict[tuple[str, str], list[float]] = {}
    started, waited, worst = ([0.0] * len(buckets) for _ in range(3))
    for row in rows:
        slot = index.get(row["bucket"])
        if slot is None:
            continue
        line = counts.setdefault((row["status"], row["task_type"]), [0.0] * len(buckets))
        line[slot] += float(row["tasks"])
        started[slot] += row["started"]
        waited[slot] += row["waited_s"]
        worst[slot] = max(worst[slot], row["max_waited_s"])
    mean = tuple(w / n if n else 0.0 for w, n in zip(waited, started, strict=True))

    def lines(status: str) -> tuple[Series, ...]:
        return tuple(
            Series(task_type, tuple(values))
            for (kind, task_type), values in sorted(counts.items())
            if kind == status
        )

    return Throughput(
        window_s,
        bucket_s,
        buckets,
        lines("completed"),
        lines("failed"),
        Series("mean", mean),
        Series("worst", tuple(worst)),
    )


def database_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute(QUERIES["database_now"]).fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def _buckets(now: datetime, window_s: float, bucket_s: float) -> tuple[datetime, ...]:
    """The bucket starts covering the window, as date_bin from the epoch makes them."""
    step = int(bucket_s)
    last = int(now.timestamp()) // step * step
    first = last - int(window_s) // step * step
    return tuple(datetime.fromtimestamp(t, tz=now.tzinfo) for t in range(first, last + step, step))


def _rows(conn: psycopg.Connection[Any], since: datetime, bucket_s: float) -> list[Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        params = {"since": since, "bucket_s": bucket_s}
        return cur.execute(QUERIES["dashboard_finished_per_bucket"], params).fetchall()
