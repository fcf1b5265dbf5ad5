"""``websurf bench``: the shipped benchmark, in a scratch database on the given server."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
import psycopg

from websurf.cli.options import (
    common_options,
    database_errors,
    option,
    runtime,
    sigterm_as_interrupt,
)
from websurf.cli.render import EXIT_FAILURE, CommandError, echo
from websurf.sql.database import describe, scrub
from websurf.worker.bench import peers
from websurf.worker.bench.harness import BenchError, scratch_database
from websurf.worker.bench.options import MEASUREMENTS, BenchOptions
from websurf.worker.bench.report import render
from websurf.worker.bench.runner import run_benchmark

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
@option(
    "--quick",
    is_flag=True,
    default=False,
    help="Small counts, one run, no claim plan or dashboard pages.",
)
@option("--json", "as_json", is_flag=True, default=False, help="Print the report as JSON.")
@option(
    "--only",
    type=click.Choice(MEASUREMENTS),
    multiple=True,
    default=(),
    help="Run only this measurement (repeatable)"
    "  [default: all; all but plan and dashboard with --quick]",
    show_default=False,
)
@option(
    "--limit-rate",
    type=click.IntRange(1),
    default=None,
    help="The limits rate run's rate, starts per --limit-period  [default: 20]",
    show_default=False,
)
@option(
    "--limit-period",
    type=click.FloatRange(0, 86400, min_open=True),
    default=None,
    help="The limits rate run's period, in seconds  [default: 2]",
    show_default=False,
)
@option(
    "--limit-burst",
    type=click.IntRange(0),
    default=None,
    help="The limits rate run's burst (0: none)  [default: 5]",
    show_default=False,
)
@option(
    "--limit-duration",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Run the limits rate run this many seconds with work always waiting"
    "  [default: queue a fixed number of tasks and wait for them]",
    show_default=False,
)
@option(
    "--peers",
    is_flag=True,
    default=False,
    help="Run websurf beside pgqueuer instead (no-op jobs and jobs awaiting 0.1 s; installs"
    " pgqueuer from PyPI into a cache directory once); --runs rounds, --tasks jobs per run.",
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
    limit_rate: int | None,
    limit_period: float | None,
    limit_burst: int | None,
    limit_duration: float | None,
    peers: bool,
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
    if limit_rate is not None:
        overrides["limit_rate"] = limit_rate
    if limit_period is not None:
        overrides["limit_period_s"] = limit_period
    if limit_burst is not None:
        overrides["limit_burst"] = limit_burst or None
    if limit_duration is not None:
        overrides["limit_rate_duration_s"] = limit_duration
    options = BenchOptions.quick(**overrides) if quick else BenchOptions(**overrides)
    if peers:
        _peers(rt, options)
        return
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


def _peers(rt: Any, options: BenchOptions) -> None:
    """``--peers``: websurf beside pgqueuer, in scratch databases on the same server."""
    with sigterm_as_interrupt(), database_errors():
        target = rt.database()
        try:
            with scratch_database(target.url) as url:
                rows = peers.compare(
                    target.url,
                    url,
                    jobs=options.tasks,
                    rounds=options.runs,
                    progress=lambda line: click.echo(f"bench: {line}", err=True),
                )
        except KeyboardInterrupt:
            raise CommandError(
                "interrupted; the scratch databases were dropped", EXIT_INTERRUPTED
            ) from None
        except BenchError as exc:
            raise CommandError(scrub(str(exc), target.url), EXIT_FAILURE) from None
    echo(peers.render(rows, jobs=options.tasks, rounds=options.runs))
