"""Helpers of the fault-injection suite: its own PostgreSQL, a daemon under test, chaos.

The suite restarts and stops its database, so it never uses ``WEBSURF_TEST_DATABASE_URL``:
it starts a throwaway embedded server of its own (TCP on 127.0.0.1, so a restart keeps
the address the workers reconnect to). The daemon under test is the real ``websurf
worker`` command (``support.daemon``), loading ``chaos_operators`` from this directory.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg.types.json import Jsonb
from support.daemon import Daemon, query
from support.rows import robot_payloads

from websurf.sql.embedded import EmbeddedServer

POLL_S = 0.05
DB_ERRORS = (psycopg.OperationalError, psycopg.errors.AdminShutdown)


@dataclass
class FaultServer:
    server: EmbeddedServer
    dsn: str

    @property
    def port(self) -> int:
        return int(conninfo.conninfo_to_dict(self.dsn)["port"])  # type: ignore[arg-type]

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


def enqueue_chaos(url: str, payloads: list[dict[str, Any]], *, async_share: float = 0.0) -> None:
    """Queue ``chaos`` tasks; every task whose index falls in ``async_share`` runs as
    ``chaos_async`` instead (same payload, same expectations). A payload with
    ``"cell": true`` gets a robot cell of its task's type instead (only a real robot task
    may write a cell, migration 0024)."""
    every = round(1 / async_share) if async_share else 0
    types = ["chaos_async" if every and i % every == 0 else "chaos" for i in range(len(payloads))]
    wanted = Counter(t for t, p in zip(types, payloads, strict=True) if p.get("cell"))
    with psycopg.connect(url, autocommit=True) as conn:
        cells = {t: iter(robot_payloads(conn, t, n)) for t, n in wanted.items()}
        rows = [
            {**{k: v for k, v in p.items() if k != "cell"}, **next(cells[t])}
            if p.get("cell")
            else p
            for t, p in zip(types, payloads, strict=True)
        ]
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, max_attempts)"
            " SELECT t, p, 3 FROM unnest(%s::text[], %s::jsonb[]) AS x(t, p)",
            (types, [Jsonb(p) for p in rows]),
        )


@dataclass
class Chaos:
    """Faults injected from a thread while the daemon works; counts what it did."""

    fault_server: FaultServer
    url: str
    daemon: Daemon
    rng: random.Random
    kills: int = 0
    restarts: int = 0
    terminations: int = 0
    terminated_backends: int = 0
    outages: int = 0
    outage_s: float = 0.0
    recover_s: list[float] = field(default_factory=list)  # per killed child holding tasks
    unrecovered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _watch: list[tuple[float, str, list[str]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def kill_child(self) -> None:
        children = self.daemon.children()
        if not children:
            return
        pid = self.rng.choice(children)
        try:
            held = query(
                self.url,
                "SELECT w.id, array_agg(t.id::text) FILTER (WHERE t.id IS NOT NULL)"
                " FROM websurf.worker w LEFT JOIN websurfing_task_queue t"
                " ON t.worker_id = w.id AND t.status = 'processing'"
                " WHERE w.pid = %s GROUP BY w.id",
                pid,
            )
        except DB_ERRORS:
            held = []
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        killed_at = time.monotonic()
        self.kills += 1
        for worker_id, tasks in held:
            if tasks:
                with self._lock:
                    self._watch.append((killed_at, worker_id, tasks))

    def restart_database(self) -> None:
        self.fault_server.server.restart()
        self.restarts += 1

    def terminate_connections(self) -> None:
        rows = query(
            self.fault_server.dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE 'websurf%%' AND pid <> pg_backend_pid()",
        )
        self.terminations += 1
        self.terminated_backends += sum(1 for r in rows if r[0])

    def outage(self, seconds: float) -> None:
        self.fault_server.server.stop_server_only("immediate")
        started = time.monotonic()
        time.sleep(seconds)  # the fault itself: the database is away this long
        self.fault_server.server.start_server_only()
        self.outages += 1
        self.outage_s += time.monotonic() - started

    def watch_recoveries(self, stop: threading.Event) -> None:
        """Time from a child's SIGKILL until its tasks are no longer held by it."""
        while not stop.is_set() or self._watch:
            with self._lock:
                pending = list(self._watch)
            for item in pending:
                killed_at, worker_id, tasks = item
                try:
                    still = query(
                        self.url,
                        "SELECT count(*) FROM websurfing_task_queue WHERE id = ANY(%s::uuid[])"
                        " AND status = 'processing' AND worker_id = %s",
                        tasks,
                        worker_id,
                    )[0][0]
                except DB_ERRORS:
                    continue
                if still == 0:
                    with self._lock:
                        self._watch.remove(item)
                    self.recover_s.append(time.monotonic() - killed_at)
                elif stop.is_set():
                    with self._lock:
                        self._watch.remove(item)
                    self.unrecovered.append(worker_id)
            time.sleep(POLL_S)

    def run(self, plan: list[str], stop: threading.Event, outage_s: float) -> None:
        actions: dict[str, Callable[[], None]] = {
            "kill": self.kill_child,
            "restart": self.restart_database,
            "terminate": self.terminate_connections,
            "outage": lambda: self.outage(outage_s),
        }
        for name in plan:
            if stop.wait(self.rng.uniform(0.3, 1.5)):
                return
            try:
                actions[name]()
            except Exception as exc:  # recorded; the test fails on it
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
