"""The reaper: recovers tasks whose worker died and tasks that ran past their timeout.

Design note
-----------
A task is ``processing`` while a worker holds its claim. Two things can leave it there:

* the worker died (SIGKILL, OOM, a handler that called ``os._exit``, a host lost). Its
  registry row stops heartbeating; once the row is older than its ``stale_after_s`` the
  reaper deletes it, and every ``processing`` task whose worker has no registry row is
  handed back (or failed when its attempts, counted at claim, are used up). Worker ids
  are random per process start, so a reused hostname or pid never hides a dead worker.
* the worker is alive but the handler hangs past its operator's timeout and the worker's
  own alarm did not stop it. The reaper retries or fails the task; the stuck worker's
  late finish is fenced out because the claim (worker_id, attempts) is no longer its.

When the supervisor knows a worker died (its child process exited), the replacement
process calls :func:`recover_dead_worker` at boot instead of waiting for the heartbeat
to go stale. The supervisor also knows which tasks' handler code the child was
executing when it died (the running note: the async step on the event loop, and each
busy handler thread): only those attempts count, and they fail with a message saying
how the process died once the attempts are used up. The dead worker's other tasks
(waiting on I/O, claimed and not yet started, or finished but not yet recorded) go back
uncounted: a poison task burns its own attempts, never its neighbours'. A death while
no handler code ran (the OOM killer, an operator's ``kill -9``) charges nobody; the
supervisor's growing restart backoff bounds what a crash outside handlers can cost.

Both clocks start again when the server does (``pg_postmaster_start_time()``): while
the database was down or restarting nobody could heartbeat or record a result, so
after an outage longer than ``stale_after_s`` (or a task's timeout) the first reaper
must not declare every live worker dead and throw their in-flight work away. A
network cut that leaves the server up is not covered: a worker cut off for longer than
``stale_after_s`` is presumed dead, and its late results are fenced out.

Each run takes a transaction-scoped advisory lock, so one reaper runs at a time across
all hosts, and works in bounded batches. Every recovered task leaves a log line, and an
audit row (success = false) where its payload names an existing cell. Nothing a task row
contains (a payload that is no object, a cell id that is no UUID, a deleted cell) stops
a recovery: such a task is recovered without an audit row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import structlog
from psycopg.rows import class_row

from websurf.sql import QUERIES
from websurf.worker.core import workers
from websurf.worker.core.model import Status
from websurf.worker.maintenance import lock

BATCH_LIMIT = 1000
TIMEOUT_GRACE_S = 5.0
LOCK_KEY = lock.lock_key("websurf.reaper")

log = structlog.get_logger("websurf.reaper")


@dataclass(frozen=True)
class ReapCounts:
    ran: bool  # False when another reaper held the lock
    dead_workers: int = 0
    handed_back: int = 0
    failed: int = 0
    timed_out: int = 0


@dataclass(frozen=True, slots=True)
class Recovered:
    """A task the reaper took back: a row of the reap_* and release_dead_worker_tasks queries."""

    id: UUID
    task_type: str
    payload: Any
    status: str  # Status.PENDING (handed back) or Status.FAILED (its attempts used up)
    attempts: int
    max_attempts: int
    worker_id: str
    error_message: str | None
    counted: bool = True  # whether its attempt counts (release_dead_worker_tasks says)


def _log_recovered(row: Recovered, reason: str | None) -> None:
    """The task_recovered line: a warning for a counted attempt, else information."""
    (log.warning if row.counted else log.info)(
        "task_recovered",
        task_id=str(row.id),
        task_type=row.task_type,
        attempt=row.attempts,
        worker_id=row.worker_id,
        status=row.status,
        reason=reason,
    )


def _recover(
    conn: psycopg.Connection[Any], query: str, params: Mapping[str, Any]
) -> list[Recovered]:
    with conn.cursor(row_factory=class_row(Recovered)) as cur:
        return cur.execute(QUERIES[query], params).fetchall()


def _counts(recovered: Sequence[Recovered], **counts: int) -> ReapCounts:
    return ReapCounts(
        ran=True,
        handed_back=sum(1 for r in recovered if r.status == Status.PENDING),
        failed=sum(1 for r in recovered if r.status == Status.FAILED),
        **counts,
    )


def _audit(conn: psycopg.Connection[Any], rows: Sequence[Recovered]) -> None:
    """One success=false robot row per recovered task whose payload names an existing cell.

    The rows come from SQL (insert_recovery_events), which skips a payload that names no
    cell, a malformed cell id or a deleted cell. Should the insert still be refused, the
    recovery stands without its audit rows (logged): a task must never stay stuck in
    ``processing`` because of what its row contains.
    """
    if not rows:
        return
    task_ids = [r.id for r in rows]
    try:
        with conn.transaction():  # a savepoint: a refusal undoes the audit rows only
            conn.execute(QUERIES["insert_recovery_events"], {"task_ids": task_ids})
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        log.warning(
            "recovery_audit_failed",
            task_ids=[str(t) for t in task_ids],
            error=str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc),
        )


def recover_dead_worker(
    conn: psycopg.Connection[Any],
    worker_id: str,
    *,
    how: str,
    running: Sequence[tuple[str, int]] = (),
) -> ReapCounts:
    """Forget a worker whose process is known to have died, and take back its tasks.

    ``running`` lists the (task id, attempt) pairs whose handler code was executing
    when it died: only those attempts count; its other tasks go back uncounted.
    """
    with conn.transaction():
        workers.deregister(conn, worker_id)
        rows = _recover(
            conn,
            "release_dead_worker_tasks",
            {
                "worker_id": worker_id,
                "culprit_ids": [task_id for task_id, _ in running],
                "culprit_attempts": [attempt for _, attempt in running],
                "how": how,
            },
        )
        uncounted = f"worker {worker_id} died ({how}) while holding it; attempt not counted"
        for row in rows:  # the attempts it died in are warnings; the others only info
            _log_recovered(row, row.error_message if row.counted else uncounted)
        _audit(conn, [r for r in rows if r.counted])
    counts = _counts(rows, dead_workers=1)
    log.info(
        "dead_worker_recovered",
        dead_worker_id=worker_id,
        how=how,
        running_task_ids=[task_id for task_id, _ in running],
        handed_back=counts.handed_back,
        failed=counts.failed,
    )
    return counts


def run_once(
    conn: psycopg.Connection[Any],
    timeouts_s: Mapping[str, float],
    *,
    limit: int = BATCH_LIMIT,
    grace_s: float = TIMEOUT_GRACE_S,
) -> ReapCounts:
    """One reaper pass in one transaction; ``timeouts_s`` maps task types to timeouts."""
    with conn.transaction():
        if not lock.take(conn, LOCK_KEY):
            return ReapCounts(ran=False)
        dead = workers.forget_stale(conn)
        for worker in dead:
            log.warning(
                "worker_presumed_dead",
                dead_worker_id=worker.id,
                hostname=worker.hostname,
                pid=worker.pid,
                last_heartbeat_at=worker.last_heartbeat_at.isoformat(),
            )
        orphaned = _recover(conn, "reap_orphaned_tasks", {"min_age_s": 0.0, "limit": limit})
        types = sorted(t for t, s in timeouts_s.items() if s is not None)
        late: list[Recovered] = []
        if types:
            late = _recover(
                conn,
                "reap_timed_out_tasks",
                {
                    "task_types": types,
                    "timeouts_s": [timeouts_s[t] + grace_s for t in types],
                    "limit": limit,
                },
            )
        recovered = orphaned + late
        for row in recovered:
            _log_recovered(row, row.error_message)
        _audit(conn, recovered)
    counts = _counts(recovered, dead_workers=len(dead), timed_out=len(late))
    if dead or recovered:
        log.info(
            "reaper_ran",
            dead_workers=counts.dead_workers,
            handed_back=counts.handed_back,
            failed=counts.failed,
            timed_out=counts.timed_out,
        )
    return counts
