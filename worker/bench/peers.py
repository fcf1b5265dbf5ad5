"""websurf beside pgqueuer on this machine and this server: ``websurf bench --peers``.

Two workloads, the ones robots are made of: no-op jobs, and jobs that await 0.1 s
without a CPU (a web page, a model). Each round runs each system once per workload,
interleaved, so the machine's noise falls on both; the figures are medians of the rounds.

* websurf: the real daemon at its defaults (``websurf worker``: 2 processes), timed
  exactly like the ``noop`` and ``async`` rows of ``websurf bench``.
* pgqueuer: 2 processes of ``pgqueuer.run(factory, batch_size=200,
  max_concurrent_tasks=None)`` on uvloop with one asyncpg connection each, its best
  configuration on a 2-core machine (what ``pgq run --batch-size 200`` does). It is
  installed from PyPI, pinned (``PGQUEUER_SPEC``, or ``WEBSURF_PEERS_PGQUEUER``), into a
  virtual environment under the user's cache directory, once.

Both are timed from the database: the server clock just before the workers are launched,
and each job's completion (websurf: ``completed_at``; pgqueuer: its ``successful`` log
row). "From start" is jobs / (last completion - launch), boot included; "steady" is the
rate between the 10th and 90th percentile completions.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import conninfo, sql

from websurf.worker.bench.harness import BenchError
from websurf.worker.bench.options import SLEEP_S
from websurf.worker.bench.throughput import (
    STEADY_FROM,
    STEADY_TO,
    measure_sleep_throughput,
    measure_throughput,
)
from websurf.worker.config import CONCURRENCY

PGQUEUER_SPEC = "pgqueuer==1.6.0"
PGQUEUER_PROCESSES = 2
PGQUEUER_BATCH = 200
WORKLOADS = ("noop", "io")
ENQUEUE_BATCH = 1000
PIP_TIMEOUT_S = 600
WAIT_POLL_S = 0.05
RUN_TIMEOUT_S = 600

# The pgqueuer side, run by the peer's own interpreter: install the schema, queue the
# jobs, or work (an entrypoint "noop" that awaits IO_S seconds when it is above zero).
# It finds the database in libpq's environment variables (PGHOST, PGDATABASE, …), which
# asyncpg reads too: no password on a command line.
PGQUEUER_SCRIPT = """
import asyncio, json, sys
from contextlib import asynccontextmanager

import asyncpg
import pgqueuer
from pgqueuer import PgQueuer
from pgqueuer.queries import Queries


async def install():
    conn = await asyncpg.connect()
    try:
        await Queries.from_asyncpg_connection(conn).install()
    finally:
        await conn.close()


async def enqueue(jobs, batch):
    conn = await asyncpg.connect()
    try:
        queries = Queries.from_asyncpg_connection(conn)
        for start in range(0, jobs, batch):
            n = min(batch, jobs - start)
            payloads = [json.dumps({"i": start + i}).encode() for i in range(n)]
            await queries.enqueue(["noop"] * n, payloads, [0] * n)
    finally:
        await conn.close()


def work(batch, io_s):
    @asynccontextmanager
    async def factory():
        conn = await asyncpg.connect()
        pgq = PgQueuer.from_asyncpg_connection(conn)

        @pgq.entrypoint("noop")
        async def noop(job):
            if io_s:
                await asyncio.sleep(io_s)

        try:
            yield pgq
        finally:
            await conn.close()

    import uvloop
    uvloop.run(pgqueuer.run(factory, batch_size=batch, max_concurrent_tasks=None))


if __name__ == "__main__":  # the database: libpq's PG* environment variables
    command = sys.argv[1]
    if command == "install":
        asyncio.run(install())
    elif command == "enqueue":
        asyncio.run(enqueue(int(sys.argv[2]), int(sys.argv[3])))
    else:
        work(int(sys.argv[2]), float(sys.argv[3]))
"""


@dataclass(frozen=True)
class PeerRun:
    system: str  # websurf or pgqueuer
    workload: str  # noop or io
    from_start_per_s: float
    steady_per_s: float | None


@dataclass(frozen=True)
class PeerRow:
    workload: str
    websurf: tuple[float, float | None]  # medians: from start, steady
    pgqueuer: tuple[float, float | None]

    def ratio(self) -> tuple[float, float | None]:
        start = self.websurf[0] / self.pgqueuer[0]
        w, p = self.websurf[1], self.pgqueuer[1]
        return start, (w / p if w and p else None)


def pgqueuer_python(spec: str | None = None) -> Path:
    """The interpreter of a virtual environment with ``spec`` installed (made once)."""
    spec = spec or os.environ.get("WEBSURF_PEERS_PGQUEUER", PGQUEUER_SPEC)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = cache / "websurf" / "peers" / spec.replace("=", "-").replace("/", "-")
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 spec, "asyncpg", "uvloop"],
                check=True, timeout=PIP_TIMEOUT_S, capture_output=True, text=True,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            tail = (exc.stderr or "").strip().splitlines()[-1:] or [str(exc)]
            raise BenchError(f"could not install {spec} from PyPI into {venv}: {tail[0]}") from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"could not install {spec} into {venv}: {exc}") from None
        (venv / ".installed").touch()
    (venv / "websurf_peer_pgqueuer.py").write_text(PGQUEUER_SCRIPT)
    return python


@contextmanager
def _peer_database(server_url: str) -> Iterator[str]:
    name = f"websurf_bench_pgq_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


LIBPQ_VARIABLES = {
    "host": "PGHOST",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
}


def _libpq_environment(url: str) -> dict[str, str]:
    """The environment naming ``url``'s database the way libpq (and asyncpg) read it."""
    env = {k: v for k, v in os.environ.items() if k not in LIBPQ_VARIABLES.values()}
    for key, value in conninfo.conninfo_to_dict(url).items():
        if key in LIBPQ_VARIABLES and value is not None:
            env[LIBPQ_VARIABLES[key]] = str(value)
    return env


def _script(python: Path, *args: str) -> list[str]:
    return [str(python), str(python.parent.parent / "websurf_peer_pgqueuer.py"), *args]


def measure_pgqueuer(server_url: str, python: Path, *, jobs: int, io_s: float) -> PeerRun:
    """One pgqueuer run on a fresh database: ``jobs`` queued, then its workers launched."""
    with _peer_database(server_url) as url:
        env = _libpq_environment(url)
        for step in (("install",), ("enqueue", str(jobs), str(ENQUEUE_BATCH))):
            done = subprocess.run(_script(python, *step), env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise BenchError(f"pgqueuer {step[0]} failed: {done.stderr.strip()[-500:]}")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            launched = _clock(conn)
            with tempfile.TemporaryFile() as log:
                workers = [
                    subprocess.Popen(
                        _script(python, "work", str(PGQUEUER_BATCH), str(io_s)),
                        env=env,
                        stdout=log,
                        stderr=log,
                        stdin=subprocess.DEVNULL,
                    )
                    for _ in range(PGQUEUER_PROCESSES)
                ]
                try:
                    _wait(
                        lambda: _count(conn, "SELECT count(*) FROM pgqueuer_log"
                                             " WHERE status = 'successful'") >= jobs,
                        workers, log,
                    )  # fmt: skip
                finally:
                    for worker in workers:
                        worker.terminate()
                    for worker in workers:
                        worker.wait(timeout=30)
            row = conn.execute(
                "SELECT max(created), percentile_disc(%s) WITHIN GROUP (ORDER BY created),"
                " percentile_disc(%s) WITHIN GROUP (ORDER BY created)"
                " FROM pgqueuer_log WHERE status = 'successful'",
                (STEADY_FROM, STEADY_TO),
            ).fetchone()
    assert row is not None
    last, p10, p90 = row
    window = (p90 - p10).total_seconds()
    return PeerRun(
        system="pgqueuer",
        workload="io" if io_s else "noop",
        from_start_per_s=jobs / (last - launched).total_seconds(),
        steady_per_s=(STEADY_TO - STEADY_FROM) * jobs / window if window > 0 else None,
    )


def _clock(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    clock: datetime = row[0]
    return clock


def _count(conn: psycopg.Connection[Any], query: LiteralString) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _wait(done: Callable[[], bool], workers: list[subprocess.Popen[bytes]], log: object) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not done():
        for worker in workers:
            if worker.poll() is not None:
                log.seek(0)  # type: ignore[attr-defined]
                tail = log.read().decode(errors="replace").strip()[-500:]  # type: ignore[attr-defined]
                raise BenchError(f"a pgqueuer worker exited with code {worker.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise BenchError(f"pgqueuer did not finish its jobs within {RUN_TIMEOUT_S}s")
        time.sleep(WAIT_POLL_S)


def measure_websurf(url: str, *, jobs: int, io_s: float) -> PeerRun:
    """The same run for websurf, as the ``noop`` and ``async`` rows time it."""
    if io_s:
        result = measure_sleep_throughput(url, tasks=jobs, sleep_s=io_s)
    else:
        result = measure_throughput(url, tasks=jobs, processes=CONCURRENCY)
    return PeerRun(
        "websurf", "io" if io_s else "noop", result.from_start_per_s, result.steady_per_s
    )


def compare(
    server_url: str,
    websurf_url: str,
    *,
    jobs: int,
    rounds: int,
    progress: Callable[[str], None] = lambda line: None,
) -> list[PeerRow]:
    """``rounds`` interleaved rounds of both systems on both workloads; the medians."""
    python = pgqueuer_python()
    runs: list[PeerRun] = []
    for number in range(1, rounds + 1):
        for workload in WORKLOADS:
            io_s = SLEEP_S if workload == "io" else 0.0
            for result in (
                measure_pgqueuer(server_url, python, jobs=jobs, io_s=io_s),
                measure_websurf(websurf_url, jobs=jobs, io_s=io_s),
            ):
                runs.append(result)
                progress(
                    f"round {number}: {result.system} {workload}:"
                    f" {result.from_start_per_s:,.0f}/s from start"
                )
    return [
        PeerRow(workload, _medians(runs, "websurf", workload), _medians(runs, "pgqueuer", workload))
        for workload in WORKLOADS
    ]


def _medians(runs: list[PeerRun], system: str, workload: str) -> tuple[float, float | None]:
    mine = [r for r in runs if r.system == system and r.workload == workload]
    steady = [r.steady_per_s for r in mine if r.steady_per_s is not None]
    return (
        statistics.median(r.from_start_per_s for r in mine),
        statistics.median(steady) if steady else None,
    )


def render(rows: list[PeerRow], *, jobs: int, rounds: int) -> str:
    """The table, in Markdown (as the docs show it)."""

    def rate(value: float | None) -> str:
        return f"{value:,.0f}" if value is not None else "—"

    lines = [
        f"websurf beside pgqueuer ({os.environ.get('WEBSURF_PEERS_PGQUEUER', PGQUEUER_SPEC)}),"
        f" {jobs:,} jobs per run, medians of {rounds} interleaved round(s); jobs/s",
        "",
        "| workload | websurf from start | pgqueuer from start | ratio | websurf steady"
        " | pgqueuer steady | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        start, steady = row.ratio()
        name = "no-op" if row.workload == "noop" else f"awaits {SLEEP_S:g} s"
        lines.append(
            f"| {name} | {rate(row.websurf[0])} | {rate(row.pgqueuer[0])} | {start:.2f}"
            f" | {rate(row.websurf[1])} | {rate(row.pgqueuer[1])}"
            f" | {f'{steady:.2f}' if steady else '—'} |"
        )
    return "\n".join(lines)
