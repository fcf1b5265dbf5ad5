"""Limits across the cluster, as a user of several workers sees them.

Several Runners (one per worker process in production) serve the same database at
once, each on its own thread and event loop. Handlers record, on their side, when they
start and end: the number running at once and the starts in any window are checked
from there (and from the rows), not only from what the table says.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs
from support.waiting import wait_for

from websurf.cli.main import cli
from websurf.worker.bench import harness
from websurf.worker.bench.limits import allowed_starts, measure_rate, most_in_window
from websurf.worker.config import WorkerConfig
from websurf.worker.core import limits
from websurf.worker.core.queue import NewTask, enqueue_many
from websurf.worker.core.registry import Context, Limit, Registry, SlowDown, Task
from websurf.worker.process.runner import Runner

DEADLINE_S = 30.0
CAP = 3
RATE, PERIOD_S = 10, 2.0


class Tracker:
    """What the handlers saw: how many ran at once (per key, too) and when each started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside: dict[str | None, int] = {}
        self.most: dict[str | None, int] = {}
        self.starts: list[float] = []
        self.busy_s = 0.0
        self.first_start = float("inf")
        self.last_end = 0.0
        self.slowed: set[str] = set()

    def enter(self, key: str | None) -> float:
        now = time.monotonic()
        with self.lock:
            for k in {key, None}:
                self.inside[k] = self.inside.get(k, 0) + 1
                self.most[k] = max(self.most.get(k, 0), self.inside[k])
            self.starts.append(now)
            self.first_start = min(self.first_start, now)
        return now

    def leave(self, key: str | None, started: float) -> None:
        now = time.monotonic()
        with self.lock:
            for k in {key, None}:
                self.inside[k] -= 1
            self.busy_s += now - started
            self.last_end = max(self.last_end, now)


def _registry(tracker: Tracker) -> Registry:
    reg = Registry()

    async def run(task: Task, context: Context, seconds: float) -> dict[str, Any]:
        key = task.payload.get("key")
        started = tracker.enter(key)
        try:
            await asyncio.sleep(seconds)
        finally:
            tracker.leave(key, started)
        return {"ok": True}

    @reg.operator("capped", limits=Limit(max_running=CAP))
    async def capped(task: Task, context: Context) -> Any:
        return await run(task, context, 0.2)

    @reg.operator("per_key")
    async def per_key(task: Task, context: Context) -> Any:
        return await run(task, context, 0.2)

    @reg.operator("rated")
    async def rated(task: Task, context: Context) -> Any:
        return await run(task, context, 0.0)

    @reg.operator("slowed")
    async def slowed(task: Task, context: Context) -> Any:
        name = str(task.payload["name"])
        if task.payload.get("slow") and name not in tracker.slowed:
            tracker.slowed.add(name)
            raise SlowDown(retry_after=3.0, reason="429 Too Many Requests")
        return await run(task, context, 0.0)

    return reg


Serve = Callable[..., Runner]


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
def serve(database_url: str, tracker: Tracker) -> Iterator[Serve]:
    """Boot and serve Runners on threads (each one a worker process); stop them at the end."""
    started: list[tuple[Runner, threading.Thread]] = []

    def start(worker_id: str, url: str = database_url, **settings: Any) -> Runner:
        settings.setdefault("poll_interval_s", 0.5)
        config = WorkerConfig(database_url=url, **settings)
        runner = Runner(config, worker_id, registry=_registry(tracker))
        runner.boot()
        thread = threading.Thread(target=runner.serve, name=f"serve-{worker_id}")
        thread.start()
        started.append((runner, thread))
        return runner

    yield start
    for runner, _ in started:
        runner.request_stop()
        runner.request_stop()
    for _, thread in started:
        thread.join(DEADLINE_S)
        if thread.is_alive():
            faulthandler.dump_traceback()
        assert not thread.is_alive(), "a runner did not stop"


def _enqueue(conn: psycopg.Connection[Any], operator: str, n: int, **payload: Any) -> None:
    key = payload.get("key")
    tasks = [
        NewTask(operator, {"n": i, **payload}, limit_key=key if isinstance(key, str) else None)
        for i in range(n)
    ]
    enqueue_many(conn, tasks)


def _done(conn: psycopg.Connection[Any], operator: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM websurfing_task_queue WHERE task_type = %s AND status = 'completed'",
        [operator],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_cap_from_code_holds_across_processes_claiming_at_once(
    serve: Serve, conn: psycopg.Connection[Any], tracker: Tracker
) -> None:
    for n in range(4):
        serve(f"host{n // 2}/{n}/runner", tasks_per_process=10)
    total = 30

    _enqueue(conn, "capped", total)
    wait_for(lambda: _done(conn, "capped") == total, "every capped task completed")

    assert tracker.most[None] == CAP  # never more running than the cap, and it was reached
    run_time = tracker.last_end - tracker.first_start
    utilisation = tracker.busy_s / (CAP * run_time)
    assert utilisation >= 0.7, f"the cap was used {utilisation:.0%} of {run_time:.2f}s"
    [[source]] = conn.execute("SELECT source FROM websurfing_task_limit").fetchall()
    assert source == "code"


def test_a_rate_set_from_the_terminal_is_never_exceeded_in_any_window(
    serve: Serve, conn: psycopg.Connection[Any], database_url: str, tracker: Tracker
) -> None:
    rate = ["--rate", str(RATE), "--per", f"{PERIOD_S:g}s"]
    result = CliRunner().invoke(
        cli, ["limits", "set", "rated", "--database-url", database_url, *rate]
    )
    assert result.exit_code == 0, result.output
    for n in range(3):
        serve(f"host{n}/0/runner", tasks_per_process=20)
    total = 3 * RATE

    _enqueue(conn, "rated", total + 5)
    wait_for(lambda: _done(conn, "rated") >= total, "three windows of rated tasks ran")

    started = [
        row[0].timestamp()
        for row in conn.execute(
            "SELECT started_at FROM websurfing_task_queue WHERE task_type = 'rated'"
            " AND started_at IS NOT NULL"
        )
    ]
    assert most_in_window(started, PERIOD_S) == RATE  # claims: exact on the database clock
    # Handlers start a few milliseconds after their claim; allow for that jitter.
    assert most_in_window(tracker.starts, PERIOD_S - 0.1) <= RATE
    first_thirty = sorted(tracker.starts)[:total]
    span = first_thirty[-1] - first_thirty[0]
    # 30 starts at 10 per 2 s need just over 4 s; the rate was used, not wasted.
    assert 2 * PERIOD_S - 0.1 <= span <= 2 * PERIOD_S + 1.5, span


def test_a_full_rate_window_is_logged_once_not_at_every_claim(
    serve: Serve, conn: psycopg.Connection[Any], database_url: str
) -> None:
    """The log says when a limit starts holding an operator's tasks back, and why: once,
    not at every claim it holds back."""
    rate = ["--rate", "1", "--per", f"{PERIOD_S:g}s"]
    result = CliRunner().invoke(
        cli, ["limits", "set", "rated", "--database-url", database_url, *rate]
    )
    assert result.exit_code == 0, result.output

    with capture_logs() as logs:
        serve("host/0/runner", tasks_per_process=5)
        _enqueue(conn, "rated", 3)
        wait_for(lambda: _done(conn, "rated") == 3, "three windows of one task each")

    throttled = [e for e in logs if e["event"] == "limit_throttled"]
    assert len(throttled) == 1, throttled
    assert throttled[0]["task_type"] == "rated"
    assert 0 < throttled[0]["reopens_in_s"] <= PERIOD_S
    assert "websurf limits list" in throttled[0]["reason"]


def test_a_burst_spreads_the_rate_it_does_not_add_to_it() -> None:
    """What the bench counts as allowed from a first claim: 60 a minute with a burst of
    5 is 5 every 5 s; without a burst, 60 at once."""
    assert allowed_starts(60, 60.0, 5, 300.0) == allowed_starts(60, 60.0, None, 300.0) == 300
    assert allowed_starts(60, 60.0, 5, 7.0) == 10
    assert allowed_starts(60, 60.0, None, 7.0) == 60


def test_the_bench_rate_run_keeps_work_waiting_for_its_duration(pg_server: str) -> None:
    """The fixed-duration rate run: more queued than the duration allows, the daemons
    stopped after it, and only the starts inside it counted; the burst holds too."""
    with harness.scratch_database(pg_server) as scratch:
        run = measure_rate(
            scratch, rate=4, period_s=1.0, burst=2, tasks=1, duration_s=3.0, daemons=2,
            processes=1,
        )  # fmt: skip

    assert run.allowed == 12 and run.tasks > run.allowed  # work waited all along
    assert run.started <= run.allowed and run.used_share == run.started / run.allowed
    assert run.most_in_window <= 4 and run.most_in_burst_window is not None
    assert run.most_in_burst_window <= 2
    assert run.used_share >= 0.5  # the windows were used, not left empty


def test_a_key_limit_from_the_table_holds_only_that_key(
    serve: Serve, conn: psycopg.Connection[Any], tracker: Tracker
) -> None:
    # As the web app would: a per-user quota is a row.
    conn.execute(
        "INSERT INTO websurfing_task_limit (task_type, limit_key, max_running)"
        " VALUES ('per_key', 'alice', 1)"
    )
    serve("host0/0/runner", tasks_per_process=10)
    serve("host1/0/runner", tasks_per_process=10)

    _enqueue(conn, "per_key", 5, key="alice")
    _enqueue(conn, "per_key", 5, key="bob")
    wait_for(lambda: _done(conn, "per_key") == 10, "every task completed")

    assert tracker.most["alice"] == 1
    assert tracker.most["bob"] > 1  # no limit on bob's key


def test_slow_down_pauses_the_key_for_every_worker_and_spends_no_attempt(
    serve: Serve, conn: psycopg.Connection[Any], tracker: Tracker
) -> None:
    runners = [serve("host0/0/runner"), serve("host1/0/runner")]
    [first] = enqueue_many(
        conn, [NewTask("slowed", {"name": "first", "slow": True}, limit_key="api")]
    )

    paused = wait_for(
        lambda: conn.execute(
            "SELECT paused_until FROM websurfing_task_limit"
            " WHERE task_type = 'slowed' AND limit_key = 'api' AND paused_until > now()"
        ).fetchone(),
        "the api key paused",
    )
    row = conn.execute(
        "SELECT status, attempts FROM websurfing_task_queue WHERE id = %s", [first]
    ).fetchone()
    assert row == ("pending", 0)  # handed back, no attempt spent
    # The pause's row made the operator limited: every worker hears of it.
    wait_for(lambda: all("slowed" in r.limited for r in runners), "every worker saw the pause")

    enqueue_many(
        conn,
        [NewTask("slowed", {"name": f"api{i}"}, limit_key="api") for i in range(3)]
        + [NewTask("slowed", {"name": "other"}, limit_key="other")],
    )
    wait_for(
        lambda: conn.execute(
            "SELECT 1 FROM websurfing_task_queue WHERE payload->>'name' = 'other'"
            " AND status = 'completed'"
        ).fetchone(),
        "the other key's task completed",
    )
    waiting = conn.execute(
        "SELECT count(*) FROM websurfing_task_queue WHERE limit_key = 'api' AND status = 'pending'"
        " AND now() < %s",
        [paused[0]],
    ).fetchone()
    assert waiting == (4,)  # no worker started the paused key's tasks
    wait_for(lambda: _done(conn, "slowed") == 5, "every task ran after the pause")
    starts = conn.execute(
        "SELECT min(started_at), max(attempts) FROM websurfing_task_queue WHERE limit_key = 'api'"
    ).fetchone()
    assert starts is not None
    assert starts[0] >= paused[0] and starts[1] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "x"], "needs a maximum running at once, a rate, or both"),
        (["set", "x", "--rate", "5"], "a rate needs its period"),
        (["set", "x", "--per", "10q", "--rate", "5"], "is not a duration"),
        (["set", "x", "--max-running", "-1"], "must be 0 or more"),
        (["set", "x", "--max-running", "2", "--burst", "3"], "a burst needs a rate"),
        (["set", "x", "--key", "", "--max-running", "2"], "1 to 255 characters"),
        (["set", "x" * 101, "--max-running", "2"], "1 to 100 characters"),
        (["remove", "nothing"], "no limit is set for operator 'nothing'"),
    ],
)
def test_bad_limits_input_is_one_line_and_changes_nothing(
    conn: psycopg.Connection[Any], database_url: str, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, ["limits", *args, "--database-url", database_url])

    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert conn.execute("SELECT count(*) FROM websurfing_task_limit").fetchone() == (0,)


def test_limits_list_shows_what_holds_tasks_back(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    limits.set_limit(conn, "capped", Limit(max_running=0))
    _enqueue(conn, "capped", 2)

    result = CliRunner().invoke(cli, ["limits", "list", "--database-url", database_url])

    assert result.exit_code == 0, result.output
    assert "capped: running 0/0, waiting 2 (cli): at its cap of 0 running" in result.output


def test_status_shows_throttled_keys_and_why_tasks_wait(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_limit (task_type, limit_key, rate, period_s, paused_until,"
        " pause_reason) VALUES ('rated', 'api', 5, 60, now() + interval '1 minute', '429')"
    )
    _enqueue(conn, "rated", 3, key="api")

    result = CliRunner().invoke(cli, ["status", "--json", "--database-url", database_url])

    assert result.exit_code == 0, result.output
    [shown] = json.loads(result.stdout)["limits"]
    assert (shown["operator"], shown["key"], shown["waiting"]) == ("rated", "api", 3)
    assert shown["throttled"].startswith("paused until") and shown["throttled"].endswith(": 429")
    text = CliRunner().invoke(cli, ["status", "--database-url", database_url]).stdout
    assert "rated [api]: started 0/5 per 60s, waiting 3, paused until" in text


def test_the_worker_and_app_roles_do_their_part(
    serve: Serve,
    conn: psycopg.Connection[Any],
    make_login: Callable[..., str],
    tracker: Tracker,
) -> None:
    app_url = make_login("websurf_app")
    worker_url = make_login("websurf_worker")
    with psycopg.connect(app_url, autocommit=True) as app:  # a quota, as the web app sets it
        app.execute(
            "INSERT INTO websurfing_task_limit (task_type, limit_key, rate, period_s)"
            " VALUES ('rated', 'ada', 2, 60)"
        )
        app.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, limit_key)"
            " SELECT 'rated', '{}', 'ada' FROM generate_series(1, 3)"
        )
        app.execute("UPDATE websurfing_task_limit SET rate = 3 WHERE limit_key = 'ada'")

    # the worker role stores the code's limits, claims through claim_limited, logs starts
    serve("host0/0/runner", url=worker_url)
    wait_for(lambda: _done(conn, "rated") == 3, "the quota's three tasks completed")
    _enqueue(conn, "capped", 4)
    wait_for(lambda: _done(conn, "capped") == 4, "the capped tasks completed")

    assert tracker.most[None] <= CAP
    assert conn.execute("SELECT count(*) FROM websurf.task_limit_start").fetchone() == (3,)
    with psycopg.connect(app_url, autocommit=True) as app:
        app.execute("DELETE FROM websurfing_task_limit WHERE limit_key = 'ada'")
    assert conn.execute("SELECT count(*) FROM websurf.task_limit_start").fetchone() == (0,)


def test_code_limits_never_overwrite_the_terminal_and_go_when_the_code_drops_them(
    conn: psycopg.Connection[Any],
) -> None:
    limits.set_limit(conn, "capped", Limit(max_running=9))
    declared = {"capped": (Limit(max_running=2),), "rated": (Limit(rate=5, per_s=1.0),)}

    limits.sync_code_limits(conn, declared)
    limits.sync_code_limits(conn, {"capped": (), "rated": (Limit(key="k", max_running=1),)})

    rows = conn.execute(
        "SELECT task_type, limit_key, max_running, rate, source FROM websurfing_task_limit"
        " ORDER BY 1, 2"
    ).fetchall()
    assert rows == [("capped", "", 9, None, "cli"), ("rated", "k", 1, None, "code")]


def test_a_web_title_task_counts_against_its_urls_host(conn: psycopg.Connection[Any]) -> None:
    enqueue_many(
        conn,
        [
            NewTask("web_title", {"url": "https://Ada@Example.COM:8443/page?q=1"}),
            NewTask("web_title", {"input": "news.example.org/today"}),
            NewTask("web_title", {"url": "https://example.com"}, limit_key="acct-1"),
            NewTask("noop", {"url": "https://example.com"}),
        ],
        allow_unknown_type=True,
    )

    keys = conn.execute(
        "SELECT task_type, limit_key FROM websurfing_task_queue ORDER BY created_at, id"
    ).fetchall()
    assert sorted(keys, key=str) == sorted(
        [
            ("web_title", "example.com"),
            ("web_title", "news.example.org"),
            ("web_title", "acct-1"),  # a key given at enqueue is kept
            ("noop", None),  # other operators get none
        ],
        key=str,
    )


def test_the_limited_claim_refuses_a_snapshot_older_than_its_lock(
    conn: psycopg.Connection[Any],
) -> None:
    limits.set_limit(conn, "capped", Limit(max_running=1))
    _enqueue(conn, "capped", 1)

    refused = pytest.raises(psycopg.errors.RaiseException, match="READ COMMITTED only")
    with refused, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        limits.claim_rows(conn, "w", "capped", 1, min_priority=0)
    rows, reopens = limits.claim_rows(conn, "w", "capped", 5, min_priority=0)
    assert (len(rows), reopens) == (1, None)
