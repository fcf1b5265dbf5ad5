"""Running one handler under its deadline, and turning what happened into an Outcome.

Design note
-----------
* ``async def`` handlers run on the process's event loop under ``asyncio.timeout``:
  past the operator's timeout the handler is cancelled and its attempt fails as a
  timeout. Plain functions run in a bounded thread pool, so a blocking call stalls
  neither the loop, the heartbeat nor the other tasks.
* A thread cannot be killed. A plain handler that overruns its timeout has its attempt
  failed at once (the task is retried or failed like any other error, and its late
  result is ignored); if the thread has still not returned ``stuck_grace_s`` later, the
  executor asks for the process to be recycled (``on_stuck``): the runner drains the
  other tasks and exits, and the supervisor starts a fresh process.
* Stopping: :meth:`interrupt` cancels every running async handler and abandons every
  thread; each such attempt comes back *handed back* (pending again, not counted).
* Cancelling one task (a person's cancel, a newer edit; see ``runner.py``): the runner
  calls :meth:`request_cancel`, which sets the context's flag a plain function reads,
  and cancels the run of an async handler. Whatever the handler then does (raise,
  return, catch the CancelledError) the attempt comes back *cancelled*, never written
  to its cell; the database records it so anyway (0027), this only says it sooner.
* Crash attribution: while handler code runs, the running-task note (see
  ``running.py``) names its task: the loop line around each step of an async handler,
  the thread's own line around a plain call.
* Nothing a row can contain escapes as an exception: a task the worker cannot
  understand, a handler that raises anything, an output that is not JSON or that
  PostgreSQL cannot store (a NUL character) all end as a failed attempt with a clear
  error message, permanently where retrying cannot help.
"""

from __future__ import annotations

import asyncio
import collections.abc
import itertools
import json
import threading
import time
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from websurf.worker.core.model import Outcome, Status, retry_or_fail
from websurf.worker.core.registry import Context, Operator, Result, SlowDown, Snooze, Task
from websurf.worker.process.running import RunningNote, line_for

ERROR_MESSAGE_MAX = 2000
NO_TIMEOUT_S = 1e9


class TaskTimeout(Exception):
    """The handler ran past its operator's timeout."""


def error_text(exc: BaseException) -> str:
    """``Type: message``, bounded, and storable as PostgreSQL text (no NUL)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.replace("\x00", "\\0")[:ERROR_MESSAGE_MAX]


def _elapsed_ms(started: float) -> int:
    """Milliseconds since ``started`` (a ``time.perf_counter()`` value): an attempt's duration."""
    return int((time.perf_counter() - started) * 1000)


class _TaskLog:
    """The task's logger, bound on first use (most handlers never log)."""

    __slots__ = ("_base", "_bound", "_task")

    def __init__(self, base: Any, task: Task) -> None:
        self._base, self._task, self._bound = base, task, None

    def __getattr__(self, name: str) -> Any:
        if self._bound is None:
            task = self._task
            self._bound = self._base.bind(
                task_id=str(task.id), task_type=task.task_type, attempt=task.attempt
            )
        return getattr(self._bound, name)


class _Noted(collections.abc.Coroutine[Any, Any, Any]):
    """Wraps a handler's coroutine so each step is noted on the loop's line."""

    __slots__ = ("_coro", "_line", "_view")

    def __init__(self, coro: Any, note: RunningNote, line: bytes) -> None:
        self._coro, self._view, self._line = coro, note.loop_line, line

    def send(self, value: Any) -> Any:
        self._view[:] = self._line
        try:
            return self._coro.send(value)
        finally:
            self._view[0] = 0  # cleared

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._view[:] = self._line
        try:
            if val is None and tb is None:
                return self._coro.throw(typ)
            return self._coro.throw(typ, val, tb)  # pragma: no cover (old-style throw)
        finally:
            self._view[0] = 0

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # type: ignore[return-value]  # a coroutine is its own iterator

    def __next__(self) -> Any:
        return self.send(None)


class Executor:
    """Runs handlers: async ones on the loop, plain ones in a bounded thread pool."""

    def __init__(
        self,
        operators: Mapping[str, Operator],
        *,
        worker_id: str,
        log: Any,
        threads: int,
        note: RunningNote | None = None,
        read_connection: Callable[[], Any] | None = None,
        async_read_connection: Callable[[], Any] | None = None,
        on_stuck: Callable[[str], None] = lambda reason: None,
        stuck_grace_s: float,
    ) -> None:
        self.operators = operators
        self.worker_id = worker_id
        self.log = log
        self.threads = threads
        self.note = note
        self._read_connection = read_connection
        self._async_read_connection = async_read_connection
        self._on_stuck = on_stuck
        self._stuck_grace_s = stuck_grace_s
        self._line_numbers = itertools.count(1)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="handler", initializer=self._name_thread
        )
        self.threads_busy = 0  # plain handlers whose thread has not returned (stuck ones too)
        self.stuck = 0
        self.interrupting = False
        # The handlers running now, by task id (as an int: hashed in C): their context
        # and whether they are async, so that a cancel can reach them.
        self.running: dict[int, tuple[Context, bool]] = {}
        # The loop the handlers run on (set by the first run; the executor lives on one).
        # Asked once: on Python 3.11 every get_running_loop() is a getpid() system call.
        self._loop_cached: asyncio.AbstractEventLoop | None = None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_cached
        if loop is None:
            loop = self._loop_cached = asyncio.get_running_loop()
        return loop

    def _name_thread(self) -> None:
        self._local.line = next(self._line_numbers)

    def request_cancel(self, task_id: int) -> bool | None:
        """Flag the running handler of ``task_id`` as cancelled.

        Returns whether it is an async handler (whose run the caller then cancels), or
        None when no handler of that task runs here or it was flagged already (a
        repeated request, or the heartbeat's check finding a plain one still at work).
        """
        running = self.running.get(task_id)
        if running is None or running[0]._cancel_requested:
            return None
        ctx, is_async = running
        ctx._cancel_requested = True
        return is_async

    # -- one task ----------------------------------------------------------------------

    async def run(self, task: Task, run: asyncio.Task[Any] | None = None) -> Outcome:
        """Run ``task``'s handler; always returns how the attempt ended.

        ``run`` is the asyncio task this coroutine runs in (the runner's): an async
        handler's timeout cancels it. Without it, the current task is looked up.
        """
        op = self.operators.get(task.task_type)
        started = time.perf_counter()
        problem = task.malformed
        if op is None or problem is not None:
            reason = problem or f"no operator handles task type {task.task_type!r} here"
            return self._failed(task, op, ValueError(reason), started, permanent=True)
        timeout_s = op.timeout_s
        ctx = Context(
            log=_TaskLog(self.log, task),
            deadline=time.monotonic() + (timeout_s if timeout_s is not None else NO_TIMEOUT_S),
            worker_id=self.worker_id,
            _connection=self._read_connection,
            _async_connection=self._async_read_connection,
        )
        running = self.running
        key = task.id.int
        running[key] = (ctx, op.is_async)
        expiry: asyncio.TimerHandle | None = None
        try:
            if op.is_async:
                if timeout_s is not None:
                    if run is None:
                        run = asyncio.current_task()
                    assert run is not None  # handlers run inside a task
                    expiry = self._loop.call_later(timeout_s, _expire, run, ctx)
                value = await self._run_async(task, op, ctx)
            else:
                value = await self._run_in_thread(task, op, ctx)
        except asyncio.CancelledError:
            if expiry is not None:
                expiry.cancel()
            if not (self.interrupting or ctx._cancel_requested or ctx._timed_out):
                raise
            current = run if run is not None else asyncio.current_task()
            if current is not None:
                current.uncancel()
            if ctx._timed_out and not (self.interrupting or ctx._cancel_requested):
                return self._failed(task, op, _timeout_error(op), started, ctx=ctx)
            if ctx._cancel_requested:
                return self._cancelled(task, op, ctx, started)
            duration_ms = _elapsed_ms(started)
            ctx.log.warning("task_interrupted", reason="shutdown", duration_ms=duration_ms)
            return Outcome(task, Status.PENDING, op.name, handed_back=True, duration_ms=duration_ms)
        except Snooze as snooze:
            if ctx._cancel_requested:
                return self._cancelled(task, op, ctx, started)
            slow_down = isinstance(snooze, SlowDown)
            event = "task_slowed_down" if slow_down else "task_snoozed"
            ctx.log.info(event, reason=str(snooze), delay_s=snooze.delay_s)
            decision = retry_or_fail(
                task.attempt, task.max_attempts, now=datetime.now(UTC), snooze_s=snooze.delay_s
            )
            return Outcome(
                task,
                decision.status,
                op.name,
                handed_back=True,
                run_at=decision.run_at,
                error=str(snooze) if slow_down else None,
                slow_down=slow_down,
            )
        except Exception as exc:
            if expiry is not None:
                expiry.cancel()
            if ctx._cancel_requested:
                return self._cancelled(task, op, ctx, started)
            if ctx._timed_out:  # it raised something else on its way out
                run.uncancel()  # type: ignore[union-attr]  # set with the timer
                return self._failed(task, op, _timeout_error(op), started, ctx=ctx)
            return self._failed(task, op, exc, started, ctx=ctx)
        finally:
            running.pop(key, None)
        if expiry is not None:
            expiry.cancel()
        if ctx._cancel_requested:  # it finished anyway: its result is not wanted
            return self._cancelled(task, op, ctx, started)
        if ctx._timed_out:  # it swallowed the cancellation: too late all the same
            run.uncancel()  # type: ignore[union-attr]
            return self._failed(task, op, _timeout_error(op), started, ctx=ctx)
        return self._completed(task, op, ctx, value, started)

    async def _run_async(self, task: Task, op: Operator, ctx: Context) -> Any:
        coro = op.handler(task, ctx)
        if self.note is not None:
            coro = _Noted(coro, self.note, line_for(task.id, task.attempt))
        return await coro

    async def _run_in_thread(self, task: Task, op: Operator, ctx: Context) -> Any:
        note = self.note
        line = line_for(task.id, task.attempt) if note is not None else b""

        def call() -> Any:
            if note is None:
                return op.handler(task, ctx)
            number: int = self._local.line
            note.mark(number, line)
            try:
                return op.handler(task, ctx)
            finally:
                note.clear(number)

        loop = self._loop
        self.threads_busy += 1
        future = loop.run_in_executor(self._pool, call)
        future.add_done_callback(self._thread_returned)
        # The handler's own future is shielded: a timeout or a stop abandons the wait,
        # never the thread (it cannot be killed), whose late result is then ignored.
        try:
            if op.timeout_s is None:
                return await asyncio.shield(future)
            return await asyncio.wait_for(asyncio.shield(future), op.timeout_s)
        except TimeoutError:
            if future.done():
                raise
            self._watch_stuck(task, op, future)
            raise _timeout_error(op) from None

    def _thread_returned(self, future: asyncio.Future[Any]) -> None:
        self.threads_busy -= 1
        if not future.cancelled():
            future.exception()  # retrieved: an abandoned handler's error is not news

    def _watch_stuck(self, task: Task, op: Operator, future: asyncio.Future[Any]) -> None:
        self.stuck += 1

        def returned(_: asyncio.Future[Any]) -> None:
            self.stuck -= 1
            timer.cancel()

        def still_running() -> None:
            if not future.done():
                self._on_stuck(
                    f"plain handler of task {task.id} ({op.name}) is still running"
                    f" {self._stuck_grace_s:g}s after its {op.timeout_s:g}s timeout"
                )

        timer = self._loop.call_later(self._stuck_grace_s, still_running)
        future.add_done_callback(returned)

    # -- outcomes -----------------------------------------------------------------------

    def _completed(
        self, task: Task, op: Operator, ctx: Context, value: Any, started: float
    ) -> Outcome:
        duration_ms = _elapsed_ms(started)
        if isinstance(value, Result):
            output, writes, content = value.output, value.writes_cell, value.cell_content
        else:
            output, writes, content = value, False, None
        problem = _unstorable(output, content if writes else None)
        if problem is not None:
            return self._failed(task, op, TypeError(problem), started, ctx=ctx, permanent=True)
        return Outcome(
            task,
            Status.COMPLETED,
            op.name,
            output=output,
            duration_ms=duration_ms,
            writes_cell=writes and task.cell_id is not None,
            cell_content=content,
        )

    def _cancelled(self, task: Task, op: Operator, ctx: Context, started: float) -> Outcome:
        """The attempt of a task cancelled while it ran: not spent, nothing written (0027)."""
        duration_ms = _elapsed_ms(started)
        ctx.log.info("task_cancelled", duration_ms=duration_ms)
        return Outcome(task, Status.CANCELLED, op.name, duration_ms=duration_ms)

    def _failed(
        self,
        task: Task,
        op: Operator | None,
        exc: BaseException,
        started: float,
        *,
        ctx: Context | None = None,
        permanent: bool = False,
    ) -> Outcome:
        duration_ms = _elapsed_ms(started)
        error = error_text(exc)
        log = ctx.log if ctx is not None else _TaskLog(self.log, task)
        decision = retry_or_fail(
            task.attempt,
            task.max_attempts,
            now=datetime.now(UTC),
            permanent=permanent or op is None or op.is_permanent(exc),
            backoff=op.retry if op is not None else None,
        )
        if decision.retries:
            log.info(
                "task_retry_scheduled", error=error, retry_in_s=round(decision.delay_s or 0.0, 3)
            )
        else:
            log.warning("task_failed", error=error, duration_ms=duration_ms)
        return Outcome(
            task,
            decision.status,
            op.name if op is not None else task.task_type,
            error=error,
            duration_ms=duration_ms,
            run_at=decision.run_at,
        )

    # -- stopping -------------------------------------------------------------------------

    def close(self) -> None:
        """Let idle threads go; a stuck one is abandoned (the process exits around it)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _expire(run: asyncio.Task[Any], ctx: Context) -> None:
    """An async handler's timeout: cancel its run, saying why (``Executor.run`` reads it)."""
    if not run.done():
        ctx._timed_out = True
        run.cancel()


def _timeout_error(op: Operator) -> TaskTimeout:
    return TaskTimeout(f"handler ran past its {op.timeout_s:g}s timeout")


def _unstorable(output: Any, content: Any) -> str | None:
    """Why PostgreSQL could not store this output or cell content, or None."""
    if content is not None:
        if not isinstance(content, str):
            return f"cell content must be text, not {type(content).__name__}"
        if "\x00" in content:
            return "cell content contains a NUL character, which PostgreSQL text cannot store"
    if output is None:
        return None
    try:
        encoded = json.dumps(output, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"handler output is not JSON-serialisable: {exc}"
    if "\\u0000" in encoded and _has_nul(output):  # the escape, or a NUL character?
        return "handler output contains a NUL character, which PostgreSQL jsonb cannot store"
    return None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False
