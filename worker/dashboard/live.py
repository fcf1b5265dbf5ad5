"""Live updates: one LISTEN connection per dashboard process, fanned out to every browser.

The :class:`Broadcaster` holds the process's only listening connection. It LISTENs on the
queue's channels (``new_task`` for enqueues and retries, ``cell_updated`` for cells the
robots wrote, ``task_cancel`` when a running task is asked to stop) and, because a
worker announces neither a failure nor a finish that writes no cell, it also runs one
index-only probe per PROBE_S (the newest finish of each kind, the running tasks) on the
same connection. Whatever it saw in a PROBE_S window becomes at most one ``changed``
event, put on each browser's queue of one (a slow browser misses nothing it needs: the
next fetch shows the newest state). Browsers hold a server-sent events stream and, on
``changed``, fetch the page's live fragment. So the database sees one listener and one
probe per process however many browsers are open, and each open page re-reads its
fragment at most once per PROBE_S, only when something changed.

A lost connection is reconnected after RECONNECT_S; browsers keep their streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import structlog
from psycopg import sql

from websurf.sql import QUERIES

CHANNELS = ("new_task", "cell_updated", "task_cancel")
PROBE_S = 1.0
RECONNECT_S = 2.0
KEEPALIVE_S = 15.0  # a comment line on an idle stream, so proxies keep it open

log = structlog.get_logger("websurf.dashboard")


class Broadcaster:
    """Turns notifications and probe changes into ``changed`` events for each subscriber."""

    def __init__(self, database_url: str, *, probe_s: float = PROBE_S) -> None:
        self.database_url = database_url
        self.probe_s = probe_s
        self.version = 0
        self._subscribers: set[asyncio.Queue[int]] = set()

    def subscribe(self) -> asyncio.Queue[int]:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[int]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self) -> None:
        """Tell every subscriber that something changed (a full queue already says so)."""
        self.version += 1
        for queue in self._subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(self.version)

    async def run(self) -> None:
        """Listen and probe until cancelled, reconnecting after a lost connection."""
        while True:
            try:
                await self._listen()
            except psycopg.Error as exc:
                log.warning("dashboard_listener_lost", error=str(exc).splitlines()[0])
            await asyncio.sleep(RECONNECT_S)  # a deadline between reconnects, not a sync

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True
        ) as conn:
            for channel in CHANNELS:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            marker = await _probe(conn)
            while True:
                heard = 0
                async for _ in conn.notifies(timeout=self.probe_s):
                    heard += 1
                now = await _probe(conn)
                if heard or now != marker:
                    marker = now
                    self.publish()


async def _probe(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...]:
    cursor = await conn.execute(QUERIES["dashboard_change_probe"])
    row = await cursor.fetchone()
    return tuple(row) if row is not None else ()


async def event_stream(broadcaster: Broadcaster) -> AsyncIterator[str]:
    """One browser's server-sent events: ``changed`` when the queue moved, keepalives between."""
    queue = broadcaster.subscribe()
    try:
        yield "retry: 2000\n\n"
        while True:
            try:
                version = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            yield f"event: changed\ndata: {version}\n\n"
    finally:
        broadcaster.unsubscribe(queue)
