"""The producer's side, no daemon: enqueue rates, and the commit of a person's cell edit
(new content, its audit row and the robot column's task), timed on the client."""

from __future__ import annotations

import time
from dataclasses import dataclass

from websurf.worker.app import sheets
from websurf.worker.bench.harness import BenchError, percentile, reset, scalar, scratch_connection
from websurf.worker.core.queue import NewTask, enqueue, enqueue_many

EDIT_ROWS = 1_000  # edits cycle over this many rows of one column


@dataclass(frozen=True)
class Enqueue:
    bulk_tasks: int
    bulk_per_s: float  # one enqueue_many call, one statement
    single_tasks: int
    single_per_s: float  # one enqueue per autocommit statement


@dataclass(frozen=True)
class CellEdits:
    edits: int
    via: str  # the edit function used
    p50_ms: float
    p99_ms: float
    max_ms: float
    edit_audit_rows: int  # websurfing_cell_edit_event rows after the run
    tasks_enqueued: int


def measure_enqueue(url: str, *, bulk: int, single: int) -> Enqueue:
    """enqueue_many of ``bulk`` tasks in one call; then ``single`` enqueues, one per statement."""
    with scratch_connection(url) as conn:
        reset(conn)
        batch = [NewTask("noop", {"n": n}) for n in range(bulk)]
        started = time.perf_counter()
        ids = enqueue_many(conn, batch)
        bulk_s = time.perf_counter() - started
        started = time.perf_counter()
        for n in range(single):
            enqueue(conn, "noop", {"n": n})
        single_s = time.perf_counter() - started
        queued = scalar(conn, "bench_count_tasks", {"task_type": "noop"})
        if len(ids) != bulk or queued != bulk + single:
            raise BenchError(f"{queued} tasks queued, expected {bulk + single}")
        return Enqueue(bulk, bulk / bulk_s, single, single / single_s)


def measure_cell_edits(url: str, *, edits: int) -> CellEdits:
    """A person's edit committed with websurf.worker.app.sheets.edit_cell: the new content,
    its audit row (trigger) and the task of the robot column it feeds, in one transaction."""
    with scratch_connection(url) as conn:
        reset(conn)
        user_id = sheets.ensure_user(conn, "bench@websurf.invalid", "websurf bench")
        rows = min(edits, EDIT_ROWS)
        sheet = sheets.create_spreadsheet(conn, user_id, "websurf bench", columns=2, rows=rows)
        source, robot = sheets.list_columns(conn, sheet.id)
        sheets.set_column_operator(conn, robot.id, "noop", source_column_id=source.id)
        durations = []
        for n in range(edits):
            started = time.perf_counter()
            sheets.edit_cell(conn, sheet.id, source.id, n % rows + 1, f"edit {n}", user_id=user_id)
            durations.append((time.perf_counter() - started) * 1000.0)
        durations.sort()
        return CellEdits(
            edits=edits,
            via="websurf.worker.app.sheets.edit_cell",
            p50_ms=percentile(durations, 0.50),
            p99_ms=percentile(durations, 0.99),
            max_ms=durations[-1],
            edit_audit_rows=scalar(conn, "bench_count_edit_events"),
            tasks_enqueued=scalar(conn, "bench_count_tasks", {"task_type": "noop"}),
        )
