"""Prometheus metrics of the worker processes, summed across them by the supervisor.

Design note
-----------
* Multiprocess mode: each child writes its samples into memory-mapped files in the
  directory named by ``PROMETHEUS_MULTIPROC_DIR`` (the supervisor creates it and sets
  the variable for its children only); the supervisor's ``/metrics`` reads them all
  (``websurf.worker.daemon.health``). Counters and histograms of a child that died stay in
  the sum; its ``live*`` gauges are removed when the supervisor reaps it.
* Cost: the claim loop runs tens of thousands of tasks a second, and one
  ``Histogram.observe`` costs about 2 µs. So nothing here runs per task on the
  prometheus side: the runner reports once per batch, the batch is tallied in plain
  Python (a bisect per task: :func:`tally_claimed`, :func:`tally_finished`), and each
  counter or histogram bucket is incremented once per batch with the batch's count.
  :func:`_add_observations` does for a histogram what ``observe`` does, N values at a time.
* Queue depth needs the database, which the supervisor never touches: each child
  samples it every ``QUEUE_DEPTH_INTERVAL_S`` in its maintenance thread, and the gauge
  reports the most recent sample of any live child. The backlog per fairness key is
  sampled with it, labelled by rank (1 = the key with the most pending tasks, up to
  ``TOP_KEYS``), not by key: a label per key would add a series for every person who
  ever queued a task. ``websurf status`` names the keys.
* Readiness: a child sets ``websurf_worker_database_ok_timestamp_seconds`` when it has
  booted (database reached, schema at head) and after every successful heartbeat; the
  supervisor's ``/readyz`` asks whether any live child did so recently.
* Without ``--metrics-port`` the runner gets :class:`NullMetrics`, whose methods do
  nothing.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from websurf.worker.core import schedules
from websurf.worker.core.model import ClaimedRow, Outcome, OutcomeKind
from websurf.worker.daemon.health import DATABASE_OK_METRIC, MULTIPROC_ENV

if TYPE_CHECKING:
    from websurf.worker.core.limits import LimitState

QUEUE_DEPTH_INTERVAL_S = 10.0
TOP_KEYS = 10  # ranks of websurf_queue_key_backlog
DURATION_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 1800.0,
)  # fmt: skip
SCHEDULE_GAUGES = (
    ("next", "websurf_schedule_next_run_timestamp_seconds", "A schedule's next tick."),
    ("last", "websurf_schedule_last_run_timestamp_seconds", "The tick a schedule last ran."),
    (
        "success",
        "websurf_schedule_last_run_success",
        "1 when a schedule's last task completed (a column: its last refresh round ended"
        " with no failed task), 0 when it failed; unset while it runs.",
    ),
    ("paused", "websurf_schedule_paused", "1 while a schedule is paused."),
)


LIMIT_GAUGES = (
    ("running", "websurf_limit_running", "Tasks running under a limit (sampled by the workers)."),
    ("waiting", "websurf_limit_waiting", "Due tasks waiting under a limit (sampled)."),
    (
        "throttled",
        "websurf_limit_throttled",
        "1 while a limit holds due tasks back: at its cap, at its rate, or paused (sampled).",
    ),
)


class NullMetrics:
    """Metrics switched off: every hook is a no-op."""

    enabled = False

    def claimed(self, rows: Sequence[ClaimedRow]) -> None:
        pass

    def finished(self, outcomes: Sequence[Outcome], recorded: set[UUID]) -> None:
        pass

    def database_ok(self) -> None:
        pass

    def queue_depth(self, rows: Iterable[Sequence[Any]]) -> None:
        pass

    def key_backlog(self, rows: Sequence[Sequence[Any]]) -> None:
        pass

    def pruned(self, deleted: int) -> None:
        pass

    def ticks(self, by_schedule: dict[str, str]) -> None:
        pass

    def schedules(self, rows: list[dict[str, Any]]) -> None:
        pass

    def limits(self, states: Sequence[LimitState]) -> None:
        pass


@dataclass
class Observed:
    """Values for one labelled histogram: how many fell in each bucket, and their sum."""

    buckets: list[int]
    total: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.buckets)


def _observe(
    per_label: dict[str, Observed], bounds: Sequence[float], label: str, value: float
) -> None:
    observed = per_label.get(label)
    if observed is None:
        observed = per_label[label] = Observed([0] * (len(bounds) + 1))
    observed.buckets[bisect.bisect_left(bounds, value)] += 1
    observed.total += value


def tally_claimed(rows: Iterable[ClaimedRow]) -> dict[str, Observed]:
    """A claim's pickup latencies (from due to claimed) by task type."""
    latencies: dict[str, Observed] = {}
    for row in rows:
        _observe(latencies, LATENCY_BUCKETS_S, row.task_type, max(0.0, row.waited_s))
    return latencies


@dataclass
class FinishedTally:
    """A recorded batch counted as the metrics keep it."""

    # websurf_tasks_finished: (task type, outcome kind) -> attempts
    kinds: dict[tuple[str, OutcomeKind], int] = field(default_factory=dict)
    # websurf_task_duration_seconds by task type (handed-back attempts have none)
    durations: dict[str, Observed] = field(default_factory=dict)


def tally_finished(outcomes: Iterable[Outcome], recorded: Container[UUID]) -> FinishedTally:
    """Count a batch's outcomes by kind, and their durations into buckets."""
    tally = FinishedTally()
    kinds = tally.kinds
    for outcome in outcomes:
        task_type = outcome.task.task_type
        kind = outcome.kind(recorded)
        kinds[(task_type, kind)] = kinds.get((task_type, kind), 0) + 1
        if kind is not OutcomeKind.HANDED_BACK:  # interrupted or never started: no duration
            _observe(tally.durations, DURATION_BUCKETS_S, task_type, outcome.duration_s)
    return tally


def _add_observations(child: Any, tally: list[int], total: float) -> None:
    """Add a batch to one labelled histogram: ``tally[i]`` values fell in bucket i.

    Equivalent to calling ``observe`` once per value (prometheus_client keeps one
    non-cumulative counter per bucket plus a sum; tests/integration/test_metrics.py
    checks the two agree, so a change of that layout in a new release is caught).
    """
    child._sum.inc(total)
    for i, n in enumerate(tally):
        if n:
            child._buckets[i].inc(n)


class WorkerMetrics:
    """The metrics one worker process writes (multiprocess mode)."""

    enabled = True

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._claimed = Counter(
            "websurf_tasks_claimed", "Tasks claimed by the worker processes.", ["task_type"]
        )
        self._finished = Counter(
            "websurf_tasks_finished",
            "Claimed attempts by how they ended: completed, failed (for good), retried"
            " (back to pending with a backoff), handed_back (at shutdown, attempt not"
            " counted) or discarded (the claim had been taken away).",
            ["task_type", "outcome"],
        )
        self._duration = Histogram(
            "websurf_task_duration_seconds",
            "Time a handler ran, per attempt.",
            ["task_type"],
            buckets=DURATION_BUCKETS_S,
        )
        self._latency = Histogram(
            "websurf_task_pickup_latency_seconds",
            "From when a task was due (max of created_at and scheduled_for) to its claim.",
            ["task_type"],
            buckets=LATENCY_BUCKETS_S,
        )
        self._depth = Gauge(
            "websurf_queue_depth",
            "Pending tasks that are due, per type (sampled by the workers).",
            ["task_type"],
            multiprocess_mode="livemostrecent",
        )
        self._scheduled = Gauge(
            "websurf_queue_scheduled",
            "Pending tasks scheduled for later, per type (sampled by the workers).",
            ["task_type"],
            multiprocess_mode="livemostrecent",
        )
        self._oldest = Gauge(
            "websurf_queue_oldest_due_age_seconds",
            "How long the oldest due pending task has waited (sampled by the workers).",
            multiprocess_mode="livemostrecent",
        )
        self._key_backlog = Gauge(
            "websurf_queue_key_backlog",
            "Pending tasks of the fairness key with the rank-th largest backlog (rank 1: the"
            " largest; sampled by the workers; websurf status names the keys).",
            ["rank"],
            multiprocess_mode="livemostrecent",
        )
        self._keys_pending = Gauge(
            "websurf_queue_keys",
            "Fairness keys with pending tasks (sampled by the workers).",
            multiprocess_mode="livemostrecent",
        )
        self._database_ok = Gauge(
            DATABASE_OK_METRIC,
            "When a worker process last reached the database with the schema at head.",
            multiprocess_mode="livemax",
        )
        self._pruned = Counter("websurf_tasks_pruned", "Finished tasks deleted by the pruner.")
        self._ticks = Counter(
            "websurf_schedule_ticks",
            "Schedule ticks claimed by this worker: enqueued (the task, or a column's refresh"
            " round) or skipped (missed while no worker ran, with catch_up='skip').",
            ["schedule", "outcome"],
        )
        self._schedule_gauges = {
            key: Gauge(name, text, ["schedule"], multiprocess_mode="livemostrecent")
            for key, name, text in SCHEDULE_GAUGES
        }
        self._limit_gauges = {
            key: Gauge(name, text, ["operator", "key"], multiprocess_mode="livemostrecent")
            for key, name, text in LIMIT_GAUGES
        }
        self._children: dict[tuple[Any, ...], Any] = {}
        self._depth_types: set[str] = set()
        self._limit_labels: set[tuple[str, str]] = set()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def claimed(self, rows: Sequence[ClaimedRow]) -> None:
        """A claim returned ``rows``."""
        for task_type, latencies in tally_claimed(rows).items():
            self._child(self._claimed, task_type).inc(latencies.count)
            _add_observations(
                self._child(self._latency, task_type), latencies.buckets, latencies.total
            )

    def finished(self, outcomes: Sequence[Outcome], recorded: set[UUID]) -> None:
        """A batch's outcomes were recorded (``recorded``: the ids the fence let through)."""
        tally = tally_finished(outcomes, recorded)
        for (task_type, kind), n in tally.kinds.items():
            self._child(self._finished, task_type, kind.value).inc(n)
        for task_type, durations in tally.durations.items():
            _add_observations(
                self._child(self._duration, task_type), durations.buckets, durations.total
            )

    def database_ok(self) -> None:
        self._database_ok.set(time.time())

    def queue_depth(self, rows: Iterable[Sequence[Any]]) -> None:
        """Set the depth gauges from count_pending_by_type rows (types gone drop to 0)."""
        now = datetime.now(UTC)
        seen: set[str] = set()
        oldest = 0.0
        for task_type, due, scheduled, oldest_due_at in rows:
            seen.add(task_type)
            self._child(self._depth, task_type).set(due)
            self._child(self._scheduled, task_type).set(scheduled)
            if oldest_due_at is not None:
                oldest = max(oldest, (now - oldest_due_at).total_seconds())
        for task_type in self._depth_types - seen:
            self._child(self._depth, task_type).set(0)
            self._child(self._scheduled, task_type).set(0)
        self._depth_types |= seen
        self._oldest.set(oldest)

    def key_backlog(self, rows: Sequence[Sequence[Any]]) -> None:
        """Set the per-key backlog gauges from count_pending_by_key rows (ranks beyond
        the keys there are drop to 0)."""
        for rank in range(1, TOP_KEYS + 1):
            pending = rows[rank - 1][1] if rank <= len(rows) else 0
            self._child(self._key_backlog, str(rank)).set(pending)
        self._keys_pending.set(rows[0][2] if rows else 0)

    def pruned(self, deleted: int) -> None:
        if deleted:
            self._pruned.inc(deleted)

    def ticks(self, by_schedule: dict[str, str]) -> None:
        for name, outcome in by_schedule.items():
            self._child(self._ticks, name, outcome).inc()

    def schedules(self, rows: list[dict[str, Any]]) -> None:
        """Set the schedule gauges from list_schedules rows (sampled by the workers)."""
        for row in rows:
            values = {
                "next": row["next_run_at"].timestamp(),
                "last": row["last_run_at"].timestamp() if row["last_run_at"] else None,
                "success": schedules.last_run_succeeded(row),
                "paused": 1.0 if row["paused"] else 0.0,
            }
            for key, value in values.items():
                if value is not None:
                    self._child(self._schedule_gauges[key], row["name"]).set(float(value))

    def limits(self, states: Sequence[LimitState]) -> None:
        """Set the limit gauges from limit_states (limits gone drop to 0; the whole
        operator's limit has the key label "")."""
        seen: set[tuple[str, str]] = set()
        for state in states:
            labels = (state.operator, state.key or "")
            seen.add(labels)
            values = {
                "running": state.running,
                "waiting": state.waiting,
                "throttled": 1 if state.throttled else 0,
            }
            for key, value in values.items():
                self._child(self._limit_gauges[key], *labels).set(value)
        for labels in self._limit_labels - seen:
            for gauge in self._limit_gauges.values():
                self._child(gauge, *labels).set(0)
        self._limit_labels |= seen


def for_worker(metrics_port: int | None) -> WorkerMetrics | NullMetrics:
    """The metrics of this worker process: real ones when the supervisor serves them."""
    if metrics_port is None or not os.environ.get(MULTIPROC_ENV):
        return NullMetrics()
    return WorkerMetrics()
