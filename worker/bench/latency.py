"""Latency: how soon a task runs once it is queued.

* Pickup latency: a producer inserts one task at a time at a steady rate with
  ``t0 = time.time()`` in its payload, taken just before the INSERT; the
  ``bench_latency`` operator records ``time.time() - t0`` at the start of its body.
  Producer and worker share the machine's clock.
* A person's edit under bulk work (``priority``): bulk sleeps queued at priority 5, the
  default daemon busy with them, then edits through ``sheets.edit_cell`` of a column
  that feeds an ``uppercase`` robot column. Each edit's figure is its robot task's
  ``completed_at - created_at``: the edit's transaction to the transaction that wrote
  the robot cell, both on the database clock (``now()`` of each), so neither the
  benchmark's polling nor clock skew enters it. The percentiles are of the edits made
  while bulk work remained: one made after the bulk ran out waits behind nothing, and
  counting it would flatter the figure.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from psycopg.rows import class_row

from websurf.sql import QUERIES
from websurf.worker.app import sheets
from websurf.worker.bench.harness import (
    BULK_PRIORITY,
    READY_TIMEOUT_S,
    RUN_TIMEOUT_BASE_S,
    RUN_TIMEOUT_PER_TASK_S,
    BenchError,
    insert_sleeps,
    percentile,
    reset,
    scalar,
    scratch_connection,
    start_daemons,
    states,
    wait_all_finished,
    wait_for,
    wait_registered,
)
from websurf.worker.bench.names import (
    BENCH_OPERATORS_MODULE,
    LATENCY_OPERATOR,
    PROBE_FILE_PREFIX,
    SLEEP_OPERATOR,
)
from websurf.worker.bench.options import SLEEP_S
from websurf.worker.config import CONCURRENCY
from websurf.worker.core.queue import enqueue

LATENCY_WARMUP_TASKS = 10
EDIT_PRIORITY = 8  # what the cell-edit trigger gives a robot column's task
EDIT_INTERVAL_S = 0.01  # the priority run's person edits once per this many seconds
# (a fast typist, so that most edits land while the bulk work lasts)
EDIT_OPERATOR = "uppercase"  # the robot column the priority run's edits feed
BUSY_POLL_INTERVAL_S = 0.01  # catching the daemon busy while bulk work is still queued


@dataclass(frozen=True)
class Latency:
    tasks: int
    rate_per_s: float  # the producer's target
    produced_per_s: float  # what it achieved
    processes: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class EditPriority:
    bulk_tasks: int  # queued at BULK_PRIORITY before the daemon started
    edits: int
    # edit's transaction to the robot cell's transaction (database clock), of the edits
    # made during the bulk work
    p50_ms: float
    p90_ms: float
    max_ms: float
    priorities: list[int]  # distinct priorities of the edits' robot tasks
    edits_completed: int
    edits_during_bulk: int  # edits made before the last bulk task completed
    robot_cells_answered: int  # robot cells holding the upper-case source


def measure_pickup_latency(
    url: str, *, rate_per_s: float, duration_s: float, processes: int
) -> Latency:
    """Insert-to-handler-start latency with one producer inserting at a steady rate."""
    count = max(1, round(rate_per_s * duration_s))
    with (
        scratch_connection(url) as conn,
        tempfile.TemporaryDirectory(prefix=PROBE_FILE_PREFIX) as folder,
    ):
        reset(conn)
        probe = Path(folder) / f"{PROBE_FILE_PREFIX}latency.txt"
        with start_daemons(url, processes=processes, operators=[BENCH_OPERATORS_MODULE]) as running:
            wait_registered(conn, running, processes)
            for _ in range(LATENCY_WARMUP_TASKS):
                enqueue(conn, LATENCY_OPERATOR, {"t0": time.time()})
            wait_all_finished(conn, running, timeout_s=READY_TIMEOUT_S, what="the warm-up")
            started = time.perf_counter()
            for n in range(count):
                pause = started + n / rate_per_s - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)  # pacing the producer, not waiting for a result
                t0 = time.time()
                enqueue(conn, LATENCY_OPERATOR, {"t0": t0, "file": str(probe)})
            produced_s = time.perf_counter() - started
            wait_all_finished(
                conn, running, timeout_s=RUN_TIMEOUT_BASE_S, what="the latency probes to finish"
            )
        text = probe.read_text() if probe.exists() else ""
    samples = sorted(float(line) for line in text.split())
    if len(samples) != count:
        raise BenchError(f"{len(samples)} of {count} latency probes ran")
    return Latency(
        tasks=count,
        rate_per_s=rate_per_s,
        produced_per_s=count / produced_s if produced_s > 0 else float(count),
        processes=processes,
        p50_ms=percentile(samples, 0.50),
        p90_ms=percentile(samples, 0.90),
        p99_ms=percentile(samples, 0.99),
        max_ms=samples[-1],
    )


@dataclass(frozen=True)
class EditTask:
    """An edit's robot task (a ``bench_edit_task_latencies`` row)."""

    latency_ms: float | None  # None while not completed
    priority: int
    completed: bool
    during_bulk: bool


def measure_edit_priority(
    url: str,
    *,
    bulk_tasks: int,
    edits: int,
    interval_s: float = EDIT_INTERVAL_S,
    processes: int = CONCURRENCY,
    bulk_sleep_s: float = SLEEP_S,
) -> EditPriority:
    """A person's edits while the default daemon is busy with bulk work: from each edit's
    commit to its robot answer's commit (see the module's design note)."""
    with scratch_connection(url) as conn:
        reset(conn)
        user_id = sheets.ensure_user(conn, "bench@websurf.invalid", "websurf bench")
        sheet = sheets.create_spreadsheet(conn, user_id, "websurf bench", columns=2, rows=edits)
        source, robot = sheets.list_columns(conn, sheet.id)
        sheets.set_column_operator(conn, robot.id, EDIT_OPERATOR, source_column_id=source.id)
        insert_sleeps(conn, SLEEP_OPERATOR, bulk_tasks, bulk_sleep_s, BULK_PRIORITY)
        with start_daemons(url, processes=processes, operators=[BENCH_OPERATORS_MODULE]) as running:

            def busy() -> bool:
                pending, processing, _ = states(conn, SLEEP_OPERATOR)
                if not pending and not processing:
                    raise BenchError("the bulk work finished before the daemon was seen busy")
                return bool(pending and processing)

            wait_for(
                busy,
                running,
                timeout_s=READY_TIMEOUT_S,
                what="the daemon to be busy with the bulk work",
                interval_s=BUSY_POLL_INTERVAL_S,
            )
            started = time.perf_counter()
            for n in range(edits):
                pause = started + n * interval_s - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)  # pacing the person, not waiting for a result
                sheets.edit_cell(conn, sheet.id, source.id, n + 1, f"edit {n}", user_id=user_id)
            wait_all_finished(
                conn,
                running,
                timeout_s=RUN_TIMEOUT_BASE_S + bulk_tasks * RUN_TIMEOUT_PER_TASK_S,
                what="the edits' robot tasks and the bulk work to finish",
            )
        with conn.cursor(row_factory=class_row(EditTask)) as cur:
            rows = cur.execute(
                QUERIES["bench_edit_task_latencies"],
                {"task_type": EDIT_OPERATOR, "bulk_type": SLEEP_OPERATOR},
            ).fetchall()
        answered = scalar(
            conn,
            "bench_robot_cells_answered",
            {"source_column_id": source.id, "robot_column_id": robot.id},
        )
    completed = [
        (r.latency_ms, r.during_bulk) for r in rows if r.completed and r.latency_ms is not None
    ]
    if len(rows) != edits or not completed:
        raise BenchError(f"{len(rows)} robot tasks for {edits} edits, {len(completed)} completed")
    under_bulk = sorted(float(ms) for ms, during_bulk in completed if during_bulk)
    if not under_bulk:
        raise BenchError(
            f"the bulk work of {bulk_tasks:,} tasks ran out before the first edit: queue more"
        )
    return EditPriority(
        bulk_tasks=bulk_tasks,
        edits=edits,
        p50_ms=percentile(under_bulk, 0.50),
        p90_ms=percentile(under_bulk, 0.90),
        max_ms=under_bulk[-1],
        priorities=sorted({int(r.priority) for r in rows}),
        edits_completed=len(completed),
        edits_during_bulk=sum(1 for r in rows if r.during_bulk),
        robot_cells_answered=answered,
    )


def priority_problem(prio: EditPriority) -> str | None:
    """What is wrong with a priority run's robot tasks, if anything."""
    if prio.priorities != [EDIT_PRIORITY]:
        return f"the edits' robot tasks had priorities {prio.priorities}, not {EDIT_PRIORITY}"
    if prio.edits_completed != prio.edits or prio.robot_cells_answered != prio.edits:
        return (
            f"{prio.edits_completed} of {prio.edits} robot tasks completed,"
            f" {prio.robot_cells_answered} robot cells hold their answer"
        )
    return None
