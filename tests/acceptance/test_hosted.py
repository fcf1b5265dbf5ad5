"""The real ``websurf worker`` through a real PgBouncer in transaction mode (conftest
``pgbouncer``), as on hosted PostgreSQL: with the direct URL for LISTEN, and without it.

Run with ``-s`` to see the figures (one ``HOSTED`` line per run). Skipped with a reason
where the ``pgbouncer`` binary is missing.
"""

from __future__ import annotations

import re
import signal
import statistics
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from support.daemon import Daemon
from support.rows import robot_column

from websurf.sql.database import describe

Start = Callable[..., Daemon]  # conftest's start_worker(database_url, *options)
TASKS = 3000
PICKUPS = 40
DRAIN_DEADLINE_S = 120.0
# Slow enough that a pickup which waited for a poll cannot pass for one woken by NOTIFY.
POLL_WITH_DIRECT_URL_S = 5.0
PREPARED_STATEMENT_ERRORS = re.compile(
    r'prepared statement "_pg|DuplicatePreparedStatement|InvalidSqlStatementName'
    r"|unsupported startup parameter",
    re.IGNORECASE,
)
FAST_MAINTENANCE = ("--heartbeat-interval", "0.2", "--stale-after", "1", "--reaper-interval", "0.3")


def count(url: str, status: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM websurfing_task_queue WHERE status = %s", (status,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def enqueue_noops(url: str, tasks: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload)"
            " SELECT 'noop', '{}' FROM generate_series(1, %s)",
            (tasks,),
        )


def pickups_ms(daemon: Any, url: str, samples: int) -> list[float]:
    """Insert single tasks into an idle worker, one after another: insert -> claim, in ms."""
    found = []
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for _ in range(samples):
            row = conn.execute(
                "INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('noop', '{}')"
                " RETURNING id"
            ).fetchone()
            assert row is not None

            def done(task_id: Any = row[0]) -> Any:
                return conn.execute(
                    "SELECT extract(epoch FROM started_at - created_at) * 1000"
                    " FROM websurfing_task_queue WHERE id = %s AND status = 'completed'",
                    (task_id,),
                ).fetchone()

            found.append(float(daemon.wait_for(done, "a single task to complete")[0]))
    return found


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _listeners(direct_url: str) -> int:
    """Backends of this database that LISTEN for new tasks (one per worker process)."""
    with psycopg.connect(direct_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'websurf-listen%%'"
            " AND query LIKE 'LISTEN %%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def abnormal_exits(daemon: Any) -> list[dict[str, Any]]:
    """child_exited while the daemon was serving (a process that died and was restarted)."""
    return [e for e in daemon.events("child_exited") if e.get("level") != "info"]


def test_3000_tasks_through_pgbouncer_with_the_direct_url(
    database_url: str, pgbouncer: Any, start_worker: Start
) -> None:
    pooled = pgbouncer.url(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # for the reaper: a task held by a worker that is gone; for the pruner: old tasks
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, status, worker_id, attempts,"
            " started_at) VALUES ('noop', '{}', 'processing', 'gone/0/dead', 1, now())"
        )
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, status, created_at,"
            " updated_at, completed_at) SELECT 'noop', '{}', 'completed', now() - interval '30d',"
            " now() - interval '30d', now() - interval '30d' FROM generate_series(1, 10)"
        )
    daemon = start_worker(
        pooled,
        "--direct-database-url",
        database_url,
        "--poll-interval",
        str(POLL_WITH_DIRECT_URL_S),
        "--prune-older-than",
        "7d",
        *FAST_MAINTENANCE,
        concurrency=2,
    )
    daemon.wait_ready(2)
    enqueue_noops(pooled, TASKS)  # through the pooler, as the web app would

    daemon.wait_for(
        lambda: count(database_url, "completed") == TASKS + 1,
        f"{TASKS} tasks and the reaped one to complete",
        timeout=DRAIN_DEADLINE_S,
    )
    pickups = pickups_ms(daemon, pooled, PICKUPS)
    exits = abnormal_exits(daemon)
    daemon.send(signal.SIGTERM)
    code = daemon.wait()

    print(
        f"\nHOSTED direct_url=yes pooler=pgbouncer-transaction tasks={TASKS} processes=2"
        f" abnormal_exits={len(exits)} exit_code={code}"
        f" pickup_p50_ms={statistics.median(pickups):.1f} pickup_p99_ms={p(pickups, 0.99):.1f}"
    )
    assert code == 0
    assert exits == []
    assert not PREPARED_STATEMENT_ERRORS.findall(daemon.log())
    assert count(database_url, "processing") == 0 and count(database_url, "pending") == 0
    reaped = [e for e in daemon.events("reaper_ran") if e.get("handed_back")]
    assert sum(e["handed_back"] for e in reaped) == 1
    pruned = daemon.events("pruner_ran")
    assert pruned and pruned[0]["deleted"] == 10
    ready = daemon.events("worker_ready")
    assert len(ready) == 2
    for event in ready:
        assert event["connections"] == {
            "tasks": f"{describe(pooled)} (pooled: prepared statements off)",
            "listen_and_migrations": f"{describe(database_url)} (direct)",
        }
    # woken by NOTIFY on the direct connection, not by the (5 s) poll
    assert statistics.median(pickups) < POLL_WITH_DIRECT_URL_S * 1000 / 5


def test_without_the_direct_url_the_worker_polls_through_the_pooler_without_errors(
    database_url: str, pgbouncer: Any, start_worker: Start
) -> None:
    pooled = pgbouncer.url(database_url)
    tasks = TASKS // 10
    daemon = start_worker(pooled, concurrency=2)
    daemon.wait_ready(2)
    enqueue_noops(pooled, tasks)

    daemon.wait_for(
        lambda: count(database_url, "completed") == tasks,
        f"{tasks} tasks to complete",
        timeout=DRAIN_DEADLINE_S,
    )
    pickups = pickups_ms(daemon, pooled, PICKUPS // 2)
    exits = abnormal_exits(daemon)
    daemon.send(signal.SIGTERM)
    code = daemon.wait()

    print(
        f"\nHOSTED direct_url=no pooler=pgbouncer-transaction tasks={tasks} processes=2"
        f" abnormal_exits={len(exits)} exit_code={code}"
        f" pickup_p50_ms={statistics.median(pickups):.1f} pickup_p99_ms={p(pickups, 0.99):.1f}"
    )
    assert code == 0 and exits == []
    assert not PREPARED_STATEMENT_ERRORS.findall(daemon.log())
    detected = daemon.events("pooler_detected")
    assert detected and "LISTEN and migrations need a direct URL" in detected[0]["message"]
    for event in daemon.events("worker_ready"):
        assert "through the pooler" in event["connections"]["listen_and_migrations"]


def test_every_task_ends_once_when_pgbouncer_restarts_and_backends_are_terminated(
    database_url: str, pgbouncer: Any, start_worker: Start
) -> None:
    """The fault suite's database-restart case, through the pooler: PgBouncer itself is
    restarted (every client and server connection cut), then every server backend of the
    database is terminated (the pooler's and the direct LISTEN ones)."""
    pooled = pgbouncer.url(database_url)
    tasks = 1500
    robots = robot_column(database_url, "hosted_cell", tasks)
    daemon = start_worker(
        pooled,
        "--direct-database-url",
        database_url,
        "--operators",
        "hosted_operators",
        "--batch-size",
        "20",
        *FAST_MAINTENANCE,
        concurrency=2,
    )
    daemon.wait_ready(2)
    with psycopg.connect(pooled, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload)"
            " SELECT 'hosted_cell', p || jsonb_build_object('n', p -> 'row_number')"
            " FROM unnest(%s::jsonb[]) AS p",
            ([Jsonb(r) for r in robots],),
        )

    daemon.wait_for(lambda: count(database_url, "completed") >= tasks // 5, "a fifth done")
    pgbouncer.restart()
    daemon.wait_for(lambda: count(database_url, "completed") >= tasks // 2, "half done")
    with psycopg.connect(database_url, autocommit=True) as conn:
        terminated = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        ).fetchone()
    assert terminated is not None and terminated[0] > 0
    daemon.wait_for(
        lambda: count(database_url, "completed") == tasks,
        "every task to complete",
        timeout=DRAIN_DEADLINE_S,
    )
    listening = daemon.wait_for(
        lambda: _listeners(database_url) == 2, "both processes to LISTEN again, directly"
    )
    exits = abnormal_exits(daemon)
    daemon.send(signal.SIGTERM)
    code = daemon.wait()

    with psycopg.connect(database_url, autocommit=True) as conn:
        wrong = conn.execute(
            "SELECT count(*) FROM websurfing_task_queue AS t JOIN websurfing_cell AS c"
            " ON c.id = (t.payload->>'cell_id')::uuid"
            " WHERE c.content IS DISTINCT FROM t.payload->>'n'"
        ).fetchone()
        audit = conn.execute(
            "SELECT count(*), count(DISTINCT task_id) FROM websurfing_robot_input_event"
            " WHERE success"
        ).fetchone()
        attempts = conn.execute("SELECT max(attempts) FROM websurfing_task_queue").fetchone()
    print(
        f"\nHOSTED restart pooler=pgbouncer-transaction tasks={tasks}"
        f" backends_terminated={terminated[0]} abnormal_exits={len(exits)}"
        f" max_attempts_used={attempts[0] if attempts else None}"
    )
    assert code == 0 and exits == []
    assert daemon.events("database_retry")  # the faults were felt, and ridden out
    assert listening
    assert wrong == (0,)
    assert audit == (tasks, tasks)  # one successful robot write per task, none twice
    assert not PREPARED_STATEMENT_ERRORS.findall(daemon.log())
