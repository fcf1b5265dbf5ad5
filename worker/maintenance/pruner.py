"""The pruner: deletes finished tasks past the retention period, in bounded batches.

Design note
-----------
* What goes: tasks that are ``completed``, ``failed`` or ``cancelled`` and were both
  created and finished (``updated_at``) before the cutoff. Pending and processing tasks
  are never touched, whatever their age. Completed and failed rows are found through the
  plan's cleanup index ``(status, created_at)``, cancelled ones through
  ``task_queue_finished_idx``.
* Audit rows survive: ``websurfing_robot_input_event.task_id`` references the task with
  no ON DELETE action, so each batch first sets ``task_id = NULL`` on the audit rows of
  the tasks it deletes, in the same statement. The cell's history (what each robot
  wrote, when, with which input and output) stays whole; only the link to the deleted
  queue row goes.
* Each batch is its own short transaction (``FOR UPDATE SKIP LOCKED``, so a person
  retrying a failed task at that moment is skipped, not deleted), so locks are short
  and a huge backlog never becomes one giant transaction.
* One pruner at a time across all hosts: every batch's transaction takes a
  transaction-scoped advisory lock first. (A session lock held across the batches
  breaks through a transaction pooler, which may run each batch, and the unlock, on
  another server connection, leaving the lock behind for good.) A run whose first
  batch finds it held does nothing; one that finds it held later stops there and leaves
  the rest to the pruner that holds it.
* The daemon gives each run a deadline so its maintenance thread keeps heartbeating;
  a run cut short reports ``more=True`` and the next run continues.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import structlog
from psycopg.rows import class_row

from websurf.sql import QUERIES
from websurf.worker.core.schedules import database_now
from websurf.worker.maintenance import lock

BATCH_SIZE = 1000  # tasks deleted per transaction
LOCK_KEY = lock.lock_key("websurf.pruner")
PRUNE_QUERIES = ("prune_finished_tasks", "prune_cancelled_tasks")

log = structlog.get_logger("websurf.pruner")


@dataclass(frozen=True)
class PruneCounts:
    ran: bool  # False when another pruner held the lock
    deleted: int = 0
    audit_rows_detached: int = 0
    batches: int = 0
    more: bool = False  # stopped at the deadline with rows left to delete
    cutoff: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Batch:
    """What one batch of prune_finished_tasks or prune_cancelled_tasks did."""

    deleted: int
    detached: int  # audit rows whose task_id was set to NULL


def run_once(
    conn: psycopg.Connection[Any],
    older_than: timedelta,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    deadline: float | None = None,
) -> PruneCounts:
    """Delete finished tasks older than ``older_than`` (before ``now``, default the
    database's clock), one batch per transaction, until none is left or the monotonic
    ``deadline`` passes. ``conn`` must be in autocommit mode."""
    if not conn.autocommit:
        raise ValueError("the pruner needs an autocommit connection: each batch commits")
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.perf_counter()
    deleted = detached = batches = 0
    more = held_elsewhere = False
    cutoff = None if now is None else now - older_than
    for query in PRUNE_QUERIES:
        done = False
        while not (done or more or held_elsewhere):
            if deadline is not None and time.monotonic() >= deadline:
                more = True
                break
            with conn.transaction(), conn.cursor(row_factory=class_row(_Batch)) as cur:
                if not lock.take(conn, LOCK_KEY):
                    held_elsewhere = True  # another pruner is at work
                    break
                if cutoff is None:
                    cutoff = database_now(conn) - older_than
                batch = cur.execute(
                    QUERIES[query], {"cutoff": cutoff, "limit": batch_size}
                ).fetchone()
            assert batch is not None
            batches += 1
            deleted += batch.deleted
            detached += batch.detached
            done = batch.deleted < batch_size
    if held_elsewhere and batches == 0:
        return PruneCounts(ran=False)
    counts = PruneCounts(True, deleted, detached, batches, more, cutoff)
    log.info(
        "pruner_ran",
        deleted=deleted,
        audit_rows_detached=detached,
        batches=batches,
        more=more,
        cutoff=cutoff.isoformat() if cutoff else None,
        duration_ms=int((time.perf_counter() - started) * 1000),
    )
    return counts


@dataclass
class Cadence:
    """When a worker process prunes: every ``interval_s``, and on the very next turn
    again while a run had to stop with more left (its time budget ran out), each run
    bounded by ``budget_s`` so the maintenance thread keeps heartbeating."""

    older_than: timedelta
    batch_size: int
    interval_s: float
    budget_s: float
    next_at: float = 0.0  # monotonic; 0: at the first turn

    def run_if_due(self, conn: psycopg.Connection[Any], now: float) -> PruneCounts | None:
        """Prune when due at ``now`` (monotonic); None when it was not due."""
        if now < self.next_at:
            return None
        counts = run_once(
            conn, self.older_than, batch_size=self.batch_size, deadline=now + self.budget_s
        )
        self.next_at = now + (0.0 if counts.more else self.interval_s)
        return counts
