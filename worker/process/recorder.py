"""The recorder: writes finished attempts to the database in batches (River's completer).

Design note
-----------
* Handlers finish one by one, in any order. Their outcomes are buffered and written
  by one background writer: as soon as ``flush_count`` are waiting, or ``flush_after_s``
  after the first one arrived, whichever comes first. While a batch is being written
  the next one gathers, so recording keeps pace with any number of tasks in flight.
  When more than a batch is waiting, higher-priority outcomes are written first: a
  person's edit does not wait behind thousands of bulk results.
* One transaction per batch holds every fenced finish, every audit row and every cell
  write of the batch: a cell is never written without its audit row and its task's
  completion, one audit row per attempt.
* A batch the database refuses for a reason other than a lost connection (a cell
  deleted under its task, say) is written again one outcome per transaction; an
  outcome that still cannot be written fails its task with the reason, alone. So one
  bad row never fails, loses or retries the others.
* ``task_completed`` is logged here, once the completion is committed, not when the
  handler returns: a process killed in between has logged nothing for an attempt that
  runs again, and a result the fence discards is logged as lost, never as completed.
* While the database is away the writer retries with backoff (outcomes stay in
  memory); the fence makes a repeated finish harmless. When the process stops, the
  runner calls :meth:`close`, which writes what is left until the given deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import psycopg

from websurf.worker.core import limits, queue
from websurf.worker.core.model import Outcome, OutcomeKind, Status
from websurf.worker.daemon import metrics as metrics_module
from websurf.worker.logs import write_info_lines
from websurf.worker.process.database import DatabaseRetry, DedicatedConnection, forever
from websurf.worker.process.executor import error_text

FLUSH_COUNT = 500  # outcomes per transaction, at most
FLUSH_AFTER_S = 0.003  # an outcome waits at most this long for others to share its commit
COUNTED = (
    OutcomeKind.COMPLETED,
    OutcomeKind.RETRIED,
    OutcomeKind.FAILED,
    OutcomeKind.HANDED_BACK,
    OutcomeKind.CANCELLED,
)
LOST = "lost"  # the count of outcomes not recorded: discarded by the fence, or never written


def _urgency(outcome: Outcome) -> int:
    return -outcome.task.priority


class Recorder:
    """Buffers outcomes and records them in batched, fenced transactions."""

    def __init__(
        self,
        connection: DedicatedConnection,
        *,
        worker_id: str,
        log: Any,
        retry: DatabaseRetry,
        metrics: metrics_module.WorkerMetrics | metrics_module.NullMetrics,
        flush_count: int = FLUSH_COUNT,
        flush_after_s: float = FLUSH_AFTER_S,
    ) -> None:
        self.connection = connection
        self.worker_id = worker_id
        self.log = log
        self.retry = retry
        self.metrics = metrics
        self.flush_count = flush_count
        self.flush_after_s = flush_after_s
        self.counts = {kind.value: 0 for kind in COUNTED} | {LOST: 0}
        self._buffer: list[Outcome] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._give_up_at: Callable[[], float] = forever
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._writer: asyncio.Task[None] | None = None
        self._writing = 0
        self.on_recorded: Callable[[list[Outcome]], None] = lambda batch: None
        level = getattr(log, "get_effective_level", lambda: logging.INFO)()
        self._log_completions = level <= logging.INFO  # else skip the line per task

    @property
    def backlog(self) -> int:
        """Outcomes not yet recorded: their tasks still hold a claim, and a slot."""
        return len(self._buffer) + self._writing

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="recorder")

    def add(self, outcome: Outcome) -> None:
        self._buffer.append(outcome)
        self._idle.clear()
        self._arrived.set()
        if len(self._buffer) >= self.flush_count:
            self._full.set()

    async def close(self, give_up_at: Callable[[], float]) -> None:
        """Write everything buffered (retrying until ``give_up_at``), then stop the writer."""
        self._give_up_at = give_up_at
        self._full.set()
        if self._buffer:
            await self._idle.wait()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        self._thread.shutdown(wait=True)
        self.connection.close()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if len(self._buffer) < self.flush_count:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.flush_after_s)
            if len(self._buffer) > self.flush_count:
                # More than one batch waits: the most urgent go first (a person's edit
                # ahead of bulk work), first come first within a priority (a stable sort).
                self._buffer.sort(key=_urgency)
            batch = self._buffer[: self.flush_count]
            del self._buffer[: self.flush_count]
            self._writing = len(batch)
            if len(self._buffer) < self.flush_count:
                self._full.clear()
            if not self._buffer:
                self._arrived.clear()
            try:
                # Shielded: stopping the writer must never abandon a batch half-written.
                await asyncio.shield(loop.run_in_executor(self._thread, self._record, batch))
            except psycopg.OperationalError as exc:
                self.counts[LOST] += len(batch)
                self.log.error(
                    "outcomes_not_recorded",
                    tasks=len(batch),
                    error=error_text(exc),
                    reason="the database stayed away past the shutdown deadline; the reaper"
                    " recovers these tasks",
                )
            except Exception as exc:  # never let the writer die: later batches still need it
                self.log.exception("outcomes_not_recorded", tasks=len(batch), error=error_text(exc))
            self._writing = 0
            if not self._buffer:
                self._idle.set()
            self.on_recorded(batch)

    # -- on the recorder's thread -----------------------------------------------------------

    def _record(self, outcomes: list[Outcome]) -> None:
        # One outcome per task: the same claim twice in a batch (a claim the database
        # forgot in a crash, made again by this process) would pass the fence twice.
        if len({o.task.id.int for o in outcomes}) < len(outcomes):  # ints hash in C
            outcomes = list({o.task.id.int: o for o in outcomes}.values())
        try:
            recorded = self.retry(
                "finish", lambda: self._write(outcomes), give_up_at=lambda: self._give_up_at()
            )
        except psycopg.OperationalError:
            raise
        except Exception as exc:  # the database refused the batch: one by one
            self.log.warning(
                "batch_write_failed",
                error=error_text(exc),
                tasks=len(outcomes),
                action="recording each task on its own",
            )
            recorded = set()
            written: list[Outcome] = []
            for outcome in outcomes:
                ids, actual = self.retry(
                    "finish_one",
                    lambda o=outcome: self._write_alone(o),  # type: ignore[misc]
                    give_up_at=lambda: self._give_up_at(),
                )
                recorded |= ids
                written.append(actual)
            outcomes = written  # count what was written, not what the handler returned
        self._count(outcomes, recorded)
        try:
            self.metrics.finished(outcomes, recorded)
        except Exception as exc:  # the outcomes are written: a metrics fault must not undo that
            self.log.warning("metrics_failed", error=error_text(exc))

    def _write(self, outcomes: list[Outcome]) -> set[UUID]:
        conn = self.connection.get()
        if any(o.slow_down for o in outcomes):  # rare: a service asked to slow down
            with conn.transaction():
                recorded = self._write_in(conn, outcomes)
                limits.pause_for(conn, [o for o in outcomes if o.task.id in recorded])
            return recorded
        if not queue.audited_outcomes(outcomes):
            # Nothing but the tasks' own rows to write: one statement, which is its own
            # transaction. An explicit one would stay open between round trips while this
            # thread waits for the interpreter lock, and every claim walks the dead index
            # entries an open transaction keeps from being cleaned away (four busy
            # processes on two cores: 2 us less PostgreSQL CPU per no-op task without it).
            return queue.finish(conn, self.worker_id, outcomes)
        with conn.transaction():
            return self._write_in(conn, outcomes)

    def _write_in(self, conn: psycopg.Connection[Any], outcomes: list[Outcome]) -> set[UUID]:
        """The fenced finish and the audit rows and cells of what it let through."""
        recorded = queue.finish(conn, self.worker_id, outcomes)
        if len(recorded) == len(outcomes):
            queue.record_robot_events(conn, outcomes)
        else:
            queue.record_robot_events(conn, [o for o in outcomes if o.task.id in recorded])
        return recorded

    def _write_alone(self, outcome: Outcome) -> tuple[set[UUID], Outcome]:
        """Record one outcome; if its audit or cell write fails, fail the task instead."""
        try:
            return self._write([outcome]), outcome
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            reason = f"could not record the result: {error_text(exc)}"
            self.log.warning(
                "task_write_failed",
                task_id=str(outcome.task.id),
                task_type=outcome.task.task_type,
                attempt=outcome.task.attempt,
                error=reason,
            )
            failed = Outcome(outcome.task, Status.FAILED, outcome.operator, error=reason)
            conn = self.connection.get()
            with conn.transaction():
                return queue.finish(conn, self.worker_id, [failed]), failed

    def _count(self, outcomes: list[Outcome], recorded: set[UUID]) -> None:
        counts = self.counts
        completed: list[dict[str, Any]] = []
        for outcome in outcomes:
            kind = outcome.kind(recorded)
            if kind is not OutcomeKind.DISCARDED:
                counts[kind] += 1
                if kind is OutcomeKind.COMPLETED and self._log_completions:
                    task = outcome.task
                    completed.append(
                        {
                            "worker_id": self.worker_id,
                            "task_id": str(task.id),
                            "task_type": task.task_type,
                            "attempt": task.attempt,
                            "duration_ms": outcome.duration_ms,
                            "event": "task_completed",
                        }
                    )
                continue
            counts[LOST] += 1
            self.log.warning(
                "task_claim_lost",
                task_id=str(outcome.task.id),
                task_type=outcome.task.task_type,
                attempt=outcome.task.attempt,
                reason="the task was handed to another worker; this result is discarded",
            )
        if completed and not write_info_lines(completed):
            for event in completed:
                name = event.pop("event")
                del event["worker_id"]  # bound to the logger already
                self.log.info(name, **event)
