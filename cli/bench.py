"""``websurf bench``: the shipped benchmark, in a scratch database on the given server."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
import psycopg

from websurf.cli.options import (
    EXIT_FAILURE,
    CommandError,
    common_options,
    database_errors,
    echo,
    option,
    runtime,
    sigterm_as_interrupt,
)
from websurf.sql.database import describe, scrub
from websurf.worker.bench.benchmark import (
    MEASUREMENTS,
    BenchError,
    BenchOptions,
    Report,
    run_benchmark,
)

EXIT_INTERRUPTED = 130


@click.command("bench")
@common_options
@option(
    "--runs",
    type=click.IntRange(1),
    default=None,
    help="Runs of each measurement, reported as median and min-max  [default: 3, 1 with --quick]",
    show_default=False,
)
@option(
    "--tasks",
    type=click.IntRange(1),
    default=None,
    help="Tasks per throughput run  [default: 20000, 2000 with --quick]",
    show_default=False,
)
@option("--quick", is_flag=True, default=False, help="Small counts, one run, no claim plan.")
@option("--json", "as_json", is_flag=True, default=False, help="Print the report as JSON.")
@option(
    "--only",
    type=click.Choice(MEASUREMENTS),
    multiple=True,
    default=(),
    help="Run only this measurement (repeatable)  [default: all; all but plan with --quick]",
    show_default=False,
)
@click.pass_context
def bench_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    runs: int | None,
    tasks: int | None,
    quick: bool,
    as_json: bool,
    only: tuple[str, ...],
) -> None:
    """Measure throughput, latency, memory and enqueue rates of websurf on this machine.

    Works in a scratch database (websurf_bench_<random>) that it creates on the server,
    migrates and drops at the end. Progress goes to stderr, the report to stdout.
    """
    rt = runtime(ctx, database_url, log_level, log_format)
    overrides: dict[str, Any] = {}
    if runs is not None:
        overrides["runs"] = runs
    if tasks is not None:
        overrides["tasks"] = tasks
    if only:
        overrides["only"] = tuple(only)
    options = BenchOptions.quick(**overrides) if quick else BenchOptions(**overrides)
    with sigterm_as_interrupt(), database_errors():
        target = rt.database()
        where = f"{describe(target.url)} ({target.source})"
        try:
            report = run_benchmark(
                target.url,
                options,
                database=where,
                progress=lambda line: click.echo(f"bench: {line}", err=True),
            )
        except KeyboardInterrupt:
            raise CommandError(
                "interrupted; the scratch database was dropped", EXIT_INTERRUPTED
            ) from None
        except BenchError as exc:
            raise CommandError(str(exc), EXIT_FAILURE) from None
        except psycopg.Error as exc:
            raise CommandError(scrub(str(exc).strip(), target.url), EXIT_FAILURE) from None
    echo(
        json.dumps(dataclasses.asdict(report), indent=2, default=str) if as_json else render(report)
    )
    if report.problems:
        raise CommandError("checks failed: " + "; ".join(report.problems), EXIT_FAILURE)


DECIMALS = {"ms": 2, "MB": 1}  # of a unit in the table; counts and rates have none


def _number(value: float, unit: str) -> str:
    return f"{value:,.{DECIMALS.get(unit, 0)}f}"


def render(report: Report) -> str:
    """The report as a readable table."""
    m, s = report.machine, report.server
    revision = f" ({report.source_revision})" if report.source_revision else ""
    lines = [
        f"websurf bench: websurf {report.websurf_version}{revision},"
        f" {report.started_at}, took {report.duration_s:,.0f} s",
        f"machine     {m.cpu_model}, {m.cores} cores, {m.ram_gib:g} GiB RAM, {m.system},"
        f" Python {m.python}",
        f"PostgreSQL  {s.server_version} at {report.database}: synchronous_commit="
        f"{s.synchronous_commit}, fsync={s.fsync}, full_page_writes={s.full_page_writes},"
        f" shared_buffers={s.shared_buffers}, max_connections={s.max_connections}",
        f"runs        {report.options.runs} (median, min-max of the runs);"
        f" {report.options.tasks:,} tasks per throughput run",
    ]
    if report.load_at_start is not None:
        lines.append(
            f"load        {report.load_at_start:g} at the start, {report.load_at_end:g} at the end"
            f" (1-minute load average; on {m.cores} cores, other work skews the figures)"
        )
    lines.append("")
    rows = [("measurement", "metric", "median", "min-max", "unit")]
    previous = ""
    for metric in report.metrics:
        st = metric.stat
        rows.append(
            (
                metric.measurement if metric.measurement != previous else "",
                metric.name,
                _number(st.median, metric.unit),
                f"{_number(st.low, metric.unit)}-{_number(st.high, metric.unit)}",
                metric.unit,
            )
        )
        previous = metric.measurement
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for n, row in enumerate(rows):
        cells = [
            row[i].rjust(widths[i]) if i in (2, 3) else row[i].ljust(widths[i]) for i in range(5)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    if report.claim_plan is not None:
        lines += ["", f"claim query at scale: {report.claim_plan.summary}"]
    if report.checks:
        lines += ["", "checks:", *(f"  ok  {check}" for check in report.checks)]
    if report.problems:
        lines += ["", "problems:", *(f"  FAILED  {problem}" for problem in report.problems)]
    return "\n".join(lines)
