"""Metrics and health endpoints, scraped from a real ``websurf worker --metrics-port``.

What a user would notice: Prometheus sees every task claimed and how it ended, per type,
summed over all worker processes; duration and pickup-latency histograms; queue depth;
the number of worker processes; ``/readyz`` turns ready once a process reached the
database and ``/healthz`` answers while the supervisor runs. And the daemon's log is
JSON lines, one object per line, without the database password.
"""

from __future__ import annotations

import functools
import json
import textwrap
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import conninfo
from support.daemon import Daemon, Daemons, free_port
from support.waiting import wait_for

from websurf.worker.daemon.health import HealthServer
from websurf.worker.daemon.metrics import DURATION_BUCKETS_S, _add_observations

PASSWORD = "not-a-real-secret-4711"  # trust auth ignores it; it must not show in the logs

OPERATORS = """
from websurf.worker.core.registry import Backoff, PermanentError, operator

@operator("always_fails", max_attempts=1)
def always_fails(task, context):
    raise PermanentError("broken on purpose")

@operator("fails_once", retry=Backoff(base_s=0.01, jitter=0.0))
def fails_once(task, context):
    if task.attempt == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": task.attempt}
"""


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def sample(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


@pytest.fixture
def daemon(database_url: str, tmp_path: Path, daemons: Daemons) -> Callable[..., Daemon]:
    """Start ``websurf worker`` (with a password in its URL); stopped at the end."""
    (tmp_path / "metrics_test_operators.py").write_text(textwrap.dedent(OPERATORS))
    url = conninfo.make_conninfo(database_url, password=PASSWORD)
    return functools.partial(
        daemons.worker, url, operators=["metrics_test_operators"], pythonpath=[tmp_path]
    )


def test_batched_histogram_updates_equal_one_observe_per_value() -> None:
    values = [0.0, 0.0004, 0.001, 0.003, 0.2, 7.0, 1e6]
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    a = Histogram("d", "d", ["t"], buckets=DURATION_BUCKETS_S, registry=one_by_one)
    b = Histogram("d", "d", ["t"], buckets=DURATION_BUCKETS_S, registry=batched)
    for v in values:
        a.labels("x").observe(v)
    import bisect

    tally = [0] * (len(DURATION_BUCKETS_S) + 1)
    for v in values:
        tally[bisect.bisect_left(DURATION_BUCKETS_S, v)] += 1
    _add_observations(b.labels("x"), tally, sum(values))

    def body(registry: CollectorRegistry) -> dict[Any, float]:
        found = samples(generate_latest(registry).decode())
        return {k: v for k, v in found.items() if not k[0].endswith("_created")}

    assert body(batched) == body(one_by_one)


def test_health_endpoints_answer_without_any_worker(tmp_path: Path) -> None:
    alive = {"yes": True}
    health = HealthServer(
        0,
        host="127.0.0.1",
        metrics_dir=str(tmp_path / "metrics"),
        alive=lambda: alive["yes"],
        stopping=lambda: False,
        processes=lambda: (0, 2),
        ready_window_s=15.0,
    )
    health.start()
    try:
        ready = get(health.port, "/readyz")
        live = get(health.port, "/healthz")
        alive["yes"] = False
        stuck = get(health.port, "/healthz")
        missing = get(health.port, "/nope")
        metrics = get(health.port, "/metrics")
    finally:
        health.stop()

    assert ready[0] == 503 and json.loads(ready[1])["database_ok_age_s"] is None
    assert (live[0], stuck[0], missing[0]) == (200, 503, 404)
    assert sample(metrics[1], "websurf_worker_processes_configured") == 2


def test_a_worker_daemon_serves_metrics_summed_over_its_processes(
    daemon: Callable[..., Daemon], conn: psycopg.Connection[Any]
) -> None:
    port = free_port()
    worker = daemon("-c", "2", "--metrics-port", str(port), "--heartbeat-interval", "0.2")
    worker.wait_for(lambda: get(port, "/readyz")[0] == 200 or not worker.alive(), "readiness")
    assert worker.alive(), worker.log()[-3000:]
    assert get(port, "/healthz")[0] == 200

    def both_serving() -> bool:  # before the work comes: one may boot late on a busy machine
        status, text = get(port, "/metrics")
        return status == 200 and sample(text, "websurf_worker_processes") == 2

    worker.wait_for(both_serving, "both worker processes to serve")

    # a limit that holds every task of its operator back (max 0 running)
    conn.execute(
        "INSERT INTO websurfing_task_limit (task_type, max_running) VALUES ('elsewhere', 0)"
    )
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, scheduled_for)"
        " SELECT t, '{}', now() + CASE WHEN t = 'noop' AND n > 300 THEN interval '1 hour'"
        " ELSE interval '0' END"
        " FROM unnest(ARRAY['noop', 'always_fails', 'fails_once', 'elsewhere']) AS t,"
        " generate_series(1, 303) AS n"
        " WHERE n <= CASE t WHEN 'noop' THEN 303 WHEN 'elsewhere' THEN 2 ELSE 3 END"
    )

    def scraped() -> str | None:
        text = get(port, "/metrics")[1]
        done = sample(
            text, "websurf_tasks_finished_total", task_type="fails_once", outcome="completed"
        )
        depth = sample(text, "websurf_queue_depth", task_type="elsewhere")
        held = sample(text, "websurf_limit_waiting", operator="elsewhere", key="")
        # what stays pending: 2 'elsewhere' and 3 later 'noop', all of no fairness key
        backlog = sample(text, "websurf_queue_key_backlog", rank="1")
        return text if done == 3 and depth == 2 and backlog == 5 and held == 2 else None

    def seen() -> str:  # what was seen, should it time out: it did once in CI, unexplained
        status, body = get(port, "/metrics")
        rows = conn.execute(
            "SELECT task_type, status, count(*) FROM websurfing_task_queue GROUP BY 1, 2"
        ).fetchall()
        lines = [line for line in body.splitlines() if "fails_once" in line or "depth" in line]
        return f"/metrics {status}: {lines}; queue: {rows}; {worker.log_tail()}"

    text = wait_for(scraped, "all tasks finished and a queue-depth sample", details=seen)

    def finished(task_type: str, outcome: str) -> float | None:
        return sample(text, "websurf_tasks_finished_total", task_type=task_type, outcome=outcome)

    assert sample(text, "websurf_tasks_claimed_total", task_type="noop") == 300
    assert finished("noop", "completed") == 300
    assert finished("always_fails", "failed") == 3
    assert finished("fails_once", "retried") == 3
    assert sample(text, "websurf_tasks_claimed_total", task_type="fails_once") == 6
    assert sample(text, "websurf_task_duration_seconds_count", task_type="noop") == 300
    assert sample(text, "websurf_task_pickup_latency_seconds_count", task_type="noop") == 300
    assert (
        sample(text, "websurf_task_pickup_latency_seconds_bucket", task_type="noop", le="+Inf")
        == 300
    )
    assert sample(text, "websurf_queue_scheduled", task_type="noop") == 3
    assert sample(text, "websurf_queue_keys") == 1
    assert sample(text, "websurf_queue_key_backlog", rank="2") == 0
    assert sample(text, "websurf_worker_processes") == 2
    assert sample(text, "websurf_limit_throttled", operator="elsewhere", key="") == 1
    assert sample(text, "websurf_limit_running", operator="elsewhere", key="") == 0

    assert worker.stop() == 0
    lines = worker.log().splitlines()
    records = [json.loads(line) for line in lines]  # every line one JSON object
    assert {"metrics_serving", "worker_ready", "task_completed"} <= {r["event"] for r in records}
    assert PASSWORD not in worker.log()


def test_log_lines_mask_passwords_wherever_they_appear() -> None:
    from websurf.worker.logs import mask_secrets

    event = mask_secrets(
        None,
        "warning",
        {
            "event": "database_retry",
            "error": f"connection to postgresql://bob:{PASSWORD}@db:5432/x failed",
            "dsn": f"host=db password={PASSWORD} user=bob",
            "api_token": "abc123",
            "attempt": 3,
        },
    )

    assert PASSWORD not in json.dumps(event)
    assert event["error"] == "connection to postgresql://bob:****@db:5432/x failed"
    assert event["api_token"] == "****" and event["attempt"] == 3
