"""The queue's model: the words every part of websurf uses for a task and what became of it.

* :class:`Task`: a claimed task as its handler sees it (``Task`` and ``Backoff`` are
  re-exported by the operator registry, the module operator authors import).
* :class:`Status`: a task's ``status`` column.
* :class:`Outcome`: how one claimed attempt ended (what the recorder writes), and
  :class:`OutcomeKind`, the one classification of it that logs and metrics count.
* :func:`retry_or_fail`: the one rule for what a failed (or snoozed) attempt becomes.
* :class:`ClaimedRow`: a row of ``claim_tasks``, read by the claim and by the metrics.

One key, three column names: an operator's name (``Operator.name``, ``operator`` here) is
what a task's ``task_type`` holds (``websurfing_task_queue``), what a robot column's
``operator_type`` holds (``websurfing_column``) and what an audit row's ``operator_type``
records. The columns keep their names (the web app shares them); Python says operator.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple
from uuid import UUID

from websurf.sql.json_text import UnreadableJson

BACKOFF_BASE_S = 1.0
BACKOFF_FACTOR = 2.0
BACKOFF_MAX_S = 300.0
BACKOFF_JITTER = 0.25  # +/- this fraction of the delay


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: base * factor**(attempt-1), capped, +/- jitter."""

    base_s: float = BACKOFF_BASE_S
    factor: float = BACKOFF_FACTOR
    max_s: float = BACKOFF_MAX_S
    jitter: float = BACKOFF_JITTER

    def delay_s(self, attempt: int) -> float:
        delay = min(self.max_s, self.base_s * self.factor ** max(0, attempt - 1))
        return max(0.0, delay * random.uniform(1 - self.jitter, 1 + self.jitter))


_UNREAD: Any = object()  # Task._cell_id before the payload's cell_id was first read


@dataclass(frozen=True, slots=True)
class Task:
    id: UUID
    task_type: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    priority: int = 5
    # cell_id, read from the payload once: the claim, the executor, the handler and the
    # recorder each ask (eight times for a robot cell's task), and parsing a UUID costs
    # about two microseconds. Not part of the task's identity.
    _cell_id: Any = field(default=_UNREAD, init=False, repr=False, compare=False)

    @property
    def cell_id(self) -> str | None:
        """The payload's ``cell_id`` when it is a UUID; None otherwise (no cell to audit)."""
        cell_id = self._cell_id
        if cell_id is _UNREAD:
            cell_id = _cell_id_of(self.payload)
            object.__setattr__(self, "_cell_id", cell_id)  # frozen: set once, here
        return cell_id  # type: ignore[no-any-return]

    @property
    def malformed(self) -> str | None:
        """Why the worker cannot understand this task's row, or None when it can."""
        payload: Any = self.payload
        if isinstance(payload, UnreadableJson):
            return f"payload cannot be read: {payload.reason}"
        if not isinstance(payload, dict):
            return f"payload must be a JSON object, not {type(payload).__name__}"
        value = payload.get("cell_id")
        if value is not None and self.cell_id is None:
            return f"payload cell_id {str(value)[:80]!r} is not a UUID"
        return None


def _cell_id_of(payload: Any) -> str | None:  # typed as an object: a row may hold anything
    if not isinstance(payload, dict):
        return None
    value = payload.get("cell_id")
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


class Status(StrEnum):
    """A task's ``status`` column (the CHECK constraint in ``0003_task_queue.sql``).

    A ``StrEnum``: it compares equal to the column's text and psycopg sends it as that text.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether the task is done for good (nothing will run it again unless retried)."""
        return self in FINISHED


FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


class OutcomeKind(StrEnum):
    """How a claimed attempt ended, as the worker's counts and metrics name it."""

    COMPLETED = "completed"
    FAILED = "failed"  # for good
    RETRIED = "retried"  # pending again, after a backoff
    HANDED_BACK = "handed_back"  # pending again, attempt not counted (shutdown, snooze)
    CANCELLED = "cancelled"  # stopped while running (a person's cancel, a newer edit)
    DISCARDED = "discarded"  # not recorded: the claim had been taken away (the fence)


@dataclass(slots=True)
class Outcome:
    """How one claimed attempt ended, and what to record for it."""

    task: Task
    # completed | pending (retry or hand-back) | failed | cancelled (stopped while running;
    # queue.finish also turns an outcome into this when the database says so)
    status: Status
    operator: str  # the operator's name (the audit row's operator_type)
    output: Any = None
    error: str | None = None
    run_at: datetime | None = None  # for a retry or a snooze
    handed_back: bool = False  # not counted against max_attempts, no audit row
    duration_ms: int = 0  # how long the handler ran (measured once, by the executor)
    writes_cell: bool = False
    cell_content: str | None = None
    slow_down: bool = False  # a SlowDown: pause the task's limit key until run_at

    @property
    def success(self) -> bool:
        return self.status == Status.COMPLETED

    @property
    def plain_completion(self) -> bool:
        """Completed with nothing else to record on the task's row (no error, no new due time)."""
        return (
            self.status == Status.COMPLETED
            and self.error is None
            and self.run_at is None
            and not self.handed_back
        )

    @property
    def duration_s(self) -> float:
        return self.duration_ms / 1000

    def kind(self, recorded: Container[UUID]) -> OutcomeKind:
        """How the attempt ended, given the task ids the fenced finish let through."""
        if self.task.id not in recorded:
            return OutcomeKind.DISCARDED
        if self.status == Status.CANCELLED:
            return OutcomeKind.CANCELLED
        if self.handed_back:
            return OutcomeKind.HANDED_BACK
        if self.status == Status.COMPLETED:
            return OutcomeKind.COMPLETED
        if self.status == Status.FAILED:
            return OutcomeKind.FAILED
        return OutcomeKind.RETRIED


@dataclass(frozen=True, slots=True)
class Decision:
    """What a failed or snoozed attempt becomes: its status, and when it is due again."""

    status: Status  # PENDING (due again at run_at) or FAILED
    run_at: datetime | None = None
    delay_s: float | None = None
    handed_back: bool = False  # a snooze: the attempt is not counted

    @property
    def retries(self) -> bool:
        return self.status == Status.PENDING


def retry_or_fail(
    attempt: int,
    max_attempts: int,
    *,
    now: datetime,
    permanent: bool = False,
    backoff: Backoff | None = None,
    snooze_s: float | None = None,
) -> Decision:
    """The one rule for an attempt that did not complete.

    A snooze (``snooze_s``) puts the task back, due in that long, without spending the
    attempt. A permanent error, or a failure of the last attempt, fails the task for
    good. Any other failure (a timeout included) retries after ``backoff``'s delay for
    this attempt.
    """
    if snooze_s is not None:
        return Decision(Status.PENDING, now + timedelta(seconds=snooze_s), snooze_s, True)
    if permanent or attempt >= max_attempts:
        return Decision(Status.FAILED)
    delay = (backoff or Backoff()).delay_s(attempt)
    return Decision(Status.PENDING, now + timedelta(seconds=delay), delay)


class ClaimedRow(NamedTuple):
    """A row of ``claim_tasks``: the claimed task, how long it had been due (for metrics)
    and its payload's size (for the byte budget).

    A named tuple, not a dataclass: the claim builds one per task on the hot path.
    """

    id: UUID
    task_type: str
    payload: dict[str, Any]
    attempts: int  # counted at claim: this attempt's number
    max_attempts: int
    priority: int
    # seconds from when the task became due (the later of its creation and its
    # scheduled time) to the claim, on the database clock
    waited_s: float
    payload_bytes: int  # of JSON text, as the claim's byte budget counts them
    # whose work it is (fairness between tenants, sql/migrations/0025); None: no key
    fairness_key: str | None = None

    @property
    def task(self) -> Task:
        return Task(
            self.id, self.task_type, self.payload, self.attempts, self.max_attempts, self.priority
        )
