"""Run ``websurf`` (the worker daemon above all) in a subprocess, and always stop it.

``Daemons`` starts each process in its own process group, with stderr (the JSON log)
in a file and stdout in another, in an environment that cannot pick another database.
A ``Daemon`` reads its log, sends it signals, waits for it with a deadline (failing
with the end of its log), and at the end of the test ``Daemons.close`` sends every one
still running SIGTERM, then SIGKILL to its whole process group if it is not gone by the
deadline, so no process outlives the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from support.waiting import DEADLINE_S, wait_for

T = TypeVar("T")

WEBSURF = str(Path(sys.executable).with_name("websurf"))
STOP_DEADLINE_S = 20.0  # for a process to exit after SIGTERM before it is killed
LOG_TAIL_CHARS = 4000  # of the log, in a failure message
OTHER_DATABASE = ("DATABASE_URL", "DIRECT_URL")


def clean_env(pythonpath: Iterable[str | Path] = (), **extra: str) -> dict[str, str]:
    """This environment minus any setting that would pick another database or log format,
    with ``pythonpath`` (where operator modules are) in front and ``extra`` added."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WEBSURF_") and k not in OTHER_DATABASE
    }
    paths = [p for p in (*map(str, pythonpath), env.get("PYTHONPATH")) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env | extra


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a daemon to serve on)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not JSON log records (what a person reads)."""
    lines = []
    for line in stderr.splitlines():
        try:
            json.loads(line)
        except ValueError:
            lines.append(line)
    return lines


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on ``url`` (autocommit) and return its rows."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


class Daemon:
    """A process under test and what it wrote: the log (stderr) and its output (stdout)."""

    def __init__(
        self, process: subprocess.Popen[bytes], log_path: Path, output_path: Path, url: str
    ) -> None:
        self.process = process
        self.log_path = log_path
        self.output_path = output_path
        self.url = url  # the database it works on

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    # -- what it wrote -----------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self) -> str:
        return f"its log ends:\n{self.log()[-LOG_TAIL_CHARS:]}"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log records (of the supervisor and its children), or those of one event."""
        found = []
        for line in self.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or "event" not in record:
                continue
            if name is None or record["event"] == name:
                found.append(record)
        return found

    def error_lines(self) -> list[str]:
        """The log lines that are not JSON records (what a person reads)."""
        return error_lines(self.log())

    # -- the database it works on ------------------------------------------------------

    def query(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement on the daemon's database (autocommit) and return its rows."""
        return query(self.url, statement, *params)

    def workers(self) -> list[tuple[str, int]]:
        """(worker id, pid) of the registered worker processes."""
        rows = self.query("SELECT id, pid FROM websurf.worker ORDER BY started_at")
        return [(str(r[0]), int(r[1])) for r in rows]

    # -- waiting -----------------------------------------------------------------------

    def wait_for(
        self, condition: Callable[[], T], describe: str, timeout: float = DEADLINE_S, **kw: Any
    ) -> T:
        """``support.waiting.wait_for``, failing with the end of this daemon's log."""
        return wait_for(condition, describe, timeout, details=self.log_tail, **kw)

    def wait_ready(self, processes: int) -> list[tuple[str, int]]:
        """Until ``processes`` worker processes registered; fails at once if it exited."""

        def ready() -> list[tuple[str, int]]:
            if not self.alive():
                raise AssertionError(f"{self.pid} exited early; {self.log_tail()}")
            workers = self.workers()
            return workers if len(workers) >= processes else []

        return self.wait_for(ready, f"{processes} worker process(es) to register")

    def children(self) -> list[int]:
        """Pids of its live child processes (the supervisor's worker processes), from /proc."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
        return found

    # -- signals and stopping ----------------------------------------------------------

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = STOP_DEADLINE_S) -> int:
        """The exit code, waiting at most ``timeout`` seconds (fails the test past it)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.pid} still running after {timeout:g}s; {self.log_tail()}"
            ) from None

    def stop(self, timeout: float = STOP_DEADLINE_S) -> int:
        """SIGTERM, and the exit code within ``timeout`` seconds (fails the test past it)."""
        if self.alive():
            self.send(signal.SIGTERM)
        return self.wait(timeout)

    def kill_all(self) -> None:
        """SIGKILL the process and its children at once (a host lost)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_DEADLINE_S)

    def close(self) -> None:
        """SIGTERM, then SIGKILL to the whole process group after the deadline."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.send(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_DEADLINE_S)
        self.kill_all()  # children left behind, if any


class Daemons:
    """Starts processes under test, each logging to a file in ``directory``; stops them all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Daemon] = []

    def launch(
        self,
        command: list[str],
        *,
        url: str = "",
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> Daemon:
        """Start ``command`` in its own process group; ``stdin`` is written to it, if given."""
        number = len(self.started)
        log_path = self.directory / f"daemon-{number}.log"
        output_path = self.directory / f"daemon-{number}.out"
        with log_path.open("wb") as log, output_path.open("wb") as output:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=output,
                stderr=log,
                env=clean_env() if env is None else env,
                start_new_session=True,  # its own process group, killed as one at the end
            )
        daemon = Daemon(process, log_path, output_path, url)
        self.started.append(daemon)
        if process.stdin is not None:
            with contextlib.suppress(BrokenPipeError), process.stdin:
                process.stdin.write(stdin or b"")
        return daemon

    def worker(
        self,
        url: str,
        *options: str,
        concurrency: int | None = None,
        operators: Iterable[str] = (),
        pythonpath: Iterable[str | Path] = (),
        env: dict[str, str] | None = None,
        prefix: Iterable[str] = (),
    ) -> Daemon:
        """``websurf worker`` on ``url`` with JSON logs, loading ``operators`` (modules found
        on ``pythonpath``); ``env`` adds variables, ``prefix`` goes before the command."""
        command = [*prefix, WEBSURF, "worker", "--database-url", url, "--log-format", "json"]
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        for module in operators:
            command += ["--operators", module]
        command += options
        return self.launch(command, url=url, env=clean_env(pythonpath, **(env or {})))

    def close(self) -> None:
        for daemon in self.started:
            daemon.close()
