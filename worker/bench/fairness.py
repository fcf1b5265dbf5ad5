"""Fairness between tenants (issue 22): a small tenant's edits while a big one's paste
keeps the robots busy, and the cost of many keys to no-op throughput.

* Latency under a paste: user A pastes ``rows`` rows into the source column of a robot
  column fed by ``bench_slow_llm`` (``async def``, awaits ``sleep_s``, ``concurrency=5``
  per process, as the issue's ``slow_llm``): one authored UPDATE, so A's robot tasks
  carry A's key. The default daemon starts on that backlog; once it is busy and
  ``EDIT_DELAY_S`` more have passed, user B makes ``edits`` single edits
  ``EDIT_INTERVAL_S`` apart in their own spreadsheet with the same kind of column. B's
  figure per edit is its robot task's ``completed_at - created_at`` (database clock); A's
  throughput is A's tasks completed from B's first edit to B's last answer, per second,
  beside what the slots allow (processes x 5 / ``sleep_s``). The daemon stops once B is
  answered: A's remaining backlog is not waited for.
* Keys: the same no-op tasks queued with one key, then spread over ``keys`` keys; each
  run by the daemon like the no-op rows (``throughput``), so the two rates compare what
  the fair claim costs when it alternates between many keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from websurf.sql import QUERIES
from websurf.worker.app import sheets
from websurf.worker.bench.harness import (
    READY_TIMEOUT_S,
    RUN_TIMEOUT_BASE_S,
    BenchError,
    percentile,
    reset,
    scratch_connection,
    start_daemons,
    states,
    wait_for,
)
from websurf.worker.bench.names import BENCH_OPERATORS_MODULE, FAIR_CONCURRENCY, FAIR_OPERATOR
from websurf.worker.bench.throughput import Throughput, run_daemons
from websurf.worker.config import CONCURRENCY

EDIT_DELAY_S = 3.0  # from the daemon busy with A's paste to B's first edit (the 3 s)
EDIT_INTERVAL_S = 2.0  # between B's edits
BUSY_POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class FairLatency:
    rows: int  # A's paste
    edits: int  # B's single edits
    sleep_s: float  # each robot's wait
    processes: int
    paste_s: float  # A's paste: the one UPDATE and its commit (robot tasks queued in it)
    p50_ms: float  # B's edit -> robot answer
    max_ms: float
    start_p50_ms: float  # B's edit -> its robot started: the wait for a slot
    big_tenant_per_s: float  # A's tasks completed per second while B was served
    slots_per_s: float  # what the slots allow: processes x concurrency / sleep_s


@dataclass(frozen=True)
class KeyThroughput:
    keys: int
    throughput: Throughput


def _user_with_robot_sheet(
    conn: psycopg.Connection[Any], name: str, rows: int, sleep_s: float
) -> tuple[str, sheets.Spreadsheet, sheets.Column]:
    """A user whose new spreadsheet's column A feeds a bench_slow_llm robot column B."""
    user_id = sheets.ensure_user(conn, f"{name}@websurf.invalid", f"bench user {name}")
    sheet = sheets.create_spreadsheet(conn, user_id, f"bench {name}", columns=2, rows=rows)
    source, robot = sheets.list_columns(conn, sheet.id)
    sheets.set_column_operator(
        conn,
        robot.id,
        FAIR_OPERATOR,
        source_column_id=source.id,
        options={"sleep_s": sleep_s},
        allow_unknown_type=True,  # the benchmark's daemon brings it
    )
    return user_id, sheet, source


def measure_fair_latency(
    url: str,
    *,
    rows: int,
    edits: int,
    sleep_s: float,
    processes: int = CONCURRENCY,
    edit_delay_s: float = EDIT_DELAY_S,
    edit_interval_s: float = EDIT_INTERVAL_S,
) -> FairLatency:
    """B's edits while A's paste of ``rows`` keeps the default daemon busy (see above)."""
    with scratch_connection(url) as conn:
        reset(conn)
        big, _, big_source = _user_with_robot_sheet(conn, "a", rows, sleep_s)
        small, small_sheet, small_source = _user_with_robot_sheet(conn, "b", edits, sleep_s)
        started = time.perf_counter()
        with conn.transaction():
            sheets.name_author(conn, big)
            conn.execute(QUERIES["bench_paste_column"], {"column_id": big_source.id})
        paste_s = time.perf_counter() - started
        with start_daemons(url, processes=processes, operators=[BENCH_OPERATORS_MODULE]) as running:
            wait_for(
                lambda: states(conn, FAIR_OPERATOR)[1] > 0,
                running,
                timeout_s=READY_TIMEOUT_S,
                what="the daemon to be busy with the paste",
                interval_s=BUSY_POLL_INTERVAL_S,
            )
            time.sleep(edit_delay_s)  # pacing the person, not waiting for a result
            first = time.perf_counter()
            for n in range(edits):
                pause = first + n * edit_interval_s - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                sheets.edit_cell(
                    conn, small_sheet.id, small_source.id, n + 1, f"edit {n}", user_id=small
                )
            wait_for(
                lambda: len(_latencies(conn, small)) == edits,
                running,
                timeout_s=RUN_TIMEOUT_BASE_S,
                what="B's robot answers",
            )
        latencies = _latencies(conn, small)
        row = conn.execute(
            QUERIES["bench_key_completed_within"],
            {"task_type": FAIR_OPERATOR, "key": big, "other_key": small},
        ).fetchone()
    if row is None or not row[1]:
        raise BenchError("no window in which B's edits were served")
    completed, window_s = row
    return FairLatency(
        rows=rows,
        edits=edits,
        sleep_s=sleep_s,
        processes=processes,
        paste_s=paste_s,
        p50_ms=percentile([answered for answered, _ in latencies], 0.5),
        max_ms=latencies[-1][0],
        start_p50_ms=percentile(sorted(started for _, started in latencies), 0.5),
        big_tenant_per_s=completed / window_s,
        slots_per_s=processes * FAIR_CONCURRENCY / sleep_s,
    )


def _latencies(conn: psycopg.Connection[Any], key: str) -> list[tuple[float, float]]:
    """(created -> completed, created -> started) in ms of the key's completed tasks."""
    return [
        (float(answered), float(started))
        for answered, started in conn.execute(
            QUERIES["bench_key_task_latencies"], {"task_type": FAIR_OPERATOR, "key": key}
        )
    ]


def measure_key_throughput(url: str, *, tasks: int, keys: int, processes: int) -> KeyThroughput:
    """No-op tasks spread over ``keys`` fairness keys, run by the real daemon."""
    with scratch_connection(url) as conn:
        reset(conn)
        conn.execute(QUERIES["bench_insert_keyed_noop_tasks"], {"count": tasks, "keys": keys})
        return KeyThroughput(keys, run_daemons(conn, url, tasks=tasks, processes=processes))
