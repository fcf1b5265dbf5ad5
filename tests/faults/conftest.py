"""Fixtures of the fault-injection suite (helpers in faultkit.py, operators in chaos_operators.py).

The tests import ``faults.faultkit`` and ``faults.chaos_operators`` (``tests/`` is on
sys.path); the daemon under test gets this directory on its PYTHONPATH to load
``chaos_operators``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from faults.faultkit import FaultServer
from psycopg import sql
from support.daemon import Daemon, Daemons

from websurf.sql import migrate as migrator
from websurf.sql.embedded import EmbeddedServer

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def fault_server() -> Iterator[FaultServer]:
    server = EmbeddedServer(throwaway=True, fast=True, tcp=True)
    dsn = server.start()
    try:
        yield FaultServer(server, dsn)
    finally:
        server.stop()


@pytest.fixture
def fault_database(fault_server: FaultServer) -> str:
    """URL of a fresh migrated database on the suite's own server (kept until the end)."""
    name = f"websurf_faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(fault_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        # the fast server acknowledges commits before writing them; a crash (immediate
        # stop) would then lose acknowledged claims and finishes, which no production
        # server does. fsync stays off: only the processes crash, not the machine.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(name))
        )
    url = fault_server.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrator.migrate(conn)
    return url


@pytest.fixture
def start_worker(daemons: Daemons) -> Callable[..., Daemon]:
    """``start_worker(url, *options, env=...)``: ``websurf worker`` running the chaos operators."""
    return functools.partial(daemons.worker, operators=["chaos_operators"], pythonpath=[HERE])
