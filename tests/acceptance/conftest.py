"""Run the real ``websurf worker`` in a subprocess, and always stop it.

``start_worker(database_url, *options)`` starts the daemon in its own process group
with JSON logs on stderr written to a file, and the test operators of
``operators_for_tests`` loadable. At the end of the test every daemon started is sent
SIGTERM, and its whole process group SIGKILL if it is not gone by the deadline, so no
process outlives the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

WEBSURF = str(Path(sys.executable).with_name("websurf"))
HERE = Path(__file__).resolve().parent
TEST_OPERATORS = "operators_for_tests"
DEADLINE_S = 30.0  # for a condition the test waits on
STOP_DEADLINE_S = 20.0  # for a daemon to exit after SIGTERM before it is killed

T = TypeVar("T")


def worker_env() -> dict[str, str]:
    """The environment minus anything that would pick another database, plus the operators."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("WEBSURF_") and k != "DATABASE_URL"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


def wait_for(condition: Callable[[], T], what: str, timeout: float = DEADLINE_S) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


class Daemon:
    """A running ``websurf worker`` and what it wrote."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path, url: str) -> None:
        self.process = process
        self.log_path = log_path
        self.url = url

    @property
    def pid(self) -> int:
        return self.process.pid

    def query(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement on the daemon's database (autocommit) and return its rows."""
        return query(self.url, statement, *params)

    wait_for = staticmethod(wait_for)

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log records on stderr (of the supervisor and its children)."""
        found = []
        for line in self.stderr().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (name is None or record.get("event") == name):
                found.append(record)
        return found

    def error_lines(self) -> list[str]:
        """The stderr lines that are not JSON log records (what a person reads)."""
        lines = []
        for line in self.stderr().splitlines():
            try:
                json.loads(line)
            except ValueError:
                lines.append(line)
        return lines

    def send(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float = STOP_DEADLINE_S) -> int:
        """The exit code, waiting at most ``timeout`` seconds (fails the test past it)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"websurf worker still running after {timeout:g}s; stderr:\n{self.stderr()[-4000:]}"
            ) from None

    def workers(self) -> list[tuple[str, int]]:
        """(worker id, pid) of the registered worker processes."""
        rows = query(self.url, "SELECT id, pid FROM websurf.worker ORDER BY started_at")
        return [(str(r[0]), int(r[1])) for r in rows]

    def wait_ready(self, processes: int) -> list[tuple[str, int]]:
        def ready() -> list[tuple[str, int]]:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early; stderr:\n{self.stderr()[-4000:]}")
            workers = self.workers()
            return workers if len(workers) >= processes else []

        return wait_for(ready, f"{processes} worker process(es) to register")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole process group after the deadline."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.send(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_DEADLINE_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # children left behind, if any
        if self.process.poll() is None:
            self.process.wait(timeout=STOP_DEADLINE_S)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start ``websurf worker`` on a database; every daemon started is stopped afterwards."""
    started: list[Daemon] = []

    def start(
        database_url: str, *options: str, concurrency: int = 1, prefix: tuple[str, ...] = ()
    ) -> Daemon:
        log_path = tmp_path / f"worker-{len(started)}.log"
        command = [
            *prefix,
            WEBSURF,
            "worker",
            "--database-url",
            database_url,
            "--log-format",
            "json",
            "--concurrency",
            str(concurrency),
            "--operators",
            TEST_OPERATORS,
            *options,
        ]
        with log_path.open("wb") as log, (tmp_path / "stdout.log").open("ab") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                env=worker_env(),
                start_new_session=True,  # its own process group, killed as one at the end
            )
        daemon = Daemon(process, log_path, database_url)
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.stop()
