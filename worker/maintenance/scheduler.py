"""The tick service: claim each due schedule tick and enqueue its task, exactly once.

Design note
-----------
* Exactly once per tick, without a leader: :func:`run_once` claims a due tick with a
  compare-and-set, ``UPDATE … SET next_run_at = <next> WHERE id = … AND next_run_at =
  <due> RETURNING``, and enqueues the tick's task in the SAME transaction. Two workers
  that race for a tick: the second UPDATE waits for the first transaction, re-reads the
  row, no longer matches and returns nothing, so it enqueues nothing. A worker that
  dies between claim and enqueue dies inside the transaction: both roll back and the
  tick is still due for the next worker. No one "decides" outside the transaction that
  enqueues.
* Every worker process runs it on each maintenance turn (the heartbeat interval, 5 s
  by default), so a task is enqueued that long after its tick at most while any worker
  runs. Ticks are computed from the database's clock (hosts with skewed clocks agree)
  and each task is enqueued with ``scheduled_for`` = its tick.
* Every due schedule is handled in the turn that finds it due: :func:`run_once` reads
  the due schedules in batches of ``DUE_LIMIT`` and goes on until none is left (2,000
  every-minute schedules each run in their minute, not 100 of them per turn).
* One transaction per tick: a schedule that cannot run (a row written by hand with a
  bad expression, time zone or payload) is logged (``schedule_invalid``) and paused, so
  that it neither runs nor stays first in line every turn; the others run. A run never
  reads a schedule twice, so its loop over batches always ends.
* A robot column's tick starts a refresh round instead of enqueuing one task
  (:mod:`websurf.worker.app.refresh`), claimed the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row

from websurf.sql import QUERIES
from websurf.sql.json_text import UnreadableJson
from websurf.worker.core import queue
from websurf.worker.core.registry import Registry
from websurf.worker.core.schedules import (
    LATE_GRACE,
    ScheduleError,
    database_now,
    latest_tick,
    next_tick,
)

DUE_LIMIT = 100  # schedules read per batch (run_once reads batches until none is due)

log = structlog.get_logger("websurf.schedules")


@dataclass
class TickCounts:
    enqueued: int = 0  # ticks that enqueued their task
    skipped: int = 0  # missed ticks not run (catch-up)
    rounds_started: int = 0  # column refresh rounds started
    lost_races: int = 0  # due ticks another worker claimed first
    by_schedule: dict[str, str] = field(default_factory=dict)  # name -> enqueued|skipped


def run_once(
    conn: psycopg.Connection[Any],
    now: datetime | None = None,
    *,
    registry: Registry | None = None,
    limit: int = DUE_LIMIT,
) -> TickCounts:
    """Claim every due tick and enqueue its task, one transaction each, ``limit`` at a time.

    ``now`` defaults to the database's clock; tests inject their own. ``conn`` must be
    in autocommit mode (each tick commits on its own). With the worker's ``registry``,
    a task without max_attempts gets its operator's.
    """
    if not conn.autocommit:
        raise ValueError("run_once needs an autocommit connection: each tick commits")
    now = now or database_now(conn)
    counts = TickCounts()
    passed: list[int] = []  # the schedules this run read: each once, so the loop ends
    while True:
        with conn.cursor(row_factory=dict_row) as cur:
            params = {"now": now, "limit": limit, "passed": passed}
            due = cur.execute(QUERIES["due_schedules"], params).fetchall()
        for row in due:
            passed.append(row["id"])
            try:
                _run_tick(conn, row, now, counts, registry)
            except (
                ScheduleError,
                queue.EnqueueError,
                psycopg.DataError,
                psycopg.IntegrityError,
                ArithmeticError,
            ) as exc:
                # A row written by hand that cannot run: say so, pause it (else it stays
                # due, first in line every turn), and let the others run.
                conn.execute(
                    QUERIES["set_schedule_paused"],
                    {"name": row["name"], "paused": True, "next_run_at": None},
                )
                log.warning(
                    "schedule_invalid", schedule=row["name"], error=str(exc).strip(), paused=True
                )
        if len(due) < limit:
            break
    if passed:
        log.debug(  # each tick enqueued has its own info line
            "schedules_ran",
            enqueued=counts.enqueued,
            skipped=counts.skipped,
            rounds_started=counts.rounds_started,
            lost_races=counts.lost_races,
        )
    return counts


def _run_tick(
    conn: psycopg.Connection[Any],
    row: dict[str, Any],
    now: datetime,
    counts: TickCounts,
    registry: Registry | None,
) -> None:
    if isinstance(row["payload"], UnreadableJson):
        raise ScheduleError(f"payload cannot be read: {row['payload'].reason}")
    timing = (row["cron"], row["every"], row["time_zone"])
    tick, missed = latest_tick(*timing, row["next_run_at"], now)
    following = next_tick(*timing, tick)
    run = row["catch_up"] == "once" or now - tick <= LATE_GRACE
    skipped = missed + (0 if run else 1)
    with conn.transaction():
        claimed = conn.execute(
            QUERIES["claim_schedule_tick"],
            {
                "id": row["id"],
                "due": row["next_run_at"],
                "next_run_at": following,
                "tick": tick,
                "run": run,
                "skipped": skipped,
            },
        ).fetchone()
        if claimed is None:
            counts.lost_races += 1
            return
        counts.skipped += skipped
        if not run:
            counts.by_schedule[row["name"]] = "skipped"
            return
        counts.by_schedule[row["name"]] = "enqueued"
        if row["column_id"] is not None:
            counts.rounds_started += 1
            return
        task_id = queue.enqueue(
            conn,
            row["task_type"],
            row["payload"],
            priority=row["priority"],
            max_attempts=row["max_attempts"],
            scheduled_for=tick,
            registry=registry,
            allow_unknown_type=True,  # checked when the schedule was added
        )
        conn.execute(QUERIES["record_schedule_task"], {"id": row["id"], "task_id": task_id})
        counts.enqueued += 1
    log.info(
        "schedule_tick_enqueued",
        schedule=row["name"],
        task_type=row["task_type"],
        task_id=str(task_id),
        tick=tick.isoformat(),
        skipped=skipped,
    )
