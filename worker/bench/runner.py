"""The whole benchmark: every selected measurement of the table, ``options.runs`` times
in one scratch database (the runs interleaved), then the claim plan once; the report's
metrics and checks are derived from the results the runs kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from websurf.worker.bench.dashboard import DashboardPages, measure_dashboard_pages
from websurf.worker.bench.harness import BenchError, scratch_database
from websurf.worker.bench.measurements import Measurement, measurements
from websurf.worker.bench.options import MEASUREMENTS, BenchOptions
from websurf.worker.bench.plan import ClaimPlan, measure_claim_plan
from websurf.worker.bench.report import (
    Metric,
    Report,
    Stat,
    load_average,
    machine_info,
    server_info,
    source_revision,
)


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
        source_revision=source_revision(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        duration_s=0.0,
        machine=machine_info(),
        server=server_info(server_url),
        database=database,
        options=options,
        load_at_start=load_average(),
    )
    selected = [m for m in measurements(options) if m.name in options.only]
    with scratch_database(server_url) as url:
        for run in range(1, options.runs + 1):
            progress(f"run {run} of {options.runs}")
            for measurement in selected:
                result = measurement.run(url)
                report.runs.setdefault(measurement.key, []).append(result)
                progress(measurement.progress(measurement.label(result), result))
                problem = measurement.problem(result)
                if problem:
                    report.problems.append(f"run {run}, {problem}")
        if "plan" in options.only:
            report.claim_plan = _claim_plan(url, options, progress)
        if "dashboard" in options.only:
            report.dashboard_pages = _dashboard_pages(url, options, progress)
    report.metrics = metrics(selected, report.runs)
    report.checks = checks(selected, report.runs)
    report.duration_s = time.perf_counter() - started
    report.load_at_end = load_average()
    return report


def _claim_plan(url: str, options: BenchOptions, progress: Callable[[str], None]) -> ClaimPlan:
    progress(
        f"claim plan: seeding {options.plan_finished:,} finished,"
        f" {options.plan_future:,} future and {options.plan_due:,} due tasks"
    )
    plan = measure_claim_plan(
        url, finished=options.plan_finished, future=options.plan_future, due=options.plan_due
    )
    progress(f"claim plan: {plan.summary}")
    return plan


def _dashboard_pages(
    url: str, options: BenchOptions, progress: Callable[[str], None]
) -> DashboardPages:
    progress(
        f"dashboard pages: seeding {options.dashboard_finished:,} finished and"
        f" {options.dashboard_pending:,} pending tasks"
    )
    pages = measure_dashboard_pages(
        url, finished=options.dashboard_finished, pending=options.dashboard_pending
    )
    progress(f"dashboard pages: {pages.summary}")
    return pages


def _first_by(
    table: Sequence[Measurement[Any]], attribute: Callable[[Measurement[Any]], str]
) -> dict[str, Measurement[Any]]:
    """The table's first measurement of each ``attribute`` value, in table order."""
    first: dict[str, Measurement[Any]] = {}
    for measurement in table:
        first.setdefault(attribute(measurement), measurement)
    return first


def metrics(table: Sequence[Measurement[Any]], runs: dict[str, list[Any]]) -> list[Metric]:
    """Each figure's median and min-max over the kept runs, in table order; a figure no
    run measured (a steady rate of one wave of tasks) has no row."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for key, measurement in _first_by(table, lambda m: m.key).items():
        for result in runs.get(key, []):
            label = measurement.label(result)
            for name, unit, value in measurement.figures(result):
                found = values.setdefault((label, name, unit), [])
                if value is not None:
                    found.append(value)
    return [Metric(m, n, u, Stat.of(v)) for (m, n, u), v in values.items() if v]


def checks(table: Sequence[Measurement[Any]], runs: dict[str, list[Any]]) -> list[str]:
    """What the runs verified: first that every queued task completed, then each
    measurement's own check, said only when none of its runs had a problem."""
    kept: dict[str, list[Any]] = {}
    for key, measurement in _first_by(table, lambda m: m.key).items():
        kept.setdefault(measurement.name, []).extend(runs.get(key, []))
    named = _first_by(table, lambda m: m.name).values()
    said = []
    for measurement in named:
        count = len(kept[measurement.name])
        if measurement.completed and count:
            said.append(
                f"every queued task completed in each of {count} {measurement.completed} runs"
            )
    for measurement in named:
        results = kept[measurement.name]
        if measurement.check and results and not any(map(measurement.problem, results)):
            said.append(measurement.check(results))
    return said
