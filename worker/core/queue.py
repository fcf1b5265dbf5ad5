"""The queue's operations: enqueue, claim a batch, finish a batch (fenced).

Enqueue takes the caller's connection, so a task can be enqueued inside the caller's
own transaction. A task may carry a ``unique_key``: at most one pending task holds a
key, and enqueueing a key that a pending task holds replaces that task's payload,
priority, attempts budget and due time instead of adding a task (the latest request
wins; sql/migrations/0017 has the rules, including what happens on retry, and 0028 how
a hand-back keeps its key).

Finishing is fenced: an outcome is recorded only where the worker still holds the
claim (same worker_id, same attempts, still ``processing``), so a worker whose task
was handed to another cannot overwrite the newer attempt.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.rows import RowMaker, class_row, scalar_row
from psycopg.types.json import Jsonb

# Installs load_json for the connections opened after it (a claim or a schedule tick on
# a connection the caller opened, too): a payload Python cannot read then fails its task
# alone instead of the whole fetch.
import websurf.sql.database  # noqa: F401
from websurf.sql import QUERIES
from websurf.worker.core import payloads
from websurf.worker.core.model import ClaimedRow, Outcome, Status
from websurf.worker.core.registry import MAX_ATTEMPTS, Registry, Task

PRIORITY = 5
LOWEST_PRIORITY = -(2**31)  # the column is an integer
URGENT_PRIORITY = PRIORITY + 1  # above the default: a person waits (an edit's robot is 8)
TASK_TYPE_MAX_LENGTH = 100
# The database's limits (migration 0023), checked here first for a one-line refusal.
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
MAX_ATTEMPTS_LIMIT = 1000
LIMIT_KEY_MAX_LENGTH = 255  # websurfing_task_queue.limit_key
MAX_DELAY = timedelta(days=36_500)  # a task due in a century is a mistake, not a schedule
# A claim stops taking tasks once their payloads add up to this many bytes of JSON text
# (always at least one task; a payload is at most 1 MiB, migration 0023).
CLAIM_MAX_BYTES = 8 * 2**20


class EnqueueError(ValueError):
    """A task was refused at enqueue; the message says why."""


@dataclass(frozen=True)
class NewTask:
    task_type: str
    payload: dict[str, Any]
    priority: int = PRIORITY
    max_attempts: int | None = None
    scheduled_for: datetime | None = None
    delay: timedelta | None = None
    # At most one pending task per key; None: never coalesced.
    unique_key: str | None = None
    # The key this task counts against in its operator's limits (core/limits.py).
    limit_key: str | None = None


class _Checked(NamedTuple):
    """A task that passed the checks, as enqueue_tasks takes it."""

    task_type: str
    payload: Jsonb
    priority: int
    max_attempts: int
    scheduled_for: datetime | None
    unique_key: str | None
    limit_key: str | None


def _checked(task: NewTask, registry: Registry | None, allow_unknown_type: bool) -> _Checked:
    if task.unique_key is not None and not task.unique_key:
        raise EnqueueError("a unique key must not be empty (leave it out for no key)")
    if task.limit_key is not None and not 1 <= len(task.limit_key) <= LIMIT_KEY_MAX_LENGTH:
        raise EnqueueError(f"a limit key must be 1 to {LIMIT_KEY_MAX_LENGTH} characters")
    if not task.task_type or len(task.task_type) > TASK_TYPE_MAX_LENGTH:
        raise EnqueueError(f"task type must be 1 to {TASK_TYPE_MAX_LENGTH} characters")
    if not isinstance(task.payload, dict):
        raise EnqueueError(f"payload must be a JSON object, not {type(task.payload).__name__}")
    reason = payloads.problem(task.payload)
    if reason:
        raise EnqueueError(f"payload {reason}")
    if not PRIORITY_MIN <= task.priority <= PRIORITY_MAX:
        raise EnqueueError(f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}")
    op = registry.get(task.task_type) if registry is not None else None
    if registry is not None and op is None and not allow_unknown_type:
        known = ", ".join(registry.names()) or "none"
        raise EnqueueError(
            f"no operator handles task type {task.task_type!r} (known: {known});"
            " allow unknown types explicitly to enqueue tasks for other workers"
        )
    max_attempts = (
        task.max_attempts
        if task.max_attempts is not None
        else (op.max_attempts if op else MAX_ATTEMPTS)
    )
    if not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise EnqueueError(f"max attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
    if task.delay is not None and task.scheduled_for is not None:
        raise EnqueueError("give a delay or a time, not both")
    scheduled_for = task.scheduled_for
    if task.delay is not None:
        if task.delay < timedelta(0):
            raise EnqueueError("delay must not be negative")
        if task.delay > MAX_DELAY:
            raise EnqueueError(f"delay must be at most {MAX_DELAY.days} days")
        scheduled_for = datetime.now(UTC) + task.delay
    if scheduled_for is not None and scheduled_for.tzinfo is None:
        raise EnqueueError("scheduled time must carry a time zone")
    return _Checked(
        task.task_type,
        Jsonb(task.payload),
        task.priority,
        max_attempts,
        scheduled_for,
        task.unique_key,
        task.limit_key,
    )


@dataclass(frozen=True, slots=True)
class _Enqueued:
    """A row of enqueue_tasks: a task's id, and whether it is new (not coalesced into)."""

    id: UUID
    inserted: bool


def _announce_coalesced(conn: psycopg.Connection[Any], rows: Sequence[_Enqueued]) -> None:
    """new_task for tasks an enqueue coalesced into (the INSERT trigger sees only new rows)."""
    coalesced = [row.id for row in rows if not row.inserted]
    if coalesced:
        conn.execute(QUERIES["announce_coalesced_tasks"], {"ids": coalesced})


def enqueue(
    conn: psycopg.Connection[Any],
    task_type: str,
    payload: dict[str, Any],
    *,
    priority: int = PRIORITY,
    max_attempts: int | None = None,
    scheduled_for: datetime | None = None,
    delay: timedelta | None = None,
    registry: Registry | None = None,
    allow_unknown_type: bool = False,
    unique_key: str | None = None,
    limit_key: str | None = None,
) -> UUID:
    """Insert one task on ``conn`` (inside its transaction, if one is open).

    With ``unique_key``, a pending task holding that key takes this one's payload,
    priority, attempts and due time instead; its id is returned. ``limit_key``: the key
    it counts against in its operator's limits (``websurf limits``).
    """
    task = NewTask(
        task_type, payload, priority, max_attempts, scheduled_for, delay, unique_key, limit_key
    )
    if unique_key is not None:
        [task_id] = enqueue_many(
            conn, [task], registry=registry, allow_unknown_type=allow_unknown_type
        )
        return task_id
    checked = _checked(task, registry, allow_unknown_type)
    params = {
        "task_type": checked.task_type,
        "payload": checked.payload,
        "priority": checked.priority,
        "max_attempts": checked.max_attempts,
        "scheduled_for": checked.scheduled_for,
        "limit_key": checked.limit_key,
    }
    with _database_limits(), conn.cursor(row_factory=scalar_row) as cur:
        inserted: UUID | None = cur.execute(QUERIES["enqueue_task"], params).fetchone()
    assert inserted is not None  # an INSERT ... RETURNING of one row
    return inserted


def enqueue_many(
    conn: psycopg.Connection[Any],
    tasks: Iterable[NewTask],
    *,
    registry: Registry | None = None,
    allow_unknown_type: bool = False,
) -> list[UUID]:
    """Insert many tasks in one statement (one round trip, one notification per type).

    Returns one id per task, in order. Tasks sharing a unique key (with each other or
    with a pending task) end as one task, with the last one's payload: their ids repeat.
    """
    checked = [_checked(t, registry, allow_unknown_type) for t in tasks]
    if not checked:
        return []
    # One statement cannot touch a row twice (ON CONFLICT DO UPDATE refuses): send only
    # the last task of each key, and give the earlier ones its id.
    last_of_key: dict[str | None, int] = {
        c.unique_key: i for i, c in enumerate(checked) if c.unique_key is not None
    }
    sent = [i for i, c in enumerate(checked) if last_of_key.get(c.unique_key, i) == i]
    sending = [checked[i] for i in sent]
    # Without a key, a plain INSERT: INSERT privilege is all an enqueuing role needs.
    coalesce = QUERIES["enqueue_coalesce"] if last_of_key else sql.SQL("")
    with _database_limits(), conn.cursor(row_factory=class_row(_Enqueued)) as cur:
        rows = cur.execute(
            QUERIES["enqueue_tasks"].format(coalesce=coalesce),
            {
                "task_types": [c.task_type for c in sending],
                "payloads": [c.payload for c in sending],
                "priorities": [c.priority for c in sending],
                "max_attempts": [c.max_attempts for c in sending],
                "scheduled_for": [c.scheduled_for for c in sending],
                "unique_keys": [c.unique_key for c in sending],
                "limit_keys": [c.limit_key for c in sending],
            },
        ).fetchall()
    _announce_coalesced(conn, rows)
    ids = {i: row.id for i, row in zip(sent, rows, strict=True)}
    return [ids[last_of_key.get(c.unique_key, i)] for i, c in enumerate(checked)]


@contextmanager
def _database_limits() -> Iterator[None]:
    """A task the database refused for one of its limits (0023: the payload's size, say)
    as an EnqueueError naming the limit, like the refusals checked here first."""
    try:
        yield
    except psycopg.errors.CheckViolation as exc:
        raise EnqueueError(
            f"refused by the database: the task breaks its limit {exc.diag.constraint_name}"
        ) from None


def _claimed_row(cursor: Any) -> RowMaker[ClaimedRow]:  # a psycopg row factory
    """claim_tasks rows as ClaimedRow: names checked once per result, not once per row."""
    names = tuple(column.name for column in cursor.description or ())
    if names != ClaimedRow._fields:
        raise psycopg.ProgrammingError(f"claim_tasks returned {names}, not {ClaimedRow._fields}")
    return ClaimedRow._make


def claim_rows(
    conn: psycopg.Connection[Any],
    worker_id: str,
    task_types: Sequence[str],
    limit: int,
    *,
    min_priority: int = LOWEST_PRIORITY,
    max_bytes: int = CLAIM_MAX_BYTES,
) -> list[ClaimedRow]:
    """Claim up to ``limit`` due tasks whose payloads fit ``max_bytes`` (at least one task);
    the rows of ``claim_tasks`` (for metrics, too)."""
    with conn.cursor(row_factory=_claimed_row) as cur:
        return cur.execute(
            QUERIES["claim_tasks"],
            {
                "task_types": list(task_types),
                "limit": limit,
                "worker_id": worker_id,
                "min_priority": min_priority,
                "max_bytes": max_bytes,
            },
        ).fetchall()


def budget_spent(rows: Sequence[ClaimedRow], max_bytes: int = CLAIM_MAX_BYTES) -> bool:
    """Whether a claim's payloads reached the byte budget (more tasks may be waiting)."""
    return sum(row.payload_bytes for row in rows) >= max_bytes


def claim(
    conn: psycopg.Connection[Any],
    worker_id: str,
    task_types: Sequence[str],
    limit: int,
    *,
    min_priority: int = LOWEST_PRIORITY,
) -> list[Task]:
    """Claim up to ``limit`` due tasks of ``task_types`` at ``min_priority`` or above."""
    rows = claim_rows(conn, worker_id, task_types, limit, min_priority=min_priority)
    return [row.task for row in rows]


def finish(conn: psycopg.Connection[Any], worker_id: str, outcomes: Sequence[Outcome]) -> set[UUID]:
    """Record outcomes where the claim is still ours; returns the ids that were recorded.

    An outcome whose task was cancelled while it ran (0027) is recorded as cancelled by
    the database, whatever the handler returned; it is changed here to say so (status
    cancelled, the reason as its error, no cell to write), for the audit row and counts.
    """
    if not outcomes:
        return set()
    params: dict[str, Any] = {
        "ids": [o.task.id for o in outcomes],
        "attempts": [o.task.attempt for o in outcomes],
        "statuses": None,  # plain completions: four arrays fewer to build and send
        "run_at": None,
        "errors": None,
        "uncount": None,
        "worker_id": worker_id,
    }
    if not all(o.plain_completion for o in outcomes):
        params["statuses"] = [o.status for o in outcomes]
        params["run_at"] = [o.run_at for o in outcomes]
        params["errors"] = [o.error for o in outcomes]
        params["uncount"] = [1 if o.handed_back else 0 for o in outcomes]
    rows = conn.execute(
        QUERIES["finish_tasks"],
        params,
        # Never a cached generic plan: it assumes 10 outcomes and picks a nested loop
        # that is quadratic in the batch size (65 ms instead of 9 ms for 500 tasks).
        prepare=False,
    ).fetchall()
    cancelled = {task_id: reason for task_id, reason in rows if reason is not None}
    if cancelled:
        for outcome in outcomes:
            reason = cancelled.get(outcome.task.id)
            if reason is not None:
                outcome.status = Status.CANCELLED
                outcome.error = reason
                outcome.writes_cell = False
    return {row[0] for row in rows}


def cancel_requested(conn: psycopg.Connection[Any], worker_id: str) -> list[UUID]:
    """The running tasks of ``worker_id`` that someone asked to stop (0027)."""
    with conn.cursor(row_factory=scalar_row) as cur:
        return cur.execute(QUERIES["cancel_requested_tasks"], {"worker_id": worker_id}).fetchall()


def next_due_in(conn: psycopg.Connection[Any], task_types: Sequence[str]) -> float | None:
    """Seconds until the first pending task of ``task_types`` queued for later is due
    (None: no such task), on the database's clock."""
    row = conn.execute(QUERIES["next_due_in"], {"task_types": list(task_types)}).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def audited_outcomes(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The outcomes that get an audit row: attempts that ran, of tasks with a cell."""
    return [o for o in outcomes if o.task.cell_id is not None and not o.handed_back]


def record_robot_events(conn: psycopg.Connection[Any], outcomes: Sequence[Outcome]) -> int:
    """Write one robot_input_event per attempt that has a cell, then the cells' new content.

    Call inside the transaction that finished the tasks, with the fenced outcomes only.
    Returns the number of cells written.

    The latest edit wins: a result whose input_version is older than the one its cell
    holds (or than another result for that cell in this batch) is recorded with
    superseded = true and not written, as is an attempt cancelled while it ran (0027).
    Only a robot task of its cell writes it (the cell's column's operator, for a real
    edit of its source cell: migration 0024); any other result is recorded as not
    written. A task whose cell was deleted while it ran
    (its spreadsheet, column or row removed) gets no audit row and is cancelled, with the
    reason, instead of failing on the audit row's foreign key.
    """
    audited = audited_outcomes(outcomes)
    if not audited:
        return 0
    # Stopped while running (0027): recorded as superseded, with the reason given.
    cancelled = [o.status == Status.CANCELLED for o in audited]
    recorded = conn.execute(
        QUERIES["insert_judged_robot_events"],
        {
            "cell_ids": [o.task.cell_id for o in audited],
            "task_ids": [o.task.id for o in audited],
            "operator_types": [o.operator for o in audited],
            "inputs": [Jsonb(o.task.payload) for o in audited],
            "outputs": [None if o.output is None else Jsonb(o.output) for o in audited],
            "durations_ms": [o.duration_ms for o in audited],
            "successes": [o.success for o in audited],
            "errors": [o.error for o in audited],
            "writes": [o.success and o.writes_cell for o in audited],
            "cancelled": cancelled if any(cancelled) else None,
        },
        prepare=False,  # see finish(): a generic plan would misjudge the batch size
    ).fetchall()
    writable = {task_id: version for task_id, to_write, version in recorded if to_write}
    present = {task_id for task_id, _, _ in recorded}
    gone = [o.task.id for o in audited if o.task.id not in present]
    if gone:
        conn.execute(QUERIES["cancel_tasks_of_deleted_cells"], {"ids": gone})
    chosen = [o for o in audited if o.task.id in writable]
    if not chosen:
        return 0
    cursor = conn.execute(
        QUERIES["write_robot_cells"],
        {
            "cell_ids": [o.task.cell_id for o in chosen],
            "contents": [o.cell_content for o in chosen],
            "versions": [writable[o.task.id] for o in chosen],
        },
        prepare=False,
    )
    return cursor.rowcount
