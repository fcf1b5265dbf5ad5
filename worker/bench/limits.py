"""Limits across the cluster, measured: a cap and a rate over several daemons.

Both runs use ``bench_sleep`` tasks queued beforehand, a limit set as ``websurf limits
set`` would, and the real daemons. The figures come from the tasks' rows (claim and
finish times on the database clock): a task is running from its claim to its finish,
which contains its handler's run, so the peak counted from the rows bounds the
handlers' own.

* Cap: ``cap`` at once with ``sleep_s`` handlers. Utilisation is the handlers' total
  sleep over cap x the time from the first claim to the last finish (1.0: the cap was
  full all along).
* Rate: ``rate`` per ``period_s`` of no-op sleeps. The most claims in any window of
  the period, and the share of the allowed starts that were used between the first and
  the last claim (1.0: every window took its full allowance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from websurf.sql import QUERIES
from websurf.worker.bench.harness import (
    RUN_TIMEOUT_BASE_S,
    insert_sleeps,
    reset,
    scratch_connection,
    start_daemons,
    wait_all_finished,
)
from websurf.worker.bench.names import BENCH_OPERATORS_MODULE, SLEEP_OPERATOR
from websurf.worker.core import limits
from websurf.worker.core.registry import Limit


@dataclass(frozen=True)
class CapRun:
    cap: int
    sleep_s: float
    tasks: int
    daemons: int
    processes: int  # per daemon
    peak_running: int  # the most tasks claimed and not yet finished at any moment
    utilisation: float  # handlers' sleep / (cap x first claim to last finish)
    elapsed_s: float


@dataclass(frozen=True)
class RateRun:
    rate: int
    period_s: float
    tasks: int
    daemons: int
    processes: int
    most_in_window: int  # the most claims in any window of period_s
    used_share: float  # claims / what the rate allowed from the first claim to the last


def _intervals(url: str, tasks: int, daemons: int, processes: int) -> list[tuple[float, float]]:
    with scratch_connection(url) as conn:
        with start_daemons(
            url, processes=processes, count=daemons, operators=[BENCH_OPERATORS_MODULE]
        ) as running:
            wait_all_finished(
                conn, running, timeout_s=RUN_TIMEOUT_BASE_S * 4, what=f"{tasks} limited tasks"
            )
        rows = conn.execute(QUERIES["bench_run_intervals"], {"task_type": SLEEP_OPERATOR})
        return [(start, end) for start, end in rows]


def _peak(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = running = 0
    for _, change in events:  # a finish at the same instant as a claim comes first
        running += change
        peak = max(peak, running)
    return peak


def most_in_window(times: list[float], window_s: float) -> int:
    """The most of ``times`` in any half-open window [t, t + window_s)."""
    times = sorted(times)
    most = first = 0
    for last, t in enumerate(times):
        while t - times[first] >= window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def measure_cap(
    url: str, *, cap: int, sleep_s: float, tasks: int, daemons: int, processes: int
) -> CapRun:
    with scratch_connection(url) as conn:
        reset(conn)
        limits.set_limit(conn, SLEEP_OPERATOR, Limit(max_running=cap))
        insert_sleeps(conn, SLEEP_OPERATOR, tasks, sleep_s)
    intervals = _intervals(url, tasks, daemons, processes)
    elapsed = max(e for _, e in intervals) - min(s for s, _ in intervals)
    return CapRun(
        cap=cap,
        sleep_s=sleep_s,
        tasks=tasks,
        daemons=daemons,
        processes=processes,
        peak_running=_peak(intervals),
        utilisation=tasks * sleep_s / (cap * elapsed),
        elapsed_s=elapsed,
    )


def measure_rate(
    url: str, *, rate: int, period_s: float, tasks: int, daemons: int, processes: int
) -> RateRun:
    with scratch_connection(url) as conn:
        reset(conn)
        limits.set_limit(conn, SLEEP_OPERATOR, Limit(rate=rate, per_s=period_s))
        insert_sleeps(conn, SLEEP_OPERATOR, tasks, 0.0)
    starts = [s for s, _ in _intervals(url, tasks, daemons, processes)]
    # From the first claim, window k (k = 0, 1, ...) may start `rate` tasks; the last
    # claim fell in window floor(span / period).
    windows = math.floor((max(starts) - min(starts)) / period_s) + 1
    return RateRun(
        rate=rate,
        period_s=period_s,
        tasks=tasks,
        daemons=daemons,
        processes=processes,
        most_in_window=most_in_window(starts, period_s),
        used_share=tasks / (rate * windows),
    )


def limit_problem(run: CapRun | RateRun) -> str | None:
    """What a limits run broke, if anything."""
    if isinstance(run, CapRun) and run.peak_running > run.cap:
        return f"limits: {run.peak_running} running at once under a cap of {run.cap}"
    if isinstance(run, RateRun) and run.most_in_window > run.rate:
        return (
            f"limits: {run.most_in_window} started in {run.period_s:g}s under a rate of {run.rate}"
        )
    return None
