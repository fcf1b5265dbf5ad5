"""The recurring-work chore a worker process runs on each maintenance turn.

Stores the code's schedules once (at the first turn after boot), then on every turn
claims due ticks (:mod:`websurf.worker.maintenance.scheduler`) and feeds the columns' refresh
rounds (:mod:`websurf.worker.app.refresh`), and now and then samples the schedules for
the metrics. Every step is safe to run in every process on every host at once.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import psycopg
import structlog

from websurf.worker.app import refresh
from websurf.worker.core import schedules
from websurf.worker.core.registry import Registry
from websurf.worker.maintenance import scheduler

METRICS_INTERVAL_S = 10.0  # how often the schedule gauges are sampled

log = structlog.get_logger("websurf.schedules")


class ScheduleMetrics(Protocol):
    enabled: bool

    def ticks(self, by_schedule: dict[str, str]) -> None: ...

    def schedules(self, rows: list[dict[str, Any]]) -> None: ...


class Chore:
    """Run by the worker's maintenance thread, once per turn, on an autocommit connection."""

    def __init__(
        self,
        registry: Registry | None = None,
        code_schedules: schedules.ScheduleRegistry = schedules.schedules,
    ) -> None:
        self.registry = registry
        self.code_schedules = code_schedules
        self._synced = False
        self._next_sample = 0.0

    def run(self, conn: psycopg.Connection[Any], metrics: ScheduleMetrics) -> None:
        try:
            if not self._synced:
                schedules.sync_code_schedules(conn, self.code_schedules)
                self._synced = True
            # Sampled before this turn's ticks, so a sample shows how the last task that had
            # time to run went, not the task just enqueued.
            if metrics.enabled and time.monotonic() >= self._next_sample:
                self._next_sample = time.monotonic() + METRICS_INTERVAL_S
                metrics.schedules(schedules.list_schedules(conn))
            ticks = scheduler.run_once(conn, registry=self.registry)
            refresh.run_once(conn)
            metrics.ticks(ticks.by_schedule)
        except psycopg.OperationalError:
            raise  # the database is away: the maintenance loop logs and retries
        except Exception as exc:  # never stop the maintenance turn: heartbeats come first
            log.warning("schedules_failed", error=f"{type(exc).__name__}: {exc}".strip())
