"""Memory: VmRSS of each worker process (``/proc/<pid>/status``, pids from
``websurf.worker``) before any task arrived, and once the database shows every process's
share of long sleeps in flight (``processing``)."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from websurf.worker.bench.harness import (
    RUN_TIMEOUT_BASE_S,
    BenchError,
    insert_sleeps,
    reset,
    scratch_connection,
    start_daemons,
    states,
    wait_for,
    wait_registered,
)
from websurf.worker.bench.names import BENCH_OPERATORS_MODULE, SLEEP_OPERATOR
from websurf.worker.bench.options import MEMORY_SLEEP_S
from websurf.worker.config import CONCURRENCY, TASKS_PER_PROCESS


@dataclass(frozen=True)
class Memory:
    processes: int
    in_flight_per_process: int  # tasks processing in each process when RSS was read
    idle_rss_mb: list[float]  # each worker process before any task arrived
    rss_mb: list[float]  # each worker process with its tasks in flight
    max_mb: float
    mean_mb: float
    idle_mean_mb: float


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
    with scratch_connection(url) as conn:
        reset(conn)
        with start_daemons(url, processes=processes, operators=[BENCH_OPERATORS_MODULE]) as running:
            pids = wait_registered(conn, running, processes)
            idle = [_rss_mb(pid) for pid in pids]
            insert_sleeps(conn, SLEEP_OPERATOR, total, sleep_s)

            def all_in_flight() -> bool:
                _, processing, completed = states(conn, SLEEP_OPERATOR)
                if completed:
                    raise BenchError(
                        f"tasks of {sleep_s:g} s finished before all {total} were in flight"
                    )
                return bool(processing >= total)

            wait_for(
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
