"""``websurf status``: the numbers a person on call reads, and that they come from indexes.

What a user would notice: counts per type and state, how long the oldest due task has
waited (future-scheduled tasks not counted as waiting), throughput, the latest failure
and the live workers; and that the command stays fast on a table of finished rows
(every query uses an index, shown with EXPLAIN on 200,000 finished rows). The reaper's
and the pruner's reads are held to the same: they run every few seconds on every host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from websurf.cli import status
from websurf.cli.render.status import status_report
from websurf.sql import QUERIES
from websurf.worker.core.snapshot import Failures, status_snapshot

FINISHED_ROWS = 200_000
MAX_PAGES_TOUCHED = 60  # the table has thousands of pages; its finished index hundreds
NEVER_S = 1e9
BEFORE_ALL_ROWS = datetime.now(UTC) - timedelta(days=365)  # the rows span 30 days
LISTING: dict[str, Any] = {"status": None, "task_type": None, "limit": 50}
INDEXED_QUERIES: dict[
    str, dict[str, Any]
] = {  # websurf status, and websurf tasks list with and without filters
    "count_pending_by_type": {},
    "count_pending_by_key": {"limit": 10},
    "count_processing_by_type": {},
    "count_finished_by_type": {"window_s": 3600.0},
    "completed_throughput": {},
    "recent_failures_by_type": {"window_s": 3600.0},
    "list_tasks": LISTING,
    "list_tasks[processing]": {**LISTING, "status": "processing"},
    "list_tasks[failed]": {**LISTING, "status": "failed"},
    # A type filter alone is not indexed: a state with no task of that type is read whole.
    "list_tasks[completed type1]": {**LISTING, "status": "completed", "task_type": "type1"},
    # The maintenance thread's reads, every few seconds on every host (nothing qualifies:
    # EXPLAIN ANALYZE runs them for real).
    "reap_orphaned_tasks": {"min_age_s": NEVER_S, "limit": 100},
    "reap_timed_out_tasks": {"task_types": ["type1"], "timeouts_s": [NEVER_S], "limit": 100},
    "release_dead_worker_tasks": {
        "worker_id": "host/9",
        "culprit_ids": [],
        "culprit_attempts": [],
        "how": "SIGKILL",
    },
    "prune_finished_tasks": {"cutoff": BEFORE_ALL_ROWS, "limit": 1000},
    "prune_cancelled_tasks": {"cutoff": BEFORE_ALL_ROWS, "limit": 1000},
    "promote_due_tasks": {"now": None, "limit": 1000},
}


def insert(conn: psycopg.Connection[Any], statement: str, *params: Any) -> None:
    conn.execute(statement, params or None)


@pytest.fixture
def busy_queue(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Tasks in every state, one registered live worker holding two of them."""
    insert(
        conn,
        "INSERT INTO websurf.worker (id, hostname, pid) VALUES ('host/0/abc', 'host', 42)",
    )
    insert(
        conn,
        "INSERT INTO websurfing_task_queue (task_type, payload, scheduled_for, created_at)"
        " VALUES ('fetch', '{}', now() - interval '90 seconds', now() - interval '90 seconds'),"
        " ('fetch', '{}', now() - interval '10 seconds', now() - interval '10 seconds'),"
        " ('fetch', '{}', now() + interval '1 hour', now()),"
        " ('noop', '{}', now() - interval '5 seconds', now() - interval '5 seconds')",
    )
    insert(
        conn,
        "INSERT INTO websurfing_task_queue (task_type, payload, status, worker_id, started_at)"
        " SELECT 'noop', '{}', 'processing', 'host/0/abc', now() FROM generate_series(1, 2)",
    )
    insert(
        conn,
        "INSERT INTO websurfing_task_queue (task_type, payload, status, updated_at)"
        " SELECT 'noop', '{}', 'completed', now() - make_interval(secs => n)"
        " FROM generate_series(1, 600) AS n",  # 600 in 10 minutes: 60 in the last minute
    )
    insert(
        conn,
        "INSERT INTO websurfing_task_queue"
        " (task_type, payload, status, updated_at, error_message)"
        " VALUES ('fetch', '{}', 'failed', now() - interval '2 minutes', 'older error'),"
        " ('fetch', '{}', 'failed', now() - interval '1 minute', 'TimeoutError: slow site'),"
        " ('fetch', '{}', 'failed', now() - interval '3 hours', 'outside the window'),"
        " ('fetch', '{}', 'cancelled', now(), NULL)",
    )
    return conn


def test_counts_waits_throughput_failures_and_workers(busy_queue: psycopg.Connection[Any]) -> None:
    found = status_snapshot(busy_queue)

    fetch, noop = found.types["fetch"], found.types["noop"]
    assert (fetch.due, fetch.scheduled, fetch.processing) == (2, 1, 0)
    assert (fetch.failed, fetch.cancelled) == (2, 1)
    assert (noop.due, noop.processing, noop.completed) == (1, 2, 600)
    assert found.oldest_due_age_s is not None and 89 <= found.oldest_due_age_s < 120
    assert found.throughput_per_s["1m"] == pytest.approx(1.0, abs=0.05)
    assert found.throughput_per_s["15m"] == pytest.approx(600 / 900, abs=0.01)
    assert found.failures == [
        Failures(
            task_type="fetch",
            failed=2,
            last_failed_at=found.failures[0].last_failed_at,
            last_error="TimeoutError: slow site",
        )
    ]
    assert [(w.id, w.stale) for w in found.workers] == [("host/0/abc", False)]


def test_status_command_prints_text_and_json(
    busy_queue: psycopg.Connection[Any], database_url: str
) -> None:
    text = CliRunner().invoke(status.status_command, ["--database-url", database_url])
    as_json = CliRunner().invoke(status.status_command, ["--database-url", database_url, "--json"])

    assert text.exit_code == 0, text.output
    assert "TimeoutError: slow site" in text.stdout
    assert "1 live, 0 stale" in text.stdout
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert report["totals"]["due"] == 3
    assert report["types"]["fetch"]["scheduled"] == 1


def test_an_empty_queue_reads_as_empty(conn: psycopg.Connection[Any]) -> None:
    found = status_snapshot(conn)

    assert found.types == {} and found.oldest_due_age_s is None and found.workers == []
    assert "no tasks pending" in status_report(found)


def test_pending_tasks_that_no_live_worker_handles_are_named(
    conn: psycopg.Connection[Any],
) -> None:
    """A robot column with a typo in its operator type: its tasks would wait silently."""
    insert(
        conn,
        "INSERT INTO websurf.worker (id, hostname, pid, task_types)"
        " VALUES ('host/0/live', 'host', 42, '{uppercase}'),"
        " ('host/1/dead', 'host', 43, '{web_title}')",
    )
    insert(
        conn,
        "UPDATE websurf.worker SET last_heartbeat_at = now() - interval '1 hour'"
        " WHERE id = 'host/1/dead'",
    )
    insert(
        conn,
        "INSERT INTO websurfing_task_queue (task_type, payload)"
        " SELECT t, '{}' FROM unnest('{uppercase,uppercsae,uppercsae,web_title}'::text[]) AS t",
    )

    found = status_snapshot(conn)

    assert found.unhandled == {"uppercsae": 2, "web_title": 1}
    text = status_report(found)
    assert "no live worker handles" in text and "uppercsae" in text


def _scanned_relations(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "Relation Name" in plan:
        yield plan["Node Type"], plan.get("Index Name", plan["Relation Name"])
    for child in plan.get("Plans", []):
        yield from _scanned_relations(child)


@pytest.mark.parametrize("name", sorted(INDEXED_QUERIES))
def test_status_queries_use_indexes_on_many_finished_rows(
    many_finished_rows: str, name: str
) -> None:
    with psycopg.connect(many_finished_rows, autocommit=True) as conn:
        row = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + QUERIES[name.split("[")[0]],
            INDEXED_QUERIES[name],
        ).fetchone()
        pages = conn.execute(
            "SELECT relpages FROM pg_class WHERE relname = 'websurfing_task_queue'"
        ).fetchone()
    assert row is not None and pages is not None
    plan = row[0][0]["Plan"]
    scans = list(_scanned_relations(plan))
    touched = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]

    assert scans, f"{name}: no table scanned?"
    seq_scans = [s for s in scans if s[0] == "Seq Scan" and s[1] == "websurfing_task_queue"]
    assert seq_scans == [], f"{name} reads the whole queue table: {scans}"
    # An index scan without a usable bound reads the whole index: hundreds of pages.
    assert touched < MAX_PAGES_TOUCHED < pages[0], f"{name} touched {touched} pages: {scans}"


@pytest.fixture(scope="module")
def many_finished_rows(databases: Any, template_database: str) -> Iterator[str]:
    """200,000 finished tasks over 30 days, a few pending and running, analysed."""
    name = databases.create(template=template_database)
    url = databases.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO websurf.worker (id, hostname, pid)"
            " SELECT 'host/' || n, 'host', n FROM generate_series(1, 4) AS n"
        )
        conn.execute(
            "INSERT INTO websurfing_task_queue"
            " (task_type, payload, status, worker_id, created_at, updated_at, started_at)"
            " SELECT 'type' || mod(n, 5), '{}',"
            " CASE WHEN mod(n, 50) = 0 THEN 'failed' ELSE 'completed' END,"
            " 'host/' || (mod(n, 4) + 1),"
            " now() - make_interval(secs => n * 13), now() - make_interval(secs => n * 13),"
            " now() - make_interval(secs => n * 13)"
            " FROM generate_series(1, %s) AS n",
            (FINISHED_ROWS,),
        )
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, status, worker_id)"
            " SELECT 'type1', '{}', CASE WHEN n % 2 = 0 THEN 'pending' ELSE 'processing' END,"
            " CASE WHEN n % 2 = 0 THEN NULL ELSE 'host/1' END FROM generate_series(1, 50) AS n"
        )
        conn.execute("VACUUM ANALYZE websurfing_task_queue")
        conn.execute("ANALYZE websurf.worker")
    yield url
    databases.drop(name)
