"""``websurf bench``'s report without a database: its rendering, the rows and checks it
derives from the runs' results, and the operators module staying clear of the harness."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from websurf.worker.bench.latency import EditPriority
from websurf.worker.bench.measurements import measurements
from websurf.worker.bench.options import MEASUREMENTS, BenchOptions
from websurf.worker.bench.plan import ClaimPlan
from websurf.worker.bench.producer import Enqueue
from websurf.worker.bench.report import Machine, Metric, Report, Server, Stat, render
from websurf.worker.bench.runner import checks, metrics
from websurf.worker.bench.throughput import CellTasks, Throughput

CELLS_CHECK = "every audited cell task left exactly one success robot row and wrote its cell"


def _report(**fields: object) -> Report:
    report = Report(
        websurf_version="0.1.0",
        source_revision="0785aab",
        started_at="2026-12-01T16:23:11+00:00",
        duration_s=145.4,
        machine=Machine("AMD EPYC", 2, 23.5, "Linux-6.18", "3.11.7"),
        server=Server("PostgreSQL 15.20", "15.20", "on", "on", "128MB", "100", "on"),
        database="127.0.0.1:5432/postgres (option)",
        options=BenchOptions(runs=3),
        load_at_start=1.29,
        load_at_end=4.68,
        metrics=[
            Metric(
                "no-op tasks, 1 process",
                "from worker start",
                "tasks/s",
                Stat(4614.2, 3698.0, 6041.4, []),
            ),
            Metric(
                "no-op tasks, 1 process", "steady", "tasks/s", Stat(5316.0, 4639.0, 17880.0, [])
            ),
            Metric(
                "pickup latency at 50 tasks/s, 2 processes",
                "p50",
                "ms",
                Stat(7.834, 5.64, 14.59, []),
            ),
            Metric(
                "worker process RSS, 1,000 tasks in flight each",
                "mean",
                "MB",
                Stat(43.21, 42.0, 44.06, []),
            ),
        ],
    )
    for name, value in fields.items():
        setattr(report, name, value)
    return report


def test_the_report_is_a_header_and_a_table_of_medians_with_their_range() -> None:
    text = render(_report())

    assert text == textwrap.dedent(
        """\
        websurf bench: websurf 0.1.0 (0785aab), 2026-12-01T16:23:11+00:00, took 145 s
        machine     AMD EPYC, 2 cores, 23.5 GiB RAM, Linux-6.18, Python 3.11.7
        PostgreSQL  15.20 at 127.0.0.1:5432/postgres (option): synchronous_commit=on, fsync=on, full_page_writes=on, shared_buffers=128MB, max_connections=100
        runs        3 (median, min-max of the runs); 20,000 tasks per throughput run
        load        1.29 at the start, 4.68 at the end (1-minute load average; on 2 cores, other work skews the figures)

        measurement                                     metric             median       min-max  unit
        ----------------------------------------------  -----------------  ------  ------------  -------
        no-op tasks, 1 process                          from worker start   4,614   3,698-6,041  tasks/s
                                                        steady              5,316  4,639-17,880  tasks/s
        pickup latency at 50 tasks/s, 2 processes       p50                  7.83    5.64-14.59  ms
        worker process RSS, 1,000 tasks in flight each  mean                 43.2     42.0-44.1  MB"""  # noqa: E501
    )


def test_the_claim_plan_checks_and_problems_follow_the_table() -> None:
    plan = ClaimPlan(1, 1, 1, 1, True, 7.0, True, 7.0, "index-driven (Index Scan using x)", "", "")
    report = _report(
        source_revision=None,
        load_at_start=None,
        claim_plan=plan,
        checks=["every queued task completed in each of 3 no-op runs"],
        problems=["run 2, edit under bulk work: 3 of 4 robot tasks completed"],
    )

    lines = render(report).splitlines()

    assert lines[0] == "websurf bench: websurf 0.1.0, 2026-12-01T16:23:11+00:00, took 145 s"
    assert not any(line.startswith("load") for line in lines)
    assert lines[-8:] == [
        "",
        "claim query at scale: index-driven (Index Scan using x)",
        "",
        "checks:",
        "  ok  every queued task completed in each of 3 no-op runs",
        "",
        "problems:",
        "  FAILED  run 2, edit under bulk work: 3 of 4 robot tasks completed",
    ]


def _rates(from_start: float, steady: float | None, processes: int = 1) -> Throughput:
    return Throughput(1000, processes, 1, from_start, steady, 1.0, processes)


def test_rows_come_from_each_runs_kept_result_in_table_order() -> None:
    table = measurements(BenchOptions(concurrencies=(1,), daemons=1))
    runs = {
        "enqueue": [Enqueue(500, 50_000.0, 40, 3_000.0), Enqueue(500, 60_000.0, 40, 2_000.0)],
        "noop_c1": [_rates(900.0, None), _rates(1_100.0, None)],
        "cells": [CellTasks(_rates(800.0, 850.0, processes=2), 1000, 0, 0)],
    }

    rows = [(m.measurement, m.name, m.stat.values) for m in metrics(table, runs)]

    # no "steady" row for the no-op runs: neither measured one
    assert rows == [
        ("no-op tasks, 1 process", "from worker start", [900.0, 1_100.0]),
        ("audited cell tasks, 2 processes", "from worker start", [800.0]),
        ("audited cell tasks, 2 processes", "steady", [850.0]),
        ("enqueue", "bulk (500 in one call)", [50_000.0, 60_000.0]),
        ("enqueue", "single (one per statement)", [3_000.0, 2_000.0]),
    ]


def _priority(priorities: list[int]) -> EditPriority:
    return EditPriority(4000, 3, 6.8, 32.0, 169.0, priorities, 3, 2, 3)


def test_a_problem_in_one_measurement_does_not_hide_another_ones_check() -> None:
    table = measurements(BenchOptions())
    good_cells = CellTasks(_rates(800.0, 850.0), 1000, 0, 0)

    said = checks(table, {"cells": [good_cells], "priority": [_priority([5, 8])]})

    assert CELLS_CHECK in said
    assert not any("edits under bulk work" in check for check in said)


def test_a_measurement_with_a_problem_is_not_said_to_be_checked() -> None:
    table = measurements(BenchOptions())
    bad_cells = CellTasks(_rates(800.0, 850.0), 999, 1, 0)

    said = checks(table, {"cells": [bad_cells], "priority": [_priority([8])]})

    assert CELLS_CHECK not in said
    assert any(check.startswith("edits under bulk work: every edit's") for check in said)


def test_every_task_completed_is_said_first_with_the_count_of_all_runs() -> None:
    table = measurements(BenchOptions())
    runs = {
        "cells": [CellTasks(_rates(800.0, 850.0), 1000, 0, 0)],
        "noop_c1": [_rates(1.0, 1.0)] * 2,
        "noop_daemons": [_rates(1.0, 1.0)] * 2,
        "async": [_rates(1.0, None)],
    }

    assert checks(table, runs) == [
        "every queued task completed in each of 4 no-op runs",
        "every queued task completed in each of 1 async sleep runs",
        CELLS_CHECK,
    ]


def test_only_selects_from_the_table_in_the_order_runs_make_them() -> None:
    names = [m.name for m in measurements(BenchOptions())]

    assert [*dict.fromkeys(names), "plan", "dashboard"] == list(MEASUREMENTS)


def test_the_shipped_operators_import_neither_harness_nor_measurements() -> None:
    code = (
        "import sys, websurf.worker.bench.operators;"
        " print(sorted(m for m in sys.modules if m.startswith('websurf.worker.bench')))"
    )

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert done.stdout.split() == [
        "['websurf.worker.bench',",
        "'websurf.worker.bench.names',",
        "'websurf.worker.bench.operators']",
    ]
