"""Fairness between tenants (issue 22): one person's big paste does not make everyone
else's robots wait behind it.

What a user would notice: a person's single edit is answered in the next claim of its
operator however many tasks another person's paste queued before it; several people
with backlogs take turns; tasks carry a key without the web app doing anything (the
edit's author, else the spreadsheet's owner), and the web app may set one itself; the
claim stays one index scan at 1,000,000 pending tasks.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from support.daemon import Daemons, query
from support.rows import new_column, new_user
from support.waiting import wait_for

from websurf.cli.render import to_json
from websurf.cli.render.status import status_report
from websurf.sql import QUERIES
from websurf.sql.database import apply_settings
from websurf.sql.migrate import migrate, shipped_migrations
from websurf.worker.config import WorkerConfig
from websurf.worker.core import queue
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.queue import CLAIM_MAX_BYTES, claim, claim_rows, enqueue, finish
from websurf.worker.core.registry import Context, Registry, Task
from websurf.worker.core.snapshot import status_snapshot
from websurf.worker.maintenance import promoter
from websurf.worker.process.runner import CLAIM_PLAN, DURABLE, Runner

WORKER = "test-host/0/fair"
OPERATOR = "slow_llm"
FAIRNESS_VERSION = 25  # sql/migrations/0025_task_queue_fairness.sql
SLOTS = 5  # the issue's `concurrency=5`: a claim takes as many as there are free slots


def _robot_sheet(conn: psycopg.Connection[Any], owner: str) -> tuple[str, str]:
    """A spreadsheet of ``owner`` whose column A feeds a robot column; (sheet, column A)."""
    sheet, source = new_column(conn, owner)
    conn.execute(
        "INSERT INTO websurfing_column"
        " (spreadsheet_id, position, title, operator_type, source_column_id)"
        " VALUES (%s, 1, 'answer', %s, %s)",
        (sheet, OPERATOR, source),
    )
    return sheet, source


def _paste(conn: psycopg.Connection[Any], user: str, sheet: str, source: str, rows: int) -> None:
    """``user`` pastes ``rows`` rows into the source column: one authored INSERT, as the web app."""
    with conn.transaction():
        conn.execute("SELECT set_config('websurf.user_id', %s, true)", (user,))
        conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, content)"
            " SELECT %s, %s, n, 'row ' || n FROM generate_series(1, %s) AS n",
            (sheet, source, rows),
        )


def _claim_keys(conn: psycopg.Connection[Any], limit: int = SLOTS) -> list[str | None]:
    """One claim through the real claim query; the keys of what it took (a claim's rows
    come back in no particular order: its tasks start together)."""
    return [row.fairness_key for row in claim_rows(conn, WORKER, [OPERATOR], limit)]


def test_a_single_edit_is_claimed_ahead_of_another_persons_paste(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    """The issue's scenario: A pastes 2,000 rows, then B edits one cell; B's robot task is
    in the first claim of the operator, not behind A's 2,000."""
    user_a, user_b = make_user("A"), make_user("B")
    sheet_a, source_a = _robot_sheet(conn, user_a)
    sheet_b, source_b = _robot_sheet(conn, user_b)
    _paste(conn, user_a, sheet_a, source_a, 2_000)
    assert _claim_keys(conn) == [user_a] * SLOTS  # A's robots are running

    _paste(conn, user_b, sheet_b, source_b, 1)
    taken = _claim_keys(conn)

    assert user_b in taken, f"B's edit waited behind A's paste: {taken}"
    assert taken.count(user_a) == SLOTS - 1  # and A's work goes on beside it


PACED = "paced_llm"
PACED_SLOTS = 3  # its concurrency per process
PACED_RUN_S = 1.0  # every run as long: without pacing, its slots free together


def _queue_paced(conn: psycopg.Connection[Any], key: str, count: int) -> None:
    """``count`` person-priority tasks of ``key``, in one insert (a paste)."""
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, priority, fairness_key)"
        " SELECT %s, '{}', 8, %s FROM generate_series(1, %s)",
        (PACED, key, count),
    )


def _paced_count(conn: psycopg.Connection[Any], key: str, status: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM websurfing_task_queue"
        " WHERE task_type = %s AND fairness_key = %s AND status = %s",
        (PACED, key, status),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_small_tenants_task_starts_at_the_next_start_not_with_the_big_tenants_next_batch(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """A capped robot (3 slots, every run 1 s) busy with A's paste: its starts spread
    out (one every 1/3 s) instead of three at once every second, so B's task, queued
    mid-run, starts at the next start, at most after the one task of A's that shares
    its turn; without pacing it waited for the next release and started together with
    A's next tasks."""
    registry = Registry()

    @registry.operator(PACED, concurrency=PACED_SLOTS, timeout_s=None)
    async def paced_llm(task: Task, context: Context) -> Any:
        await asyncio.sleep(PACED_RUN_S)

    runner = Runner(
        WorkerConfig(database_url=database_url, poll_interval_s=0.5),
        "test-host/0/paced",
        registry=registry,
    )
    runner.boot()
    serving = threading.Thread(target=runner.serve, name="serve-paced")
    serving.start()
    try:
        _queue_paced(conn, "A", 60)
        wait_for(
            lambda: _paced_count(conn, "A", "completed") >= 2 * PACED_SLOTS,
            "A's first runs (the robot's run time learned)",
        )
        _queue_paced(conn, "B", 1)
        wait_for(lambda: _paced_count(conn, "B", "completed") == 1, "B's robot answered")
    finally:
        runner.request_stop()
        runner.request_stop()
        serving.join(30)
    assert not serving.is_alive()

    row = conn.execute(
        "SELECT created_at, started_at FROM websurfing_task_queue WHERE fairness_key = 'B'"
    ).fetchone()
    assert row is not None
    created, started = row
    alongside = conn.execute(
        "SELECT count(*) FROM websurfing_task_queue"
        " WHERE fairness_key = 'A' AND started_at > %s AND started_at <= %s",
        (created, started),
    ).fetchone()
    assert alongside is not None
    # 1: A's task that holds B's turn and was queued first; not A's next batch of three
    assert alongside[0] <= 1, f"{alongside[0]} of A's tasks started before or with B's"
    assert _paced_count(conn, "A", "pending") > 0  # A's paste was still waiting meanwhile


def test_keys_with_backlogs_take_turns(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    """Three people queue 100 tasks each, one after the other: claims alternate between
    them instead of running the first person's hundred first."""
    users = [make_user(name) for name in "ABC"]
    for user in users:
        sheet, source = _robot_sheet(conn, user)
        _paste(conn, user, sheet, source, 100)

    taken = [key for _ in range(10) for key in _claim_keys(conn, limit=3)]

    assert len(taken) == 30
    for start in range(0, 30, 3):
        assert sorted(taken[start : start + 3]) == sorted(users), taken


def test_a_late_key_joins_the_current_round_not_the_first(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    """A key that queues many tasks while another key's backlog is half done takes turns
    with it from there: it does not get all its tasks ahead of the older backlog."""
    user_a, user_b = make_user("A"), make_user("B")
    sheet_a, source_a = _robot_sheet(conn, user_a)
    sheet_b, source_b = _robot_sheet(conn, user_b)
    _paste(conn, user_a, sheet_a, source_a, 200)
    for _ in range(20):
        _claim_keys(conn)  # A's first 100 are taken
    _paste(conn, user_b, sheet_b, source_b, 100)

    taken = [key for _ in range(10) for key in _claim_keys(conn, limit=2)]

    assert Counter(taken) == {user_a: 10, user_b: 10}, taken


def test_one_insert_of_several_keys_numbers_each_keys_tasks_in_turn(
    conn: psycopg.Connection[Any],
) -> None:
    """Rows of several keys in one INSERT (the trigger remembers only the last row's
    round): each key's tasks still take rounds 0, 1, 2 ... in insert order."""
    keys = ["a", "a", "b", None, "a", "", "b", "a\tb", None, "a"]
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, fairness_key)"
        " SELECT %s, jsonb_build_object('n', n), k"
        " FROM unnest(%s::text[]) WITH ORDINALITY AS u(k, n)",
        (OPERATOR, keys),
    )

    rounds = conn.execute(
        "SELECT fairness_key, fair_seq FROM websurfing_task_queue ORDER BY (payload ->> 'n')::int"
    ).fetchall()

    assert rounds == [
        ("a", 0), ("a", 1), ("b", 0), (None, 0), ("a", 2),
        ("", 0), ("b", 1), ("a\tb", 0), (None, 1), ("a", 3),
    ]  # fmt: skip


def test_a_bulk_insert_reads_the_queue_once_per_run_not_per_row(
    conn: psycopg.Connection[Any],
) -> None:
    """A 500-task insert of one key, type and priority (enqueue_many, a paste's robot
    tasks) looks up its first round once; the rows after it count on from there
    (sql/migrations/0030), and still after tasks of that key are already waiting."""
    conn.execute("SET track_functions = 'all'")  # pg_stat_xact_user_functions counts calls
    insert = (
        "INSERT INTO websurfing_task_queue (task_type, payload, fairness_key)"
        " SELECT %s, jsonb_build_object('n', n), 'a' FROM generate_series(1, 500) AS n"
    )
    with conn.transaction():
        conn.execute(insert, (OPERATOR,))
        conn.execute(insert, (OPERATOR,))
        lookups = conn.execute(
            "SELECT calls FROM pg_stat_xact_user_functions"
            " WHERE schemaname = 'websurf' AND funcname = 'task_queue_fair_round'"
        ).fetchone()

    assert lookups == (2,)
    rounds = [r for (r,) in conn.execute(
        "SELECT fair_seq FROM websurfing_task_queue ORDER BY fair_seq"
    ).fetchall()]  # fmt: skip
    assert rounds == list(range(1_000))


def test_keys_come_from_the_author_else_the_spreadsheet_owner(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    """A person's edit: its author. A task for a spreadsheet with no author in the
    transaction (a refresh round, a schedule): the spreadsheet's owner. Neither: no key.
    A key the inserter gives is kept."""
    owner, editor = make_user("owner"), make_user("editor")
    sheet, source = _robot_sheet(conn, owner)
    _paste(conn, editor, sheet, source, 1)  # someone the owner shares the sheet with
    enqueue(conn, OPERATOR, {"spreadsheet_id": sheet, "input": "refresh"})
    enqueue(conn, OPERATOR, {"input": "no sheet"})
    enqueue(conn, OPERATOR, {"spreadsheet_id": "not a uuid"})
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, fairness_key)"
        " VALUES (%s, %s, 'api-account-7')",
        (OPERATOR, json.dumps({"spreadsheet_id": sheet})),
    )

    keys = dict(
        conn.execute(
            "SELECT coalesce(payload ->> 'input', payload ->> 'spreadsheet_id'), fairness_key"
            " FROM websurfing_task_queue"
        ).fetchall()
    )

    assert keys == {
        "row 1": editor,
        "refresh": owner,
        "no sheet": None,
        "not a uuid": None,
        sheet: "api-account-7",
    }


def test_the_web_app_role_sets_the_key_and_cannot_set_the_round(
    conn: psycopg.Connection[Any], make_login: Callable[..., str]
) -> None:
    """The web app (websurf_app) inserts tasks with its own key, as from Drizzle; the
    round is the queue's: a task inserted with fair_seq 0 behind a backlog still waits
    its turn, but its key's first task comes before the backlog's second."""
    for n in range(10):
        enqueue(conn, OPERATOR, {"n": n})  # a backlog with no key
    with psycopg.connect(make_login("websurf_app"), autocommit=True) as app:
        app.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, fairness_key, fair_seq)"
            " VALUES (%s, '{}', 'tenant-42', 0), (%s, '{}', 'tenant-42', 0)",
            (OPERATOR, OPERATOR),
        )

    claims = [Counter(_claim_keys(conn, limit=2)) for _ in range(2)]

    assert claims == [{None: 1, "tenant-42": 1}] * 2


def test_a_task_queued_for_later_does_not_hold_back_due_ones(
    conn: psycopg.Connection[Any],
) -> None:
    """Tasks due later sit apart from the rounds (the timed band): due tasks of their
    key queued after them are claimed at once, and they themselves wait until due."""
    later = datetime.now(UTC) + timedelta(hours=1)
    for n in range(3):
        enqueue(conn, OPERATOR, {"n": n}, scheduled_for=later)
    enqueue(conn, OPERATOR, {"n": "due"})

    rows = claim_rows(conn, WORKER, [OPERATOR], 10)

    assert [row.payload for row in rows] == [{"n": "due"}]


def test_a_task_queued_for_later_takes_its_turn_once_due(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    """B's task queued to run a moment later does not wait for A's whole backlog once it
    is due: the maintenance thread's promoter gives it the current round."""
    user_a = make_user("A")
    sheet_a, source_a = _robot_sheet(conn, user_a)
    [(due_at,)] = conn.execute("SELECT now() + interval '200 milliseconds'").fetchall()
    enqueue(conn, OPERATOR, {"input": "later"}, priority=8, scheduled_for=due_at)  # as edits
    conn.execute(
        "UPDATE websurfing_task_queue SET fairness_key = 'B' WHERE payload ->> 'input' = 'later'"
    )
    _paste(conn, user_a, sheet_a, source_a, 100)
    wait_for(
        lambda: conn.execute("SELECT now() > %s", (due_at,)).fetchone() == (True,),
        "the task queued for later to come due",
    )

    assert promoter.run_once(conn) == 1
    assert promoter.run_once(conn) == 0  # once only
    taken = _claim_keys(conn)

    assert "B" in taken, f"the due task waited behind A's backlog: {taken}"


def test_a_retry_waits_its_backoff_apart_then_takes_its_turn(
    conn: psycopg.Connection[Any],
) -> None:
    """A task retried with a backoff leaves the rounds while it waits (claims never step
    over it), and joins them again once due: after its key's tasks already waiting."""
    for n in range(3):
        enqueue(conn, OPERATOR, {"n": n})
    [task] = claim(conn, WORKER, [OPERATOR], 1)
    run_at = datetime.now(UTC) + timedelta(seconds=30)
    finish(conn, WORKER, [Outcome(task, Status.PENDING, OPERATOR, error="429", run_at=run_at)])
    [(waiting_round,)] = conn.execute(
        "SELECT fair_seq FROM websurfing_task_queue WHERE id = %s", (task.id,)
    ).fetchall()

    assert promoter.run_once(conn, datetime.now(UTC)) == 0  # not due yet
    assert promoter.run_once(conn, run_at + timedelta(seconds=1)) == 1
    rounds = dict(
        conn.execute(
            "SELECT payload ->> 'n', fair_seq FROM websurfing_task_queue WHERE status = 'pending'"
        ).fetchall()
    )

    assert waiting_round >= 2**62
    assert rounds == {"0": 3, "1": 1, "2": 2}


def test_status_names_the_keys_with_the_largest_backlogs(
    conn: psycopg.Connection[Any],
) -> None:
    """websurf status (text and --json) lists the ten keys with the most pending tasks,
    largest first, and how many keys wait in all."""
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, fairness_key)"
        " SELECT %s, '{}', 'tenant-' || k FROM generate_series(1, 12) AS k,"
        " generate_series(1, k) AS n",
        (OPERATOR,),
    )
    enqueue(conn, OPERATOR, {}, delay=timedelta(hours=1))  # later counts too; no key

    found = status_snapshot(conn)
    text = status_report(found)
    as_json = json.loads(to_json(found))

    assert [(k.key, k.pending) for k in found.keys] == [
        (f"tenant-{k}", k) for k in range(12, 2, -1)
    ]
    assert found.keys_pending == 13
    assert "10 largest of 13" in text and "tenant-12" in text and "tenant-2 " not in text
    assert as_json["keys"][0] == {"key": "tenant-12", "pending": 12}


def test_the_debug_log_says_whose_tasks_a_claim_took(database_url: str, daemons: Daemons) -> None:
    """With --log-level debug, each claim logs tasks_claimed with its tasks per key."""
    query(
        database_url,
        "INSERT INTO websurfing_task_queue (task_type, payload, fairness_key)"
        " SELECT 'noop', '{}', k FROM unnest('{tenant-1,tenant-2,tenant-2}'::text[]) AS k",
    )
    worker = daemons.worker(database_url, "--log-level", "debug", concurrency=1)

    def claimed() -> Counter[str]:
        keys: Counter[str] = Counter()
        for event in worker.events("tasks_claimed"):
            keys.update(event["keys"])
        return keys

    worker.wait_for(lambda: claimed() == {"tenant-1": 1, "tenant-2": 2}, "claims naming the keys")
    assert worker.stop() == 0


def test_a_live_queue_migrates_its_waiting_tasks_into_turns(empty_database_url: str) -> None:
    """Migration 0025 on a database already holding tasks: pending ones get their
    spreadsheet owner's key and rounds in due order per key, so the first claims after
    the upgrade already alternate; a task due later waits apart; finished rows stay."""
    before = [m for m in shipped_migrations() if m.version < FAIRNESS_VERSION]
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        migrate(conn, shipped=before)
        owners = [new_user(conn), new_user(conn)]
        sheets = [new_column(conn, owner)[0] for owner in owners]
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, scheduled_for)"
            " SELECT %s, jsonb_build_object('spreadsheet_id', s),"
            "        now() - interval '1 minute' + n * interval '1 second'"
            " FROM unnest(%s::uuid[]) WITH ORDINALITY AS u(s, k), generate_series(1, 4) AS n",
            (OPERATOR, sheets),
        )
        conn.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, scheduled_for, status)"
            " VALUES (%s, '{}', now() + interval '1 hour', 'pending'),"
            " (%s, '{}', now(), 'completed')",
            (OPERATOR, OPERATOR),
        )

        migrate(conn)

        claims = [Counter(_claim_keys(conn, limit=2)) for _ in range(4)]
        later = conn.execute(
            "SELECT fair_seq >= 2 ^ 62 FROM websurfing_task_queue WHERE scheduled_for > now()"
        ).fetchall()
        finished = conn.execute(
            "SELECT fairness_key, fair_seq FROM websurfing_task_queue WHERE status = 'completed'"
        ).fetchall()

    assert claims == [{owners[0]: 1, owners[1]: 1}] * 4
    assert later == [(True,)]
    assert finished == [(None, 0)]


@pytest.fixture
def million_pending(database_url: str) -> str:
    """1,000,000 pending tasks of 1,000 keys in 1,000 rounds, as the trigger numbers them
    (written directly: a million trigger calls would take minutes), then ANALYZE."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE websurfing_task_queue DISABLE TRIGGER task_queue_fair_place")
        conn.execute(
            "INSERT INTO websurfing_task_queue"
            " (task_type, payload, priority, fairness_key, fair_seq)"
            " SELECT %s, '{}', 5, 'key-' || (n %% 1000), n / 1000"
            " FROM generate_series(0, 999999) AS n",
            (OPERATOR,),
        )
        conn.execute("ALTER TABLE websurfing_task_queue ENABLE TRIGGER task_queue_fair_place")
        conn.execute("ANALYZE websurfing_task_queue")
    return database_url


def test_the_claim_is_one_index_scan_at_a_million_pending_tasks(million_pending: str) -> None:
    """EXPLAIN of the claim: an index scan of the fair index in claim order, no Sort of
    the backlog (only of the rows picked), and only about as many index entries read as
    tasks claimed."""
    params = {
        "task_types": [OPERATOR],
        "limit": 50,
        "worker_id": WORKER,
        "min_priority": 0,
        "max_bytes": CLAIM_MAX_BYTES,
    }
    with psycopg.connect(million_pending) as conn:
        [(plan,)] = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + QUERIES["claim_tasks"], params
        ).fetchall()
        conn.rollback()
        taken = [row.fairness_key for row in claim_rows(conn, WORKER, [OPERATOR], 50)]

    nodes = list(_nodes(plan[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "websurfing_task_queue"]
    picking = [n for n in scans if n.get("Index Name") == "task_queue_fair_idx"]
    assert picking, f"the claim did not read task_queue_fair_idx: {scans}"
    # the byte budget's running sum sorts the rows picked (at most the limit), never the backlog
    sorted_rows = [c["Actual Rows"] for n in nodes if n["Node Type"] == "Sort" for c in n["Plans"]]
    assert all(rows <= 50 for rows in sorted_rows), f"the claim sorts {sorted_rows} rows"
    assert not [n for n in scans if n["Node Type"] == "Seq Scan"], "the claim reads the table"
    assert picking[0]["Actual Rows"] <= 100  # it stopped after the 50 it claimed
    assert len(set(taken)) == 50  # 50 keys, one task each: the first round


@pytest.mark.parametrize("settings", [DURABLE, CLAIM_PLAN], ids=["limited", "plain"])
def test_the_claim_keeps_to_the_index_when_statistics_are_stale(
    database_url: str, settings: dict[str, str]
) -> None:
    """Statistics trail a queue that fills fast. They were taken while another operator's
    backlog waited; then that backlog went and 20,000 tasks of this operator came (a paste
    into a new robot column). With the claim connection's settings the claim still walks
    the fair index and stops at its batch. Believing the statistics (this operator: next
    to no tasks), PostgreSQL 15 read all 20,000 through a bitmap and sorted them, for
    every claim of 500: 20 ms each in `websurf bench`'s audited cell run."""
    params = {
        "task_types": [OPERATOR],
        "limit": 500,
        "worker_id": WORKER,
        "min_priority": queue.LOWEST_PRIORITY,
        "max_bytes": CLAIM_MAX_BYTES,
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE websurfing_task_queue SET (autovacuum_enabled = false)")
        backlog = (
            "INSERT INTO websurfing_task_queue (task_type, payload, priority)"
            " SELECT %s, '{}', 8 FROM generate_series(1, 20000)"
        )
        conn.execute(backlog, ("another_operator",))
        conn.execute("ANALYZE websurfing_task_queue")
        conn.execute("TRUNCATE websurfing_task_queue CASCADE")
        conn.execute(backlog, (OPERATOR,))
        apply_settings(conn, settings, local=False)
        [(plan,)] = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + QUERIES["claim_tasks"], params
        ).fetchall()

    nodes = list(_nodes(plan[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "websurfing_task_queue"]
    picking = [n for n in scans if n.get("Index Name") == "task_queue_fair_idx"]
    plan_nodes = [(n["Node Type"], n.get("Index Name")) for n in nodes]
    assert [n["Node Type"] for n in picking] == ["Index Scan"], plan_nodes
    sorted_rows = [c["Actual Rows"] for n in nodes if n["Node Type"] == "Sort" for c in n["Plans"]]
    assert all(rows <= 500 for rows in sorted_rows), f"the claim sorts {sorted_rows} rows"
    assert picking[0]["Actual Rows"] <= 1000  # it stopped after the 500 it claimed
    assert "JIT" not in plan[0], "the claim was compiled"  # a disabled plan's price: JIT


def _nodes(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)
