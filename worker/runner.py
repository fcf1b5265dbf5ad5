"""One worker process: claim a batch, run the handlers, record the outcomes, repeat.

Design note
-----------
* One thread runs tasks, one at a time (handlers are synchronous). A second thread
  does the maintenance chores: heartbeat, and the reaper when its turn comes.
* Speed comes from batching: one statement claims up to ``limit`` tasks (sized so a
  batch holds about ``batch_window_s`` of work, measured as it goes), and one
  transaction records all their outcomes, audit rows and cell writes. If that
  transaction fails for a reason other than a lost connection (a cell deleted under a
  task, say), each outcome is retried in a transaction of its own, so one bad write
  never loses or fails the others.
* Waiting: a dedicated autocommit connection LISTENs on ``new_task``; the loop
  sleeps in ``select`` on it and on a wake-up pipe fed by signals, for at most the poll
  interval, or until the earliest retry/delayed task it knows of is due.
* Losing the database: every database step retries with capped exponential backoff
  (tenacity) and logs each attempt. Outcomes not yet recorded stay in memory and are
  recorded when the database returns; the fence makes a repeated finish harmless.
* Stopping (SIGTERM/SIGINT from the supervisor): claim nothing more, hand back the
  batch's unstarted tasks at once, let the running handler finish until the shutdown
  deadline; at the deadline (or on a second signal) interrupt it and hand it back, not
  counting the interrupted attempt.
* Timeouts: SIGALRM interrupts a handler that runs past its operator's timeout; the
  attempt fails like any other error. A handler that ignores it is left to the reaper.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import structlog
from psycopg_pool import ConnectionPool
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from websurf.sql import QUERIES
from websurf.sql.database import describe, scrub
from websurf.sql.migrate import pending_migrations
from websurf.worker import metrics, pruner, queue, reaper, recurring
from websurf.worker.config import PRUNE_TIME_BUDGET_S, WorkerConfig
from websurf.worker.queue import COMPLETED, FAILED, PENDING, Outcome
from websurf.worker.registry import Context, Operator, Registry, Result, Task, load_operators

T = TypeVar("T")
ERROR_MESSAGE_MAX = 2000
EWMA_WEIGHT = 0.3
FIRST_BATCH = 10
# The reaper times a task out counting from its claim, which a batch shares: start none
# later than this after the claim (hand the rest back), so none is cut off before it ran.
BATCH_START_LIMIT_S = reaper.TIMEOUT_GRACE_S / 2


class BootError(RuntimeError):
    """The process cannot start serving (bad operator module, schema behind, no database)."""

    def __init__(self, message: str, *, database_unreachable: bool = False) -> None:
        super().__init__(message)
        self.database_unreachable = database_unreachable


class TaskTimeout(Exception):
    """Raised inside a handler that ran past its operator's timeout."""


class TaskInterrupted(BaseException):
    """Raised inside a handler when shutdown cannot wait for it any longer."""


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:ERROR_MESSAGE_MAX]


@dataclass
class _Stop:
    requested: int = 0
    deadline: float = float("inf")


class Runner:
    """The claim loop of one worker process."""

    def __init__(
        self,
        config: WorkerConfig,
        worker_id: str,
        *,
        predecessors: Sequence[str] = (),
        registry: Registry | None = None,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.predecessors = list(predecessors)
        self.log = structlog.get_logger("websurf.worker").bind(worker_id=worker_id)
        self.registry = registry or load_operators(config.operator_modules)
        self.operators: dict[str, Operator] = dict(self.registry.operators)
        self.task_types = sorted(self.operators)
        self.stop = _Stop()
        self._in_handler = False
        self._alarm_reason = ""
        self._task_s = 0.0  # moving average of a task's run time
        self._limit = FIRST_BATCH
        self._wake_at: float = float("inf")  # monotonic time of the earliest known due task
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._maintenance_stop = threading.Event()
        self.pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self.listener: psycopg.Connection[Any] | None = None
        self._claimer: psycopg.Connection[Any] | None = None
        self.counts = {"completed": 0, "retried": 0, "failed": 0, "handed_back": 0, "lost": 0}
        self.metrics = metrics.for_worker(config.metrics_port)
        self._durations: list[float] = []  # per outcome of the current batch, for metrics
        self._next_depth = self._next_prune = time.monotonic()
        self._recurring = recurring.Chore(self.registry)  # schedules and column refreshes

    # -- signals -----------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.requested += 1
        if self.stop.requested == 1:
            self.stop.deadline = time.monotonic() + self.config.shutdown_timeout_s
            if self._in_handler:
                remaining = self.stop.deadline - time.monotonic()
                current = signal.getitimer(signal.ITIMER_REAL)[0]
                if current == 0 or remaining < current:
                    self._alarm_reason = "shutdown"
                    signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))
        else:
            self.stop.deadline = time.monotonic()
            if self._in_handler:
                self._in_handler = False
                raise TaskInterrupted("second stop signal")

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if not self._in_handler:
            return
        self._in_handler = False
        if self._alarm_reason == "shutdown" or self.stop.requested:
            raise TaskInterrupted("shutdown deadline reached")
        raise TaskTimeout(self._alarm_reason)

    @property
    def stopping(self) -> bool:
        return self.stop.requested > 0

    # -- database with retries ---------------------------------------------------

    def _retrying(
        self, what: str, *, give_up_at: Callable[[], float], until_stop: bool = False
    ) -> Retrying:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.log.warning(
                "database_retry",
                step=what,
                attempt=state.attempt_number,
                target=describe(self.config.database_url),
                error=scrub(str(exc).strip(), self.config.database_url),
            )

        def should_stop(state: RetryCallState) -> bool:
            return time.monotonic() >= give_up_at() or (until_stop and self.stopping)

        def sleep(seconds: float) -> None:
            self._sleep_interruptibly(min(seconds, max(0.0, give_up_at() - time.monotonic())))

        return Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_random_exponential(multiplier=0.1, max=self.config.db_retry_max_wait_s),
            stop=should_stop,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )

    def _with_retry(
        self,
        what: str,
        step: Callable[[], T],
        *,
        give_up_at: Callable[[], float],
        until_stop: bool = False,
    ) -> T:
        for attempt in self._retrying(what, give_up_at=give_up_at, until_stop=until_stop):
            with attempt:
                return step()
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep_interruptibly(self, seconds: float) -> None:
        if seconds <= 0:
            return
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            self._drain_wake_pipe()

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _forever(self) -> float:
        return float("inf")

    def _until_stop_deadline(self) -> float:
        return self.stop.deadline

    # -- boot --------------------------------------------------------------------

    def boot(self) -> None:
        """Connect, check the schema, register; raise BootError when that cannot work."""
        try:
            self._boot()
        except BaseException:
            if self.pool is not None:
                self.pool.close()
            if self._claimer is not None:
                self._claimer.close()
            raise

    def _boot(self) -> None:
        if not self.task_types:
            raise BootError("no operators registered: nothing to run")
        os.set_blocking(self._wake_r, False)
        url = self.config.database_url
        self.pool = ConnectionPool(
            url,
            min_size=self.config.pool_min_size,
            max_size=self.config.pool_max_size,
            max_idle=self.config.pool_max_idle_s,
            timeout=max(self.config.connect_timeout_s * 5, 10.0),
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(self.config.connect_timeout_s)),
                "application_name": f"websurf-worker {self.worker_id}"[:63],
            },
            reconnect_timeout=0,  # keep trying: the loop decides when to give up
            open=False,
            name=f"websurf-{self.worker_id}",
        )
        give_up = time.monotonic() + self.config.boot_db_wait_s

        # The claim connection (which the loop keeps) checks the schema and registers:
        # one connection less to open before the first claim.
        def first_contact() -> list[str]:
            return [m.name for m in pending_migrations(self._claim_connection())]

        try:
            pending = self._with_retry(
                "boot", first_contact, give_up_at=lambda: give_up, until_stop=True
            )
        except psycopg.OperationalError as exc:
            raise BootError(
                f"cannot reach PostgreSQL at {describe(url)}: "
                f"{scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else '', url)}",
                database_unreachable=True,
            ) from None
        if pending:
            raise BootError(
                f"the database schema is behind this version of websurf ({len(pending)} pending"
                f" migration(s), first {pending[0]}): run `websurf migrate` first"
            )
        self.pool.open(wait=False)  # connects in the background, for finishes and chores
        self._with_retry(
            "register",
            lambda: self._register(self._claim_connection()),
            give_up_at=lambda: give_up,
            until_stop=True,
        )
        self.listener = self._with_retry(
            "listen", self._listen, give_up_at=lambda: give_up, until_stop=True
        )
        if self.predecessors:
            self._with_retry(
                "reap_predecessors",
                self._reap_predecessors,
                give_up_at=lambda: give_up,
                until_stop=True,
            )
        self.metrics.database_ok()
        self.log.info("worker_ready", task_types=self.task_types, pid=os.getpid())

    def _register(self, conn: psycopg.Connection[Any] | None = None) -> None:
        if conn is None:
            assert self.pool is not None
            with self.pool.connection() as pooled:
                self._register(pooled)
            return
        conn.execute(
            QUERIES["register_worker"],
            {
                "id": self.worker_id,
                "hostname": self.config.hostname,
                "pid": os.getpid(),
                "task_types": self.task_types,
                "stale_after_s": self.config.stale_after_s,
            },
        )

    def _reap_predecessors(self) -> None:
        """Forget the workers this process replaces; the reaper then recovers their tasks."""
        assert self.pool is not None
        with self.pool.connection() as conn:
            for worker_id in self.predecessors:
                conn.execute(QUERIES["deregister_worker"], {"id": worker_id})
            self._reap(conn)
        self.predecessors = []

    def _listen(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.config.database_url,
            autocommit=True,
            connect_timeout=max(1, round(self.config.connect_timeout_s)),
            application_name=f"websurf-listen {self.worker_id}"[:63],
        )
        conn.execute("LISTEN new_task")
        return conn

    # -- maintenance thread --------------------------------------------------------

    def _reap(self, conn: psycopg.Connection[Any]) -> reaper.ReapCounts:
        timeouts = {n: op.timeout_s for n, op in self.operators.items() if op.timeout_s is not None}
        return reaper.run_once(conn, timeouts)

    def _maintenance(self) -> None:
        assert self.pool is not None
        next_reap = time.monotonic()
        while not self._maintenance_stop.wait(self.config.heartbeat_interval_s):
            try:
                with self.pool.connection(timeout=self.config.heartbeat_interval_s) as conn:
                    alive = conn.execute(
                        QUERIES["heartbeat_worker"], {"id": self.worker_id}
                    ).fetchone()
                    if alive is None:
                        self.log.warning(
                            "worker_reregistered",
                            reason="the registry had forgotten this worker (presumed dead);"
                            " its old claims were handed back and will be fenced out",
                        )
                        self._register()
                    self.metrics.database_ok()
                    if time.monotonic() >= next_reap:
                        next_reap = time.monotonic() + self.config.reaper_interval_s
                        self._reap(conn)
                    self._chores(conn)
            except Exception as exc:  # keep heartbeating through database trouble
                self.log.warning(
                    "heartbeat_failed", error=scrub(_error_text(exc), self.config.database_url)
                )

    def _chores(self, conn: psycopg.Connection[Any]) -> None:
        """Scheduled pruning, and the queue-depth sample for the metrics."""
        now = time.monotonic()
        if self.metrics.enabled and now >= self._next_depth:
            self._next_depth = now + metrics.QUEUE_DEPTH_INTERVAL_S
            self.metrics.queue_depth(conn.execute(QUERIES["count_pending_by_type"]).fetchall())
        older_than_s = self.config.prune_older_than_s
        if older_than_s is not None and now >= self._next_prune:
            counts = pruner.run_once(
                conn,
                timedelta(seconds=older_than_s),
                batch_size=self.config.prune_batch_size,
                deadline=now + PRUNE_TIME_BUDGET_S,
            )
            self.metrics.pruned(counts.deleted)
            self._next_prune = now + (0.0 if counts.more else self.config.prune_interval_s)
        self._recurring.run(conn, self.metrics)  # due schedule ticks, refresh rounds

    # -- the loop ----------------------------------------------------------------

    def run(self) -> None:
        """Serve until a stop signal; then drain, hand back, deregister."""
        assert self.pool is not None
        maintenance = threading.Thread(target=self._maintenance, name="maintenance", daemon=True)
        maintenance.start()
        try:
            while not self.stopping:
                tasks = self._with_retry(
                    "claim", self._claim, give_up_at=self._forever, until_stop=True
                )
                if tasks:
                    self._record(self._execute(tasks))
                else:
                    self._wait()
        except psycopg.OperationalError:
            self.log.error("database_unreachable_at_shutdown")
        finally:
            self._maintenance_stop.set()
            maintenance.join(timeout=self.config.heartbeat_interval_s + 1)
            self._close()

    def _claim(self) -> list[Task]:
        rows = queue.claim_rows(
            self._claim_connection(), self.worker_id, self.task_types, self._limit
        )
        self.metrics.claimed(rows)  # columns 6, 7: scheduled_for, created_at (pickup latency)
        return queue.tasks_from_rows(rows)

    def _claim_connection(self) -> psycopg.Connection[Any]:
        """The connection claims run on, reconnected when it broke.

        Claims commit without waiting for the WAL flush (synchronous_commit = off):
        that takes about a millisecond off every pickup. A server crash can forget
        the claims of its last moments: those tasks are pending again and run again
        under the same attempt number (their results are fenced out; each result,
        audit row and cell write is still recorded once, in a normal flushed
        transaction whose flush also makes the claim before it durable).
        ``durable_claims`` trades the millisecond for strict attempt counting.
        """
        conn = self._claimer
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = self._claimer = psycopg.connect(
                self.config.database_url,
                autocommit=True,
                connect_timeout=max(1, round(self.config.connect_timeout_s)),
                application_name=f"websurf-claim {self.worker_id}"[:63],
                options=f"-c synchronous_commit={'on' if self.config.durable_claims else 'off'}",
            )
        return conn

    def _wait(self) -> None:
        """Sleep until a notification, a signal, a known due time or the poll interval."""
        timeout = self.config.poll_interval_s
        now = time.monotonic()
        if self._wake_at <= now:
            self._wake_at = float("inf")
            return
        timeout = min(timeout, self._wake_at - now)
        listener = self.listener
        if listener is None or listener.closed or listener.broken:
            self._reconnect_listener()
            return
        try:
            ready, _, _ = select.select([listener.fileno(), self._wake_r], [], [], timeout)
        except (OSError, ValueError):
            self._reconnect_listener()
            return
        if self._wake_r in ready:
            self._drain_wake_pipe()
        if listener.fileno() in ready:
            try:
                for notice in listener.notifies(timeout=0):
                    self._note_notification(notice.payload)
            except psycopg.OperationalError:
                self._reconnect_listener()

    def _note_notification(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            due = data.get("scheduled_for")
        except (ValueError, AttributeError):
            return
        if due:
            try:
                delay = (datetime.fromisoformat(due) - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                return
            if delay > 0:
                self._wake_at = min(self._wake_at, time.monotonic() + delay)

    def _reconnect_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.stopping:
            return
        self.log.warning("listener_reconnecting")
        try:
            self.listener = self._with_retry(
                "listen", self._listen, give_up_at=lambda: self.stop.deadline
            )
        except psycopg.OperationalError:
            return
        self.log.info("listener_reconnected")  # the caller polls at once: nothing is missed

    # -- running handlers -----------------------------------------------------------

    def _execute(self, tasks: list[Task]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        self._durations = durations = []
        started = time.perf_counter()
        for task in tasks:
            if self.stopping or time.perf_counter() - started > BATCH_START_LIMIT_S:
                outcomes.append(
                    Outcome(task, PENDING, task.task_type, error=None, handed_back=True)
                )
                durations.append(0.0)
                continue
            began = time.perf_counter()
            outcomes.append(self._run_one(task))
            durations.append(time.perf_counter() - began)
        ran = len(tasks)
        if ran:
            per_task = (time.perf_counter() - started) / ran
            self._task_s = (
                per_task
                if self._task_s == 0
                else (EWMA_WEIGHT * per_task + (1 - EWMA_WEIGHT) * self._task_s)
            )
            wanted = int(self.config.batch_window_s / max(self._task_s, 1e-6))
            self._limit = max(1, min(self.config.batch_max, wanted))
        return outcomes

    def _run_one(self, task: Task) -> Outcome:
        op = self.operators[task.task_type]
        deadline = time.monotonic() + (op.timeout_s if op.timeout_s is not None else 1e9)
        ctx = Context(
            log=self.log.bind(task_id=str(task.id), task_type=task.task_type, attempt=task.attempt),
            deadline=deadline,
            worker_id=self.worker_id,
            _connection=self._read_connection,
        )
        started = time.perf_counter()
        alarm_s = op.timeout_s
        if self.stopping:
            remaining = self.stop.deadline - time.monotonic()
            alarm_s = remaining if alarm_s is None else min(alarm_s, remaining)
        try:
            if alarm_s is not None:
                self._alarm_reason = (
                    "shutdown"
                    if self.stopping and alarm_s != op.timeout_s
                    else f"handler ran past its {op.timeout_s:g}s timeout"
                )
                signal.setitimer(signal.ITIMER_REAL, max(alarm_s, 0.001))
            self._in_handler = True
            try:
                value = op.handler(task, ctx)
            finally:
                self._in_handler = False
                if alarm_s is not None:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except TaskInterrupted:
            duration_ms = int((time.perf_counter() - started) * 1000)
            ctx.log.warning("task_interrupted", reason="shutdown", duration_ms=duration_ms)
            return Outcome(task, PENDING, op.name, handed_back=True, duration_ms=duration_ms)
        except Exception as exc:
            return self._failed(task, op, ctx, exc, started)
        duration_ms = int((time.perf_counter() - started) * 1000)
        if isinstance(value, Result):
            output, writes, content = value.output, value.writes_cell, value.cell_content
        else:
            output, writes, content = value, False, None
        if output is not None:
            try:
                json.dumps(output)
            except (TypeError, ValueError) as exc:
                return self._failed(
                    task,
                    op,
                    ctx,
                    TypeError(f"handler output is not JSON-serialisable: {exc}"),
                    started,
                    permanent=True,
                )
        ctx.log.info("task_completed", duration_ms=duration_ms)
        return Outcome(
            task,
            COMPLETED,
            op.name,
            output=output,
            duration_ms=duration_ms,
            writes_cell=writes and task.cell_id is not None,
            cell_content=content,
        )

    def _failed(
        self,
        task: Task,
        op: Operator,
        ctx: Context,
        exc: BaseException,
        started: float,
        *,
        permanent: bool = False,
    ) -> Outcome:
        duration_ms = int((time.perf_counter() - started) * 1000)
        error = _error_text(exc)
        if permanent or op.is_permanent(exc) or task.attempt >= task.max_attempts:
            ctx.log.warning("task_failed", error=error, duration_ms=duration_ms)
            return Outcome(task, FAILED, op.name, error=error, duration_ms=duration_ms)
        delay = op.retry.delay_s(task.attempt)
        ctx.log.info("task_retry_scheduled", error=error, retry_in_s=round(delay, 3))
        self._wake_at = min(self._wake_at, time.monotonic() + delay)
        return Outcome(
            task,
            PENDING,
            op.name,
            error=error,
            duration_ms=duration_ms,
            run_at=datetime.now(UTC) + timedelta(seconds=delay),
        )

    def _read_connection(self) -> Any:
        assert self.pool is not None
        return self.pool.connection()

    # -- recording outcomes ------------------------------------------------------------

    def _record(self, outcomes: list[Outcome]) -> None:
        give_up = self._forever if not self.stopping else self._until_stop_deadline
        try:
            recorded = self._with_retry(
                "finish", lambda: self._finish_batch(outcomes), give_up_at=give_up
            )
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            self.log.warning(
                "batch_write_failed",
                error=_error_text(exc),
                tasks=len(outcomes),
                action="recording each task on its own",
            )
            recorded = set()
            actual: list[Outcome] = []
            for outcome in outcomes:
                ids, written = self._with_retry(
                    "finish_one", functools.partial(self._finish_alone, outcome), give_up_at=give_up
                )
                recorded |= ids
                actual.append(written)
            outcomes = actual  # count what was written, not what the handler returned
        self._count(outcomes, recorded)
        self.metrics.finished(outcomes, recorded, self._durations)

    def _finish_batch(self, outcomes: list[Outcome]) -> set[UUID]:
        assert self.pool is not None
        with self.pool.connection() as conn, conn.transaction():
            recorded = queue.finish(conn, self.worker_id, outcomes)
            if len(recorded) == len(outcomes):
                queue.record_robot_events(conn, outcomes)
            else:
                queue.record_robot_events(conn, [o for o in outcomes if o.task.id in recorded])
        return recorded

    def _finish_alone(self, outcome: Outcome) -> tuple[set[UUID], Outcome]:
        """Record one outcome; if its audit or cell write fails, fail the task instead.

        Returns the ids recorded and the outcome that was actually written.
        """
        try:
            return self._finish_batch([outcome]), outcome
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            reason = f"could not record the result: {_error_text(exc)}"
            self.log.warning(
                "task_write_failed",
                task_id=str(outcome.task.id),
                task_type=outcome.task.task_type,
                attempt=outcome.task.attempt,
                error=reason,
            )
            failed = Outcome(outcome.task, FAILED, outcome.operator_type, error=reason)
            assert self.pool is not None
            with self.pool.connection() as conn, conn.transaction():
                return queue.finish(conn, self.worker_id, [failed]), failed

    def _count(self, outcomes: list[Outcome], recorded: set[UUID]) -> None:
        for outcome in outcomes:
            if outcome.task.id not in recorded:
                self.counts["lost"] += 1
                self.log.warning(
                    "task_claim_lost",
                    task_id=str(outcome.task.id),
                    task_type=outcome.task.task_type,
                    attempt=outcome.task.attempt,
                    reason="the task was handed to another worker; this result is discarded",
                )
            elif outcome.handed_back:
                self.counts["handed_back"] += 1
            elif outcome.status == COMPLETED:
                self.counts["completed"] += 1
            elif outcome.status == FAILED:
                self.counts["failed"] += 1
            else:
                self.counts["retried"] += 1

    # -- shutdown ---------------------------------------------------------------------

    def _close(self) -> None:
        if self.pool is not None:
            try:
                with self.pool.connection(timeout=2.0) as conn:
                    conn.execute(QUERIES["deregister_worker"], {"id": self.worker_id})
            except Exception as exc:
                self.log.warning(
                    "deregister_failed", error=scrub(_error_text(exc), self.config.database_url)
                )
            self.pool.close()
        if self.listener is not None:
            self.listener.close()
        if self._claimer is not None:
            self._claimer.close()
        with contextlib.suppress(ValueError):  # not the main thread: it was never installed
            previous = signal.set_wakeup_fd(-1)
            if previous not in (-1, self._wake_w):
                signal.set_wakeup_fd(previous)  # someone else's: leave it in place
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.log.info("worker_stopped", **self.counts)
