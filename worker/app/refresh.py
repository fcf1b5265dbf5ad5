"""Robot columns that refresh themselves: re-run a column's operator for every filled row.

Design note
-----------
* A robot column with ``refresh_every`` (an interval, at least a minute) gets a
  schedule row of source ``column`` named ``column:<column id>``; :func:`run_once`
  keeps those rows in step with the columns (added, re-timed, dropped) on every turn.
* A tick of such a schedule does not enqueue one task: it starts a *round*
  (``refresh_after_row = 0``), claimed with the same compare-and-set as any tick
  (:mod:`websurf.worker.maintenance.scheduler`). A tick that falls due while the previous round is
  still running waits for it to end and then runs once.
* A round walks the rows in order and keeps at most ``window`` of its tasks pending or
  running at once (a sliding window: each turn tops it up with the next filled rows),
  so a 100,000-row sheet never puts 100,000 tasks in the queue. Its tasks run at
  ``REFRESH_PRIORITY``, below a person's edit (8, migration 0007) and the default (5):
  a person's edit is claimed first even in the middle of a refresh.
* Each round's step is one transaction that locks the schedule row (``FOR UPDATE SKIP
  LOCKED``): workers on several hosts share the rounds, never enqueue a row twice, and
  a worker that dies mid-step leaves the step to the next one.
* A refresh task carries the same payload as the edit trigger's task for that cell
  (the column's ``operator_options`` plus cell_id, source_cell_id, input,
  spreadsheet_id, column_id, row_number) and ``"refresh": true``, and the same queue
  key, ``cell:<robot cell id>``. A row whose robot cell already has a pending task is
  skipped (that task will compute from the latest content anyway), and so is a row a
  person is editing at that moment (its edit enqueues a task): a refresh never adds a
  second pending task for a cell, and never lowers the priority of a person's task
  (the queue's coalescing gives a pending task the newer request's priority).
* Latest edit wins: every edit of a cell takes a number (``input_version``, migrations
  0018 and 0024) and records it on its audit row; a robot cell holds the number of the
  edit its output came from. A refresh task carries the number of its source cell's
  content (the newer of the two), read after share-locking the cell, so it is as new
  as the content it read and older than any edit after it; a robot cell takes a result
  only for a number its source cell's content really had (0024). A source cell with
  neither (content from before 0018) has none: its refresh runs but is not written.
* A "filled row" is one whose source cell has non-empty content and whose robot cell
  exists (every row of a sheet has it once the column is added or the source edited).
* The round's end is recorded when every row was enqueued and none of its tasks is
  still pending or running; ``refresh_failed`` counts those that failed for good.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import structlog
from psycopg.rows import dict_row, scalar_row

from websurf.sql import QUERIES
from websurf.worker.core import queue
from websurf.worker.core.model import Status
from websurf.worker.core.queue import NewTask
from websurf.worker.core.schedules import EVERY_MAX, ScheduleError, database_now

REFRESH_PRIORITY = 1  # below the default (5) and a person's edit (8)
REFRESH_WINDOW = 1000  # tasks of one column's round pending or running at once, at most
REFRESH_MIN_EVERY = timedelta(minutes=1)  # the column_refresh_every_minimum CHECK
UNFINISHED = (Status.PENDING, Status.PROCESSING)

log = structlog.get_logger("websurf.refresh")


def set_column_refresh(
    conn: psycopg.Connection[Any], column_id: UUID | str, every: timedelta | None
) -> None:
    """Make a robot column re-run its operator for every filled row this often (None: stop)."""
    if every is not None and every < REFRESH_MIN_EVERY:
        raise ScheduleError("a column refreshes at most once a minute")
    if every is not None and every > EVERY_MAX:
        raise ScheduleError("a column refreshes at least once every 10 years")
    try:
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            column = cur.execute(
                QUERIES["set_column_refresh"], {"id": str(column_id), "every": every}
            ).fetchone()
            if column is None:
                raise ScheduleError(f"no column {column_id}")
            if every is not None and column["operator_type"] is None:
                raise ScheduleError("only a robot column (one with an operator) can refresh")
    except psycopg.errors.InvalidTextRepresentation:
        raise ScheduleError(f"{column_id!r} is not a column id") from None


@dataclass
class RefreshCounts:
    enqueued: int = 0  # tasks enqueued by this turn
    rounds_finished: int = 0
    columns_added: int = 0
    columns_changed: int = 0
    columns_dropped: int = 0


def run_once(
    conn: psycopg.Connection[Any],
    now: datetime | None = None,
    *,
    window: int = REFRESH_WINDOW,
) -> RefreshCounts:
    """Follow the columns' refresh_every, then top up every running round's window.

    ``conn`` must be in autocommit mode (each round's step commits on its own).
    """
    if not conn.autocommit:
        raise ValueError("refresh.run_once needs an autocommit connection")
    if window < 1:
        raise ValueError("the refresh window must be at least 1")
    now = now or database_now(conn)
    counts = RefreshCounts()
    row = conn.execute(
        QUERIES["sync_column_schedules"], {"now": now, "priority": REFRESH_PRIORITY}
    ).fetchone()
    assert row is not None
    counts.columns_added, counts.columns_changed, counts.columns_dropped = row
    with conn.cursor(row_factory=scalar_row) as cur:
        rounds = cur.execute(QUERIES["refreshing_schedules"]).fetchall()
    for schedule_id in rounds:
        _step(conn, schedule_id, window, counts)
    if counts.enqueued or counts.rounds_finished or any(row):
        log.info(
            "refresh_ran",
            enqueued=counts.enqueued,
            rounds=len(rounds),
            rounds_finished=counts.rounds_finished,
            columns_added=counts.columns_added,
            columns_changed=counts.columns_changed,
            columns_dropped=counts.columns_dropped,
        )
    return counts


def _step(
    conn: psycopg.Connection[Any], schedule_id: int, window: int, counts: RefreshCounts
) -> None:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        state = cur.execute(QUERIES["lock_refresh_round"], {"id": schedule_id}).fetchone()
        if state is None:
            return  # another worker is stepping it, or it ended meanwhile
        in_flight: list[UUID] = state["refresh_in_flight"] or []
        still: list[UUID] = []
        failed = 0
        if in_flight:
            for task_id, status in conn.execute(
                QUERIES["refresh_tasks_status"], {"ids": in_flight}
            ):
                if status in UNFINISHED:
                    still.append(task_id)
                elif status == Status.FAILED:
                    failed += 1
        room = window - len(still)
        cells: list[dict[str, Any]] = []
        if room > 0:
            cells = cur.execute(
                QUERIES["refresh_next_cells"],
                {
                    "spreadsheet_id": state["spreadsheet_id"],
                    "column_id": state["column_id"],
                    "source_column_id": state["source_column_id"],
                    "after_row": state["refresh_after_row"],
                    "limit": room,
                },
            ).fetchall()
        new_ids = queue.enqueue_many(conn, [_task(state, cell) for cell in cells])
        done = room > 0 and not cells and not still
        conn.execute(
            QUERIES["advance_refresh_round"],
            {
                "id": schedule_id,
                "done": done,
                "after_row": cells[-1]["row_number"] if cells else state["refresh_after_row"],
                "in_flight": [*still, *new_ids],
                "enqueued": len(new_ids),
                "failed": failed,
            },
        )
    counts.enqueued += len(new_ids)
    if done:
        counts.rounds_finished += 1
        log.info("refresh_round_finished", column_id=str(state["column_id"]))


def unique_key(cell_id: UUID | str) -> str:
    """The queue key of a robot cell's tasks: the edit trigger's (migration 0018) and ours."""
    return f"cell:{cell_id}"


def _task(state: dict[str, Any], cell: dict[str, Any]) -> NewTask:
    payload: dict[str, Any] = {
        **(state["operator_options"] or {}),
        "cell_id": str(cell["cell_id"]),
        "source_cell_id": str(cell["source_cell_id"]),
        "input": cell["content"],
        "spreadsheet_id": str(state["spreadsheet_id"]),
        "column_id": str(state["column_id"]),
        "row_number": cell["row_number"],
        "refresh": True,
    }
    if cell["input_version"] is not None:
        payload["input_version"] = cell["input_version"]
    return NewTask(
        state["operator_type"],
        payload,
        priority=REFRESH_PRIORITY,
        unique_key=unique_key(cell["cell_id"]),
    )
