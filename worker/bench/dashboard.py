"""The dashboard's pages on a big queue: each page's server time, through real HTTP.

Seeds the scratch database with ``finished`` finished tasks over the past week (one in 20
failed, five kinds of error), ``pending`` pending ones of 200 tenants (most due later, some
waiting for a retry), four workers running ten tasks each and eleven limits (one paused),
vacuums and analyses the table, serves the dashboard with uvicorn on a loopback port in
this process and times each page's GET from the request to the last byte: the first
request (cold: the overview's day chart is read whole then, later ones read only the
buckets since) and PAGE_REPEATS more. On loopback that is the server's time plus well
under a millisecond. Needs the ``dashboard`` extra.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from websurf.sql import QUERIES
from websurf.worker.bench.harness import BenchError, reset, scratch_connection

PAGE_REPEATS = 5
BUDGET_MS = 300.0  # what issue 23 asks of every page at the default sizes
START_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PageTime:
    page: str
    first_ms: float  # the process's first request of it (cold caches)
    median_ms: float
    max_ms: float


@dataclass(frozen=True)
class DashboardPages:
    finished_rows: int
    pending_rows: int
    pages: tuple[PageTime, ...]
    seed_s: float

    @property
    def summary(self) -> str:
        slowest = max(self.pages, key=lambda p: p.median_ms)
        over = [p.page for p in self.pages if p.median_ms > BUDGET_MS]
        return (
            f"{len(self.pages)} pages with {self.finished_rows:,} finished and"
            f" {self.pending_rows:,} pending tasks: slowest {slowest.page}"
            f" {slowest.median_ms:.0f} ms median"
            + (f"; over {BUDGET_MS:g} ms: {', '.join(over)}" if over else "")
        )


def seed(conn: Any, *, finished: int, pending: int) -> None:
    """The big queue the pages are timed on (also what the dashboard's EXPLAIN test reads)."""
    conn.execute(QUERIES["bench_seed_dashboard_finished"], {"count": finished})
    conn.execute(QUERIES["bench_seed_dashboard_pending"], {"count": pending})
    conn.execute(QUERIES["bench_seed_dashboard_workers"])
    conn.execute(QUERIES["bench_seed_dashboard_limits"])
    conn.execute(QUERIES["bench_vacuum_queue"])


def _get(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as answer:
        body = answer.read().decode()
    return (time.perf_counter() - started) * 1000, body


def measure_dashboard_pages(url: str, *, finished: int, pending: int) -> DashboardPages:
    """Seed the big queue, serve the dashboard on loopback, time each page."""
    try:
        import uvicorn

        from websurf.worker.dashboard.app import DashboardConfig, create_app
    except ImportError:
        raise BenchError("the dashboard measurement needs websurf[dashboard]") from None
    started = time.perf_counter()
    with scratch_connection(url) as conn:
        reset(conn)
        seed(conn, finished=finished, pending=pending)
    seed_s = time.perf_counter() - started

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(DashboardConfig(url)),
            host="127.0.0.1",
            port=0,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, name="bench-dashboard", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise BenchError("the dashboard did not start")
            time.sleep(0.05)  # a deadline-bound wait for the server thread, not a timing
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        pages = _time_pages(base)
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
    return DashboardPages(finished, pending, tuple(pages), round(seed_s, 1))


def _time_pages(base: str) -> list[PageTime]:
    _, failures = _get(f"{base}/failures")
    group = re.search(r'href="(/failures/[^"/]+/[0-9a-f]{16})"', failures)
    _, failed = _get(f"{base}/tasks?status=failed")
    task = re.search(r'href="/tasks/([0-9a-f-]{36})"', failed)
    if group is None or task is None:
        raise BenchError("the seeded queue shows no failure on the dashboard")
    paths = [
        "/",
        "/failures",
        group.group(1),
        "/tasks?status=pending",
        "/tasks?status=failed",
        "/tasks?status=completed&error=timeout",
        "/tasks?status=failed&spreadsheet_id=" + "00000000-0000-0000-0000-000000000000",
        f"/tasks/{task.group(1)}",
        "/schedules",
        "/tenants",
        "/tasks?status=pending&fairness_key=tenant-7",
    ]
    timed = []
    for path in paths:
        first, _ = _get(base + path)
        times = [_get(base + path)[0] for _ in range(PAGE_REPEATS)]
        timed.append(
            PageTime(
                path, round(first, 1), round(statistics.median(times), 1), round(max(times), 1)
            )
        )
    return timed
