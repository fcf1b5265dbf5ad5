"""The table of measurements ``websurf bench`` walks: for each, how to run it once, where
its results are kept (``Report.runs[key]``, one entry per run: the measurement's own
dataclass), and how one result reads in the report and on stderr. The report's rows are
derived from the kept results (see ``runner``), so what is kept is what is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from websurf.worker.bench.cancel import CancelLatency, cancel_problem, measure_cancel_latency
from websurf.worker.bench.fairness import (
    FairLatency,
    KeyThroughput,
    measure_fair_latency,
    measure_key_throughput,
)
from websurf.worker.bench.harness import BULK_PRIORITY
from websurf.worker.bench.latency import (
    EDIT_PRIORITY,
    EditPriority,
    Latency,
    measure_edit_priority,
    measure_pickup_latency,
    priority_problem,
)
from websurf.worker.bench.limits import (
    CapRun,
    RateRun,
    limit_problem,
    measure_cap,
    measure_rate,
)
from websurf.worker.bench.memory import Memory, measure_memory
from websurf.worker.bench.options import SLEEP_S, BenchOptions
from websurf.worker.bench.producer import CellEdits, measure_cell_edits, measure_enqueue
from websurf.worker.bench.report import plural
from websurf.worker.bench.throughput import (
    CellTasks,
    Throughput,
    cell_tasks_problem,
    measure_cell_tasks,
    measure_sleep_throughput,
    measure_throughput,
)

R = TypeVar("R")
Figure = tuple[str, str, float | None]  # metric name, unit, value (None: not measured this run)


def _no_problem(result: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Measurement(Generic[R]):
    """One measurement: how to run it once, and how one run's result reads in the report."""

    name: str  # what --only selects
    key: str  # where each run's result is kept in Report.runs
    run: Callable[[str], R]  # the scratch database's URL -> one run's result
    label: Callable[[R], str]  # the report's measurement column
    figures: Callable[[R], Sequence[Figure]]  # the report's rows of one result
    progress: Callable[[str, R], str]  # the line on stderr after each run, given the label
    problem: Callable[[R], str | None] = _no_problem  # a failed check of one run
    # "every queued task completed in each of N <completed> runs", when set
    completed: str = ""
    # what the runs verified, said when none of them had a problem
    check: Callable[[list[R]], str] | None = None


# -- how each measurement reads --------------------------------------------------------


def _rates(result: Throughput) -> list[Figure]:
    return [
        ("from worker start", "tasks/s", result.from_start_per_s),
        ("steady", "tasks/s", result.steady_per_s),
    ]


def _rates_line(label: str, rates: Throughput) -> str:
    return (
        f"{label}: {rates.from_start_per_s:,.0f}/s from worker start,"
        f" {rates.steady_per_s or 0:,.0f}/s steady"
    )


def _noop_label(result: Throughput) -> str:
    if result.daemons > 1:
        return f"no-op tasks, {result.daemons} daemons x {plural(result.processes, 'process')}"
    return f"no-op tasks, {plural(result.processes, 'process')}"


def _cells_label(cells: CellTasks) -> str:
    return f"audited cell tasks, {plural(cells.throughput.processes, 'process')}"


def _cells_problem(cells: CellTasks) -> str | None:
    problem = cell_tasks_problem(cells)
    return f"audited cell tasks: {problem}" if problem else None


def _cells_check(runs: list[CellTasks]) -> str:
    return "every audited cell task left exactly one success robot row and wrote its cell"


def _sleep_label(plain: bool, result: Throughput) -> str:
    kind = "plain functions sleeping" if plain else "async tasks awaiting"
    return f"{kind} {SLEEP_S * 1000:g} ms, worker defaults"


def _latency_label(lat: Latency) -> str:
    return f"pickup latency at {lat.rate_per_s:g} tasks/s, {plural(lat.processes, 'process')}"


def _edits_check(runs: list[CellEdits]) -> str:
    edits = runs[0]
    return (
        f"cell edits via {edits.via}: {edits.edit_audit_rows} edit audit rows and"
        f" {edits.tasks_enqueued} tasks enqueued for {edits.edits} edits"
    )


def _memory_figures(mem: Memory) -> list[Figure]:
    return [
        (f"max of {plural(mem.processes, 'process')}", "MB", mem.max_mb),
        ("mean", "MB", mem.mean_mb),
        ("mean before any task", "MB", mem.idle_mean_mb),
    ]


def _memory_check(runs: list[Memory]) -> str:
    mem = runs[0]
    return (
        f"memory read with {mem.in_flight_per_process:,} tasks processing in each of"
        f" {plural(mem.processes, 'worker process')} (database count)"
    )


def _priority_label(prio: EditPriority) -> str:
    return f"edit -> robot answer, {prio.bulk_tasks:,} bulk tasks of {SLEEP_S * 1000:g} ms queued"


def _priority_problem(prio: EditPriority) -> str | None:
    problem = priority_problem(prio)
    return f"edit under bulk work: {problem}" if problem else None


def _priority_check(runs: list[EditPriority]) -> str:
    return (
        f"edits under bulk work: every edit's robot task had priority {EDIT_PRIORITY}"
        f" (bulk {BULK_PRIORITY}), completed and wrote the upper-case answer; edits made"
        f" before the last bulk task completed (the figures are theirs): "
        + ", ".join(f"{p.edits_during_bulk} of {p.edits}" for p in runs)
    )


def _cap_label(run: CapRun) -> str:
    return (
        f"cap of {run.cap}, {run.sleep_s:g} s handlers, {run.tasks} tasks,"
        f" {run.daemons} daemons x {plural(run.processes, 'process')}"
    )


def _rate_label(run: RateRun) -> str:
    burst = "" if run.burst is None else f" (burst {run.burst})"
    work = (
        f"{run.tasks} tasks"
        if run.duration_s is None
        else f"work waiting for {run.duration_s:g} s ({run.started} started)"
    )
    return (
        f"rate of {run.rate} per {run.period_s:g} s{burst}, {work},"
        f" {run.daemons} daemons x {plural(run.processes, 'process')}"
    )


def _limits_check(runs: list[CapRun | RateRun]) -> str:
    timed = [r for r in runs if isinstance(r, RateRun) and r.duration_s is not None]
    return (
        "limits: no moment with more tasks running than the cap (counted from the tasks'"
        " rows and by the handlers), no window of the period (or of the burst) with more"
        " claims than the rate allows (from the rows)"
        + (
            "; the fixed-duration rate runs stopped with work still queued, as meant"
            if timed
            else ""
        )
    )


def _cancel_problem(result: CancelLatency) -> str | None:
    problem = cancel_problem(result)
    return f"cancel latency: {problem}" if problem else None


def _cancel_check(runs: list[CancelLatency]) -> str:
    return (
        "cancel latency: every cancelled task ended cancelled with no attempt spent ("
        + ", ".join(f"{r.cancelled_unspent} of {r.tasks}" for r in runs)
        + ")"
    )


def _fair_label(fair: FairLatency) -> str:
    return (
        f"small tenant's edit -> robot answer, big tenant's paste of {fair.rows:,} rows,"
        f" robot {fair.sleep_s:g} s, concurrency 5 x {plural(fair.processes, 'process')}"
    )


def _fair_figures(fair: FairLatency) -> list[Figure]:
    return [
        *_percentiles(fair, ("p50", "max")),
        ("p50 of edit -> robot started (the wait for a slot)", "ms", fair.start_p50_ms),
        ("big tenant meanwhile", "tasks/s", fair.big_tenant_per_s),
        ("what the slots allow", "tasks/s", fair.slots_per_s),
        ("the paste's commit (robot tasks queued in it)", "s", fair.paste_s),
    ]


def _keys_label(result: KeyThroughput) -> str:
    return (
        f"no-op tasks, {result.throughput.tasks:,} over {plural(result.keys, 'fairness key')},"
        f" {plural(result.throughput.processes, 'process')}"
    )


def _percentiles(result: Any, names: Sequence[str]) -> list[Figure]:
    return [(name, "ms", getattr(result, f"{name}_ms")) for name in names]


# -- the table ---------------------------------------------------------------------------


def measurements(o: BenchOptions) -> list[Measurement[Any]]:
    """Every repeated measurement with the counts of ``o``, in the order a run makes them
    (the claim plan is not among them: it runs once, after the runs)."""
    noop_runs = [(f"noop_c{processes}", processes, 1) for processes in o.concurrencies]
    if o.daemons > 1:
        noop_runs.append(("noop_daemons", o.daemon_processes, o.daemons))
    noop = [
        Measurement(
            "noop",
            key,
            run=partial(measure_throughput, tasks=o.tasks, processes=processes, daemons=daemons),
            label=_noop_label,
            figures=_rates,
            progress=_rates_line,
            completed="no-op",
        )
        for key, processes, daemons in noop_runs
    ]
    sleeps = [
        Measurement(
            name,
            name,
            run=partial(measure_sleep_throughput, tasks=count, plain=plain),
            label=partial(_sleep_label, plain),
            figures=_rates,
            progress=_rates_line,
            completed=completed,
        )
        for name, plain, count, completed in (
            ("async", False, o.async_tasks, "async sleep"),
            ("threaded", True, o.threaded_tasks, "plain sleep"),
        )
    ]
    return [
        *noop,
        Measurement(
            "cells",
            "cells",
            run=partial(measure_cell_tasks, tasks=o.tasks, processes=o.cell_processes),
            label=_cells_label,
            figures=lambda cells: _rates(cells.throughput),
            progress=lambda label, cells: _rates_line(label, cells.throughput),
            problem=_cells_problem,
            check=_cells_check,
        ),
        Measurement(
            "enqueue",
            "enqueue",
            run=partial(measure_enqueue, bulk=o.bulk_tasks, single=o.single_tasks),
            label=lambda _: "enqueue",
            figures=lambda enq: [
                (f"bulk ({enq.bulk_tasks:,} in one call)", "tasks/s", enq.bulk_per_s),
                ("single (one per statement)", "tasks/s", enq.single_per_s),
            ],
            progress=lambda _, enq: (
                f"enqueue: bulk {enq.bulk_per_s:,.0f}/s, single {enq.single_per_s:,.0f}/s"
            ),
        ),
        Measurement(
            "latency",
            "latency",
            run=partial(
                measure_pickup_latency,
                rate_per_s=o.latency_rate_per_s,
                duration_s=o.latency_duration_s,
                processes=o.latency_processes,
            ),
            label=_latency_label,
            figures=lambda lat: _percentiles(lat, ("p50", "p90", "p99", "max")),
            progress=lambda _, lat: (
                f"pickup latency: p50 {lat.p50_ms:.2f} ms, p99 {lat.p99_ms:.2f} ms"
            ),
        ),
        Measurement(
            "edits",
            "edits",
            run=partial(measure_cell_edits, edits=o.edits),
            label=lambda _: "cell-edit commit (edit + audit + enqueue)",
            figures=lambda edits: _percentiles(edits, ("p50", "p99", "max")),
            progress=lambda _, edits: (
                f"cell edits: p50 {edits.p50_ms:.2f} ms, p99 {edits.p99_ms:.2f} ms"
            ),
            check=_edits_check,
        ),
        *sleeps,
        Measurement(
            "memory",
            "memory",
            run=partial(
                measure_memory,
                in_flight_per_process=o.memory_in_flight,
                sleep_s=o.memory_sleep_s,
            ),
            label=lambda mem: (
                f"worker process RSS, {mem.in_flight_per_process:,} tasks in flight each"
            ),
            figures=_memory_figures,
            progress=lambda _, mem: (
                f"memory: max {mem.max_mb:.1f} MB, mean {mem.mean_mb:.1f} MB per process"
            ),
            check=_memory_check,
        ),
        Measurement(
            "priority",
            "priority",
            run=partial(
                measure_edit_priority, bulk_tasks=o.priority_bulk_tasks, edits=o.priority_edits
            ),
            label=_priority_label,
            figures=lambda prio: _percentiles(prio, ("p50", "p90", "max")),
            progress=lambda _, prio: (
                f"edit under bulk work: p50 {prio.p50_ms:.1f}, max {prio.max_ms:.1f} ms"
            ),
            problem=_priority_problem,
            check=_priority_check,
        ),
        Measurement(
            "limits",
            "limit_cap",
            run=partial(
                measure_cap,
                cap=o.limit_cap,
                sleep_s=o.limit_sleep_s,
                tasks=o.limit_cap_tasks,
                daemons=o.daemons,
                processes=o.daemon_processes,
            ),
            label=_cap_label,
            figures=lambda cap: [
                ("peak running", "tasks", float(cap.peak_running)),
                ("peak running, counted by the handlers", "tasks", float(cap.handler_peak)),
                ("utilisation of the cap", "%", 100 * cap.utilisation),
            ],
            progress=lambda _, cap: (
                f"cap of {cap.cap}: peak {cap.peak_running} running"
                f" ({cap.handler_peak} by the handlers),"
                f" {cap.utilisation:.0%} of cap x run time used"
            ),
            problem=limit_problem,
            check=_limits_check,
            completed="limits",
        ),
        Measurement(
            "limits",
            "limit_rate",
            run=partial(
                measure_rate,
                rate=o.limit_rate,
                period_s=o.limit_period_s,
                burst=o.limit_burst,
                tasks=o.limit_rate_tasks,
                duration_s=o.limit_rate_duration_s,
                daemons=o.daemons,
                processes=o.daemon_processes,
            ),
            label=_rate_label,
            figures=lambda rate: [
                ("most started in any window", "tasks", float(rate.most_in_window)),
                (
                    "most started in any burst window",
                    "tasks",
                    None if rate.most_in_burst_window is None else float(rate.most_in_burst_window),
                ),
                ("allowed starts used", "%", 100 * rate.used_share),
            ],
            progress=lambda _, rate: (
                f"rate of {rate.rate}/{rate.period_s:g}s: at most {rate.most_in_window} in a"
                f" window"
                + (
                    ""
                    if rate.most_in_burst_window is None
                    else f" ({rate.most_in_burst_window} in a burst window)"
                )
                + f", {rate.started} of {rate.allowed} allowed starts used"
                f" ({rate.used_share:.0%})"
            ),
            problem=limit_problem,
            check=_limits_check,
        ),
        Measurement(
            "cancel",
            "cancel",
            run=partial(measure_cancel_latency, tasks=o.cancel_tasks),
            label=lambda result: (
                f"cancel -> CancelledError of a running async handler,"
                f" {plural(result.processes, 'process')}"
            ),
            figures=lambda result: _percentiles(result, ("p50", "max")),
            progress=lambda _, result: (
                f"cancel latency: p50 {result.p50_ms:.1f} ms, max {result.max_ms:.1f} ms"
            ),
            problem=_cancel_problem,
            check=_cancel_check,
        ),
        Measurement(
            "fairness",
            "fairness",
            run=partial(
                measure_fair_latency,
                rows=o.fair_rows,
                edits=o.fair_edits,
                sleep_s=o.fair_sleep_s,
            ),
            label=_fair_label,
            figures=_fair_figures,
            progress=lambda _, fair: (
                f"small tenant under a paste: p50 {fair.p50_ms:,.0f} ms, max {fair.max_ms:,.0f}"
                f" ms; big tenant {fair.big_tenant_per_s:.1f}/s of {fair.slots_per_s:g}/s"
            ),
        ),
        *(
            Measurement(
                "fairness",
                key,
                run=partial(
                    measure_key_throughput,
                    tasks=o.fair_keys * o.fair_key_tasks,
                    keys=keys,
                    processes=o.cell_processes,
                ),
                label=_keys_label,
                figures=lambda result: _rates(result.throughput),
                progress=lambda label, result: _rates_line(label, result.throughput),
                completed="no-op",
            )
            for key, keys in (("fair_one_key", 1), ("fair_keys", o.fair_keys))
        ),
    ]
