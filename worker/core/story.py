"""A task's story: each attempt with its worker, timing and error, and why it waits.

Design note
-----------
* Attempts: a task row describes its latest attempt only; the attempts it stopped
  describing are rows of ``websurfing_task_attempt``, written by a trigger on the queue
  (sql/migrations/0029) on every path (recorder, reaper, hand-back, cancel, retry). The
  story is those rows, oldest first, then the row's own attempt when it has one the log
  does not hold yet: running, or how it finished. A completion on the first try leaves
  the log empty and the story one attempt long.
* Why a pending task waits: the first of these that holds, checked in the order a
  person would look: it is scheduled later; a pause (a SlowDown) holds its operator or
  key; a cap on what runs at once is full; a rate window is used up; no live worker
  runs its type; else it is queued behind the tasks the fair claim order (priority,
  round, due time; sql/migrations/0025) takes first, counted up to ``AHEAD_MOST``
  (the count reads the index entries in front of the task, so it stays bounded on a
  queue of millions). The facts behind the other checks come along as details.
  A running task someone asked to stop says so instead.
* Read in separate short statements, not one snapshot: the answer is a moment's
  explanation, and a task that moves on between them is shown as it is next time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import class_row, dict_row

from websurf.sql import QUERIES
from websurf.worker.core import workers
from websurf.worker.core.model import Status

AHEAD_MOST = 10_000  # tasks ahead counted, of each kind (higher priority, earlier round)
RUNNING = "running"  # the outcome of an attempt still under way


@dataclass(frozen=True)
class Attempt:
    """One attempt of a task: who ran it, when, and how it ended (``running``: not yet)."""

    attempt: int  # the task's attempt count while it ran (a hand-back gives it back)
    worker_id: str | None
    started_at: datetime
    ended_at: datetime | None  # None while running
    # retried, handed_back, put_back, slowed_down, failed, cancelled, completed, running
    outcome: str
    counted: bool  # whether it spent one of the task's attempts
    error_message: str | None
    duration_s: float | None = None  # None while running


@dataclass(frozen=True)
class Wait:
    """Why a task has not started: a reason, one plain line, and the facts behind it."""

    reason: str  # scheduled | paused | cap_full | rate_used | no_worker | queued | cancel_requested
    line: str
    details: tuple[str, ...] = ()
    until: datetime | None = None  # when it lifts, where that is known


def attempts(conn: psycopg.Connection[Any], task: Any) -> list[Attempt]:
    """``task``'s attempts, oldest first, its current or final one last (a get_task row)."""
    with conn.cursor(row_factory=class_row(Attempt)) as cur:
        logged = cur.execute(QUERIES["list_task_attempts"], {"id": task.id}).fetchall()
    if task.started_at is None or any(a.started_at == task.started_at for a in logged):
        return logged
    if task.status == Status.PROCESSING:
        ended, outcome = None, RUNNING
    elif task.status == Status.COMPLETED:
        ended, outcome = task.completed_at, str(Status.COMPLETED)
    elif task.status == Status.FAILED:
        ended, outcome = task.failed_at, str(Status.FAILED)
    elif task.status == Status.CANCELLED:
        ended, outcome = task.updated_at, str(Status.CANCELLED)
    else:
        return logged  # pending: its last attempt ended before the log existed (0029)
    current = Attempt(
        attempt=task.attempts,
        worker_id=task.worker_id,
        started_at=task.started_at,
        ended_at=ended,
        outcome=outcome,
        counted=task.status != Status.CANCELLED,
        error_message=task.error_message if task.status != Status.COMPLETED else None,
        duration_s=None if ended is None else max(0.0, (ended - task.started_at).total_seconds()),
    )
    return [*logged, current]


def why_waiting(conn: psycopg.Connection[Any], task: Any) -> Wait | None:
    """Why ``task`` (a get_task row) has not started; None when it is not waiting to."""
    if task.status == Status.PROCESSING and task.cancel_requested_at is not None:
        return Wait(
            "cancel_requested",
            f"stopping: a cancel was requested at {_at(task.cancel_requested_at)};"
            f" worker {task.worker_id} is stopping it",
            until=None,
        )
    if task.status != Status.PENDING:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        now = cur.execute(QUERIES["database_now"]).fetchone()
        limits = cur.execute(QUERIES["task_wait_limits"], {"id": task.id}).fetchall()
    assert now is not None
    details = _limit_details(limits)
    live = workers.live_task_types(conn)
    if task.scheduled_for > now["now"]:
        return Wait(
            "scheduled",
            f"scheduled for later: due at {_at(task.scheduled_for)}"
            f" (in {_span(task.scheduled_for - now['now'])})",
            details,
            task.scheduled_for,
        )
    paused = [row for row in limits if row["paused_until"] is not None]
    if paused:
        row = max(paused, key=lambda r: r["paused_until"])
        reason = f" ({row['pause_reason']})" if row["pause_reason"] else ""
        return Wait(
            "paused",
            f"{_whose(task, row)} is paused until {_at(row['paused_until'])}{reason}",
            details,
            row["paused_until"],
        )
    for row in limits:
        if row["max_running"] is not None and row["running"] >= row["max_running"]:
            return Wait(
                "cap_full",
                f"{_whose(task, row)} is at its cap: {row['running']} running of"
                f" {row['max_running']} allowed at once",
                details,
            )
    opens = [row for row in limits if row["rate_opens_at"] is not None]
    if opens:
        row = max(opens, key=lambda r: r["rate_opens_at"])
        return Wait(
            "rate_used",
            f"{_whose(task, row)} used its rate ({row['rate']} per {row['period_s']:g}s):"
            f" the next start is allowed at {_at(row['rate_opens_at'])}",
            details,
            row["rate_opens_at"],
        )
    if task.task_type not in live:
        return Wait(
            "no_worker",
            f"no live worker runs {task.task_type!r}: start one with this operator",
            details,
        )
    found = conn.execute(
        QUERIES["count_tasks_ahead"], {"id": task.id, "most": AHEAD_MOST}
    ).fetchone()
    ahead = int(found[0]) if found else 0
    counted = f"more than {AHEAD_MOST:,}" if ahead > AHEAD_MOST else f"{ahead:,}"
    return Wait(
        "queued",
        f"queued behind {counted} task{'' if ahead == 1 else 's'} of {task.task_type!r}"
        " ahead of it (priority, then fair turns between keys)",
        (*details, f"priority {task.priority}, fairness key {task.fairness_key or '(none)'}"),
    )


def _whose(task: Any, row: dict[str, Any]) -> str:
    """The limit a row is: the operator's own, or its key's."""
    if row["key"] is None:
        return f"operator {task.task_type!r}"
    return f"key {row['key']!r} of {task.task_type!r}"


def _limit_details(limits: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """One line per limit the task counts against, saying what it holds now."""
    lines = []
    for row in limits:
        parts = []
        if row["max_running"] is not None:
            parts.append(f"{row['running']} running of {row['max_running']}")
        if row["rate"] is not None:
            parts.append(
                f"{row['started_in_period']} started of {row['rate']} per {row['period_s']:g}s"
            )
        if row["paused_until"] is not None:
            parts.append(f"paused until {_at(row['paused_until'])}")
        name = "operator limit" if row["key"] is None else f"limit of key {row['key']!r}"
        lines.append(f"{name}: {', '.join(parts) or 'no cap'}")
    return tuple(lines)


def _at(when: datetime) -> str:
    return when.isoformat(sep=" ", timespec="seconds")


def _span(delta: timedelta) -> str:
    seconds = max(0, round(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
