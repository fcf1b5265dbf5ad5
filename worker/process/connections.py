"""The process's connections to PostgreSQL, and which path each takes.

* The claim connection (dedicated, used from the claim thread) makes first contact: it
  finds out whether a pooler sits in front of the database (``paths``), and with it how
  every other connection is set up (prepared statements off, settings per transaction).
* The shared pool (small, autocommit): the maintenance thread's chores and plain
  handlers' reads. It connects in the background once the boot has made contact.
* The recorder's dedicated connection.
* The LISTEN connection: on the session URL (a direct one when configured), since a
  transaction pooler would drop the subscription.
* The async read pool of ``async def`` handlers, opened on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from websurf.sql.database import (
    Paths,
    connect_kwargs,
    resolve_paths,
    session_url,
    set_up_session,
)
from websurf.worker.config import WorkerConfig
from websurf.worker.process.database import DedicatedConnection


class Connections:
    """Every connection one worker process opens; ``close()`` closes them all."""

    def __init__(
        self, config: WorkerConfig, worker_id: str, claim_settings: Mapping[str, str]
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.claim_settings = dict(claim_settings)
        self.paths: Paths | None = None  # known from the claim connection's first contact
        self.claimer = DedicatedConnection(
            config.database_url,
            application_name=f"websurf-claim {worker_id}",
            connect_timeout_s=config.connect_timeout_s,
            set_up=self._set_up_claim_connection,
        )
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            config.database_url,
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            max_idle=config.pool_max_idle_s,
            timeout=max(config.connect_timeout_s * 5, 10.0),
            kwargs=lambda: self._kwargs("websurf-worker"),
            reconnect_timeout=0,  # keep trying: the loop decides when to give up
            open=False,
            name=f"websurf-{worker_id}",
        )
        self._async_pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._async_pool_lock: asyncio.Lock | None = None

    @property
    def pooled(self) -> bool:
        """Whether the main URL goes through a pooler (before first contact: a direct URL
        is configured, which says so)."""
        return self.paths.pooled if self.paths else self.config.direct_database_url is not None

    def _kwargs(self, name: str) -> dict[str, Any]:
        return {
            "autocommit": True,
            "connect_timeout": max(1, round(self.config.connect_timeout_s)),
            "application_name": f"{name} {self.worker_id}"[:63],
            **connect_kwargs(pooled=self.pooled),
        }

    def _set_up_claim_connection(self, conn: psycopg.Connection[Any]) -> None:
        if self.paths is None:  # the process's first connection: is a pooler in between?
            self.paths = resolve_paths(
                conn, self.config.database_url, self.config.direct_database_url
            )
        set_up_session(conn, self.claim_settings, pooled=self.pooled)

    def recording(self) -> DedicatedConnection:
        """A dedicated connection for the recorder."""
        return DedicatedConnection(
            self.config.database_url,
            application_name=f"websurf-record {self.worker_id}",
            connect_timeout_s=self.config.connect_timeout_s,
            set_up=lambda conn: set_up_session(conn, {}, pooled=self.pooled),
        )

    def connect_listener(self) -> psycopg.Connection[Any]:
        """A new connection for LISTEN, on the session URL."""
        return psycopg.connect(
            session_url(self.config),
            autocommit=True,
            connect_timeout=max(1, round(self.config.connect_timeout_s)),
            application_name=f"websurf-listen {self.worker_id}"[:63],
        )

    @contextlib.asynccontextmanager
    async def async_read_connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of the async read pool (opened on first use) for an async handler."""
        if self._async_pool_lock is None:
            self._async_pool_lock = asyncio.Lock()
        async with self._async_pool_lock:
            if self._async_pool is None:
                pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                    self.config.database_url,
                    min_size=0,
                    max_size=self.config.pool_max_size,
                    max_idle=self.config.pool_max_idle_s,
                    kwargs=self._kwargs("websurf-read"),
                    open=False,
                    name=f"websurf-read-{self.worker_id}",
                )
                await pool.open(wait=False)
                self._async_pool = pool
        async with self._async_pool.connection() as conn:
            yield conn

    async def close_async(self) -> None:
        if self._async_pool is not None:
            await self._async_pool.close()
            self._async_pool = None

    def close(self) -> None:
        self.pool.close()
        self.claimer.close()
