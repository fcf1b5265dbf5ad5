"""What every measurement stands on: the scratch database and its guarded connection,
the worker daemons under test (started as subprocesses, SIGTERMed on the way out), and
waiting on the database while watching that no daemon died."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import conninfo, sql

from websurf.sql import QUERIES
from websurf.sql.migrate import migrate

SCRATCH_PREFIX = "websurf_bench_"
BENCH_WORKER_ID = "websurf-bench"
BULK_PRIORITY = 5  # the bulk work of the sleep and priority runs (the queue's default)
POLL_INTERVAL_S = 0.2  # how often the end of a run is checked; not part of any timing
READY_TIMEOUT_S = 60.0  # for a daemon's processes to register
STOP_TIMEOUT_S = 60.0  # for a daemon to exit after SIGTERM
RUN_TIMEOUT_BASE_S = 60.0  # a run may take this long, plus RUN_TIMEOUT_PER_TASK_S per task
RUN_TIMEOUT_PER_TASK_S = 0.01
STDERR_TAIL_CHARS = 2000


class BenchError(RuntimeError):
    """A measurement could not be made (daemon died, tasks not finished, wrong database)."""


# -- scratch database and connections --------------------------------------------------


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """Create and migrate ``websurf_bench_<random>`` on the server; drop it afterwards."""
    name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(QUERIES["bench_create_database"].format(name=sql.Identifier(name)))
    try:
        url = conninfo.make_conninfo(server_url, dbname=name)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        yield url
    finally:
        # Ctrl-C or SIGTERM arriving now waits until the database is gone.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(QUERIES["bench_drop_database"].format(name=sql.Identifier(name)))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextlib.contextmanager
def scratch_connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to ``url``, refused unless it is a scratch database."""
    with psycopg.connect(url, autocommit=True, application_name="websurf-bench") as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        if row is None or not str(row[0]).startswith(SCRATCH_PREFIX):
            raise BenchError(
                f"the benchmark empties the tables of the database it runs in; it only runs in"
                f" a scratch database named {SCRATCH_PREFIX}* (see scratch_database())"
            )
        yield conn


def reset(conn: psycopg.Connection[Any]) -> None:
    """Empty the queue and sheet tables: each measurement starts from nothing."""
    conn.execute(QUERIES["bench_reset"])


def scalar(conn: psycopg.Connection[Any], query: str, params: dict[str, Any] | None = None) -> Any:
    row = conn.execute(QUERIES[query], params).fetchone()
    assert row is not None
    return row[0]


def insert_sleeps(
    conn: psycopg.Connection[Any],
    task_type: str,
    count: int,
    sleep_s: float,
    priority: int = BULK_PRIORITY,
) -> None:
    conn.execute(
        QUERIES["bench_insert_sleep_tasks"],
        {"task_type": task_type, "count": count, "sleep_s": sleep_s, "priority": priority},
    )


def states(conn: psycopg.Connection[Any], task_type: str) -> tuple[int, int, int]:
    """(pending, processing, completed) tasks of ``task_type``."""
    row = conn.execute(QUERIES["bench_task_states"], {"task_type": task_type}).fetchone()
    assert row is not None
    pending, processing, completed = row
    return pending, processing, completed


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


# -- the daemons under test ------------------------------------------------------------


def _websurf_command() -> list[str]:
    script = Path(sys.executable).with_name("websurf")
    if script.exists():
        return [str(script)]
    found = shutil.which("websurf")
    if found:
        return [found]
    return [sys.executable, "-c", "from websurf.cli.main import main; main()"]


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    stderr: IO[bytes]

    def tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-STDERR_TAIL_CHARS:].strip()


@contextlib.contextmanager
def start_daemons(
    url: str, *, processes: int, count: int = 1, operators: Sequence[str] = ()
) -> Iterator[list[Daemon]]:
    """Start ``count`` worker daemons of ``processes`` each; SIGTERM them on the way out."""
    env = dict(os.environ, WEBSURF_DATABASE_URL=url)
    argv = [*_websurf_command(), "worker", "--concurrency", str(processes)]
    argv += ["--log-level", "warning", "--log-format", "json"]
    for module in operators:
        argv += ["--operators", module]
    started: list[Daemon] = []
    with contextlib.ExitStack() as files:
        try:
            for _ in range(count):
                stderr = files.enter_context(tempfile.TemporaryFile())
                process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stderr=stderr)
                started.append(Daemon(process, stderr))
            yield started
        except BaseException:
            _stop(started, check=False)
            raise
        _stop(started, check=True)


def _stop(daemons: list[Daemon], *, check: bool) -> None:
    """SIGTERM every daemon and wait; with ``check``, raise if one did not exit cleanly."""
    for daemon in daemons:
        if daemon.process.poll() is None:
            daemon.process.send_signal(signal.SIGTERM)
    problems = []
    for daemon in daemons:
        try:
            code = daemon.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            code = daemon.process.wait()
            problems.append(f"a worker daemon ignored SIGTERM for {STOP_TIMEOUT_S:g}s")
        else:
            if code != 0:
                problems.append(f"a worker daemon exited with code {code}: {daemon.tail()}")
    if problems and check:
        raise BenchError("; ".join(problems))


def wait_for(
    done: Callable[[], bool],
    daemons: list[Daemon],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = POLL_INTERVAL_S,
) -> None:
    """Poll ``done`` until it holds; raise if a daemon exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not done():
        for daemon in daemons:
            code = daemon.process.poll()
            if code is not None:
                raise BenchError(f"a worker daemon exited with code {code}: {daemon.tail()}")
        if time.monotonic() >= deadline:
            raise BenchError(f"gave up after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def wait_registered(
    conn: psycopg.Connection[Any], running: list[Daemon], processes: int
) -> list[int]:
    """Wait for the daemon's worker processes to register; their pids."""
    wait_for(
        lambda: scalar(conn, "bench_live_workers") >= processes,
        running,
        timeout_s=READY_TIMEOUT_S,
        what="the worker processes to register",
    )
    return [row[0] for row in conn.execute(QUERIES["bench_worker_pids"])]


def wait_all_finished(
    conn: psycopg.Connection[Any], running: list[Daemon], *, timeout_s: float, what: str
) -> None:
    """Wait until no task in the queue is unfinished."""
    wait_for(
        lambda: scalar(conn, "bench_unfinished_count") == 0,
        running,
        timeout_s=timeout_s,
        what=what,
    )
