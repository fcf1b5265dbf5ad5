"""``websurf bench``: each measurement with tiny counts, against a real server.

These tests check that the benchmark measures what it says (the tasks really ran, the
audit rows exist, the scratch database is dropped), never how fast anything is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support.daemon import WEBSURF, Daemons, clean_env, query
from support.waiting import wait_for

from websurf.worker.bench import (
    cancel,
    fairness,
    harness,
    latency,
    limits,
    memory,
    peers,
    producer,
    throughput,
)
from websurf.worker.bench.harness import BenchError
from websurf.worker.bench.options import BenchOptions
from websurf.worker.bench.plan import measure_claim_plan
from websurf.worker.bench.report import render
from websurf.worker.bench.runner import run_benchmark
from websurf.worker.bench.throughput import CellTasks


def _scratch_names(server: str) -> set[str]:
    with psycopg.connect(server, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'websurf\\_bench\\_%'"
        ).fetchall()
    return {row[0] for row in rows}


def _one(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture(scope="module")
def scratch(pg_server: str) -> Iterator[str]:
    with harness.scratch_database(pg_server) as url:
        yield url


def test_scratch_database_is_migrated_and_dropped_afterwards(pg_server: str) -> None:
    before = _scratch_names(pg_server)

    with harness.scratch_database(pg_server) as url:
        name = _one(url, "SELECT current_database()")
        applied = _one(url, "SELECT count(*) FROM websurf.schema_migrations")
        assert name.startswith("websurf_bench_")
        assert name not in before

    assert applied > 0
    assert name not in _scratch_names(pg_server)


def test_measurements_refuse_a_database_that_is_not_a_scratch_one(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('noop', '{}')")

    with pytest.raises(BenchError, match="scratch database"):
        producer.measure_enqueue(database_url, bulk=10, single=1)

    assert _one(database_url, "SELECT count(*) FROM websurfing_task_queue") == 1


def test_noop_throughput_runs_every_task_through_the_daemon(scratch: str) -> None:
    result = throughput.measure_throughput(scratch, tasks=300, processes=1)

    assert result.tasks == 300
    assert (result.processes, result.daemons, result.workers_seen) == (1, 1, 1)
    assert result.from_start_per_s > 0 and result.elapsed_s > 0
    assert (
        _one(scratch, "SELECT count(*) FROM websurfing_task_queue WHERE status = 'completed'")
        == 300
    )


def test_two_daemons_share_one_queue(scratch: str) -> None:
    result = throughput.measure_throughput(scratch, tasks=400, processes=1, daemons=2)

    assert (result.tasks, result.daemons) == (400, 2)
    statuses = _one(scratch, "SELECT array_agg(DISTINCT status) FROM websurfing_task_queue")
    assert statuses == ["completed"]
    # both daemons ran and stopped cleanly: nothing is left in the worker registry
    assert _one(scratch, "SELECT count(*) FROM websurf.worker") == 0


def test_audited_cell_tasks_leave_one_robot_row_each_and_write_the_cells(scratch: str) -> None:
    result = throughput.measure_cell_tasks(scratch, tasks=150, processes=1)

    assert result.throughput.tasks == 150
    assert result.robot_rows == 150
    assert result.tasks_without_one_audit_row == 0
    assert result.cells_not_written == 0
    assert _one(scratch, "SELECT count(*) FROM websurfing_cell WHERE content = 'x'") == 150


def test_run_benchmark_keeps_each_audited_cell_run_whole_and_reports_its_rates(
    pg_server: str,
) -> None:
    options = BenchOptions(runs=2, tasks=120, cell_processes=1, only=("cells",))

    report = run_benchmark(pg_server, options)

    # one entry per run, the whole result (its audit counts, not only its rates): the runner
    # used to append the run's Throughput and then overwrite that entry with the CellTasks
    cells = report.runs["cells"]
    assert [type(run) for run in cells] == [CellTasks, CellTasks]
    assert all(run.robot_rows == 120 and run.cells_not_written == 0 for run in cells)
    (rates,) = [m for m in report.metrics if m.name == "from worker start"]
    assert rates.measurement == "audited cell tasks, 1 process"
    assert rates.stat.values == [run.throughput.from_start_per_s for run in cells]
    assert report.problems == []
    assert "every audited cell task left exactly one success robot row" in "\n".join(report.checks)


def test_enqueue_rates_count_every_task_queued(scratch: str) -> None:
    result = producer.measure_enqueue(scratch, bulk=500, single=40)

    assert (result.bulk_tasks, result.single_tasks) == (500, 40)
    assert result.bulk_per_s > 0 and result.single_per_s > 0
    assert _one(scratch, "SELECT count(*) FROM websurfing_task_queue") == 540


def test_pickup_latency_has_one_sample_per_probe_task(scratch: str) -> None:
    result = latency.measure_pickup_latency(scratch, rate_per_s=50, duration_s=0.4, processes=1)

    assert result.tasks == 20
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms
    completed = _one(
        scratch,
        "SELECT count(*) FROM websurfing_task_queue"
        " WHERE task_type = 'bench_latency' AND status = 'completed' AND payload ? 'file'",
    )
    assert completed == 20


def test_cell_edits_are_audited_and_enqueue_their_robot_task(scratch: str) -> None:
    result = producer.measure_cell_edits(scratch, edits=40)

    assert result.edits == 40
    assert result.edit_audit_rows == 40
    assert result.tasks_enqueued == 40
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms


def test_claim_plan_is_explained_without_claiming_anything(scratch: str) -> None:
    plan = measure_claim_plan(scratch, finished=3000, future=300, due=40, limit=25)

    assert (plan.finished_rows, plan.future_rows, plan.due_rows, plan.limit) == (3000, 300, 40, 25)
    for text in (plan.plan, plan.generic_plan):
        assert "websurfing_task_queue" in text and "Execution Time" in text
    assert "$1" in plan.generic_plan  # really the generic plan, parameters not inlined
    assert plan.execution_ms > 0 and plan.generic_execution_ms > 0
    assert "index-driven" in plan.summary
    # EXPLAIN ANALYZE ran the claim for real, in transactions that were rolled back
    assert (
        _one(scratch, "SELECT count(*) FROM websurfing_task_queue WHERE status = 'processing'") == 0
    )


def _completed(url: str, task_type: str) -> int:
    return int(
        _one(
            url,
            "SELECT count(*) FROM websurfing_task_queue WHERE task_type = %s"
            " AND status = 'completed'",
            task_type,
        )
    )


def test_async_sleeps_all_run_through_the_daemon(scratch: str) -> None:
    result = throughput.measure_sleep_throughput(scratch, tasks=200, processes=1)

    assert (result.tasks, result.processes, result.workers_seen) == (200, 1, 1)
    assert result.from_start_per_s > 0 and result.elapsed_s > 0
    assert result.steady_per_s is None  # all 200 in flight at once: no steady state to report
    assert _completed(scratch, "bench_sleep") == 200


def test_plain_sleeps_all_run_in_the_thread_pool(scratch: str) -> None:
    result = throughput.measure_sleep_throughput(scratch, tasks=60, plain=True, processes=1)

    assert (result.tasks, result.processes) == (60, 1)
    assert result.from_start_per_s > 0
    assert _completed(scratch, "bench_sleep_plain") == 60
    assert _completed(scratch, "bench_sleep") == 0


def test_limits_runs_count_the_peak_and_the_windows_from_the_rows(scratch: str) -> None:
    cap = limits.measure_cap(scratch, cap=2, sleep_s=0.2, tasks=8, daemons=2, processes=1)
    rate = limits.measure_rate(scratch, rate=5, period_s=1.0, tasks=10, daemons=2, processes=1)

    assert cap.peak_running == 2 and 0 < cap.utilisation <= 1.0
    assert rate.most_in_window == 5 and 0 < rate.used_share <= 1.0
    assert _completed(scratch, "bench_sleep") == 10  # the second run reset the queue
    assert limits.limit_problem(cap) is None and limits.limit_problem(rate) is None
    assert limits.most_in_window([0.0, 0.5, 0.99, 1.0, 1.5], 1.0) == 3


def test_memory_is_read_from_each_worker_process_with_its_tasks_in_flight(scratch: str) -> None:
    result = memory.measure_memory(scratch, in_flight_per_process=30, processes=2, sleep_s=2.0)

    assert (result.processes, result.in_flight_per_process) == (2, 30)
    assert len(result.rss_mb) == 2 and len(result.idle_rss_mb) == 2
    assert all(mb > 0 for mb in result.rss_mb + result.idle_rss_mb)
    assert result.max_mb == max(result.rss_mb) >= result.mean_mb > 0
    # the daemon stopped cleanly: the sleeps finished (or went back), nothing is processing
    assert (
        _completed(scratch, "bench_sleep")
        + int(_one(scratch, "SELECT count(*) FROM websurfing_task_queue WHERE status = 'pending'"))
        == 60
    )
    assert _one(scratch, "SELECT count(*) FROM websurf.worker") == 0


def test_edits_under_bulk_work_get_priority_8_and_their_robot_answer(scratch: str) -> None:
    result = latency.measure_edit_priority(
        scratch, bulk_tasks=1100, edits=5, processes=1, bulk_sleep_s=0.5
    )

    assert (result.bulk_tasks, result.edits) == (1100, 5)
    assert result.priorities == [8]
    assert result.edits_completed == 5 and result.robot_cells_answered == 5
    assert result.edits_during_bulk == 5  # the bulk work outlasts five edits 10 ms apart
    assert 0 < result.p50_ms <= result.p90_ms <= result.max_ms
    assert latency.priority_problem(result) is None
    answers = _one(
        scratch,
        "SELECT array_agg(content ORDER BY row_number) FROM websurfing_cell c"
        " JOIN websurfing_column col ON col.id = c.column_id WHERE col.operator_type = 'uppercase'",
    )
    assert answers == [f"EDIT {n}" for n in range(5)]
    assert _completed(scratch, "bench_sleep") == 1100


def test_cancel_latency_has_one_sample_per_cancelled_handler(scratch: str) -> None:
    result = cancel.measure_cancel_latency(scratch, tasks=3, processes=2)

    assert (result.tasks, result.processes, result.cancelled_unspent) == (3, 2, 3)
    assert 0 < result.p50_ms <= result.max_ms
    assert cancel.cancel_problem(result) is None
    assert _one(scratch, "SELECT count(*) FROM websurfing_task_queue") == 3


def test_a_small_tenants_edits_are_answered_while_a_paste_keeps_the_robots_busy(
    scratch: str,
) -> None:
    result = fairness.measure_fair_latency(
        scratch,
        rows=300,
        edits=3,
        sleep_s=0.3,
        processes=1,
        edit_delay_s=0.1,
        edit_interval_s=0.2,
    )

    assert (result.rows, result.edits) == (300, 3)
    assert 0 < result.p50_ms <= result.max_ms
    assert result.big_tenant_per_s > 0  # the paste's robots went on meanwhile
    assert result.slots_per_s == 1 * 5 / 0.3
    keys = _one(
        scratch,
        "SELECT array_agg(DISTINCT fairness_key ORDER BY fairness_key)"
        " FROM websurfing_task_queue WHERE task_type = 'bench_slow_llm'",
    )
    assert len(keys) == 2  # the two people, from the edits' authors


def test_no_op_throughput_with_many_keys_runs_every_task(scratch: str) -> None:
    result = fairness.measure_key_throughput(scratch, tasks=300, keys=50, processes=1)

    assert result.keys == 50 and result.throughput.tasks == 300
    assert _one(scratch, "SELECT count(DISTINCT fairness_key) FROM websurfing_task_queue") == 50


def test_run_benchmark_reports_the_waiting_robot_rows(pg_server: str) -> None:
    options = BenchOptions(
        runs=1,
        async_tasks=100,
        threaded_tasks=40,
        memory_in_flight=20,
        memory_sleep_s=2.0,
        priority_bulk_tasks=2500,
        priority_edits=3,
        only=("async", "threaded", "memory", "priority"),
    )

    report = run_benchmark(pg_server, options)

    assert report.problems == []
    # (no "steady" expected: a hundred sleeps may all complete in the same instant)
    values = {(m.measurement, m.name): m.stat.median for m in report.metrics}
    expected = {
        ("async tasks awaiting 100 ms, worker defaults", "from worker start"),
        ("plain functions sleeping 100 ms, worker defaults", "from worker start"),
        ("worker process RSS, 20 tasks in flight each", "max of 2 processes"),
        ("worker process RSS, 20 tasks in flight each", "mean"),
        ("edit -> robot answer, 2,500 bulk tasks of 100 ms queued", "p50"),
        ("edit -> robot answer, 2,500 bulk tasks of 100 ms queued", "max"),
    }
    assert expected <= set(values)
    assert all(value > 0 for value in values.values())
    checks = "\n".join(report.checks)
    assert "every queued task completed in each of 1 async sleep runs" in checks
    assert "every queued task completed in each of 1 plain sleep runs" in checks
    assert "20 tasks processing in each of 2 worker processes" in checks
    assert "priority 8" in checks
    table = render(report)
    assert "worker process RSS" in table and " MB" in table and "edit -> robot answer" in table


def test_run_benchmark_reports_median_and_range_of_every_run(pg_server: str) -> None:
    before = _scratch_names(pg_server)
    options = BenchOptions(
        runs=2, bulk_tasks=200, single_tasks=20, edits=20, only=("enqueue", "edits")
    )
    lines: list[str] = []

    report = run_benchmark(pg_server, options, progress=lines.append)

    assert len(report.runs["enqueue"]) == 2 and len(report.runs["edits"]) == 2
    names = {(m.measurement, m.name) for m in report.metrics}
    assert ("enqueue", "single (one per statement)") in names
    assert ("cell-edit commit (edit + audit + enqueue)", "p99") in names
    for metric in report.metrics:
        assert len(metric.stat.values) == 2
        assert metric.stat.low <= metric.stat.median <= metric.stat.high
    assert report.server.server_version and report.machine.cores > 0
    assert report.problems == []
    assert "run 2 of 2" in lines
    assert _scratch_names(pg_server) <= before
    table = render(report)
    assert "single (one per statement)" in table and report.server.server_version in table


def test_cli_prints_a_json_report_and_drops_its_database(pg_server: str) -> None:
    before = _scratch_names(pg_server)

    done = subprocess.run(
        [
            WEBSURF,
            "bench",
            "--database-url",
            pg_server,
            "--only",
            "enqueue",
            "--runs",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["server"]["synchronous_commit"] in {
        "on",
        "off",
        "local",
        "remote_write",
        "remote_apply",
    }
    assert {m["measurement"] for m in report["metrics"]} == {"enqueue"}
    assert report["runs"]["enqueue"][0]["bulk_tasks"] == 10_000
    assert _scratch_names(pg_server) <= before


def test_cli_interrupted_stops_its_daemon_and_drops_its_database(
    pg_server: str, daemons: Daemons
) -> None:
    before = _scratch_names(pg_server)
    bench = daemons.launch(
        [WEBSURF, "bench", "--database-url", pg_server, "--quick", "--only", "latency"],
        env=clean_env(),
    )
    bench.wait_for(lambda: _scratch_names(pg_server) - before, "the scratch database")
    (name,) = _scratch_names(pg_server) - before
    url = psycopg.conninfo.make_conninfo(pg_server, dbname=name)

    def worker_pids() -> list[int]:
        return [pid for (pid,) in query(url, "SELECT pid FROM websurf.worker")]

    pids = bench.wait_for(
        worker_pids,
        "the benchmark's worker daemon",
        tolerate=(psycopg.Error,),  # not migrated
    )
    bench.send(signal.SIGINT)

    assert bench.wait(timeout=60) == 130, bench.log_tail()
    assert "scratch database was dropped" in bench.log()
    assert name not in _scratch_names(pg_server)
    wait_for(lambda: not any(_alive(pid) for pid in pids), "the worker processes to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_peers_runs_websurf_beside_pgqueuer_and_drops_both_databases(pg_server: str) -> None:
    """`websurf bench --peers`: both systems run both workloads; the table has their rates."""
    try:
        python = peers.pgqueuer_python()  # installs pgqueuer from PyPI once, into the cache
    except BenchError as exc:
        pytest.skip(f"pgqueuer cannot be installed here: {exc}")
    assert python.exists()
    before = _scratch_names(pg_server)

    done = subprocess.run(
        [WEBSURF, "bench", "--database-url", pg_server, "--peers", "--runs", "1", "--tasks", "400"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in done.stdout.splitlines()
        if line.startswith("| no-op") or line.startswith("| awaits")
    }
    assert set(rows) == {"no-op", "awaits 0.1 s"}
    for websurf_start, pgqueuer_start, ratio, *_ in rows.values():
        assert float(websurf_start.replace(",", "")) > 0
        assert float(pgqueuer_start.replace(",", "")) > 0
        assert float(ratio) > 0
    for system in ("websurf", "pgqueuer"):
        assert f"round 1: {system} noop" in done.stderr
        assert f"round 1: {system} io" in done.stderr
    assert _scratch_names(pg_server) <= before
