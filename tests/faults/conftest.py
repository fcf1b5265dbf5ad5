"""Fixtures of the fault-injection suite (helpers in faultkit.py, operators in chaos_operators.py).

This directory goes on sys.path so the tests import ``faultkit`` and ``chaos_operators``;
the daemon under test gets it on its PYTHONPATH to load ``chaos_operators``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from faultkit import WEBSURF, Daemon, FaultServer  # noqa: E402

from websurf.sql import migrate as migrator  # noqa: E402
from websurf.sql.embedded import EmbeddedServer  # noqa: E402


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
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    daemons: list[Daemon] = []

    def start(url: str, *options: str, env: dict[str, str] | None = None) -> Daemon:
        log_path = tmp_path / f"daemon-{len(daemons)}.log"
        environment = os.environ | (env or {})
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HERE), environment.get("PYTHONPATH", "")) if p
        )
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    str(WEBSURF),
                    "worker",
                    "--database-url",
                    url,
                    "--operators",
                    "chaos_operators",
                    "--log-format",
                    "json",
                    *options,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env=environment,
                start_new_session=True,
            )
        daemon = Daemon(process, log_path)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        if daemon.process.poll() is None:
            daemon.kill_all()
