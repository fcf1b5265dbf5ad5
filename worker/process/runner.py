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
* Limits across the cluster (``core/limits.py``): an operator with a row in
  websurfing_task_limit is claimed on its own through ``claim_limited``, which takes
  only what its limits allow; the others keep the one ``claim_tasks`` statement. The
  loop learns which operators are limited at boot (after storing the code's limits)
  and again whenever a notification says a limit row changed.
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
* Cancelling (``websurf.cancel_task``, a newer edit of a robot cell's source; 0027): a
  ``task_cancel`` notification names the task, and the process holding it cancels
  the asyncio task of an async handler (CancelledError at its next ``await``) or sets
  the flag a plain function reads (``Context.cancel_requested``). A notification the
  listener missed is found by the maintenance thread's check of ``cancel_requested_at``
  at each heartbeat. The attempt ends cancelled, unspent, its cell unwritten.
* Recycling: a plain handler that does not return after its timeout plus a grace
  period holds a thread forever. The process then stops as on SIGTERM and says so in
  ``recycle_reason``; the child exits with its recycle code and the supervisor starts
  a fresh process at once. An ``async def`` handler that blocks the event loop for
  the grace period (``watchdog.py``) leaves nothing to drain with: the watchdog's
  thread hands this process's tasks back itself, charging only the blocking attempt,
  and calls ``on_loop_stalled`` (the child exits at once; in-process, a stop).
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
import uuid
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
from websurf.worker.core import limits, queue, workers
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.registry import Operator, Registry, Task, load_operators
from websurf.worker.daemon import metrics
from websurf.worker.maintenance import reaper
from websurf.worker.process.connections import Connections
from websurf.worker.process.database import DatabaseRetry
from websurf.worker.process.executor import Executor, error_text
from websurf.worker.process.maintenance import Maintenance
from websurf.worker.process.recorder import Recorder
from websurf.worker.process.running import RunningNote, parse_running_tasks
from websurf.worker.process.slots import Slots
from websurf.worker.process.wakeup import Wakeup, listen
from websurf.worker.process.watchdog import LoopWatchdog

CLAIM_COOLDOWN_S = 0.002  # refill claims at most this often while few slots are free
RECORD_MARGIN_S = 2.0  # after the shutdown deadline, to record what was handed back
DEREGISTER_WAIT_S = 2.0  # for the roster row to go at exit, at most
# The claim walks task_queue_fair_idx in claim order and stops at its batch, whatever the
# statistics say. Statistics trail a queue that fills fast: taken while another
# operator's backlog waited, they made this operator's 20,000 pending tasks look like a
# handful, and the planner read them all (a bitmap, or another index) and sorted them
# for every claim of 500, 20 ms each and growing with the backlog. These settings only
# price the other plans out (the claim's own sort of the rows it picked stays); the
# claim connection's other statements (its registry row, the limits) have no other
# plan to lose. Without JIT: the price of a disabled node is far above jit_above_cost,
# and compiling every claim took 0.26 s.
CLAIM_PLAN = {
    "enable_bitmapscan": "off",
    "enable_seqscan": "off",
    "enable_sort": "off",
    "jit": "off",
}
DURABLE = {"synchronous_commit": "on", **CLAIM_PLAN}  # the claims of limited operators
LIMIT_REOPEN_MARGIN_S = 0.005  # look this long after a full rate window opens again
THROTTLE_LOG_QUIET_S = 60.0  # a limit_throttled line, then none while it keeps holding back


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
        on_loop_stalled: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.note = note
        self.on_loop_stalled = on_loop_stalled or self.request_stop
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
        self._claim_settings = {
            "synchronous_commit": "on" if config.durable_claims else "off",
            **CLAIM_PLAN,
        }
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
        self.limited: frozenset[str] = frozenset()  # operators with a limit row
        # limited operators a window or pause held back, and when it last did
        self._throttled: dict[str, float] = {}
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
        self.retry(
            "limits",
            lambda: self._sync_limits(self.connections.claimer.get()),
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

    def wait_before_serving(self, seconds: float) -> None:
        """Wait ``seconds`` before serving (a stop request ends the wait), heartbeating.

        The supervisor starts a crashed process's replacement at once, to take the dead
        process's tasks back, and has it wait out the restart backoff here. It stays on
        the roster meanwhile: forgotten, its first claims would be taken by another
        process's reaper (and charged) before its own heartbeat put it back.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.stop_event.wait(min(left, self.config.heartbeat_interval_s)):
                return
            with contextlib.suppress(psycopg.OperationalError):  # the next beat retries
                self._register(self.connections.claimer.get())

    def _register(self, conn: psycopg.Connection[Any]) -> None:
        workers.register(
            conn,
            self.worker_id,
            hostname=self.config.hostname,
            pid=os.getpid(),
            task_types=self.task_types,
            stale_after_s=self.config.stale_after_s,
        )

    def _sync_limits(self, conn: psycopg.Connection[Any]) -> None:
        """Store the code's limits, then learn which operators have one (boot)."""
        limits.sync_code_limits(conn, {n: op.limits for n, op in self.operators.items()})
        self._read_limited(conn)

    def _read_limited(self, conn: psycopg.Connection[Any]) -> None:
        found = frozenset(limits.limited_operators(conn, self.task_types))
        if found != self.limited:
            self.log.info("limited_operators", operators=sorted(found))
        self.limited = found
        if hasattr(self, "slots"):
            self.slots.limited = found

    async def _refresh_limited(self) -> None:
        """Read which operators are limited again (a limit row changed somewhere)."""

        def read() -> None:
            conn = self.connections.claimer.get()
            with with_settings(conn, self._claim_settings, pooled=self.connections.pooled):
                self._read_limited(conn)

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._claim_thread, lambda: self.retry("limits", read, until_stop=True)
        )

    async def _arm_due_timer(self) -> None:
        """Time the first task queued for later from the queue itself: one inserted after
        this process registered but before its LISTEN began notified no one, and the first
        claim finds it not yet due (it waited for the next poll)."""

        def read() -> float | None:
            conn = self.connections.claimer.get()
            with with_settings(conn, self._claim_settings, pooled=self.connections.pooled):
                return queue.next_due_in(conn, self.task_types)

        loop = asyncio.get_running_loop()
        try:
            due_in = await loop.run_in_executor(
                self._claim_thread, lambda: self.retry("due", read, until_stop=True)
            )
        except psycopg.OperationalError:
            return  # stopping while the database is away: the claim loop ends too
        if due_in is not None:
            self.wakeup.due_in(due_in)

    def _listen(self) -> psycopg.Connection[Any]:
        conn = self.connections.connect_listener()
        listen(conn)
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
        self.slots.limited = self.limited
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
            on_cancel=self._cancel_notified,
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
            on_cancel_requested=self._cancel_found,
        )
        maintenance.start()
        self._claim_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="claimer")
        watchdog = LoopWatchdog(loop, config.stuck_grace_s, self._loop_stalled)
        watchdog.start()
        try:
            await self._arm_due_timer()
            await self._claim_loop()
            await self._drain()
        finally:
            watchdog.stop()
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

    def _loop_stalled(self, stalled_s: float) -> None:
        """On the watchdog's thread: the loop is blocked; hand this process's tasks back."""
        culprits = parse_running_tasks(bytes(self.note.loop_line)) if self.note else []
        how = f"its event loop was blocked for {stalled_s:.1f}s by an async handler"
        self.recycle_reason = how
        self.log.error(
            "event_loop_stalled",
            stalled_s=round(stalled_s, 1),
            task_ids=[task_id for task_id, _ in culprits],
            action="handing back this process's tasks, then stopping",
        )
        try:
            with self.connections.pool.connection(timeout=DEREGISTER_WAIT_S) as conn:
                reaper.recover_dead_worker(conn, self.worker_id, how=how, running=culprits)
        except Exception as exc:  # the replacement, or the reaper, recovers them then
            self.log.warning(
                "stall_recovery_failed", error=scrub(error_text(exc), self.config.database_url)
            )
        self.on_loop_stalled()

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
            if wake.limits_changed:
                wake.limits_changed = False
                try:
                    await self._refresh_limited()
                except psycopg.OperationalError:
                    break  # stopping while the database is away
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
                timeout = min(timeout, self.slots.paced_until - now)  # a paced pool's turn
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
                elif (
                    wake.hints != urgent_seen and self.slots.free() <= 0 < self.slots.urgent_free()
                ):
                    # Every slot is taken and something new is due: an urgent task (a
                    # person's edit) need not wait for a bulk task to end. (With free
                    # slots, the pools without room are capped ones: a claim would only
                    # hand their tasks back, and start some past their pacer.)
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
            tasks, spent = await self._claim(types, limit)
            self.slots.claimed(types, full=spent or len(tasks) >= limit)
            if len(tasks) < limit and not spent:
                self._drained.update(types)  # until a hint or a poll says otherwise
            handed_back = self._start_claimed(tasks, stuck)
            full = full or handed_back or spent or len(tasks) >= limit
        return full

    async def _claim_urgent(self) -> None:
        """Claim urgent tasks (above the default priority) into the reserve slots."""
        limit = min(self.slots.urgent_free(), self.config.batch_max)
        types = [t for t in self.task_types if t not in self.limited]
        if not types:
            return
        tasks, _ = await self._claim(types, limit, min_priority=queue.URGENT_PRIORITY)
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
    ) -> tuple[list[Task], bool]:
        """The tasks claimed, and whether the claim's byte budget cut it short."""
        limited = len(types) == 1 and types[0] in self.limited

        def claim() -> tuple[list[Task], bool]:
            conn = self.connections.claimer.get()
            if limited:
                # Durable: a start the server forgot in a crash would no longer count
                # against the window, though its handler ran. Set for this transaction
                # where the session's claims are not (a direct session keeps its own).
                local = self.connections.pooled or not self.config.durable_claims
                with with_settings(conn, DURABLE, pooled=local):
                    rows, reopens_in_s = limits.claim_rows(
                        conn, self.worker_id, types[0], limit, min_priority=min_priority
                    )
                self._note_throttle(types[0], rows, reopens_in_s)
                if reopens_in_s is not None and self._loop is not None:
                    # a full window or a pause: look again when it opens
                    self._loop.call_soon_threadsafe(
                        self.wakeup.due_in, reopens_in_s + LIMIT_REOPEN_MARGIN_S
                    )
            else:
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
            return [row.task for row in rows], queue.budget_spent(rows)

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

    def _note_throttle(self, operator: str, rows: list[Any], reopens_in_s: float | None) -> None:
        """Log when a limited operator's rate window or pause holds its tasks back (on the
        claim thread): once, then again only after a minute it was never held back."""
        now = time.monotonic()
        last = self._throttled.get(operator)
        if reopens_in_s is not None:
            if last is None or now - last > THROTTLE_LOG_QUIET_S:
                self.log.info(
                    "limit_throttled",
                    task_type=operator,
                    tasks_claimed=len(rows),
                    reopens_in_s=round(reopens_in_s, 3),
                    reason="its rate window is full or it is paused (websurf limits list"
                    " says which)",
                )
            self._throttled[operator] = now

    def _recorded(self, batch: list[Outcome]) -> None:
        self._held.difference_update((o.task.id.int, o.task.attempt) for o in batch)
        if self.limited:
            # A limited task's end gives its cap room: claim for it again (a hint, as if
            # a task of its type had been announced).
            for task_type in {o.task.task_type for o in batch} & self.limited:
                self.wakeup.poke(task_type)
        self.slots.unrecorded = self.recorder.backlog
        if self._want_claim:
            self.wakeup.event.set()

    def _start(self, task: Task, op: Operator | None) -> None:
        key = (task.id.int, task.attempt)
        self._held.add(key)
        self._running[key] = self._loop.create_task(self._run(task, op, key))  # type: ignore[union-attr]

    async def _run(self, task: Task, op: Operator | None, key: tuple[int, int]) -> None:
        try:
            outcome = await self.executor.run(task, self._running.get(key))
        finally:
            if op is not None:
                self.slots.finished(op)
            # here rather than in a done callback: that would cost a loop pass per task
            self._running.pop(key, None)
        if op is not None and op.concurrency is not None:
            self.slots.ran(op, outcome.duration_ms / 1000)  # its pacer learns the run time
        self.recorder.add(outcome)
        self.slots.unrecorded = self.recorder.backlog
        if outcome.run_at is not None:
            self.wakeup.due_in(outcome.run_at.timestamp() - time.time())
        if self._want_claim:
            self.wakeup.event.set()

    # -- cancelling one task -------------------------------------------------------------

    def _cancel_notified(self, payload: str) -> None:
        """A ``task_cancel`` notification (on the loop): stop that task if it runs here."""
        try:
            task_id = uuid.UUID(payload)
        except ValueError:
            self.log.warning("cancel_ignored", payload=payload[:100], reason="not a task id")
            return
        self._cancel_running({task_id.int})

    def _cancel_found(self, task_ids: list[uuid.UUID]) -> None:
        """Tasks of this process found with a cancel request (maintenance thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._cancel_running, {t.int for t in task_ids})

    def _cancel_running(self, wanted: set[int]) -> None:
        """Cancel the running handlers of these tasks (async: the run; plain: the flag)."""
        for (task_int, attempt), run in list(self._running.items()):
            if task_int not in wanted:
                continue
            is_async = self.executor.request_cancel(task_int)
            if is_async is None:
                # Returned already (its finish honours the cancel: 0027), or flagged before.
                continue
            if is_async:
                run.cancel()
            self.log.info("task_cancelling", task_id=str(uuid.UUID(int=task_int)), attempt=attempt)

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
