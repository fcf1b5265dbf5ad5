"""The benchmark ``websurf bench`` runs: one plain function per measurement.

Design note
-----------
* Everything happens in a scratch database (``websurf_bench_<random>``) created on the
  target server, migrated, and dropped at the end, also on Ctrl-C
  (:func:`scratch_database`). The measurement functions TRUNCATE the queue and sheet
  tables before they start, so they refuse any database not named that way.
* Throughput goes through the real daemon: ``websurf worker`` runs as a subprocess (the
  URL in ``WEBSURF_DATABASE_URL``, never in argv) on tasks queued before it starts. The
  timings come from the database: the server clock read just before the launch, and
  the tasks' ``completed_at``. "From worker start" is tasks / (last completion -
  launch), so it includes the daemon's boot; "steady" is the rate between the 10th and
  90th percentile completion times. The loop that waits for the end only polls; its
  cadence does not enter the numbers.
* Pickup latency: a producer inserts one task at a time at a steady rate with
  ``t0 = time.time()`` in its payload, taken just before the INSERT; the
  ``bench_latency`` operator (``websurf.worker.bench.operators``, loaded only into the
  benchmark's daemon) records ``time.time() - t0`` at the start of its body. Producer
  and worker share the machine's clock.
* Robots that wait (``async``, ``threaded``): tasks that each sleep 100 ms without using a
  CPU (``bench_sleep`` awaits ``asyncio.sleep``, ``bench_sleep_plain`` calls
  ``time.sleep`` in the worker's thread pool), run like the no-op tasks, by a daemon at
  its default settings (processes, tasks and threads per process).
* Memory: VmRSS of each worker process (``/proc/<pid>/status``, pids from
  ``websurf.worker``) once the database shows every process's share of long sleeps in
  flight (``processing``), and before any task arrived.
* A person's edit under bulk work (``priority``): bulk sleeps queued at priority 5, the
  default daemon busy with them, then edits through ``sheets.edit_cell`` of a column
  that feeds an ``uppercase`` robot column. Each edit's figure is its robot task's
  ``completed_at - created_at``: the edit's transaction to the transaction that wrote
  the robot cell, both on the database clock (``now()`` of each), so neither the
  benchmark's polling nor clock skew enters it.
* Each function returns one run's figures as a dataclass; :func:`run_benchmark` repeats
  them, interleaving the runs, and reports medians with min-max.
* Traded away: the machine described is the one running the benchmark. Against a
  remote server, the network is part of every number and the server's hardware is not
  reported.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import conninfo, sql
from psycopg.rows import dict_row

from websurf.sql import QUERIES
from websurf.sql.migrate import migrate
from websurf.worker.app import sheets
from websurf.worker.config import BATCH_MAX, CONCURRENCY, TASKS_PER_PROCESS
from websurf.worker.core.queue import NewTask, enqueue, enqueue_many

SCRATCH_PREFIX = "websurf_bench_"
# The latency probe's operator lives in its own module, imported only by the benchmark's
# daemon, so importing this module never registers it anywhere else.
BENCH_OPERATORS_MODULE = "websurf.worker.bench.operators"
LATENCY_OPERATOR = "bench_latency"
SLEEP_OPERATOR = "bench_sleep"  # async def, awaits asyncio.sleep(payload sleep_s)
SLEEP_PLAIN_OPERATOR = "bench_sleep_plain"  # a plain function calling time.sleep
SLEEP_S = 0.1  # how long each robot of the async, threaded and priority runs waits
MEMORY_SLEEP_S = 10.0  # long enough for every task to be in flight when memory is read
BULK_PRIORITY = 5  # the bulk work of the priority run (the queue's default)
EDIT_PRIORITY = 8  # what the cell-edit trigger gives a robot column's task
EDIT_INTERVAL_S = 0.05  # the priority run's person edits once per this many seconds
EDIT_OPERATOR = "uppercase"  # the robot column the priority run's edits feed
BUSY_POLL_INTERVAL_S = 0.01  # catching the daemon busy while bulk work is still queued
PROBE_FILE_PREFIX = "websurf-bench-"
CELL_CONTENT = "x"
BENCH_WORKER_ID = "websurf-bench"
POLL_INTERVAL_S = 0.2  # how often the end of a run is checked; not part of any timing
READY_TIMEOUT_S = 60.0  # for a daemon's processes to register
STOP_TIMEOUT_S = 60.0  # for a daemon to exit after SIGTERM
RUN_TIMEOUT_BASE_S = 60.0  # a run may take this long, plus RUN_TIMEOUT_PER_TASK_S per task
RUN_TIMEOUT_PER_TASK_S = 0.01
LATENCY_WARMUP_TASKS = 10
EDIT_ROWS = 1_000  # edits cycle over this many rows of one column
EXPLAIN_REPEATS = 5
STDERR_TAIL_CHARS = 2000
STEADY_FROM, STEADY_TO = 0.1, 0.9  # the completion quantiles between which "steady" is measured
MEASUREMENTS = (
    "noop",
    "cells",
    "enqueue",
    "latency",
    "edits",
    "async",
    "threaded",
    "memory",
    "priority",
    "plan",
)


class BenchError(RuntimeError):
    """A measurement could not be made (daemon died, tasks not finished, wrong database)."""


# -- what a run measured -------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    tasks: int
    processes: int  # per daemon
    daemons: int
    from_start_per_s: float  # tasks / (last completion - daemon launch)
    steady_per_s: float | None  # between the 10th and 90th percentile completions
    elapsed_s: float  # daemon launch to last completion
    workers_seen: int  # distinct worker ids that completed tasks


@dataclass(frozen=True)
class CellTasks:
    throughput: Throughput
    robot_rows: int
    tasks_without_one_audit_row: int  # should be 0
    cells_not_written: int  # should be 0


@dataclass(frozen=True)
class Enqueue:
    bulk_tasks: int
    bulk_per_s: float  # one enqueue_many call, one statement
    single_tasks: int
    single_per_s: float  # one enqueue per autocommit statement


@dataclass(frozen=True)
class Latency:
    tasks: int
    rate_per_s: float  # the producer's target
    produced_per_s: float  # what it achieved
    processes: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class CellEdits:
    edits: int
    via: str  # the edit function used
    p50_ms: float
    p99_ms: float
    max_ms: float
    edit_audit_rows: int  # websurfing_cell_edit_event rows after the run
    tasks_enqueued: int


@dataclass(frozen=True)
class Memory:
    processes: int
    in_flight_per_process: int  # tasks processing in each process when RSS was read
    idle_rss_mb: list[float]  # each worker process before any task arrived
    rss_mb: list[float]  # each worker process with its tasks in flight
    max_mb: float
    mean_mb: float
    idle_mean_mb: float


@dataclass(frozen=True)
class EditPriority:
    bulk_tasks: int  # queued at BULK_PRIORITY before the daemon started
    edits: int
    p50_ms: float  # edit's transaction to the robot cell's transaction (database clock)
    p90_ms: float
    max_ms: float
    priorities: list[int]  # distinct priorities of the edits' robot tasks
    edits_completed: int
    edits_during_bulk: int  # edits made before the last bulk task completed
    robot_cells_answered: int  # robot cells holding the upper-case source


@dataclass(frozen=True)
class ClaimPlan:
    finished_rows: int
    future_rows: int
    due_rows: int
    limit: int
    index_driven: bool  # custom plan (what psycopg's first executions get)
    execution_ms: float  # median of EXPLAIN_REPEATS runs
    generic_index_driven: bool  # generic plan (a prepared statement after a few runs)
    generic_execution_ms: float
    summary: str
    plan: str
    generic_plan: str


# -- the report --------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    cores: int
    ram_gib: float
    system: str
    python: str


@dataclass(frozen=True)
class Server:
    version: str
    server_version: str
    synchronous_commit: str
    fsync: str
    shared_buffers: str
    max_connections: str
    full_page_writes: str


@dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float
    values: list[float]


@dataclass(frozen=True)
class Metric:
    measurement: str
    name: str
    unit: str
    stat: Stat


@dataclass(frozen=True)
class BenchOptions:
    runs: int = 3
    tasks: int = 20_000  # no-op and audited cell tasks per run
    concurrencies: tuple[int, ...] = (1, 2, 4)
    daemons: int = 2  # the multi-daemon run: this many daemons of daemon_processes each
    daemon_processes: int = 2
    cell_processes: int = 2
    bulk_tasks: int = 10_000
    single_tasks: int = 2_000
    latency_rate_per_s: float = 50.0
    latency_duration_s: float = 20.0
    latency_processes: int = 2
    edits: int = 1_000
    async_tasks: int = 10_000
    threaded_tasks: int = 2_000
    memory_in_flight: int = TASKS_PER_PROCESS  # per process
    memory_sleep_s: float = MEMORY_SLEEP_S
    priority_bulk_tasks: int = 4_000
    priority_edits: int = 40
    plan_finished: int = 1_000_000
    plan_future: int = 100_000
    plan_due: int = 1_000
    only: tuple[str, ...] = MEASUREMENTS

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        """Small counts, one run, no claim plan: a check that everything works."""
        settings: dict[str, Any] = {
            "runs": 1,
            "tasks": 2_000,
            "bulk_tasks": 2_000,
            "single_tasks": 300,
            "latency_duration_s": 3.0,
            "edits": 200,
            "async_tasks": 2_000,
            "threaded_tasks": 500,
            "priority_edits": 10,
            "only": tuple(m for m in MEASUREMENTS if m != "plan"),
        }
        settings.update(overrides)
        return cls(**settings)


@dataclass
class Report:
    websurf_version: str
    source_revision: str | None
    started_at: str
    duration_s: float
    machine: Machine
    server: Server
    database: str  # where the server is (host:port/db), never a password
    options: BenchOptions
    # 1-minute load average of the machine at the start and end: other work skews the figures
    load_at_start: float | None = None
    load_at_end: float | None = None
    metrics: list[Metric] = field(default_factory=list)
    claim_plan: ClaimPlan | None = None
    checks: list[str] = field(default_factory=list)  # what was verified
    problems: list[str] = field(default_factory=list)  # checks that failed
    runs: dict[str, list[Any]] = field(default_factory=dict)  # every run's dataclass


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
def _scratch_connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True, application_name="websurf-bench") as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        if row is None or not str(row[0]).startswith(SCRATCH_PREFIX):
            raise BenchError(
                f"the benchmark empties the tables of the database it runs in; it only runs in"
                f" a scratch database named {SCRATCH_PREFIX}* (see scratch_database())"
            )
        yield conn


def _reset(conn: psycopg.Connection[Any]) -> None:
    conn.execute(QUERIES["bench_reset"])


def _scalar(conn: psycopg.Connection[Any], query: str, params: dict[str, Any] | None = None) -> Any:
    row = conn.execute(QUERIES[query], params).fetchone()
    assert row is not None
    return row[0]


# -- the daemon under test ------------------------------------------------------------


def _websurf_command() -> list[str]:
    script = Path(sys.executable).with_name("websurf")
    if script.exists():
        return [str(script)]
    found = shutil.which("websurf")
    if found:
        return [found]
    return [sys.executable, "-c", "from websurf.cli.main import main; main()"]


@dataclass
class _Daemon:
    process: subprocess.Popen[bytes]
    stderr: IO[bytes]

    def tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-STDERR_TAIL_CHARS:].strip()


@contextlib.contextmanager
def _daemons(
    url: str, *, processes: int, count: int = 1, operators: Sequence[str] = ()
) -> Iterator[list[_Daemon]]:
    """Start ``count`` worker daemons of ``processes`` each; SIGTERM them on the way out."""
    env = dict(os.environ, WEBSURF_DATABASE_URL=url)
    argv = [*_websurf_command(), "worker", "--concurrency", str(processes)]
    argv += ["--log-level", "warning", "--log-format", "json"]
    for module in operators:
        argv += ["--operators", module]
    daemons: list[_Daemon] = []
    with contextlib.ExitStack() as files:
        try:
            for _ in range(count):
                stderr = files.enter_context(tempfile.TemporaryFile())
                process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stderr=stderr)
                daemons.append(_Daemon(process, stderr))
            yield daemons
        except BaseException:
            _stop(daemons, check=False)
            raise
        _stop(daemons, check=True)


def _stop(daemons: list[_Daemon], *, check: bool) -> None:
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


def _wait_for(
    done: Callable[[], bool],
    daemons: list[_Daemon],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = POLL_INTERVAL_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        for daemon in daemons:
            code = daemon.process.poll()
            if code is not None:
                raise BenchError(f"a worker daemon exited with code {code}: {daemon.tail()}")
        if time.monotonic() >= deadline:
            raise BenchError(f"gave up after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def _run_daemons(
    conn: psycopg.Connection[Any],
    url: str,
    *,
    tasks: int,
    processes: int,
    daemons: int = 1,
    task_type: str = "noop",
    operators: Sequence[str] = (),
) -> Throughput:
    """Launch the daemon(s) on a queue of ``tasks`` due tasks; time them until all are done."""
    launched: datetime = _scalar(conn, "bench_database_clock")
    with _daemons(url, processes=processes, count=daemons, operators=operators) as running:
        _wait_for(
            lambda: _scalar(conn, "bench_unfinished_count") == 0,
            running,
            timeout_s=RUN_TIMEOUT_BASE_S + tasks * RUN_TIMEOUT_PER_TASK_S,
            what=f"{tasks} tasks to finish",
        )
    row = conn.execute(QUERIES["bench_completion_times"], {"task_type": task_type}).fetchone()
    assert row is not None
    completed, not_completed, _first, p10, p90, last, workers = row
    if completed != tasks or not_completed:
        raise BenchError(f"{completed} of {tasks} tasks completed, {not_completed} did not")
    elapsed = (last - launched).total_seconds()
    window = (p90 - p10).total_seconds()
    return Throughput(
        tasks=tasks,
        processes=processes,
        daemons=daemons,
        from_start_per_s=tasks / elapsed,
        steady_per_s=(STEADY_TO - STEADY_FROM) * tasks / window if window > 0 else None,
        elapsed_s=elapsed,
        workers_seen=workers,
    )


# -- the measurements --------------------------------------------------------------------


def measure_throughput(url: str, *, tasks: int, processes: int, daemons: int = 1) -> Throughput:
    """No-op tasks queued beforehand (one INSERT), run by the real daemon(s)."""
    with _scratch_connection(url) as conn:
        _reset(conn)
        conn.execute(QUERIES["bench_insert_noop_tasks"], {"count": tasks})
        return _run_daemons(conn, url, tasks=tasks, processes=processes, daemons=daemons)


def _sheet(conn: psycopg.Connection[Any], cells: int) -> tuple[str, str]:
    """A user and a one-column spreadsheet of ``cells`` empty cells: (user id, sheet id)."""
    user_id = f"{BENCH_WORKER_ID}-user"
    conn.execute(QUERIES["bench_create_user"], {"id": user_id, "email": "bench@websurf.invalid"})
    sheet_id = _scalar(conn, "bench_create_spreadsheet", {"owner_id": user_id})
    column_id = _scalar(conn, "bench_create_column", {"spreadsheet_id": sheet_id})
    conn.execute(
        QUERIES["bench_create_cells"],
        {"spreadsheet_id": sheet_id, "column_id": column_id, "count": cells},
    )
    return user_id, str(sheet_id)


def measure_cell_tasks(url: str, *, tasks: int, processes: int) -> CellTasks:
    """Noop tasks that each write their cell: robot row + cell write + fenced finish."""
    with _scratch_connection(url) as conn:
        _reset(conn)
        _, sheet_id = _sheet(conn, tasks)
        conn.execute(
            QUERIES["bench_enqueue_cell_tasks"],
            {"spreadsheet_id": sheet_id, "content": CELL_CONTENT},
        )
        throughput = _run_daemons(conn, url, tasks=tasks, processes=processes)
        row = conn.execute(
            QUERIES["bench_check_cell_tasks"],
            {"spreadsheet_id": sheet_id, "content": CELL_CONTENT},
        ).fetchone()
        assert row is not None
        without_one, robot_rows, not_written = row
        return CellTasks(throughput, robot_rows, without_one, not_written)


def measure_enqueue(url: str, *, bulk: int, single: int) -> Enqueue:
    """enqueue_many of ``bulk`` tasks in one call; then ``single`` enqueues, one per statement."""
    with _scratch_connection(url) as conn:
        _reset(conn)
        batch = [NewTask("noop", {"n": n}) for n in range(bulk)]
        started = time.perf_counter()
        ids = enqueue_many(conn, batch)
        bulk_s = time.perf_counter() - started
        started = time.perf_counter()
        for n in range(single):
            enqueue(conn, "noop", {"n": n})
        single_s = time.perf_counter() - started
        queued = _scalar(conn, "bench_count_tasks", {"task_type": "noop"})
        if len(ids) != bulk or queued != bulk + single:
            raise BenchError(f"{queued} tasks queued, expected {bulk + single}")
        return Enqueue(bulk, bulk / bulk_s, single, single / single_s)


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def measure_pickup_latency(
    url: str, *, rate_per_s: float, duration_s: float, processes: int
) -> Latency:
    """Insert-to-handler-start latency with one producer inserting at a steady rate."""
    count = max(1, round(rate_per_s * duration_s))
    with (
        _scratch_connection(url) as conn,
        tempfile.TemporaryDirectory(prefix=PROBE_FILE_PREFIX) as folder,
    ):
        _reset(conn)
        probe = Path(folder) / f"{PROBE_FILE_PREFIX}latency.txt"

        def all_done() -> bool:
            return bool(_scalar(conn, "bench_unfinished_count") == 0)

        with _daemons(url, processes=processes, operators=[BENCH_OPERATORS_MODULE]) as running:
            _wait_registered(conn, running, processes)
            for _ in range(LATENCY_WARMUP_TASKS):
                enqueue(conn, LATENCY_OPERATOR, {"t0": time.time()})
            _wait_for(all_done, running, timeout_s=READY_TIMEOUT_S, what="the warm-up")
            started = time.perf_counter()
            for n in range(count):
                pause = started + n / rate_per_s - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)  # pacing the producer, not waiting for a result
                t0 = time.time()
                enqueue(conn, LATENCY_OPERATOR, {"t0": t0, "file": str(probe)})
            produced_s = time.perf_counter() - started
            _wait_for(
                all_done,
                running,
                timeout_s=RUN_TIMEOUT_BASE_S,
                what="the latency probes to finish",
            )
        text = probe.read_text() if probe.exists() else ""
    samples = sorted(float(line) for line in text.split())
    if len(samples) != count:
        raise BenchError(f"{len(samples)} of {count} latency probes ran")
    return Latency(
        tasks=count,
        rate_per_s=rate_per_s,
        produced_per_s=count / produced_s if produced_s > 0 else float(count),
        processes=processes,
        p50_ms=_percentile(samples, 0.50),
        p90_ms=_percentile(samples, 0.90),
        p99_ms=_percentile(samples, 0.99),
        max_ms=samples[-1],
    )


def measure_cell_edits(url: str, *, edits: int) -> CellEdits:
    """A person's edit committed with websurf.worker.app.sheets.edit_cell: the new content,
    its audit row (trigger) and the task of the robot column it feeds, in one transaction."""
    with _scratch_connection(url) as conn:
        _reset(conn)
        user_id = sheets.ensure_user(conn, "bench@websurf.invalid", "websurf bench")
        rows = min(edits, EDIT_ROWS)
        sheet = sheets.create_spreadsheet(conn, user_id, "websurf bench", columns=2, rows=rows)
        source, robot = sheets.list_columns(conn, sheet.id)
        sheets.set_column_operator(conn, robot.id, "noop", source_column_id=source.id)
        durations = []
        for n in range(edits):
            started = time.perf_counter()
            sheets.edit_cell(conn, sheet.id, source.id, n % rows + 1, f"edit {n}", user_id=user_id)
            durations.append((time.perf_counter() - started) * 1000.0)
        durations.sort()
        return CellEdits(
            edits=edits,
            via="websurf.worker.app.sheets.edit_cell",
            p50_ms=_percentile(durations, 0.50),
            p99_ms=_percentile(durations, 0.99),
            max_ms=durations[-1],
            edit_audit_rows=_scalar(conn, "bench_count_edit_events"),
            tasks_enqueued=_scalar(conn, "bench_count_tasks", {"task_type": "noop"}),
        )


def _insert_sleeps(
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


def _states(conn: psycopg.Connection[Any], task_type: str) -> tuple[int, int, int]:
    """(pending, processing, completed) tasks of ``task_type``."""
    row = conn.execute(QUERIES["bench_task_states"], {"task_type": task_type}).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def measure_sleep_throughput(
    url: str,
    *,
    tasks: int,
    plain: bool = False,
    processes: int = CONCURRENCY,
    sleep_s: float = SLEEP_S,
) -> Throughput:
    """Tasks that each wait ``sleep_s`` without using a CPU, run by a daemon at its default
    settings: ``async def`` ones on the event loop, or (``plain``) plain functions in the
    thread pool."""
    task_type = SLEEP_PLAIN_OPERATOR if plain else SLEEP_OPERATOR
    with _scratch_connection(url) as conn:
        _reset(conn)
        _insert_sleeps(conn, task_type, tasks, sleep_s)
        result = _run_daemons(
            conn,
            url,
            tasks=tasks,
            processes=processes,
            task_type=task_type,
            operators=[BENCH_OPERATORS_MODULE],
        )
    if not plain and tasks <= processes * TASKS_PER_PROCESS:
        # One wave: every task is in flight at once and they all end together, so the
        # rate between the 10th and 90th percentile completions says nothing.
        result = replace(result, steady_per_s=None)
    return result


def _rss_mb(pid: int) -> float:
    """Resident memory of a process on this machine (VmRSS), in MB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise BenchError(f"cannot read the memory of worker process {pid}: {exc}") from None
    found = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    if found is None:
        raise BenchError(f"no VmRSS in /proc/{pid}/status")
    return int(found.group(1)) / 1024.0


def _wait_registered(
    conn: psycopg.Connection[Any], running: list[_Daemon], processes: int
) -> list[int]:
    """Wait for the daemon's worker processes to register; their pids."""
    _wait_for(
        lambda: _scalar(conn, "bench_live_workers") >= processes,
        running,
        timeout_s=READY_TIMEOUT_S,
        what="the worker processes to register",
    )
    return [row[0] for row in conn.execute(QUERIES["bench_worker_pids"])]


def measure_memory(
    url: str,
    *,
    in_flight_per_process: int = TASKS_PER_PROCESS,
    processes: int = CONCURRENCY,
    sleep_s: float = MEMORY_SLEEP_S,
) -> Memory:
    """Resident memory of each worker process, idle and with ``in_flight_per_process``
    async tasks in flight in each (read once the database shows all of them processing)."""
    total = in_flight_per_process * processes
    with _scratch_connection(url) as conn:
        _reset(conn)
        with _daemons(url, processes=processes, operators=[BENCH_OPERATORS_MODULE]) as running:
            pids = _wait_registered(conn, running, processes)
            idle = [_rss_mb(pid) for pid in pids]
            _insert_sleeps(conn, SLEEP_OPERATOR, total, sleep_s)

            def all_in_flight() -> bool:
                _, processing, completed = _states(conn, SLEEP_OPERATOR)
                if completed:
                    raise BenchError(
                        f"tasks of {sleep_s:g} s finished before all {total} were in flight"
                    )
                return bool(processing >= total)

            _wait_for(
                all_in_flight,
                running,
                timeout_s=RUN_TIMEOUT_BASE_S,
                what=f"{total} tasks in flight",
            )
            rss = [_rss_mb(pid) for pid in pids]
        # leaving the block SIGTERMs the daemon: the sleeps finish or are handed back
    return Memory(
        processes=processes,
        in_flight_per_process=in_flight_per_process,
        idle_rss_mb=idle,
        rss_mb=rss,
        max_mb=max(rss),
        mean_mb=statistics.fmean(rss),
        idle_mean_mb=statistics.fmean(idle),
    )


def measure_edit_priority(
    url: str,
    *,
    bulk_tasks: int,
    edits: int,
    interval_s: float = EDIT_INTERVAL_S,
    processes: int = CONCURRENCY,
    bulk_sleep_s: float = SLEEP_S,
) -> EditPriority:
    """A person's edits while the default daemon is busy with bulk work: from each edit's
    commit to its robot answer's commit (see the module's design note)."""
    with _scratch_connection(url) as conn:
        _reset(conn)
        user_id = sheets.ensure_user(conn, "bench@websurf.invalid", "websurf bench")
        sheet = sheets.create_spreadsheet(conn, user_id, "websurf bench", columns=2, rows=edits)
        source, robot = sheets.list_columns(conn, sheet.id)
        sheets.set_column_operator(conn, robot.id, EDIT_OPERATOR, source_column_id=source.id)
        _insert_sleeps(conn, SLEEP_OPERATOR, bulk_tasks, bulk_sleep_s, BULK_PRIORITY)
        with _daemons(url, processes=processes, operators=[BENCH_OPERATORS_MODULE]) as running:

            def busy() -> bool:
                pending, processing, _ = _states(conn, SLEEP_OPERATOR)
                if not pending and not processing:
                    raise BenchError("the bulk work finished before the daemon was seen busy")
                return bool(pending and processing)

            _wait_for(
                busy,
                running,
                timeout_s=READY_TIMEOUT_S,
                what="the daemon to be busy with the bulk work",
                interval_s=BUSY_POLL_INTERVAL_S,
            )
            started = time.perf_counter()
            for n in range(edits):
                pause = started + n * interval_s - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)  # pacing the person, not waiting for a result
                sheets.edit_cell(conn, sheet.id, source.id, n + 1, f"edit {n}", user_id=user_id)
            _wait_for(
                lambda: _scalar(conn, "bench_unfinished_count") == 0,
                running,
                timeout_s=RUN_TIMEOUT_BASE_S + bulk_tasks * RUN_TIMEOUT_PER_TASK_S,
                what="the edits' robot tasks and the bulk work to finish",
            )
        rows = conn.execute(
            QUERIES["bench_edit_task_latencies"],
            {"task_type": EDIT_OPERATOR, "bulk_type": SLEEP_OPERATOR},
        ).fetchall()
        answered = _scalar(
            conn,
            "bench_robot_cells_answered",
            {"source_column_id": source.id, "robot_column_id": robot.id},
        )
    latencies = sorted(float(r[0]) for r in rows if r[2])
    if len(rows) != edits or not latencies:
        raise BenchError(f"{len(rows)} robot tasks for {edits} edits, {len(latencies)} completed")
    return EditPriority(
        bulk_tasks=bulk_tasks,
        edits=edits,
        p50_ms=_percentile(latencies, 0.50),
        p90_ms=_percentile(latencies, 0.90),
        max_ms=latencies[-1],
        priorities=sorted({int(r[1]) for r in rows}),
        edits_completed=len(latencies),
        edits_during_bulk=sum(1 for r in rows if r[3]),
        robot_cells_answered=answered,
    )


_EXECUTION_TIME = re.compile(r"Execution Time: ([\d.]+) ms")
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sbt]")


def _explain_custom(conn: psycopg.Connection[Any], params: dict[str, Any]) -> str:
    """The plan the claim gets as a one-off statement (psycopg's first executions)."""
    with conn.transaction(force_rollback=True):  # EXPLAIN ANALYZE really claims the rows
        rows = conn.execute(
            QUERIES["bench_explain"].format(statement=QUERIES["claim_tasks"]), params
        ).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def _explain_generic(url: str, params: dict[str, Any], repeats: int) -> list[str]:
    """The generic plan of the claim as a prepared statement (psycopg prepares it after a
    few executions, and PostgreSQL may then switch to a generic plan)."""
    claim = QUERIES["claim_tasks"]
    # psycopg numbers named placeholders $1, $2, ... in order of first appearance.
    names = list(dict.fromkeys(_PLACEHOLDER.findall(claim.as_string())))
    claims_nothing = dict(params, task_types=[f"{BENCH_WORKER_ID}-no-such-type"])
    plans = []
    for _ in range(repeats):
        # A fresh session each time: a rollback makes psycopg forget what it prepared.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(claim, claims_nothing, prepare=True)
            row = conn.execute(QUERIES["bench_prepared_statement"]).fetchone()
            assert row is not None
            name, types = row
            # EXECUTE takes no bind parameters: the values go in as quoted literals, cast
            # to the types the server gave the statement's parameters.
            arguments = sql.SQL(", ").join(
                sql.SQL("CAST({} AS {})").format(sql.Literal(params[n]), sql.SQL(t))
                for n, t in zip(names, types, strict=True)
            )
            explain = QUERIES["bench_explain_execute"].format(
                name=sql.Identifier(name), arguments=arguments
            )
            with conn.transaction(force_rollback=True):
                conn.execute(QUERIES["bench_force_generic_plan"])
                rows = conn.execute(explain).fetchall()
            plans.append("\n".join(str(r[0]) for r in rows))
    return plans


def _execution_ms(plan: str) -> float:
    found = _EXECUTION_TIME.search(plan)
    return float(found.group(1)) if found else float("nan")


def _index_driven(plan: str) -> bool:
    """The claim reads the queue table through an index, never a sequential scan of it."""
    return "Seq Scan on websurfing_task_queue" not in plan and bool(
        re.search(r"Index (Only )?Scan (Backward )?using \w+ on websurfing_task_queue", plan)
    )


def _scan_summary(plan: str) -> str:
    found = re.search(
        r"(Index (?:Only )?Scan(?: Backward)? using \w+|Seq Scan|Bitmap Heap Scan)"
        r" on websurfing_task_queue",
        plan,
    )
    return found.group(1) if found else "no scan of websurfing_task_queue found"


def measure_claim_plan(
    url: str, *, finished: int, future: int, due: int, limit: int = BATCH_MAX
) -> ClaimPlan:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim query in a big, mostly finished queue."""
    with _scratch_connection(url) as conn:
        _reset(conn)
        conn.execute(QUERIES["bench_seed_finished_tasks"], {"count": finished})
        conn.execute(QUERIES["bench_seed_future_tasks"], {"count": future})
        conn.execute(QUERIES["bench_seed_due_tasks"], {"count": due})
        conn.execute(QUERIES["bench_analyze_queue"])
        params = {"task_types": ["noop"], "limit": limit, "worker_id": BENCH_WORKER_ID}
        custom = [_explain_custom(conn, params) for _ in range(EXPLAIN_REPEATS + 1)]
    generic = _explain_generic(url, params, EXPLAIN_REPEATS + 1)
    # The first run warms the cache; the last one's plan text is reported.
    plan, ms = custom[-1], statistics.median(_execution_ms(p) for p in custom[1:])
    generic_plan = generic[-1]
    generic_ms = statistics.median(_execution_ms(p) for p in generic[1:])
    index_driven, generic_index = _index_driven(plan), _index_driven(generic_plan)
    summary = (
        f"{'index-driven' if index_driven else 'NOT index-driven'} ({_scan_summary(plan)}),"
        f" {ms:.2f} ms to claim {min(limit, due)} of {due:,} due among {finished:,} finished"
        f" + {future:,} future-dated rows; generic plan:"
        f" {'index-driven' if generic_index else 'NOT index-driven'}"
        f" ({_scan_summary(generic_plan)}), {generic_ms:.2f} ms"
    )
    return ClaimPlan(
        finished,
        future,
        due,
        limit,
        index_driven,
        ms,
        generic_index,
        generic_ms,
        summary,
        plan,
        generic_plan,
    )


# -- the whole benchmark --------------------------------------------------------------------


def machine_info() -> Machine:
    """The machine running the benchmark: CPU model, cores, RAM."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram = 0.0
    return Machine(
        cpu_model=cpu,
        cores=os.cpu_count() or 0,
        ram_gib=round(ram, 1),
        system=platform.platform(terse=True),
        python=platform.python_version(),
    )


def server_info(url: str) -> Server:
    """The server's version and the settings that decide its speed."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(QUERIES["bench_server_settings"]).fetchone()
    assert row is not None
    return Server(**{name: str(value) for name, value in row.items()})


def _source_revision() -> str | None:
    """``git describe`` of the source tree websurf runs from, when it is a checkout."""
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _stat(values: list[float]) -> Stat:
    return Stat(statistics.median(values), min(values), max(values), values)


class _Collector:
    """Gathers each run's figures under (measurement, metric, unit), in first-seen order."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], list[float]] = {}

    def add(self, measurement: str, name: str, unit: str, value: float | None) -> None:
        values = self.values.setdefault((measurement, name, unit), [])
        if value is not None:
            values.append(value)

    def metrics(self) -> list[Metric]:
        return [Metric(m, n, u, _stat(v)) for (m, n, u), v in self.values.items() if v]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 'es' if word.endswith('s') else 's'}"


def run_benchmark(
    server_url: str,
    options: BenchOptions,
    *,
    database: str = "",
    progress: Callable[[str], None] = lambda line: None,
) -> Report:
    """Every selected measurement, ``options.runs`` times, in a scratch database."""
    unknown = set(options.only) - set(MEASUREMENTS)
    if unknown:
        raise BenchError(f"unknown measurement(s) {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    report = Report(
        websurf_version=version("websurf"),
        source_revision=_source_revision(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=0.0,
        machine=machine_info(),
        server=server_info(server_url),
        database=database,
        options=options,
        load_at_start=_load_average(),
    )
    collect = _Collector()
    selected = [m for m in MEASUREMENTS if m in options.only]

    def keep(key: str, run: Any) -> None:
        report.runs.setdefault(key, []).append(run)

    def throughput(label: str, key: str, result: Throughput) -> None:
        keep(key, result)
        collect.add(label, "from worker start", "tasks/s", result.from_start_per_s)
        collect.add(label, "steady", "tasks/s", result.steady_per_s)
        progress(
            f"{label}: {result.from_start_per_s:,.0f}/s from worker start,"
            f" {result.steady_per_s or 0:,.0f}/s steady"
        )

    with scratch_database(server_url) as url:
        for run in range(1, options.runs + 1):
            progress(f"run {run} of {options.runs}")
            if "noop" in selected:
                for processes in options.concurrencies:
                    label = f"no-op tasks, {_plural(processes, 'process')}"
                    result = measure_throughput(url, tasks=options.tasks, processes=processes)
                    throughput(label, f"noop_c{processes}", result)
                if options.daemons > 1:
                    label = (
                        f"no-op tasks, {options.daemons} daemons"
                        f" x {_plural(options.daemon_processes, 'process')}"
                    )
                    result = measure_throughput(
                        url,
                        tasks=options.tasks,
                        processes=options.daemon_processes,
                        daemons=options.daemons,
                    )
                    throughput(label, "noop_daemons", result)
            if "cells" in selected:
                label = f"audited cell tasks, {_plural(options.cell_processes, 'process')}"
                cells = measure_cell_tasks(
                    url, tasks=options.tasks, processes=options.cell_processes
                )
                throughput(label, "cells", cells.throughput)
                report.runs["cells"][-1] = cells
                if cells.tasks_without_one_audit_row or cells.cells_not_written:
                    report.problems.append(
                        f"run {run}, audited cell tasks: {cells.tasks_without_one_audit_row}"
                        f" tasks without exactly one success robot row,"
                        f" {cells.cells_not_written} cells not written"
                    )
            if "enqueue" in selected:
                enq = measure_enqueue(url, bulk=options.bulk_tasks, single=options.single_tasks)
                keep("enqueue", enq)
                collect.add(
                    "enqueue", f"bulk ({enq.bulk_tasks:,} in one call)", "tasks/s", enq.bulk_per_s
                )
                collect.add("enqueue", "single (one per statement)", "tasks/s", enq.single_per_s)
                progress(f"enqueue: bulk {enq.bulk_per_s:,.0f}/s, single {enq.single_per_s:,.0f}/s")
            if "latency" in selected:
                lat = measure_pickup_latency(
                    url,
                    rate_per_s=options.latency_rate_per_s,
                    duration_s=options.latency_duration_s,
                    processes=options.latency_processes,
                )
                keep("latency", lat)
                label = (
                    f"pickup latency at {options.latency_rate_per_s:g} tasks/s,"
                    f" {_plural(options.latency_processes, 'process')}"
                )
                for name in ("p50", "p90", "p99", "max"):
                    collect.add(label, name, "ms", getattr(lat, f"{name}_ms"))
                progress(f"pickup latency: p50 {lat.p50_ms:.2f} ms, p99 {lat.p99_ms:.2f} ms")
            if "edits" in selected:
                edits = measure_cell_edits(url, edits=options.edits)
                keep("edits", edits)
                label = "cell-edit commit (edit + audit + enqueue)"
                for name in ("p50", "p99", "max"):
                    collect.add(label, name, "ms", getattr(edits, f"{name}_ms"))
                progress(f"cell edits: p50 {edits.p50_ms:.2f} ms, p99 {edits.p99_ms:.2f} ms")
            for key, plain, count in (
                ("async", False, options.async_tasks),
                ("threaded", True, options.threaded_tasks),
            ):
                if key in selected:
                    kind = "plain functions sleeping" if plain else "async tasks awaiting"
                    label = f"{kind} {SLEEP_S * 1000:g} ms, worker defaults"
                    result = measure_sleep_throughput(url, tasks=count, plain=plain)
                    throughput(label, key, result)
            if "memory" in selected:
                mem = measure_memory(
                    url,
                    in_flight_per_process=options.memory_in_flight,
                    sleep_s=options.memory_sleep_s,
                )
                keep("memory", mem)
                label = f"worker process RSS, {mem.in_flight_per_process:,} tasks in flight each"
                collect.add(label, f"max of {_plural(mem.processes, 'process')}", "MB", mem.max_mb)
                collect.add(label, "mean", "MB", mem.mean_mb)
                collect.add(label, "mean before any task", "MB", mem.idle_mean_mb)
                progress(f"memory: max {mem.max_mb:.1f} MB, mean {mem.mean_mb:.1f} MB per process")
            if "priority" in selected:
                prio = measure_edit_priority(
                    url, bulk_tasks=options.priority_bulk_tasks, edits=options.priority_edits
                )
                keep("priority", prio)
                label = (
                    f"edit -> robot answer, {prio.bulk_tasks:,} bulk tasks of"
                    f" {SLEEP_S * 1000:g} ms queued"
                )
                for name in ("p50", "p90", "max"):
                    collect.add(label, name, "ms", getattr(prio, f"{name}_ms"))
                progress(f"edit under bulk work: p50 {prio.p50_ms:.1f}, max {prio.max_ms:.1f} ms")
                problem = _priority_problem(prio)
                if problem:
                    report.problems.append(f"run {run}, edit under bulk work: {problem}")
        if "plan" in selected:
            progress(
                f"claim plan: seeding {options.plan_finished:,} finished,"
                f" {options.plan_future:,} future and {options.plan_due:,} due tasks"
            )
            report.claim_plan = measure_claim_plan(
                url,
                finished=options.plan_finished,
                future=options.plan_future,
                due=options.plan_due,
            )
            progress(f"claim plan: {report.claim_plan.summary}")
    report.metrics = collect.metrics()
    report.checks = _checks(report)
    report.duration_s = time.perf_counter() - started
    report.load_at_end = _load_average()
    return report


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _priority_problem(prio: EditPriority) -> str | None:
    """What is wrong with a priority run's robot tasks, if anything."""
    if prio.priorities != [EDIT_PRIORITY]:
        return f"the edits' robot tasks had priorities {prio.priorities}, not {EDIT_PRIORITY}"
    if prio.edits_completed != prio.edits or prio.robot_cells_answered != prio.edits:
        return (
            f"{prio.edits_completed} of {prio.edits} robot tasks completed,"
            f" {prio.robot_cells_answered} robot cells hold their answer"
        )
    return None


def _checks(report: Report) -> list[str]:
    checks = []
    for prefix, what in (("noop", "no-op"), ("async", "async sleep"), ("threaded", "plain sleep")):
        runs = sum(len(v) for k, v in report.runs.items() if k.startswith(prefix))
        if runs:
            checks.append(f"every queued task completed in each of {runs} {what} runs")
    cells = report.runs.get("cells", [])
    if cells and not report.problems:
        checks.append(
            "every audited cell task left exactly one success robot row and wrote its cell"
        )
    for edits in report.runs.get("edits", [])[:1]:
        checks.append(
            f"cell edits via {edits.via}: {edits.edit_audit_rows} edit audit rows and"
            f" {edits.tasks_enqueued} tasks enqueued for {edits.edits} edits"
        )
    for mem in report.runs.get("memory", [])[:1]:
        checks.append(
            f"memory read with {mem.in_flight_per_process:,} tasks processing in each of"
            f" {_plural(mem.processes, 'worker process')} (database count)"
        )
    priority = report.runs.get("priority", [])
    if priority and not any(_priority_problem(p) for p in priority):
        checks.append(
            f"edits under bulk work: every edit's robot task had priority {EDIT_PRIORITY}"
            f" (bulk {BULK_PRIORITY}), completed and wrote the upper-case answer; edits made"
            f" before the last bulk task completed: "
            + ", ".join(f"{p.edits_during_bulk} of {p.edits}" for p in priority)
        )
    return checks
