"""The promoter: tasks queued to run later take their turn with the others once due.

Design note
-----------
* A task inserted with a due time in the future gets a round in the timed band
  (``fair_seq`` = 2^62 + its due time in microseconds; sql/migrations/0025), so while
  it waits it never sits in front of due work in the claim's index. Once due, a claim
  can take it, but only after every round of its priority: under a big backlog it
  would wait for all of it.
* Each run gives up to ``BATCH_SIZE`` due tasks of the timed band the current round of
  their type and priority (after their key's last, as the insert trigger does), in one
  statement, oldest due first. ``FOR UPDATE SKIP LOCKED``: every process's maintenance
  thread runs it each turn and they share the work without waiting on each other; a task
  a claim holds at that moment is skipped (it is being claimed anyway).
* Nothing is lost if no promoter runs: a due task of the timed band is still claimed,
  later. A run finds nothing to do with one probe of ``task_queue_timed_idx``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
import structlog

from websurf.sql import QUERIES

BATCH_SIZE = 1000  # tasks given a round per run

log = structlog.get_logger("websurf.promoter")


def run_once(
    conn: psycopg.Connection[Any], now: datetime | None = None, *, limit: int = BATCH_SIZE
) -> int:
    """Give tasks of the timed band due by ``now`` (default: the database's clock) a round;
    how many were given one."""
    with conn.transaction():
        promoted = len(
            conn.execute(QUERIES["promote_due_tasks"], {"now": now, "limit": limit}).fetchall()
        )
    if promoted:
        log.info("due_tasks_promoted", tasks=promoted)
    return promoted
