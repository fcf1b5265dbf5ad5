"""Cancel latency: from ``websurf.cancel_task`` to the running handler's CancelledError.

A default-sized daemon runs ``bench_hang`` tasks (they await what never comes) one at a
time: the benchmark enqueues one, waits until a worker process holds it, reads the clock
and cancels it through ``websurf.cancel_task`` (what ``websurf tasks cancel`` and the web
app call); the handler appends the time of its ``CancelledError`` to a probe file. Both
clocks are the machine's. The figure is the notification's way to every listening
process and the holder's reaction; recording the cancel comes after it, and is checked
(every task cancelled, no attempt spent) rather than timed.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from websurf.sql import QUERIES
from websurf.worker.bench.harness import (
    READY_TIMEOUT_S,
    RUN_TIMEOUT_BASE_S,
    BenchError,
    percentile,
    reset,
    scalar,
    scratch_connection,
    start_daemons,
    wait_all_finished,
    wait_for,
    wait_registered,
)
from websurf.worker.bench.names import BENCH_OPERATORS_MODULE, HANG_OPERATOR, PROBE_FILE_PREFIX
from websurf.worker.config import CONCURRENCY
from websurf.worker.core import admin
from websurf.worker.core.queue import enqueue

HOLD_POLL_INTERVAL_S = 0.005  # how often the benchmark looks whether a task is running


@dataclass(frozen=True)
class CancelLatency:
    tasks: int
    processes: int
    p50_ms: float
    max_ms: float
    cancelled_unspent: int  # tasks that ended cancelled with no attempt spent


def measure_cancel_latency(url: str, *, tasks: int, processes: int = CONCURRENCY) -> CancelLatency:
    """Cancel ``tasks`` running handlers one by one; the latency of each (see the module)."""
    asked: dict[str, float] = {}
    with (
        scratch_connection(url) as conn,
        tempfile.TemporaryDirectory(prefix=PROBE_FILE_PREFIX) as folder,
    ):
        reset(conn)
        probe = Path(folder) / f"{PROBE_FILE_PREFIX}cancel.txt"
        with start_daemons(url, processes=processes, operators=[BENCH_OPERATORS_MODULE]) as running:
            wait_registered(conn, running, processes)
            for _ in range(tasks):
                task_id = enqueue(conn, HANG_OPERATOR, {"file": str(probe)})

                def held(task_id: uuid.UUID = task_id) -> bool:
                    row = conn.execute(QUERIES["get_task"], {"id": task_id}).fetchone()
                    return row is not None and row[3] == "processing"

                wait_for(
                    held,
                    running,
                    timeout_s=READY_TIMEOUT_S,
                    what="a worker process to run the task to cancel",
                    interval_s=HOLD_POLL_INTERVAL_S,
                )
                asked[str(task_id)] = time.time()
                admin.cancel_task(conn, task_id)
                wait_all_finished(
                    conn, running, timeout_s=RUN_TIMEOUT_BASE_S, what="the cancel to be recorded"
                )
        text = probe.read_text() if probe.exists() else ""
        unspent = scalar(conn, "bench_cancelled_unspent", {"task_type": HANG_OPERATOR})
    stopped = dict(line.split() for line in text.splitlines() if line.strip())
    if set(stopped) != set(asked):
        raise BenchError(f"{len(stopped)} of {len(asked)} cancelled handlers saw their cancel")
    samples = sorted((float(stopped[t]) - asked[t]) * 1000.0 for t in asked)
    return CancelLatency(
        tasks=tasks,
        processes=processes,
        p50_ms=percentile(samples, 0.50),
        max_ms=samples[-1],
        cancelled_unspent=unspent,
    )


def cancel_problem(result: CancelLatency) -> str | None:
    """What is wrong with a cancel run's tasks, if anything."""
    if result.cancelled_unspent != result.tasks:
        return (
            f"{result.cancelled_unspent} of {result.tasks} cancelled tasks ended cancelled"
            " with no attempt spent"
        )
    return None
