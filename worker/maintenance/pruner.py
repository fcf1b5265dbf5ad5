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

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import structlog

from websurf.sql import QUERIES

BATCH_SIZE = 1000  # tasks deleted per transaction
LOCK_KEY = int.from_bytes(hashlib.sha256(b"websurf.pruner").digest()[:8], "big", signed=True)
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
            with conn.transaction():
                got = conn.execute(QUERIES["try_maintenance_lock"], {"key": LOCK_KEY}).fetchone()
                if not got or not got[0]:
                    held_elsewhere = True  # another pruner is at work
                    break
                if cutoff is None:
                    clock = conn.execute(QUERIES["database_now"]).fetchone()
                    assert clock is not None
                    cutoff = clock[0] - older_than
                row = conn.execute(
                    QUERIES[query], {"cutoff": cutoff, "limit": batch_size}
                ).fetchone()
            assert row is not None
            batches += 1
            deleted += row[0]
            detached += row[1]
            done = row[0] < batch_size
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
