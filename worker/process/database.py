"""The process's database plumbing: dedicated connections and retries while it is away.

The queue's operations (``websurf.worker.core.queue``) are plain synchronous psycopg code,
shared by the CLI, the reaper and the worker. The worker's event loop calls them on
dedicated threads, one connection each (the claimer's, the recorder's), so there is
one implementation of every query and the loop never blocks on the network.

While the database is away every step retries with capped exponential backoff and
jitter (tenacity), logging each attempt; ``give_up_at`` bounds it (forever while
serving, the shutdown deadline while stopping).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from websurf.sql.database import describe, scrub

T = TypeVar("T")


def forever() -> float:
    return float("inf")


class DatabaseRetry:
    """Runs a database step again while the database is unreachable."""

    def __init__(self, url: str, log: Any, *, max_wait_s: float, stop: threading.Event) -> None:
        self.url = url
        self.log = log
        self.max_wait_s = max_wait_s
        self.stop = stop  # set when the process stops: sleeps end, ``until_stop`` steps give up

    def __call__(
        self,
        what: str,
        step: Callable[[], T],
        *,
        give_up_at: Callable[[], float] = forever,
        until_stop: bool = False,
    ) -> T:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.log.warning(
                "database_retry",
                step=what,
                attempt=state.attempt_number,
                target=describe(self.url),
                error=scrub(str(exc).strip(), self.url),
            )

        def should_stop(state: RetryCallState) -> bool:
            return time.monotonic() >= give_up_at() or (until_stop and self.stop.is_set())

        def sleep(seconds: float) -> None:
            left = max(0.0, give_up_at() - time.monotonic())
            if until_stop:
                self.stop.wait(min(seconds, left))
            else:
                time.sleep(min(seconds, left))

        for attempt in Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_random_exponential(multiplier=0.1, max=self.max_wait_s),
            stop=should_stop,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                return step()
        raise AssertionError("unreachable")  # pragma: no cover


class DedicatedConnection:
    """One autocommit connection, used from one thread, reconnected when it broke.

    ``set_up`` readies each new connection (pooler-safe settings: see
    ``websurf.sql.database.set_up_session``).
    """

    def __init__(
        self,
        url: str,
        *,
        application_name: str,
        connect_timeout_s: float,
        set_up: Callable[[psycopg.Connection[Any]], None] | None = None,
        **kw: Any,
    ):
        self.url = url
        self.set_up = set_up
        self._kwargs = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout_s)),
            "application_name": application_name[:63],
            **kw,
        }
        self._conn: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = self._conn = psycopg.connect(self.url, **self._kwargs)
            if self.set_up is not None:
                self.set_up(conn)
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
