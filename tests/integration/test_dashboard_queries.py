"""The dashboard stays fast on a big queue: no page's query reads the whole queue table.

Each named query a page runs is EXPLAINed (ANALYZE, so it really runs) on a queue seeded
as ``websurf bench``'s dashboard measurement seeds it, at a fifth of its size (200,000
finished tasks, 20,000 pending), and must reach websurfing_task_queue through an index.
The bench's measurement itself runs here on a small queue: every page answers over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from websurf.sql import QUERIES
from websurf.worker.bench import harness
from websurf.worker.bench.dashboard import measure_dashboard_pages, seed
from websurf.worker.dashboard import reads

FINISHED_ROWS = 200_000
PENDING_ROWS = 20_000
SOME_TASK = "00000000-0000-0000-0000-000000000000"
HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)
DAY_AGO = datetime.now(UTC) - timedelta(days=1)
TASKS = {
    "task_type": None,
    "spreadsheet_id": None,
    "fairness_key": None,
    "error": None,
    "window_s": reads.TASK_WINDOW_S,
    "limit": reads.PAGE_LIMIT,
    "sample": reads.SAMPLE,
}
PAGE_QUERIES: dict[str, dict[str, Any]] = {
    "dashboard_finished_per_bucket[hour]": {"since": HOUR_AGO, "bucket_s": 60.0},
    "dashboard_finished_per_bucket[day]": {"since": DAY_AGO, "bucket_s": 900.0},
    "dashboard_queue_depth": {"many_attempts": 3},
    "dashboard_workers": {},
    "dashboard_stuck_tasks": {"stuck_s": 900.0, "limit": 20},
    "dashboard_failure_groups": {
        "window_s": reads.FAILURE_WINDOW_S,
        "limit": 100,
        "sample": reads.SAMPLE,
    },
    "dashboard_failure_group_tasks": {
        "task_type": "web_title",
        "fingerprint": "0123456789abcdef",
        "sample": reads.SAMPLE,
        "window_s": reads.FAILURE_WINDOW_S,
        "limit": 100,
    },
    "dashboard_find_tasks[pending]": {**TASKS, "status": "pending"},
    "dashboard_find_tasks[processing]": {**TASKS, "status": "processing"},
    "dashboard_find_tasks[failed]": {**TASKS, "status": "failed"},
    "dashboard_find_tasks[completed, error]": {**TASKS, "status": "completed", "error": "x"},
    "dashboard_find_tasks[cancelled, sheet]": {
        **TASKS,
        "status": "cancelled",
        "spreadsheet_id": SOME_TASK,
    },
    "dashboard_find_tasks[pending, tenant]": {
        **TASKS,
        "status": "pending",
        "fairness_key": "tenant-0",
    },
    "dashboard_find_tasks[failed, tenant]": {**TASKS, "status": "failed", "fairness_key": "x"},
    "dashboard_task_keys": {"id": SOME_TASK},
    "count_pending_by_key": {"limit": reads.TOP_KEYS},
    "limit_states": {},
    "dashboard_change_probe": {},
    "run_task_now": {"id": SOME_TASK},
}


@pytest.fixture(scope="module")
def big_queue(pg_server: str) -> Iterator[str]:
    with harness.scratch_database(pg_server) as url:
        with harness.scratch_connection(url) as conn:
            seed(conn, finished=FINISHED_ROWS, pending=PENDING_ROWS)
        yield url


def _scans(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "Relation Name" in plan:
        yield plan["Node Type"], plan["Relation Name"]
    for child in plan.get("Plans", []):
        yield from _scans(child)


@pytest.mark.parametrize("name", sorted(PAGE_QUERIES))
def test_page_queries_read_the_queue_through_indexes(big_queue: str, name: str) -> None:
    with (
        psycopg.connect(big_queue, autocommit=True) as conn,
        conn.transaction(
            force_rollback=True  # run_task_now writes
        ),
    ):
        row = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + QUERIES[name.split("[")[0]],
            PAGE_QUERIES[name],
        ).fetchone()
    assert row is not None
    scans = list(_scans(row[0][0]["Plan"]))

    assert ("Seq Scan", "websurfing_task_queue") not in scans, f"{name}: {scans}"
    assert any(relation == "websurfing_task_queue" for _, relation in scans), name


def test_the_bench_times_every_page(pg_server: str) -> None:
    with harness.scratch_database(pg_server) as url:
        pages = measure_dashboard_pages(url, finished=2000, pending=200)

    assert len(pages.pages) == 11
    assert all(page.median_ms > 0 for page in pages.pages)
    assert "pages with 2,000 finished and 200 pending tasks" in pages.summary
