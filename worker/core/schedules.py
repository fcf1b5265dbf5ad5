"""Schedules: what recurs and when, declared in code or stored from the CLI.

Design note
-----------
* A schedule is a row of ``websurf.schedule``: a 5-field cron expression evaluated in
  its time zone (cronsim, zoneinfo), or a fixed interval; a task type, payload and
  priority; and ``next_run_at``, the tick it waits for. Rows come from code
  (:func:`schedule`, upserted by every worker at boot with :func:`sync_code_schedules`),
  from ``websurf schedules add`` (or plain SQL), and from robot columns with a
  ``refresh_every`` (:mod:`websurf.worker.app.refresh`). The ticks themselves are claimed
  and enqueued by :mod:`websurf.worker.maintenance.scheduler`.
* A cron expression's ticks follow its time zone's wall clock, with Debian cron's
  rules at daylight-saving changes (cronsim): a 02:30 job runs once on the day 02:30
  does not exist (at 03:00), and once on the day it exists twice. An interval's ticks
  are counted from the previous tick.
* Missed ticks (no worker ran): ``catch_up='once'`` (default) runs the latest missed
  tick once and skips the earlier ones; ``catch_up='skip'`` runs none of them (a tick
  less than ``LATE_GRACE`` late still runs). Either way the schedule goes on from the
  first tick after now and the skipped ticks are counted. Resuming a paused schedule
  also starts from the first tick after now.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import psycopg.errors
import structlog
from cronsim import CronSim, CronSimError
from psycopg.rows import dict_row, scalar_row
from psycopg.types.json import Jsonb

from websurf.sql import QUERIES
from websurf.worker.core import payloads
from websurf.worker.core.model import Status
from websurf.worker.core.queue import (
    MAX_ATTEMPTS_LIMIT,
    PRIORITY,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TASK_TYPE_MAX_LENGTH,
)
from websurf.worker.core.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])

CATCH_UP = ("once", "skip")
LATE_GRACE = timedelta(minutes=1)  # catch_up='skip' still runs a tick this late
# The database's bounds (0023); PostgreSQL compares '10 years' as 3,600 days.
EVERY_MIN, EVERY_MAX = timedelta(seconds=1), timedelta(days=3600)
COUNT_MISSED_MAX = 10_000  # missed cron ticks are counted up to this many
NAME_MAX_LENGTH = 200
SOURCES = ("code", "cli", "column")

log = structlog.get_logger("websurf.schedules")


class ScheduleError(ValueError):
    """A schedule was refused or not found; the message says why in one line."""


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r} (use an IANA name such as UTC or Europe/Paris)"
        ) from None


def _check_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"cron expression {expression!r} must have 5 fields (minute hour day-of-month"
            f" month day-of-week), not {len(fields)}"
        )
    try:
        CronSim(expression, datetime.now(UTC))
    except CronSimError as exc:
        raise ScheduleError(f"cron expression {expression!r} is not valid: {exc}") from None
    return " ".join(fields)


@dataclass(frozen=True)
class Spec:
    """What a schedule runs and when: a cron expression or an interval, not both."""

    name: str
    task_type: str
    cron: str | None = None
    every: timedelta | None = None
    time_zone: str = "UTC"
    payload: Mapping[str, Any] = field(default_factory=dict)
    priority: int = PRIORITY
    max_attempts: int | None = None
    catch_up: str = "once"

    def validate(self) -> Spec:
        """This spec with its cron expression normalised; ScheduleError if it makes no sense."""
        if not self.name or len(self.name) > NAME_MAX_LENGTH:
            raise ScheduleError(f"a schedule name must be 1 to {NAME_MAX_LENGTH} characters")
        if self.name.startswith("column:"):
            raise ScheduleError("names starting with 'column:' belong to refreshing columns")
        if not self.task_type or len(self.task_type) > TASK_TYPE_MAX_LENGTH:
            raise ScheduleError(f"task type must be 1 to {TASK_TYPE_MAX_LENGTH} characters")
        if (self.cron is None) == (self.every is None):
            raise ScheduleError("give a cron expression or an interval (every), not both")
        if self.every is not None and self.every <= timedelta(0):
            raise ScheduleError("the interval must be positive")
        if self.every is not None and not EVERY_MIN <= self.every <= EVERY_MAX:
            raise ScheduleError("the interval must be from 1 second to 10 years")
        if not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise ScheduleError(f"priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}")
        if not isinstance(self.payload, Mapping):
            raise ScheduleError(f"payload must be a JSON object, not {type(self.payload).__name__}")
        try:
            json.dumps(dict(self.payload))
        except (TypeError, ValueError) as exc:
            raise ScheduleError(f"payload is not JSON-serialisable: {exc}") from None
        reason = payloads.problem(dict(self.payload))
        if reason:
            raise ScheduleError(f"payload {reason}")
        if self.catch_up not in CATCH_UP:
            raise ScheduleError(f"catch_up must be one of {', '.join(CATCH_UP)}")
        if self.max_attempts is not None and not 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ScheduleError(f"max attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}")
        _zone(self.time_zone)
        cron = _check_cron(self.cron) if self.cron is not None else None
        return replace(self, cron=cron, payload=dict(self.payload))

    def timing(self) -> tuple[str | None, timedelta | None, str]:
        return self.cron, self.every, self.time_zone


# -- ticks ------------------------------------------------------------------------------


def next_tick(
    cron: str | None, every: timedelta | None, time_zone: str, after: datetime
) -> datetime:
    """The first tick strictly after ``after`` (an interval counts from ``after``)."""
    if every is not None:
        return after + every
    assert cron is not None
    local = after.astimezone(_zone(time_zone))
    try:
        tick: datetime = next(CronSim(cron, local))
    except CronSimError as exc:  # a row written by hand
        raise ScheduleError(f"cron expression {cron!r} is not valid: {exc}") from None
    return tick.astimezone(UTC)


def latest_tick(
    cron: str | None, every: timedelta | None, time_zone: str, due: datetime, now: datetime
) -> tuple[datetime, int]:
    """The latest tick at or before ``now``, from the due tick on; and how many ticks it skips.

    ``due <= now``. An interval's ticks are ``due + k * every``.
    """
    if every is not None:
        missed = int((now - due) / every)
        return due + missed * every, missed
    tick, missed = due, 0
    while missed < COUNT_MISSED_MAX:
        following = next_tick(cron, every, time_zone, tick)
        if following > now:
            return tick, missed
        tick, missed = following, missed + 1
    # Down for very long: jump to the tick before now instead of counting every one.
    assert cron is not None
    start = (now.replace(microsecond=0) + timedelta(seconds=1)).astimezone(_zone(time_zone))
    previous: datetime = next(CronSim(cron, start, reverse=True))
    return previous.astimezone(UTC), missed


# -- code registration ------------------------------------------------------------------


class ScheduleRegistry:
    """Schedules declared in code, by name; workers store them at boot."""

    def __init__(self) -> None:
        self._specs: dict[str, Spec] = {}

    def add(self, spec: Spec) -> Spec:
        spec = spec.validate()
        existing = self._specs.get(spec.name)
        if existing is not None and existing != spec:
            raise ScheduleError(f"schedule {spec.name!r} is declared twice, differently")
        self._specs[spec.name] = spec
        return spec

    def schedule(
        self,
        cron: str | None,
        task_type: str,
        *,
        every: timedelta | None = None,
        name: str | None = None,
        payload: Mapping[str, Any] | None = None,
        timezone: str = "UTC",
        priority: int = PRIORITY,
        max_attempts: int | None = None,
        catch_up: str = "once",
    ) -> Callable[[F], F]:
        """Declare a recurring task now; usable bare or as a decorator (returns it unchanged).

        ``@schedule("*/15 * * * *", "prices.refresh", payload={"market": "EU"})`` above
        an ``@operator("prices.refresh")`` handler enqueues that task every 15 minutes.
        The name defaults to the task type.
        """
        self.add(
            Spec(
                name=name or task_type,
                task_type=task_type,
                cron=cron,
                every=every,
                time_zone=timezone,
                payload=dict(payload or {}),
                priority=priority,
                max_attempts=max_attempts,
                catch_up=catch_up,
            )
        )

        def identity(func: F) -> F:
            return func

        return identity

    @property
    def specs(self) -> Mapping[str, Spec]:
        return dict(self._specs)


schedules = ScheduleRegistry()
schedule = schedules.schedule


# -- the library behind `websurf schedules` ---------------------------------------------


def database_now(conn: psycopg.Connection[Any]) -> datetime:
    with conn.cursor(row_factory=scalar_row) as cur:
        now: datetime | None = cur.execute(QUERIES["database_now"]).fetchone()
    assert now is not None
    return now


def _params(spec: Spec, source: str, next_run_at: datetime | None) -> dict[str, Any]:
    return {
        "name": spec.name,
        "source": source,
        "cron": spec.cron,
        "every": spec.every,
        "time_zone": spec.time_zone,
        "task_type": spec.task_type,
        "payload": Jsonb(dict(spec.payload)),
        "priority": spec.priority,
        "max_attempts": spec.max_attempts,
        "catch_up": spec.catch_up,
        "next_run_at": next_run_at,
    }


def add_schedule(
    conn: psycopg.Connection[Any],
    spec: Spec,
    *,
    registry: Registry | None = None,
    allow_unknown_type: bool = False,
    now: datetime | None = None,
) -> datetime:
    """Store a new schedule (source ``cli``); returns its first tick."""
    spec = spec.validate()
    if registry is not None and registry.get(spec.task_type) is None and not allow_unknown_type:
        known = ", ".join(registry.names()) or "none"
        raise ScheduleError(
            f"no operator handles task type {spec.task_type!r} (known: {known});"
            " allow unknown types explicitly to schedule tasks for other workers"
        )
    first = next_tick(*spec.timing(), now or database_now(conn))
    try:
        row = conn.execute(QUERIES["insert_schedule"], _params(spec, "cli", first)).fetchone()
    except psycopg.errors.CheckViolation as exc:  # a limit only the database checks (size)
        raise ScheduleError(
            f"refused by the database: the schedule breaks its limit {exc.diag.constraint_name}"
        ) from None
    if row is None:
        raise ScheduleError(f"a schedule named {spec.name!r} already exists")
    return first


def list_schedules(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every schedule, with the status of the task its last tick enqueued."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(QUERIES["list_schedules"]).fetchall()


def last_run_succeeded(row: Mapping[str, Any]) -> bool | None:
    """Whether a schedule's last run succeeded (a list_schedules row); None: running or never."""
    if row.get("column_id") is not None:
        if row["refresh_after_row"] is not None or row["refresh_done_at"] is None:
            return None
        return bool(row["refresh_failed"] == 0)
    status = row.get("last_task_status")
    if status == Status.COMPLETED:
        return True
    if status in (Status.FAILED, Status.CANCELLED):
        return False
    return None


def _stored(conn: psycopg.Connection[Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(QUERIES["get_schedules_by_name"], {"names": list(names)}).fetchall()
    return {row["name"]: row for row in rows}


def set_paused(
    conn: psycopg.Connection[Any], name: str, paused: bool, *, now: datetime | None = None
) -> datetime | None:
    """Pause or resume a schedule; resuming returns its next tick (the first after now)."""
    row = _stored(conn, [name]).get(name)
    if row is None:
        raise ScheduleError(f"no schedule named {name!r}")
    next_run_at = None
    if not paused and row["paused"]:
        next_run_at = next_tick(
            row["cron"], row["every"], row["time_zone"], now or database_now(conn)
        )
    conn.execute(
        QUERIES["set_schedule_paused"],
        {"name": name, "paused": paused, "next_run_at": next_run_at},
    )
    return next_run_at


def remove_schedule(conn: psycopg.Connection[Any], name: str) -> None:
    if conn.execute(QUERIES["delete_schedule"], {"name": name}).fetchone() is None:
        if name in _stored(conn, [name]):
            raise ScheduleError(
                f"{name!r} is a column's refresh: clear the column's refresh_every instead"
            )
        raise ScheduleError(f"no schedule named {name!r}")


@dataclass(frozen=True)
class SyncCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: tuple[str, ...] = ()  # names taken by a schedule that is not from code


def sync_code_schedules(
    conn: psycopg.Connection[Any],
    registry: ScheduleRegistry = schedules,
    *,
    now: datetime | None = None,
) -> SyncCounts:
    """Store the schedules declared in code: add new ones, update changed ones.

    A schedule that disappeared from the code is left in place (a host still running
    the older code may rely on it): remove it with ``websurf schedules remove``. Paused
    stays paused. A changed cron expression, interval or time zone restarts the
    schedule from the first new tick after now.
    """
    specs = registry.specs
    if not specs:
        return SyncCounts()
    now = now or database_now(conn)
    stored = _stored(conn, list(specs))
    added = updated = unchanged = 0
    conflicts: list[str] = []
    for name, spec in specs.items():
        row = stored.get(name)
        if row is not None and row["source"] != "code":
            conflicts.append(name)
            continue
        if row is None:
            first_tick = next_tick(*spec.timing(), now)
            params = _params(spec, "code", first_tick)
            if conn.execute(QUERIES["insert_schedule"], params).fetchone():
                added += 1
            continue
        as_stored = Spec(
            name=name,
            task_type=row["task_type"],
            cron=row["cron"],
            every=row["every"],
            time_zone=row["time_zone"],
            payload=row["payload"],
            priority=row["priority"],
            max_attempts=row["max_attempts"],
            catch_up=row["catch_up"],
        )
        if as_stored == spec:
            unchanged += 1
            continue
        retimed = as_stored.timing() != spec.timing()
        conn.execute(
            QUERIES["update_code_schedule"],
            _params(spec, "code", next_tick(*spec.timing(), now) if retimed else None),
        )
        updated += 1
    for name in conflicts:
        log.warning(
            "schedule_name_taken",
            schedule=name,
            reason="a schedule of this name was added from the CLI or SQL; the code's is ignored",
        )
    counts = SyncCounts(added, updated, unchanged, tuple(conflicts))
    if added or updated:
        log.info("schedules_synced", added=added, updated=updated, unchanged=unchanged)
    return counts
