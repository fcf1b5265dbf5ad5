"""One worker process: claim what it can run, run many tasks at once, record what happened.

Design note
-----------
* Slots. A process runs up to ``tasks_per_process`` tasks at once: ``async def``
  handlers on one event loop, plain functions in a pool of ``threads_per_process``
  threads. An operator may cap its own tasks in flight (``concurrency=``).
* Claims. The loop claims only as many tasks as it can start at once (River's
  producer fetches ``MaxWorkers - active``): one claim per pool of slots (async
  handlers share the free slots, plain ones the free threads, an operator with its own
  cap is a pool of its own; usually that is one claim), each ordered by priority, so a
  person's edit overtakes bulk work at the next claim; with slots freeing
  continuously that is within a few milliseconds. A claim that comes back full means
  there is more; otherwise the loop waits for a hint (a notification, a known due
  time, the poll interval) and for free slots. Refill claims are spaced by
  ``CLAIM_COOLDOWN_S`` so tasks finishing one by one are claimed for in batches.
  With every slot taken, a hint still leads to one claim of urgent tasks (above the
  default priority) into the slots' small reserve (``slots.py``): a person's edit
  never waits for bulk work to end.
* Running one handler under its deadline is the executor's job (``executor.py``);
  recording outcomes in batched, fenced transactions the recorder's
  (``recorder.py``); waking up the wakeup's (``wakeup.py``); heartbeat, reaper and
  pruning the maintenance thread's (``maintenance.py``).
* Database steps run on dedicated threads with plain psycopg connections, one per
  role (claims, records, LISTEN; ``connections.py`` opens them all), so the queue's
  queries have one implementation and the loop never blocks on the network. Claims
  commit without waiting for the WAL flush unless ``durable_claims`` (see
  :meth:`Runner.boot`).
* Stopping (SIGTERM, or :meth:`Runner.request_stop`): claim nothing more, let the
  running ones finish until the shutdown deadline; then cancel the async ones and
  abandon the threads, handing their tasks back without counting the attempt. A
  second request moves the deadline to now. Everything is recorded before the process
  exits: nothing stays ``processing``.
* Recycling: a plain handler that does not return after its timeout plus a grace
  period holds a thread forever. The process then stops as on SIGTERM and says so in
  ``recycle_reason``; the child exits with its recycle code and the supervisor starts
  a fresh process at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import structlog

from websurf.sql.database import (
    describe,
    scrub,
    with_settings,
)
from websurf.sql.migrate import pending_migrations
from websurf.worker.config import WorkerConfig
from websurf.worker.core import queue, workers
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.registry import Operator, Registry, Task, load_operators
from websurf.worker.daemon import metrics
from websurf.worker.process.connections import Connections
from websurf.worker.process.database import DatabaseRetry
from websurf.worker.process.executor import Executor, error_text
from websurf.worker.process.maintenance import Maintenance
from websurf.worker.process.recorder import Recorder
from websurf.worker.process.running import RunningNote
from websurf.worker.process.slots import Slots
from websurf.worker.process.wakeup import Wakeup

CLAIM_COOLDOWN_S = 0.002  # refill claims at most this often while few slots are free
RECORD_MARGIN_S = 2.0  # after the shutdown deadline, to record what was handed back
DEREGISTER_WAIT_S = 2.0  # for the roster row to go at exit, at most


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # Windows, or a build without it: asyncio's own loop
        return None
    return uvloop.new_event_loop


class BootError(RuntimeError):
    """The process cannot start serving (bad operator module, schema behind, no database)."""

    def __init__(self, message: str, *, database_unreachable: bool = False) -> None:
        super().__init__(message)
        self.database_unreachable = database_unreachable


class Runner:
    """One worker process's loop. ``boot()``, then ``serve()`` until stopped."""

    def __init__(
        self,
        config: WorkerConfig,
        worker_id: str,
        *,
        registry: Registry | None = None,
        note: RunningNote | None = None,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.note = note
        self.log = structlog.get_logger("websurf.worker").bind(worker_id=worker_id)
        self.registry = registry or load_operators(config.operator_modules)
        self.operators: dict[str, Operator] = dict(self.registry.operators)
        self.task_types = sorted(self.operators)
        self.metrics = metrics.for_worker(config.metrics_port)
        self.stop_event = threading.Event()  # set on the first stop request (any thread)
        self.retry = DatabaseRetry(
            config.database_url, self.log, max_wait_s=config.db_retry_max_wait_s,
            stop=self.stop_event,
        )  # fmt: skip
        self._claim_settings = {"synchronous_commit": "on" if config.durable_claims else "off"}
        self.connections = Connections(config, worker_id, self._claim_settings)
        self._listener: psycopg.Connection[Any] | None = None
        self._stop_requests = 0
        self._deadline = float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_changed: asyncio.Event | None = None
        # (id, attempt) of the claims started here whose outcome is not recorded yet; the
        # id as its int, which hashes in C (a UUID's __hash__ is Python code)
        self._held: set[tuple[int, int]] = set()
        # the runs still going, by the same key (a run removes itself as it ends, which
        # asyncio.current_task(), Python code in 3.11, would make dearer)
        self._running: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._want_claim = True
        self._log_claims = False  # set when serving starts, from the log level
        # Operators whose last claim came back short, with no announcement of new tasks
        # of theirs since: the claims leave them out until a hint or the poll interval.
        self._drained: set[str] = set()
        self.recycle_reason: str | None = None
        self.counts: dict[str, int] = {}

    # -- stopping (any thread, signal handlers included) ---------------------------------

    def request_stop(self) -> None:
        """First call: stop claiming and finish within the shutdown timeout. Second: hurry."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._note_stop()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._note_stop)

    def _note_stop(self) -> None:
        self._stop_requests += 1
        now = time.monotonic()
        if self._stop_requests == 1:
            self._deadline = now + self.config.shutdown_timeout_s
        else:
            self._deadline = now
        self.stop_event.set()
        if self._stop_changed is not None:
            self._stop_changed.set()
            self.wakeup.event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requests > 0

    def _boot_signal(self, signum: int, frame: Any) -> None:
        self._note_stop()

    # -- boot ------------------------------------------------------------------------------

    def boot(self, *, install_signal_handlers: bool = False) -> None:
        """Connect, check the schema, register, LISTEN; raise BootError when that cannot work.

        Claims commit without waiting for the WAL flush (synchronous_commit = off): that
        takes about a millisecond off every pickup. A server crash can forget the claims
        of its last moments: those tasks are pending again and run again under the same
        attempt number (their results are fenced out; each result, audit row and cell
        write is still recorded once, in a normal flushed transaction whose flush also
        makes the claim before it durable). ``durable_claims`` trades the millisecond
        for strict attempt counting.
        """
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, self._boot_signal)
        try:
            self._boot()
        except BaseException:
            self._close_connections()
            raise

    def _boot(self) -> None:
        if not self.task_types:
            raise BootError("no operators registered: nothing to run")
        url = self.config.database_url
        give_up = time.monotonic() + self.config.boot_db_wait_s

        # The claim connection (which the loop keeps) checks the schema and registers:
        # one connection less to open before the first claim.
        def first_contact() -> list[str]:
            return [m.name for m in pending_migrations(self.connections.claimer.get())]

        try:
            pending = self.retry("boot", first_contact, give_up_at=lambda: give_up, until_stop=True)
        except psycopg.OperationalError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BootError(
                f"cannot reach PostgreSQL at {describe(url)}: {scrub(first_line, url)}",
                database_unreachable=True,
            ) from None
        if pending:
            raise BootError(
                f"the database schema is behind this version of websurf ({len(pending)} pending"
                f" migration(s), first {pending[0]}): run `websurf migrate` first"
            )
        self.connections.pool.open(wait=False)  # in the background, for chores and reads
        self.retry(
            "register",
            lambda: self._register(self.connections.claimer.get()),
            give_up_at=lambda: give_up,
            until_stop=True,
        )
        self._listener = self.retry(
            "listen", self._listen, give_up_at=lambda: give_up, until_stop=True
        )
        self.metrics.database_ok()
        self.log.info(
            "worker_ready",
            task_types=self.task_types,
            pid=os.getpid(),
            tasks_per_process=self.config.tasks_per_process,
            threads_per_process=self.config.threads_per_process,
            connections=paths.routes() if (paths := self.connections.paths) else None,
        )

    def _register(self, conn: psycopg.Connection[Any]) -> None:
        workers.register(
            conn,
            self.worker_id,
            hostname=self.config.hostname,
            pid=os.getpid(),
            task_types=self.task_types,
            stale_after_s=self.config.stale_after_s,
        )

    def _listen(self) -> psycopg.Connection[Any]:
        conn = self.connections.connect_listener()
        conn.execute("LISTEN new_task")
        return conn

    # -- serving ---------------------------------------------------------------------------

    def serve(self, *, install_signal_handlers: bool = False) -> None:
        """Serve until stopped (``recycle_reason`` says whether it stopped by itself).

        On uvloop where it is installed (a dependency everywhere but Windows): its loop is
        written in C, and the loop's own work per task (scheduling each task's steps, the
        hand-offs from the database threads) is the bulk of what a short task costs here.
        """
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self._serve(install_signal_handlers))

    async def _serve(self, install_signal_handlers: bool) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stop_changed = asyncio.Event()
        if install_signal_handlers:
            loop.add_signal_handler(signal.SIGTERM, self._note_stop)
        if self.stopping:
            self._stop_changed.set()
        config = self.config
        self.executor = Executor(
            self.operators,
            worker_id=self.worker_id,
            log=self.log,
            threads=config.threads_per_process,
            note=self.note,
            read_connection=self.connections.pool.connection,
            async_read_connection=self.connections.async_read_connection,
            on_stuck=self._recycle,
            stuck_grace_s=config.stuck_grace_s,
        )
        self.slots = Slots(config.tasks_per_process, config.threads_per_process, self.operators)
        level = getattr(self.log, "get_effective_level", lambda: logging.INFO)()
        self._log_claims = level <= logging.DEBUG  # else no per-key tally per claim
        self.recorder = Recorder(
            self.connections.recording(),
            worker_id=self.worker_id,
            log=self.log,
            retry=self.retry,
            metrics=self.metrics,
        )
        self.counts = self.recorder.counts
        self.recorder.on_recorded = self._recorded
        self.recorder.start()
        self.wakeup = Wakeup(
            self.connections.connect_listener,
            log=self.log,
            retry=self.retry,
            poll_interval_s=config.poll_interval_s,
        )
        if self._listener is not None:
            self.wakeup._attach(self._listener)
            self._listener = None
        maintenance = Maintenance(
            self.connections.pool,
            config,
            worker_id=self.worker_id,
            timeouts_s={n: op.timeout_s for n, op in self.operators.items() if op.timeout_s},
            register=self._register,
            registry=self.registry,
            metrics=self.metrics,
            log=self.log,
        )
        maintenance.start()
        self._claim_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="claimer")
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            await self.wakeup.close()
            await asyncio.to_thread(maintenance.stop)
            await self._run_stop_hooks()
            self.executor.close()
            self._claim_thread.shutdown(wait=True)
            await asyncio.to_thread(self._deregister)
            await self.connections.close_async()
            self._close_connections()
            self.log.info("worker_stopped", **self.counts)

    async def _run_stop_hooks(self) -> None:
        for hook in self.registry.stop_hooks:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                self.log.warning("stop_hook_failed", hook=repr(hook), error=error_text(exc))

    def _recycle(self, reason: str) -> None:
        if self.recycle_reason is None:
            self.recycle_reason = reason
            self.log.warning("worker_recycling", reason=reason)
            self._note_stop()

    # -- the claim loop ----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        wake = self.wakeup
        poll_s = self.config.poll_interval_s
        seen = wake.hints
        last_claim = float("-inf")
        want = True
        urgent_seen = seen
        drained = self._drained
        undrained_at = float("-inf")  # drained operators are claimed for again each poll
        while not self.stopping:
            now = time.monotonic()
            if wake.hints != seen or now - last_claim >= poll_s:
                want, seen = True, wake.hints
            hinted = wake.take_hinted()
            if hinted is None or now - undrained_at >= poll_s:
                drained.clear()
                undrained_at = now
            else:
                drained.difference_update(hinted)
            timeout = poll_s  # with no room: until a slot frees (the event) or a poll
            if want:
                claims, starved = self.slots.claims(
                    self.executor.stuck, self.config.batch_max, drained=drained
                )
                if not claims and not starved:  # every operator drained: nothing to claim
                    want = False
                    timeout = undrained_at + poll_s - now
                elif claims:
                    cooldown = last_claim + CLAIM_COOLDOWN_S - now
                    if cooldown <= 0 or self.slots.free() * 2 >= self.slots.capacity:
                        seen = wake.hints
                        try:
                            # A pool without room keeps the loop wanting: its tasks are
                            # claimed for as soon as a slot of its own frees.
                            want = await self._claim_all(claims) or starved
                        except psycopg.OperationalError:
                            break  # stopping while the database is away
                        last_claim = time.monotonic()
                        continue
                    timeout = cooldown
                elif wake.hints != urgent_seen and self.slots.urgent_free() > 0:
                    # Every slot is taken and something new is due: an urgent task (a
                    # person's edit) need not wait for a bulk task to end.
                    urgent_seen = wake.hints
                    try:
                        await self._claim_urgent()
                    except psycopg.OperationalError:
                        break
                    continue
            else:
                timeout = last_claim + poll_s - now
            self._want_claim = want
            wake.check()
            await wake.wait(timeout)

    async def _claim_all(self, claims: list[tuple[list[str], int]]) -> bool:
        """Make the claims and start their tasks; True when one came back full (more wait)."""
        full = False
        stuck = self.executor.stuck
        for types, wanted in claims:
            limit = min(wanted, self.slots.free())
            if limit <= 0:
                return True
            tasks = await self._claim(types, limit)
            if len(tasks) < limit:
                self._drained.update(types)  # until a hint or a poll says otherwise
            handed_back = self._start_claimed(tasks, stuck)
            full = full or handed_back or len(tasks) >= limit
        return full

    async def _claim_urgent(self) -> None:
        """Claim urgent tasks (above the default priority) into the reserve slots."""
        limit = min(self.slots.urgent_free(), self.config.batch_max)
        tasks = await self._claim(self.task_types, limit, min_priority=queue.URGENT_PRIORITY)
        self._start_claimed(tasks, self.executor.stuck, urgent=True)

    def _start_claimed(self, tasks: list[Task], stuck: int, *, urgent: bool = False) -> bool:
        """Start the claimed tasks; True when one had to be handed back (no room)."""
        handed_back = False
        for task in tasks:
            if (task.id.int, task.attempt) in self._held:
                # Already running here: the database forgot our claim (a crash with
                # asynchronous claim commits) and we made it again. The first run's
                # outcome finishes it under the same claim; never run it twice.
                continue
            op = self.operators.get(task.task_type)
            if op is None or task.malformed is not None:
                self._start(task, None)  # fails at once with the reason
            elif self.slots.can_start(op, stuck, urgent=urgent):
                self.slots.started(op)
                self._start(task, op)
            else:  # its pool filled up within this claim: back it goes, uncounted
                self.recorder.add(Outcome(task, Status.PENDING, op.name, handed_back=True))
                handed_back = True
        return handed_back

    async def _claim(
        self, types: list[str], limit: int, *, min_priority: int = queue.LOWEST_PRIORITY
    ) -> list[Task]:
        def claim() -> list[Task]:
            conn = self.connections.claimer.get()
            with with_settings(conn, self._claim_settings, pooled=self.connections.pooled):
                rows = queue.claim_rows(
                    conn, self.worker_id, types, limit, min_priority=min_priority
                )
            self.metrics.claimed(rows)
            if self._log_claims and rows:
                keys = Counter(
                    "(no key)" if row.fairness_key is None else row.fairness_key for row in rows
                )
                self.log.debug("tasks_claimed", tasks=len(rows), keys=dict(keys))
            return [row.task for row in rows]

        if self.slots.running == 0 and self.slots.unrecorded == 0:
            # Idle: nothing else on the loop can be kept waiting, so claim right here and
            # save the thread hand-off (a tenth of a millisecond off every idle pickup).
            # Only one try: waiting out the database happens on the claim thread, where
            # it cannot block the loop (and the stop signal it serves).
            with contextlib.suppress(psycopg.OperationalError):
                return claim()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._claim_thread, lambda: self.retry("claim", claim, until_stop=True)
        )

    def _recorded(self, batch: list[Outcome]) -> None:
        self._held.difference_update((o.task.id.int, o.task.attempt) for o in batch)
        self.slots.unrecorded = self.recorder.backlog
        if self._want_claim:
            self.wakeup.event.set()

    def _start(self, task: Task, op: Operator | None) -> None:
        key = (task.id.int, task.attempt)
        self._held.add(key)
        self._running[key] = asyncio.get_running_loop().create_task(self._run(task, op, key))

    async def _run(self, task: Task, op: Operator | None, key: tuple[int, int]) -> None:
        try:
            outcome = await self.executor.run(task)
        finally:
            if op is not None:
                self.slots.finished(op)
            # here rather than in a done callback: that would cost a loop pass per task
            self._running.pop(key, None)
        self.recorder.add(outcome)
        self.slots.unrecorded = self.recorder.backlog
        if outcome.run_at is not None:
            self.wakeup.due_in(outcome.run_at.timestamp() - time.time())
        if self._want_claim:
            self.wakeup.event.set()

    # -- stopping ------------------------------------------------------------------------

    async def _drain(self) -> None:
        assert self._stop_changed is not None
        while self._running and time.monotonic() < self._deadline:
            self._stop_changed.clear()
            changed = asyncio.ensure_future(self._stop_changed.wait())
            await asyncio.wait(
                [*self._running.values(), changed],
                timeout=max(0.0, self._deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            changed.cancel()
            # wake for each finished task is fine: the loop is short and rare
        if self._running:
            self.log.warning("tasks_interrupted", tasks=len(self._running), reason="shutdown")
            self.executor.interrupting = True
            runs = list(self._running.values())
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
            self._running.clear()  # one cancelled before its first step never ran its finally
        give_up = max(self._deadline, time.monotonic()) + RECORD_MARGIN_S
        await self.recorder.close(lambda: give_up)

    def _deregister(self) -> None:
        # Retried: after the server dropped its connections the pool still holds them, and
        # each checkout that finds one dead discards it (its roster row would otherwise
        # stay until it went stale).
        def deregister() -> None:
            with self.connections.pool.connection(timeout=DEREGISTER_WAIT_S) as conn:
                workers.deregister(conn, self.worker_id)

        give_up = time.monotonic() + DEREGISTER_WAIT_S
        try:
            self.retry("deregister", deregister, give_up_at=lambda: give_up)
        except Exception as exc:
            self.log.warning(
                "deregister_failed", error=scrub(error_text(exc), self.config.database_url)
            )

    def _close_connections(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.connections.close()
