"""Waking the claim loop: a LISTEN connection, timers for known due times, and polls.

Design note
-----------
A notification is only a hint. The loop claims when it has free slots and has reason
to believe there is work: a ``new_task`` notification, a claim that came back full, a
due time it knows of (a retry it scheduled, or a ``scheduled_for`` a notification
announced), or the poll interval passing. The LISTEN connection is a plain psycopg
connection read from the event loop (``add_reader``) without blocking it. When it
breaks, it is reconnected on a thread with backoff, and the loop polls at once
afterwards, so a notification sent while it was away is not missed.

The same connection listens on ``task_cancel`` (0027): its payload is the id of a
running task someone cancelled, handed to ``on_cancel`` at once. A cancel sent while
the connection was away is not replayed here; the maintenance thread's periodic check
of ``cancel_requested_at`` finds it (``maintenance.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from websurf.worker.process.database import DatabaseRetry

CHANNEL = "new_task"
CANCEL_CHANNEL = "task_cancel"


def listen(conn: psycopg.Connection[Any]) -> None:
    """LISTEN on both channels a worker process follows (an autocommit connection)."""
    statements = (sql.SQL("LISTEN {}").format(sql.Identifier(c)) for c in (CHANNEL, CANCEL_CHANNEL))
    conn.execute(sql.SQL("; ").join(statements))  # one round trip


class Flag:
    """An ``asyncio.Event`` for one waiter at a time, with the timeout built in.

    ``asyncio.wait_for(event.wait(), t)`` wraps the wait in a task of its own and wakes
    the waiter three loop passes after ``set()``; here ``set()`` resolves the waiter's
    future and the next pass runs it. That pass is on every pickup's path.
    """

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            if self._waiter is not None:
                _release(self._waiter)

    def clear(self) -> None:
        self._set = False

    async def wait(self, timeout_s: float) -> None:
        """Until set, or ``timeout_s`` passes."""
        if self._set:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout_s, _release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _close_unwanted(attempt: asyncio.Future[psycopg.Connection[Any]]) -> None:
    if not attempt.cancelled() and attempt.exception() is None:
        attempt.result().close()


class Wakeup:
    """Tells the claim loop when it may find work."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        *,
        log: Any,
        retry: DatabaseRetry,
        poll_interval_s: float,
        on_cancel: Callable[[str], None] = lambda task_id: None,
    ) -> None:
        self._connect = connect
        self._on_cancel = on_cancel  # called on the loop with a cancelled task's id
        self.log = log
        self.retry = retry
        self.poll_interval_s = poll_interval_s
        self.event = Flag()  # set when the loop should look again
        self.hints = 0  # notifications and timers seen so far (a claim compares before/after)
        # task types announced since the claim loop last asked (take_hinted); None: any
        # type may have new tasks (a timer, a reconnect, a notification without a type)
        self._hinted: set[str] | None = set()
        self.due_at = float("inf")  # monotonic time of the earliest known future task
        # a limit row changed (a notification with "limits": true), or one may have
        # changed unseen (a reconnect): the runner reads which operators are limited
        self.limits_changed = False
        self._conn: psycopg.Connection[Any] | None = None
        self._fd = -1  # the LISTEN socket as registered with the loop (kept: a lost
        # connection can no longer tell its own descriptor)
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    # -- the LISTEN connection -----------------------------------------------------------

    def listen_now(self) -> None:
        """Connect and LISTEN (boot; the caller retries)."""
        conn = self._connect()
        listen(conn)
        self._attach(conn)

    def _attach(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._fd = conn.fileno()
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def _detach(self) -> None:
        conn, self._conn = self._conn, None
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(fd)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _readable(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            for notice in conn.notifies(timeout=0):
                if notice.channel == CHANNEL:
                    self._hint(notice.payload)
                else:
                    self._on_cancel(notice.payload)
        except Exception:  # the connection is gone, however it says so
            self._lost()

    def _lost(self) -> None:
        self._detach()
        if self._closed or self._reconnecting is not None:
            return
        self.log.warning("listener_reconnecting")
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        def connect() -> psycopg.Connection[Any]:
            conn = self._connect()
            listen(conn)
            return conn

        attempt = asyncio.ensure_future(
            asyncio.to_thread(self.retry, "listen", connect, until_stop=True)
        )
        try:
            conn = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            # Closed meanwhile: the thread cannot be stopped and may still connect.
            attempt.add_done_callback(_close_unwanted)
            raise
        except psycopg.OperationalError:
            return  # stopping: nothing left to listen for
        finally:
            self._reconnecting = None
        if self._closed:
            conn.close()
            return
        self._attach(conn)
        self.log.info("listener_reconnected")
        self.limits_changed = True
        self.poke()  # poll at once: a notification sent meanwhile is not missed

    def check(self) -> None:
        """Notice a listener that broke while idle (the loop calls this before sleeping)."""
        conn = self._conn
        if (conn is not None and (conn.closed or conn.broken)) or (
            conn is None and self._reconnecting is None and not self._closed
        ):
            self._lost()

    # -- hints -----------------------------------------------------------------------

    def poke(self, task_type: str | None = None) -> None:
        """Tasks of ``task_type`` (None: of any type) may be waiting."""
        self.hints += 1
        if task_type is None:
            self._hinted = None
        elif self._hinted is not None:
            self._hinted.add(task_type)
        self.event.set()

    def take_hinted(self) -> set[str] | None:
        """The task types announced since the last call; None when it may be any type."""
        hinted, self._hinted = self._hinted, set()
        return hinted

    def _hint(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            due = data.get("scheduled_for")
            task_type = data.get("task_type")
            if data.get("limits") is True:
                self.limits_changed = True
        except (ValueError, AttributeError):
            due = task_type = None
        if not isinstance(task_type, str):
            task_type = None
        if due:
            try:
                delay = (datetime.fromisoformat(due) - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                delay = 0.0
            if delay > 0:
                self.due_in(delay)
                return
        self.poke(task_type)

    def due_in(self, delay_s: float) -> None:
        """Remember that a task becomes due in ``delay_s`` (a retry, a delayed task)."""
        due_at = time.monotonic() + delay_s
        if due_at < self.due_at:
            self.due_at = due_at
            self.event.set()  # the loop may be sleeping past it: let it set a shorter wait

    async def wait(self, timeout_s: float) -> None:
        """Until a hint, a known due time or ``timeout_s``; a due time counts as a hint."""
        limit = min(timeout_s, self.due_at - time.monotonic())
        if limit > 0 and not self.event.is_set():
            await self.event.wait(limit)
        else:
            await asyncio.sleep(0)  # always yield: the loop has other tasks to run
        self.event.clear()
        if time.monotonic() >= self.due_at:
            self.due_at = float("inf")
            self.hints += 1
            self._hinted = None  # which type came due is not known here

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
        self._detach()
