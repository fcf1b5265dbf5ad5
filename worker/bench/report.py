"""The report of ``websurf bench``: what it holds (the machine, the server, each metric's
median and min-max over the runs, the checks) and its rendering as a table."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from websurf.sql import QUERIES
from websurf.worker.bench.dashboard import DashboardPages
from websurf.worker.bench.options import BenchOptions
from websurf.worker.bench.plan import ClaimPlan

DECIMALS = {"ms": 2, "MB": 1}  # of a unit in the table; counts and rates have none
HEADER = ("measurement", "metric", "median", "min-max", "unit")
RIGHT_ALIGNED = (2, 3)  # the columns of figures


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

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(statistics.median(values), min(values), max(values), values)


@dataclass(frozen=True)
class Metric:
    measurement: str
    name: str
    unit: str
    stat: Stat


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
    dashboard_pages: DashboardPages | None = None
    checks: list[str] = field(default_factory=list)  # what was verified
    problems: list[str] = field(default_factory=list)  # checks that failed
    runs: dict[str, list[Any]] = field(default_factory=dict)  # every run's dataclass


# -- what the report says about where it ran --------------------------------------------


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


def source_revision() -> str | None:
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


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


# -- rendering ---------------------------------------------------------------------------


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 'es' if word.endswith('s') else 's'}"


def _number(value: float, unit: str) -> str:
    return f"{value:,.{DECIMALS.get(unit, 0)}f}"


def _table(metrics: list[Metric]) -> list[str]:
    """One line per metric under a header; a measurement's name only on its first line."""
    rows = [HEADER]
    previous = ""
    for metric in metrics:
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.rjust(width) if i in RIGHT_ALIGNED else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


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
    lines += ["", *_table(report.metrics)]
    if report.claim_plan is not None:
        lines += ["", f"claim query at scale: {report.claim_plan.summary}"]
    if report.dashboard_pages is not None:
        pages = report.dashboard_pages
        lines += ["", f"dashboard pages: {pages.summary} (seeded in {pages.seed_s:g} s)"]
        lines += [
            f"  {page.median_ms:8.1f} ms median {page.max_ms:8.1f} ms max"
            f" {page.first_ms:8.1f} ms first  {page.page}"
            for page in pages.pages
        ]
    if report.checks:
        lines += ["", "checks:", *(f"  ok  {check}" for check in report.checks)]
    if report.problems:
        lines += ["", "problems:", *(f"  FAILED  {problem}" for problem in report.problems)]
    return "\n".join(lines)
