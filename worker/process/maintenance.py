"""The process's maintenance thread: heartbeat, and the chores that take turns with it.

It runs on its own thread with the process's small synchronous pool, so a busy event
loop or a stuck handler never delays a heartbeat. Each turn: heartbeat (re-register
when the roster forgot this worker), then whichever chores are due: the reaper
(one at a time across hosts, by an advisory lock), the queue-depth sample for the
metrics, the promoter (due tasks queued for later join the rounds of fair claims), and
pruning (whose cadence is the pruner's own: ``pruner.Cadence``). Each chore
is a ``run_once`` service. Due schedule ticks and column refresh rounds run every turn
(``recurring.Chore``). Each heartbeat also looks for this process's running tasks that
someone cancelled (``cancel_requested_at``, 0027): the ``task_cancel`` notification
normally stops them at once, but one sent while the listener was reconnecting is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from websurf.sql import QUERIES
from websurf.sql.database import scrub
from websurf.worker.config import PRUNE_TIME_BUDGET_S, WorkerConfig
from websurf.worker.core import limits, queue, workers
from websurf.worker.core.registry import Registry
from websurf.worker.daemon import metrics as metrics_module
from websurf.worker.maintenance import promoter, pruner, reaper, recurring
from websurf.worker.process.executor import error_text

PREDECESSOR_TRIES = 5  # then the stale-heartbeat reaper recovers them instead
PREDECESSOR_RETRY_S = 0.5


class Maintenance:
    """Heartbeat and chores on a thread of their own."""

    def __init__(
        self,
        pool: ConnectionPool[psycopg.Connection[Any]],
        config: WorkerConfig,
        *,
        worker_id: str,
        timeouts_s: Mapping[str, float],
        register: Callable[[psycopg.Connection[Any]], None],
        registry: Registry,
        metrics: metrics_module.WorkerMetrics | metrics_module.NullMetrics,
        log: Any,
        on_cancel_requested: Callable[[list[UUID]], None] = lambda task_ids: None,
    ) -> None:
        self.pool = pool
        self.on_cancel_requested = on_cancel_requested
        self.config = config
        self.worker_id = worker_id
        self.timeouts_s = dict(timeouts_s)
        self.register = register
        self.metrics = metrics
        self.log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recurring = recurring.Chore(registry)  # schedules and column refreshes
        self._next_reap = self._next_depth = time.monotonic()
        self._pruning = (
            None
            if config.prune_older_than_s is None
            else pruner.Cadence(
                timedelta(seconds=config.prune_older_than_s),
                batch_size=config.prune_batch_size,
                interval_s=config.prune_interval_s,
                budget_s=PRUNE_TIME_BUDGET_S,
            )
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.heartbeat_interval_s + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.config.heartbeat_interval_s):
            try:
                with self.pool.connection(timeout=self.config.heartbeat_interval_s) as conn:
                    self.turn(conn, time.monotonic())
            except Exception as exc:  # keep heartbeating through database trouble
                self.log.warning(
                    "heartbeat_failed", error=scrub(error_text(exc), self.config.database_url)
                )

    def turn(self, conn: psycopg.Connection[Any], now: float) -> None:
        """One turn: heartbeat, then the chores that are due at ``now`` (monotonic)."""
        if not workers.heartbeat(conn, self.worker_id):
            self.log.warning(
                "worker_reregistered",
                reason="the roster had forgotten this worker (presumed dead);"
                " its old claims were handed back and will be fenced out",
            )
            self.register(conn)
        self.metrics.database_ok()
        cancelled = queue.cancel_requested(conn, self.worker_id)
        if cancelled:
            self.on_cancel_requested(cancelled)
        if now >= self._next_reap:
            self._next_reap = now + self.config.reaper_interval_s
            reaper.run_once(conn, self.timeouts_s)
        if self.metrics.enabled and now >= self._next_depth:
            self._next_depth = now + metrics_module.QUEUE_DEPTH_INTERVAL_S
            self.metrics.queue_depth(conn.execute(QUERIES["count_pending_by_type"]).fetchall())
            self.metrics.limits(limits.limit_states(conn))
            self.metrics.key_backlog(
                conn.execute(
                    QUERIES["count_pending_by_key"], {"limit": metrics_module.TOP_KEYS}
                ).fetchall()
            )
        promoter.run_once(conn)  # due tasks queued for later take their turn
        pruned = self._pruning.run_if_due(conn, now) if self._pruning else None
        if pruned is not None:
            self.metrics.pruned(pruned.deleted)
        self._recurring.run(conn, self.metrics)  # due schedule ticks, refresh rounds


def recover_predecessors(
    pool: ConnectionPool[psycopg.Connection[Any]],
    predecessors: Sequence[Mapping[str, Any]],
    log: Any,
) -> None:
    """Take back the tasks of the processes this one replaces (they are known to be dead).

    Each entry: ``worker_id``, ``how`` it died, and ``running``, the (task id, attempt)
    pairs its handler code was executing: only those attempts count.
    """
    remaining = list(predecessors)
    for attempt in range(1, PREDECESSOR_TRIES + 1):
        try:
            while remaining:
                dead = remaining[0]
                with pool.connection() as conn:
                    reaper.recover_dead_worker(
                        conn,
                        dead["worker_id"],
                        how=dead.get("how", "unknown"),
                        running=[(str(t), int(a)) for t, a in dead.get("running") or ()],
                    )
                remaining.pop(0)
            return
        except psycopg.OperationalError as exc:
            log.warning("predecessor_recovery_retry", attempt=attempt, error=str(exc).strip())
            time.sleep(PREDECESSOR_RETRY_S * attempt)
    log.warning(
        "predecessor_recovery_deferred",
        dead_worker_ids=[d["worker_id"] for d in remaining],
        reason="the reaper recovers them once their heartbeat is stale",
    )
