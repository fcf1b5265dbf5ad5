"""Throughput: tasks queued before the real daemon starts, run until none is left.

The timings come from the database: the server clock read just before the launch, and
the tasks' ``completed_at``. "From worker start" is tasks / (last completion - launch),
so it includes the daemon's boot; "steady" is the rate between the 10th and 90th
percentile completion times. Robots that wait (``bench_sleep`` awaiting
``asyncio.sleep``, ``bench_sleep_plain`` calling ``time.sleep`` in the thread pool) are
timed the same way, by a daemon at its default settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import psycopg

from websurf.sql import QUERIES
from websurf.worker.app import sheets
from websurf.worker.bench.harness import (
    BENCH_WORKER_ID,
    RUN_TIMEOUT_BASE_S,
    RUN_TIMEOUT_PER_TASK_S,
    BenchError,
    insert_sleeps,
    reset,
    scalar,
    scratch_connection,
    start_daemons,
    wait_all_finished,
)
from websurf.worker.bench.names import (
    BENCH_OPERATORS_MODULE,
    SLEEP_OPERATOR,
    SLEEP_PLAIN_OPERATOR,
)
from websurf.worker.bench.options import SLEEP_S
from websurf.worker.config import CONCURRENCY, TASKS_PER_PROCESS

STEADY_FROM, STEADY_TO = 0.1, 0.9  # the completion quantiles between which "steady" is measured
CELL_CONTENT = "x"


@dataclass(frozen=True)
class Throughput:
    tasks: int
    processes: int  # per daemon
    daemons: int
    from_start_per_s: float  # tasks / (last completion - daemon launch)
    steady_per_s: float | None  # between the 10th and 90th percentile completions
    elapsed_s: float  # daemon launch to last completion
    workers_seen: int  # distinct worker ids that completed tasks


@dataclass(frozen=True)
class CellTasks:
    throughput: Throughput
    robot_rows: int
    tasks_without_one_audit_row: int  # should be 0
    cells_not_written: int  # should be 0


def run_daemons(
    conn: psycopg.Connection[Any],
    url: str,
    *,
    tasks: int,
    processes: int,
    count: int = 1,
    task_type: str = "noop",
    operators: Sequence[str] = (),
) -> Throughput:
    """Launch the daemon(s) on a queue of ``tasks`` due tasks; time them until all are done."""
    launched: datetime = scalar(conn, "bench_database_clock")
    with start_daemons(url, processes=processes, count=count, operators=operators) as running:
        wait_all_finished(
            conn,
            running,
            timeout_s=RUN_TIMEOUT_BASE_S + tasks * RUN_TIMEOUT_PER_TASK_S,
            what=f"{tasks} tasks to finish",
        )
    row = conn.execute(QUERIES["bench_completion_times"], {"task_type": task_type}).fetchone()
    assert row is not None
    completed, not_completed, _first, p10, p90, last, workers = row
    if completed != tasks or not_completed:
        raise BenchError(f"{completed} of {tasks} tasks completed, {not_completed} did not")
    elapsed = (last - launched).total_seconds()
    window = (p90 - p10).total_seconds()
    return Throughput(
        tasks=tasks,
        processes=processes,
        daemons=count,
        from_start_per_s=tasks / elapsed,
        steady_per_s=(STEADY_TO - STEADY_FROM) * tasks / window if window > 0 else None,
        elapsed_s=elapsed,
        workers_seen=workers,
    )


def measure_throughput(url: str, *, tasks: int, processes: int, daemons: int = 1) -> Throughput:
    """No-op tasks queued beforehand (one INSERT), run by the real daemon(s)."""
    with scratch_connection(url) as conn:
        reset(conn)
        conn.execute(QUERIES["bench_insert_noop_tasks"], {"count": tasks})
        return run_daemons(conn, url, tasks=tasks, processes=processes, count=daemons)


def _robot_sheet(conn: psycopg.Connection[Any], cells: int) -> str:
    """A user's spreadsheet with a noop robot column fed by a column the user fills in
    ``cells`` rows, one statement: the edit trigger queues one real robot task per row
    (only such a task may write its cell, migration 0024). Returns the robot column's id."""
    user_id = f"{BENCH_WORKER_ID}-user"
    conn.execute(QUERIES["bench_create_user"], {"id": user_id, "email": "bench@websurf.invalid"})
    sheet_id = scalar(conn, "bench_create_spreadsheet", {"owner_id": user_id})
    column_id = scalar(conn, "bench_create_column", {"spreadsheet_id": sheet_id})
    robot_id = scalar(
        conn,
        "bench_create_robot_column",
        {"spreadsheet_id": sheet_id, "source_column_id": column_id, "content": CELL_CONTENT},
    )
    with conn.transaction():
        sheets.name_author(conn, user_id)
        conn.execute(
            QUERIES["bench_fill_source_cells"],
            {"spreadsheet_id": sheet_id, "column_id": column_id, "count": cells},
        )
    return str(robot_id)


def measure_cell_tasks(url: str, *, tasks: int, processes: int) -> CellTasks:
    """Noop robot tasks that each write their cell: robot row + cell write + fenced finish."""
    with scratch_connection(url) as conn:
        reset(conn)
        robot_column_id = _robot_sheet(conn, tasks)
        # The paste that queued the tasks wrote cells, audit rows and tasks by the tens of
        # thousands: settle them (as autovacuum would soon) before the clock starts, so
        # that its cleanup and stale statistics do not land in the measured run.
        conn.execute(QUERIES["bench_settle_cell_sheet"])
        throughput = run_daemons(conn, url, tasks=tasks, processes=processes)
        row = conn.execute(
            QUERIES["bench_check_cell_tasks"],
            {"robot_column_id": robot_column_id, "content": CELL_CONTENT},
        ).fetchone()
        assert row is not None
        without_one, robot_rows, not_written = row
        return CellTasks(throughput, robot_rows, without_one, not_written)


def cell_tasks_problem(cells: CellTasks) -> str | None:
    """What is wrong with an audited cell run, if anything."""
    if cells.tasks_without_one_audit_row or cells.cells_not_written:
        return (
            f"{cells.tasks_without_one_audit_row} tasks without exactly one success robot row,"
            f" {cells.cells_not_written} cells not written"
        )
    return None


def measure_sleep_throughput(
    url: str,
    *,
    tasks: int,
    plain: bool = False,
    processes: int = CONCURRENCY,
    sleep_s: float = SLEEP_S,
) -> Throughput:
    """Tasks that each wait ``sleep_s`` without using a CPU, run by a daemon at its default
    settings: ``async def`` ones on the event loop, or (``plain``) plain functions in the
    thread pool."""
    task_type = SLEEP_PLAIN_OPERATOR if plain else SLEEP_OPERATOR
    with scratch_connection(url) as conn:
        reset(conn)
        insert_sleeps(conn, task_type, tasks, sleep_s)
        result = run_daemons(
            conn,
            url,
            tasks=tasks,
            processes=processes,
            task_type=task_type,
            operators=[BENCH_OPERATORS_MODULE],
        )
    if not plain and tasks <= processes * TASKS_PER_PROCESS:
        # One wave: every task is in flight at once and they all end together, so the
        # rate between the 10th and 90th percentile completions says nothing.
        result = replace(result, steady_per_s=None)
    return result
