"""What ``websurf bench`` measures, and how much: the measurement names ``--only`` selects
and the counts of each run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from websurf.worker.config import TASKS_PER_PROCESS

SLEEP_S = 0.1  # how long each robot of the async, threaded and priority runs waits
FAIR_SLEEP_S = 1.0  # how long the fairness run's robot waits (the model API)
MEMORY_SLEEP_S = 10.0  # long enough for every task to be in flight when memory is read
# In the order they run; "plan" and "dashboard" run once, after the repeated runs.
MEASUREMENTS = (
    "noop",
    "cells",
    "enqueue",
    "latency",
    "edits",
    "async",
    "threaded",
    "memory",
    "priority",
    "limits",
    "cancel",
    "fairness",
    "plan",
    "dashboard",
)


@dataclass(frozen=True)
class BenchOptions:
    runs: int = 3
    tasks: int = 20_000  # no-op and audited cell tasks per run
    concurrencies: tuple[int, ...] = (1, 2, 4)
    daemons: int = 2  # the multi-daemon run: this many daemons of daemon_processes each
    daemon_processes: int = 2
    cell_processes: int = 2
    bulk_tasks: int = 10_000
    single_tasks: int = 2_000
    latency_rate_per_s: float = 50.0
    latency_duration_s: float = 20.0
    latency_processes: int = 2
    edits: int = 1_000
    async_tasks: int = 10_000
    threaded_tasks: int = 2_000
    memory_in_flight: int = TASKS_PER_PROCESS  # per process
    memory_sleep_s: float = MEMORY_SLEEP_S
    priority_bulk_tasks: int = 4_000
    priority_edits: int = 40
    limit_cap: int = 5  # the limits run: at most this many bench_sleep tasks at once
    limit_sleep_s: float = 1.0  # each capped task's handler sleeps this long
    limit_cap_tasks: int = 50
    limit_rate: int = 20  # ... and at most this many started per limit_period_s
    limit_period_s: float = 2.0
    limit_burst: int | None = 5  # ... at most this many within burst/rate of the period
    limit_rate_tasks: int = 100  # a multiple of limit_rate: every window can be full
    # None: queue limit_rate_tasks and wait for them all; else keep work waiting this long
    limit_rate_duration_s: float | None = None
    cancel_tasks: int = 20  # running tasks cancelled one by one, per run
    fair_rows: int = 10_000  # the big tenant's paste
    fair_edits: int = 10  # the small tenant's single edits
    fair_sleep_s: float = FAIR_SLEEP_S
    fair_keys: int = 1_000  # no-op throughput with this many keys against one key
    fair_key_tasks: int = 100  # per key
    plan_finished: int = 1_000_000
    plan_future: int = 100_000
    plan_due: int = 1_000
    dashboard_finished: int = 1_000_000  # the queue the dashboard's pages are timed on
    dashboard_pending: int = 100_000
    only: tuple[str, ...] = MEASUREMENTS

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        """Small counts, one run, no claim plan or dashboard pages: a check that all works."""
        settings: dict[str, Any] = {
            "runs": 1,
            "tasks": 2_000,
            "bulk_tasks": 2_000,
            "single_tasks": 300,
            "latency_duration_s": 3.0,
            "edits": 200,
            "async_tasks": 2_000,
            "threaded_tasks": 500,
            "priority_edits": 10,
            "limit_cap_tasks": 20,
            "limit_rate_tasks": 60,
            "cancel_tasks": 5,
            "fair_rows": 2_000,
            "fair_edits": 5,
            "fair_key_tasks": 10,
            "only": tuple(m for m in MEASUREMENTS if m not in ("plan", "dashboard")),
        }
        settings.update(overrides)
        return cls(**settings)
