"""Limits across the cluster: how many tasks of an operator run at once, how many start
per period, and pauses ("slow down") that every worker honours.

Design note
-----------
* Where limits live: ``websurfing_task_limit``, one row per operator and key (the
  empty key: every task of the operator together; a key: the tasks whose
  ``limit_key`` holds it, e.g. a host, an API account, a person's quota). Rows come
  from code (``@operator(..., limits=Limit(...))``, stored by every worker at start,
  source ``code``), from the terminal (``websurf limits set``, source ``cli``), from
  the web app's own INSERTs (source ``table``) and from a handler's ``SlowDown``
  (``core/registry.py``), which sets ``paused_until`` (source ``slowdown`` when it had
  to create the row). Code never overwrites a row the terminal or the table wrote.
* Who claims: an operator with a limit row is claimed by ``websurf.claim_limited``
  (sql/migrations/0026), one operator per call; every other operator keeps the plain
  ``claim_tasks`` statement. The runner learns which operators are limited at start and
  whenever a limit row changes (a ``new_task`` notification with ``"limits": true``).
* Why it holds under concurrent claims: ``claim_limited`` takes a transaction advisory
  lock per operator, then counts in later statements (fresh snapshots, so every claim
  committed before the lock was granted is seen): running tasks from the processing
  rows, starts from ``websurf.task_limit_start``. Nothing is a counter that could drift:
  a worker killed while holding tasks keeps its share until the reaper makes them
  pending again, then it is free. Limited claims commit durably (synchronous_commit on),
  so a server crash cannot forget a start whose handler ran.
* Traded away: claims of one limited operator are serialised across the cluster (a
  few milliseconds each; fine for operators slow enough to need a limit), a claim walks
  the due tasks of that operator past keys that are full, and a start is counted at
  claim, a few milliseconds before the handler starts, and also when a task is handed
  back unrun (a shutdown, a SlowDown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row, scalar_row

from websurf.sql import QUERIES
from websurf.worker.core.model import ClaimedRow, Outcome
from websurf.worker.core.registry import Limit as Limit
from websurf.worker.core.registry import LimitError as LimitError

WHOLE_OPERATOR = ""  # websurfing_task_limit.limit_key of a limit on the whole operator

log = structlog.get_logger("websurf.limits")


def _params(operator: str, limit: Limit, source: str) -> dict[str, Any]:
    return {
        "source": source,
        "task_type": operator,
        "limit_key": limit.key or WHOLE_OPERATOR,
        "max_running": limit.max_running,
        "rate": limit.rate,
        "period_s": limit.per_s,
        "burst": limit.burst,
    }


def sync_code_limits(conn: psycopg.Connection[Any], declared: Mapping[str, Sequence[Limit]]) -> int:
    """Store the limits declared in code for these operators; returns how many changed.

    A limit the code no longer declares goes (only the code's own rows: a limit set from
    the terminal or the table stays). Called by every worker process at start.
    """
    changed = 0
    with conn.transaction():
        for operator, limits in declared.items():
            for limit in limits:
                stored = conn.execute(QUERIES["store_limit"], _params(operator, limit, "code"))
                changed += len(stored.fetchall())
        pairs = [(op, limit.key) for op, limits in declared.items() for limit in limits]
        dropped = conn.execute(
            QUERIES["delete_dropped_code_limits"],
            {
                "task_types": list(declared),
                "declared_types": [op for op, _ in pairs],
                "declared_keys": [key or WHOLE_OPERATOR for _, key in pairs],
            },
        ).fetchall()
    if changed or dropped:
        log.info("limits_synced", changed=changed, dropped=len(dropped))
    return changed + len(dropped)


def set_limit(conn: psycopg.Connection[Any], operator: str, limit: Limit) -> None:
    """Set (or replace) the limit of ``operator`` and ``limit.key``; a pause in force stays."""
    limit.validate(operator)
    conn.execute(QUERIES["store_limit"], _params(operator, limit, "cli"))


def remove_limit(conn: psycopg.Connection[Any], operator: str, key: str | None = None) -> str:
    """Delete the limit of ``operator`` (and ``key``); returns where it had come from."""
    params = {"task_type": operator, "limit_key": key or WHOLE_OPERATOR}
    row = conn.execute(QUERIES["remove_limit"], params)
    source = row.fetchone()
    if source is None:
        where = f"operator {operator!r}" + (f" and key {key!r}" if key is not None else "")
        raise LimitError(f"no limit is set for {where}")
    return str(source[0])


def limited_operators(conn: psycopg.Connection[Any], operators: Iterable[str]) -> set[str]:
    """The operators among ``operators`` that have a limit row."""
    with conn.cursor(row_factory=scalar_row) as cur:
        return set(cur.execute(QUERIES["limited_operators"], {"task_types": list(operators)}))


def claim_rows(
    conn: psycopg.Connection[Any],
    worker_id: str,
    operator: str,
    limit: int,
    *,
    min_priority: int,
) -> tuple[list[ClaimedRow], float | None]:
    """Claim up to ``limit`` due tasks of a limited ``operator``, as many as its limits allow.

    Also returns in how many seconds a limit that held tasks back opens again, when its
    start log or pause can tell (None otherwise: a running task's end frees a cap).
    """
    with conn.cursor() as cur:
        rows = cur.execute(
            QUERIES["claim_limited_tasks"],
            {
                "worker_id": worker_id,
                "task_type": operator,
                "limit": limit,
                "min_priority": min_priority,
            },
        ).fetchall()
    reopens = [row[-1] for row in rows if row[0] is None]
    claimed = [ClaimedRow(*row[:-1]) for row in rows if row[0] is not None]
    return claimed, (max(0.0, reopens[0]) if reopens else None)


def pause_for(conn: psycopg.Connection[Any], outcomes: Sequence[Outcome]) -> None:
    """Pause the limit key of each outcome that asked to slow down, until it is due again.

    Call in the transaction that hands the tasks back.
    """
    slowed = [o for o in outcomes if o.slow_down and o.run_at is not None]
    if slowed:
        conn.execute(
            QUERIES["pause_limits_of_tasks"],
            {
                "ids": [o.task.id for o in slowed],
                "until": [o.run_at for o in slowed],
                "reasons": [o.error or "asked to slow down" for o in slowed],
            },
        )


@dataclass(frozen=True, slots=True)
class LimitState:
    """A limit row as ``websurf limits list``, ``websurf status`` and /metrics show it."""

    operator: str
    key: str | None
    max_running: int | None
    rate: int | None
    period_s: float | None
    burst: int | None
    source: str
    paused_until: datetime | None
    pause_reason: str | None
    running: int
    waiting: int  # due tasks of the operator (and key) not yet claimed
    started_in_period: int | None
    throttled: str | None = None  # why its due tasks wait, or None when nothing holds them


def _throttled(row: Mapping[str, Any]) -> str | None:
    """Why due tasks of a limit_states row wait, or None when nothing holds them back."""
    if row["paused_until"] is not None:
        reason = row["pause_reason"]
        return f"paused until {row['paused_until']:%H:%M:%S}" + (f": {reason}" if reason else "")
    if not row["waiting"]:
        return None
    if row["max_running"] is not None and row["running"] >= row["max_running"]:
        return f"at its cap of {row['max_running']} running"
    if row["rate"] is not None and (row["started_in_period"] or 0) >= row["rate"]:
        return f"at its rate of {row['rate']} per {row['period_s']:g}s"
    return None


def limit_states(conn: psycopg.Connection[Any]) -> list[LimitState]:
    """Every limit, with what it holds now and why tasks wait."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(QUERIES["limit_states"]).fetchall()
    return [LimitState(**row, throttled=_throttled(row)) for row in rows]


def pause_delay(retry_after: str | None, *, now: datetime) -> float | None:
    """Seconds from ``now`` that a Retry-After header asks for (delta-seconds or an HTTP
    date); None when it is missing or unreadable."""
    if not retry_after:
        return None
    text = retry_after.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now) / timedelta(seconds=1))
