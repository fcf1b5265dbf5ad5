"""Limits across the cluster, measured: a cap and a rate over several daemons.

Both runs use ``bench_sleep`` tasks queued beforehand, a limit set as ``websurf limits
set`` would, and the real daemons. The figures come from the tasks' rows (claim and
finish times on the database clock): a task is running from its claim to its finish,
which contains its handler's run, so the peak counted from the rows bounds the
handlers' own.

* Cap: ``cap`` at once with ``sleep_s`` handlers. Each handler also writes when it
  enters and leaves to a probe file (its own clock, ``time.time()``, shared by the
  daemons of one host), so the peak is counted twice: from the rows and from the
  handlers. Utilisation is the handlers' total sleep over cap x the time from the first
  claim to the last finish (1.0: the cap was full all along).
* Rate: ``rate`` per ``period_s`` of no-op sleeps, with at most ``burst`` of them in
  ``burst / rate`` of the period when a burst is given. Either ``tasks`` queued and all
  waited for, or (``duration_s``) more queued than the duration allows, so work always
  waits, and the daemons stopped once a claim falls past the duration: the figures are
  the starts inside [first claim, first claim + duration). The most claims in any window
  of the period (and of the burst's window), and the share of the starts the limit
  allows in that span that were used (1.0: every window took its full allowance).

What "never more than the limit in any window" means here, exactly: for every instant
t, the claims in [t, t + period_s) are at most ``rate``, and those in [t, t + burst /
rate x period_s) at most ``burst`` (claim times on the database clock, which the claim
reads after its lock, so they grow in claim order). A burst does not add to the rate:
it spreads the rate's starts (60 a minute with a burst of 5: 5 every 5 s at most, so
never 60 at once). From the first claim, the most a limit allows in [0, d) is ``rate``
per started period, and with a burst also ``burst`` per started burst window, whichever
is fewer (:func:`allowed_starts`).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from websurf.sql import QUERIES
from websurf.worker.bench.harness import (
    RUN_TIMEOUT_BASE_S,
    insert_sleeps,
    reset,
    scratch_connection,
    start_daemons,
    wait_all_finished,
    wait_for,
)
from websurf.worker.bench.names import (
    BENCH_OPERATORS_MODULE,
    PROBE_FILE_PREFIX,
    SLEEP_OPERATOR,
)
from websurf.worker.core import limits
from websurf.worker.core.queue import NewTask, enqueue_many
from websurf.worker.core.registry import Limit

WINDOW_SLACK_S = 1e-6  # claim times come as float epochs: a window's edge within a microsecond


@dataclass(frozen=True)
class CapRun:
    cap: int
    sleep_s: float
    tasks: int
    daemons: int
    processes: int  # per daemon
    peak_running: int  # the most tasks claimed and not yet finished at any moment
    handler_peak: int  # the most handlers between their enter and exit (their own clock)
    utilisation: float  # handlers' sleep / (cap x first claim to last finish)
    elapsed_s: float


@dataclass(frozen=True)
class RateRun:
    rate: int
    period_s: float
    burst: int | None
    tasks: int  # queued
    daemons: int
    processes: int
    duration_s: float | None  # the span counted (None: from the first claim to the last)
    started: int  # claims in the span counted
    allowed: int  # what the limit allows in that span
    most_in_window: int  # the most claims in any window of period_s
    most_in_burst_window: int | None  # ... and in any window of burst / rate x period_s
    used_share: float  # started / allowed


def _intervals(url: str, tasks: int, daemons: int, processes: int) -> list[tuple[float, float]]:
    with scratch_connection(url) as conn:
        with start_daemons(
            url, processes=processes, count=daemons, operators=[BENCH_OPERATORS_MODULE]
        ) as running:
            wait_all_finished(
                conn, running, timeout_s=RUN_TIMEOUT_BASE_S * 4, what=f"{tasks} limited tasks"
            )
        return _completed(conn)


def _completed(conn: psycopg.Connection[Any]) -> list[tuple[float, float]]:
    """(claimed, finished) of the completed bench_sleep tasks, by claim time."""
    rows = conn.execute(QUERIES["bench_run_intervals"], {"task_type": SLEEP_OPERATOR})
    return [(start, end) for start, end in rows]


def _starts_over(url: str, duration_s: float, daemons: int, processes: int) -> list[float]:
    """Claim times of a run kept going until a claim falls ``duration_s`` past the first."""

    def past_the_end() -> bool:
        starts = [start for start, _ in _completed(conn)]
        return bool(starts) and starts[-1] >= starts[0] + duration_s

    with scratch_connection(url) as conn:
        with start_daemons(
            url, processes=processes, count=daemons, operators=[BENCH_OPERATORS_MODULE]
        ) as running:
            wait_for(
                past_the_end,
                running,
                timeout_s=duration_s + RUN_TIMEOUT_BASE_S,
                what=f"claims {duration_s:g}s after the first",
            )
        return [start for start, _ in _completed(conn)]


def _handler_peak(probe: Path) -> int:
    """The most handlers inside at once, from their ``enter``/``exit`` lines."""
    events = []
    for line in probe.read_text().splitlines():
        what, _, at = line.partition(" ")
        events.append((float(at), 1 if what == "enter" else -1))
    return _running_peak(events)


def _peak(intervals: list[tuple[float, float]]) -> int:
    return _running_peak([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])


def _running_peak(changes: list[tuple[float, int]]) -> int:
    events = sorted(changes)
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
        while t - times[first] >= window_s - WINDOW_SLACK_S:
            first += 1
        most = max(most, last - first + 1)
    return most


def burst_window_s(rate: int, period_s: float, burst: int) -> float:
    """The window a burst holds (websurf.claim_limited's burst_window)."""
    return period_s * burst / rate


def allowed_starts(rate: int, period_s: float, burst: int | None, span_s: float) -> int:
    """The most starts the limit allows in [first claim, first claim + span_s): ``rate``
    per started period and ``burst`` per started burst window (taken greedily, each
    window opens with its full allowance), whichever is fewer."""
    most = rate * math.ceil(span_s / period_s - WINDOW_SLACK_S)
    if burst is not None:
        bursts = span_s / burst_window_s(rate, period_s, burst)
        most = min(most, burst * math.ceil(bursts - WINDOW_SLACK_S))
    return most


def measure_cap(
    url: str, *, cap: int, sleep_s: float, tasks: int, daemons: int, processes: int
) -> CapRun:
    with tempfile.TemporaryDirectory(prefix=PROBE_FILE_PREFIX) as folder:
        probe = Path(folder) / f"{PROBE_FILE_PREFIX}cap.txt"
        with scratch_connection(url) as conn:
            reset(conn)
            limits.set_limit(conn, SLEEP_OPERATOR, Limit(max_running=cap))
            payload = {"sleep_s": sleep_s, "file": str(probe)}
            enqueue_many(
                conn,
                [NewTask(SLEEP_OPERATOR, dict(payload, n=n)) for n in range(tasks)],
                allow_unknown_type=True,  # the benchmark's daemons bring it
            )
        intervals = _intervals(url, tasks, daemons, processes)
        handler_peak = _handler_peak(probe)
    elapsed = max(e for _, e in intervals) - min(s for s, _ in intervals)
    return CapRun(
        cap=cap,
        sleep_s=sleep_s,
        tasks=tasks,
        daemons=daemons,
        processes=processes,
        peak_running=_peak(intervals),
        handler_peak=handler_peak,
        utilisation=tasks * sleep_s / (cap * elapsed),
        elapsed_s=elapsed,
    )


def measure_rate(
    url: str,
    *,
    rate: int,
    period_s: float,
    tasks: int,
    daemons: int,
    processes: int,
    burst: int | None = None,
    duration_s: float | None = None,
) -> RateRun:
    """The rate run: ``tasks`` waited for, or (``duration_s``) work waiting all along."""
    if duration_s is not None:
        # more than the duration allows, and a period more: work waits to the end
        tasks = max(tasks, allowed_starts(rate, period_s, burst, duration_s) + rate)
    with scratch_connection(url) as conn:
        reset(conn)
        limits.set_limit(conn, SLEEP_OPERATOR, Limit(rate=rate, per_s=period_s, burst=burst))
        insert_sleeps(conn, SLEEP_OPERATOR, tasks, 0.0)
    if duration_s is None:
        starts = [s for s, _ in _intervals(url, tasks, daemons, processes)]
        span = starts
        # from the first claim to the last, both included
        span_s = max(starts) - min(starts) + 2 * WINDOW_SLACK_S * period_s
    else:
        starts = _starts_over(url, duration_s, daemons, processes)
        span = [t for t in starts if t < starts[0] + duration_s]
        span_s = duration_s
    allowed = allowed_starts(rate, period_s, burst, span_s)
    return RateRun(
        rate=rate,
        period_s=period_s,
        burst=burst,
        tasks=tasks,
        daemons=daemons,
        processes=processes,
        duration_s=duration_s,
        started=len(span),
        allowed=allowed,
        most_in_window=most_in_window(starts, period_s),
        most_in_burst_window=(
            None if burst is None else most_in_window(starts, burst_window_s(rate, period_s, burst))
        ),
        used_share=len(span) / allowed,
    )


def limit_problem(run: CapRun | RateRun) -> str | None:
    """What a limits run broke, if anything."""
    if isinstance(run, CapRun) and max(run.peak_running, run.handler_peak) > run.cap:
        return (
            f"limits: {run.peak_running} claimed ({run.handler_peak} handlers) running at once"
            f" under a cap of {run.cap}"
        )
    if isinstance(run, RateRun) and run.most_in_window > run.rate:
        return (
            f"limits: {run.most_in_window} started in {run.period_s:g}s under a rate of {run.rate}"
        )
    if (
        isinstance(run, RateRun)
        and run.burst is not None
        and run.most_in_burst_window is not None
        and run.most_in_burst_window > run.burst
    ):
        window = burst_window_s(run.rate, run.period_s, run.burst)
        return (
            f"limits: {run.most_in_burst_window} started in {window:g}s"
            f" under a burst of {run.burst}"
        )
    return None
