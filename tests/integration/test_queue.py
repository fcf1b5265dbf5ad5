"""The queue's operations against a real PostgreSQL: enqueue, claim, fenced finish, audit."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from support.rows import robot_payloads
from support.waiting import wait_for

from websurf.sql import QUERIES
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.queue import (
    EnqueueError,
    NewTask,
    claim,
    claim_rows,
    enqueue,
    enqueue_many,
    finish,
    next_due_in,
    record_robot_events,
)
from websurf.worker.core.registry import Context, Registry, Task

WORKER = "test-host/0/abc"
DEADLINE_S = 30.0
NOTIFY_WAIT_S = 5.0


def _noop(task: Task, context: Context) -> Any:
    return None


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.register("alpha", _noop, max_attempts=4)
    reg.register("beta", _noop)
    return reg


def _task_row(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(QUERIES["get_task"], {"id": task_id}).fetchone()
    assert row is not None, f"task {task_id} not found"
    return row


def _count(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def listener(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as listen:
        listen.execute("LISTEN new_task")
        listen.execute("LISTEN cell_updated")
        yield listen


def _notifications(
    listen: psycopg.Connection[Any], sender: psycopg.Connection[Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Every notification sent before now: a sentinel marks the end (delivery is in order)."""
    marker = uuid.uuid4().hex
    sender.execute("SELECT pg_notify('new_task', %s)", (json.dumps({"sentinel": marker}),))
    got: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + NOTIFY_WAIT_S
    while time.monotonic() < deadline:
        for notice in listen.notifies(timeout=0.2, stop_after=1):
            data = json.loads(notice.payload)
            if data.get("sentinel") == marker:
                return got
            got.append((notice.channel, data))
    raise AssertionError(f"sentinel notification never arrived; got {got}")


# -- enqueue ---------------------------------------------------------------------------


def test_enqueue_rolled_back_with_the_callers_transaction(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(database_url) as tx:
        task_id = enqueue(tx, "alpha", {"n": 1})
        assert _count(tx, "SELECT count(*) FROM websurfing_task_queue") == 1
        tx.rollback()

    assert _count(conn, "SELECT count(*) FROM websurfing_task_queue WHERE id = %s", task_id) == 0


def test_enqueue_committed_with_the_callers_transaction(
    database_url: str, conn: psycopg.Connection[Any], registry: Registry
) -> None:
    with psycopg.connect(database_url) as tx:
        task_id = enqueue(tx, "alpha", {"n": 1}, priority=9, registry=registry)
        # Not visible to others until the caller commits.
        assert _count(conn, "SELECT count(*) FROM websurfing_task_queue") == 0
        tx.commit()

    row = _task_row(conn, task_id)
    assert row["task_type"] == "alpha"
    assert row["payload"] == {"n": 1}
    assert row["status"] == "pending"
    assert row["priority"] == 9
    assert row["attempts"] == 0
    assert row["max_attempts"] == 4  # the operator's default
    assert row["scheduled_for"] <= datetime.now(UTC)


def test_enqueue_notifies_with_the_id_of_a_single_task(
    conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    task_id = enqueue(conn, "alpha", {}, priority=7)

    got = _notifications(listener, conn)
    assert got == [("new_task", {"task_type": "alpha", "priority": 7, "id": str(task_id)})]


def test_delayed_enqueue_notifies_when_it_is_due(
    conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    task_id = enqueue(conn, "alpha", {}, delay=timedelta(minutes=10))

    row = _task_row(conn, task_id)
    expected = datetime.now(UTC) + timedelta(minutes=10)
    assert abs((row["scheduled_for"] - expected).total_seconds()) < 5
    [(channel, data)] = _notifications(listener, conn)
    assert channel == "new_task"
    assert data["id"] == str(task_id)
    assert datetime.fromisoformat(data["scheduled_for"]) == row["scheduled_for"]


def test_enqueue_at_a_time(conn: psycopg.Connection[Any]) -> None:
    when = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    task_id = enqueue(conn, "alpha", {}, scheduled_for=when)
    assert _task_row(conn, task_id)["scheduled_for"] == when


def test_bulk_enqueue_is_one_statement_and_one_notification_per_type(
    conn: psycopg.Connection[Any], listener: psycopg.Connection[Any], registry: Registry
) -> None:
    tasks = [
        NewTask("alpha" if i % 2 else "beta", {"i": i}, priority=i % 10, max_attempts=1 + i % 5)
        for i in range(1000)
    ]

    ids = enqueue_many(conn, tasks, registry=registry)

    assert len(ids) == len(set(ids)) == 1000
    got = _notifications(listener, conn)
    # One INSERT statement fires the statement-level trigger once: one notice per type.
    assert sorted(got, key=lambda n: n[1]["task_type"]) == [
        ("new_task", {"task_type": "alpha", "priority": 9}),
        ("new_task", {"task_type": "beta", "priority": 8}),
    ]
    # ids come back in the order the tasks were given, with their own settings.
    rows = conn.execute(
        "SELECT id, task_type, payload, priority, max_attempts FROM websurfing_task_queue"
    ).fetchall()
    by_id = {r[0]: r[1:] for r in rows}
    for i in (0, 1, 2, 499, 998, 999):
        t = tasks[i]
        assert by_id[ids[i]] == (t.task_type, t.payload, t.priority, t.max_attempts)


def test_bulk_enqueue_of_nothing_inserts_nothing(conn: psycopg.Connection[Any]) -> None:
    assert enqueue_many(conn, []) == []
    assert _count(conn, "SELECT count(*) FROM websurfing_task_queue") == 0


def test_bulk_enqueue_refuses_the_whole_batch_for_one_bad_task(
    conn: psycopg.Connection[Any], registry: Registry
) -> None:
    tasks = [NewTask("alpha", {}), NewTask("alpha", [1, 2])]  # type: ignore[arg-type]
    with pytest.raises(EnqueueError, match="JSON object"):
        enqueue_many(conn, tasks, registry=registry)
    assert _count(conn, "SELECT count(*) FROM websurfing_task_queue") == 0


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([1, 2], "must be a JSON object, not list"),
        ("text", "must be a JSON object, not str"),
        (None, "must be a JSON object, not NoneType"),
        ({"when": datetime.now(UTC)}, "not JSON-serialisable"),
    ],
)
def test_payload_that_is_not_a_json_object_is_refused(
    conn: psycopg.Connection[Any], payload: Any, reason: str
) -> None:
    with pytest.raises(EnqueueError, match=reason):
        enqueue(conn, "alpha", payload)
    assert _count(conn, "SELECT count(*) FROM websurfing_task_queue") == 0


def test_unknown_task_type_is_refused_unless_allowed(
    conn: psycopg.Connection[Any], registry: Registry
) -> None:
    with pytest.raises(EnqueueError) as caught:
        enqueue(conn, "gamma", {}, registry=registry)
    assert "'gamma'" in str(caught.value)
    assert "alpha, beta" in str(caught.value)  # says what is known
    assert _count(conn, "SELECT count(*) FROM websurfing_task_queue") == 0

    task_id = enqueue(conn, "gamma", {}, registry=registry, allow_unknown_type=True)
    assert _task_row(conn, task_id)["max_attempts"] == 3  # no operator: the global default


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"max_attempts": 0}, "max attempts"),
        ({"max_attempts": -2}, "max attempts"),
        ({"delay": timedelta(seconds=-1)}, "negative"),
        ({"scheduled_for": datetime(2030, 1, 1)}, "time zone"),
        (
            {"delay": timedelta(seconds=1), "scheduled_for": datetime(2030, 1, 1, tzinfo=UTC)},
            "not both",
        ),
    ],
)
def test_bad_enqueue_options_are_refused(
    conn: psycopg.Connection[Any], options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(EnqueueError, match=reason):
        enqueue(conn, "alpha", {}, **options)
    assert _count(conn, "SELECT count(*) FROM websurfing_task_queue") == 0


def test_task_type_length_is_checked(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(EnqueueError, match="1 to 100"):
        enqueue(conn, "x" * 101, {}, allow_unknown_type=True)
    with pytest.raises(EnqueueError, match="1 to 100"):
        enqueue(conn, "", {}, allow_unknown_type=True)


# -- claim -----------------------------------------------------------------------------


def test_claim_sets_processing_and_counts_the_attempt(conn: psycopg.Connection[Any]) -> None:
    task_id = enqueue(conn, "alpha", {"k": "v"}, max_attempts=5)

    [task] = claim(conn, WORKER, ["alpha"], 10)

    assert (task.id, task.task_type, task.payload) == (task_id, "alpha", {"k": "v"})
    assert (task.attempt, task.max_attempts) == (1, 5)
    row = _task_row(conn, task_id)
    assert row["status"] == "processing"
    assert row["attempts"] == 1
    assert row["worker_id"] == WORKER
    assert row["started_at"] is not None
    assert claim(conn, WORKER, ["alpha"], 10) == []  # a claimed task is not claimed again


def test_a_claimed_row_says_how_long_its_task_had_been_due(conn: psycopg.Connection[Any]) -> None:
    due_when_scheduled = enqueue(conn, "alpha", {})
    due_when_created = enqueue(conn, "alpha", {})
    conn.execute(
        "UPDATE websurfing_task_queue SET created_at = now() - interval '60 seconds',"
        " scheduled_for = now() - interval '30 seconds' WHERE id = %s",
        (due_when_scheduled,),
    )
    conn.execute(
        "UPDATE websurfing_task_queue SET created_at = now() - interval '20 seconds',"
        " scheduled_for = now() - interval '90 seconds' WHERE id = %s",
        (due_when_created,),
    )

    waited = {row.id: row.waited_s for row in claim_rows(conn, WORKER, ["alpha"], 10)}

    assert 30 <= waited[due_when_scheduled] < 35  # due at its schedule, not its creation
    assert 20 <= waited[due_when_created] < 25  # due once it existed


def test_a_payload_is_claimed_exactly_as_it_was_enqueued(conn: psycopg.Connection[Any]) -> None:
    payload = {"big": 2**80, "tiny": -(2**70), "huge": 10**308, "ratio": 0.1, "text": "ünïcode ✓"}
    task_id = enqueue(conn, "alpha", payload)

    [task] = claim(conn, WORKER, ["alpha"], 10)

    assert (task.id, task.payload) == (task_id, payload)


def test_json_and_jsonb_values_read_as_json_loads_reads_their_text(
    conn: psycopg.Connection[Any],
) -> None:
    # json keeps its text as written (whitespace, repeated keys); jsonb's is canonical
    texts = ['  { "a" : [1, 2.5, null] ,"a": true }  ', '"x"', "null", '{"n": 12345}', "[]"]
    for text in texts:
        row = conn.execute("SELECT %s::json, %s::jsonb", (text, text)).fetchone()
        assert row == (json.loads(text), json.loads(text)), text


def test_claim_only_takes_the_workers_task_types(conn: psycopg.Connection[Any]) -> None:
    alpha = enqueue(conn, "alpha", {})
    beta = enqueue(conn, "beta", {})

    assert [t.id for t in claim(conn, WORKER, ["beta"], 10)] == [beta]
    assert claim(conn, WORKER, ["gamma"], 10) == []
    assert _task_row(conn, alpha)["status"] == "pending"


def test_claim_only_takes_due_pending_tasks(conn: psycopg.Connection[Any]) -> None:
    later = enqueue(conn, "alpha", {}, delay=timedelta(hours=1))
    cancelled = enqueue(conn, "alpha", {})
    conn.execute(
        "UPDATE websurfing_task_queue SET status = 'cancelled' WHERE id = %s", (cancelled,)
    )

    assert claim(conn, WORKER, ["alpha"], 10) == []
    due_in = next_due_in(conn, ["alpha"])
    assert due_in is not None and 3590 < due_in <= 3600  # the later task, in an hour
    assert _task_row(conn, later)["status"] == "pending"
    assert next_due_in(conn, ["beta"]) is None


def test_claim_order_is_priority_then_due_time(conn: psycopg.Connection[Any]) -> None:
    now = datetime.now(UTC)
    expected = [
        enqueue(conn, "alpha", {}, priority=9, scheduled_for=now - timedelta(seconds=1)),
        enqueue(conn, "alpha", {}, priority=5, scheduled_for=now - timedelta(seconds=30)),
        enqueue(conn, "alpha", {}, priority=5, scheduled_for=now - timedelta(seconds=20)),
        enqueue(conn, "alpha", {}, priority=5, scheduled_for=now - timedelta(seconds=10)),
        enqueue(conn, "alpha", {}, priority=1, scheduled_for=now - timedelta(hours=1)),
    ]
    conn.execute("ANALYZE websurfing_task_queue")

    one_at_a_time = [claim(conn, WORKER, ["alpha"], 1) for _ in expected]

    assert [[t.id for t in batch] for batch in one_at_a_time] == [[i] for i in expected]
    # A batch takes the highest-ranked tasks first.
    for i in range(5):
        conn.execute(
            "UPDATE websurfing_task_queue SET status = 'pending' WHERE id = %s", (expected[i],)
        )
    assert {t.id for t in claim(conn, WORKER, ["alpha"], 2)} == set(expected[:2])


def test_concurrent_claims_never_hand_out_a_task_twice(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    total = 5000
    ids = enqueue_many(conn, [NewTask("alpha", {"i": i}) for i in range(total)])
    claimed: list[list[uuid.UUID]] = [[] for _ in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(claimed))

    def claimer(index: int) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                start.wait()
                while True:
                    batch = claim(own, f"worker-{index}", ["alpha"], 7)
                    if not batch:
                        return
                    claimed[index].extend(t.id for t in batch)
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(len(claimed))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors
    everything = [task_id for batch in claimed for task_id in batch]
    assert len(everything) == len(set(everything)) == total  # none twice
    assert set(everything) == set(ids)  # none lost
    assert sum(1 for batch in claimed if batch) > 1  # the claimers really competed
    rows = conn.execute(
        "SELECT worker_id, count(*) FROM websurfing_task_queue"
        " WHERE status = 'processing' AND attempts = 1 GROUP BY worker_id"
    ).fetchall()
    assert {w: n for w, n in rows} == {
        f"worker-{i}": len(batch) for i, batch in enumerate(claimed) if batch
    }


# -- fenced finish -----------------------------------------------------------------------


def _claim_one(conn: psycopg.Connection[Any], payload: dict[str, Any] | None = None) -> Task:
    enqueue(conn, "alpha", payload or {}, max_attempts=3)
    [task] = claim(conn, WORKER, ["alpha"], 1)
    return task


def test_finish_completes_the_claim_it_holds(conn: psycopg.Connection[Any]) -> None:
    task = _claim_one(conn)

    recorded = finish(conn, WORKER, [Outcome(task, Status.COMPLETED, "alpha", output={"x": 1})])

    assert recorded == {task.id}
    row = _task_row(conn, task.id)
    assert row["status"] == "completed"
    assert row["completed_at"] is not None
    assert row["attempts"] == 1


def test_finish_with_a_stale_claim_changes_nothing(conn: psycopg.Connection[Any]) -> None:
    task = _claim_one(conn)
    before = _task_row(conn, task.id)

    other_worker = finish(conn, "someone-else", [Outcome(task, Status.COMPLETED, "alpha")])
    stale = Task(task.id, task.task_type, task.payload, task.attempt - 1, task.max_attempts)
    old_attempt = finish(conn, WORKER, [Outcome(stale, Status.FAILED, "alpha", error="late")])

    assert other_worker == set()
    assert old_attempt == set()
    assert _task_row(conn, task.id) == before


def test_finish_after_the_task_was_taken_away_changes_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    """A worker presumed dead finishes late: the newer attempt is not overwritten."""
    task = _claim_one(conn)
    conn.execute(
        "UPDATE websurfing_task_queue SET status = 'pending' WHERE id = %s", (task.id,)
    )  # as the reaper does
    [again] = claim(conn, "new-worker", ["alpha"], 1)
    assert again.attempt == 2

    assert finish(conn, WORKER, [Outcome(task, Status.COMPLETED, "alpha")]) == set()
    row = _task_row(conn, task.id)
    assert (row["status"], row["worker_id"], row["attempts"]) == ("processing", "new-worker", 2)


def test_retry_goes_back_to_pending_later_with_the_error(conn: psycopg.Connection[Any]) -> None:
    task = _claim_one(conn)
    run_at = datetime.now(UTC) + timedelta(seconds=40)

    recorded = finish(
        conn, WORKER, [Outcome(task, Status.PENDING, "alpha", error="boom", run_at=run_at)]
    )

    assert recorded == {task.id}
    row = _task_row(conn, task.id)
    assert row["status"] == "pending"
    assert row["scheduled_for"] == run_at
    assert row["error_message"] == "boom"
    assert row["attempts"] == 1  # the failed attempt counts
    assert claim(conn, WORKER, ["alpha"], 10) == []  # not due yet


def test_failed_keeps_the_error(conn: psycopg.Connection[Any]) -> None:
    task = _claim_one(conn)

    finish(conn, WORKER, [Outcome(task, Status.FAILED, "alpha", error="it broke")])

    row = _task_row(conn, task.id)
    assert (row["status"], row["error_message"]) == ("failed", "it broke")
    assert row["failed_at"] is not None
    assert claim(conn, WORKER, ["alpha"], 10) == []


def test_hand_back_does_not_count_the_attempt(conn: psycopg.Connection[Any]) -> None:
    task = _claim_one(conn)

    recorded = finish(conn, WORKER, [Outcome(task, Status.PENDING, "alpha", handed_back=True)])

    assert recorded == {task.id}
    row = _task_row(conn, task.id)
    assert (row["status"], row["attempts"], row["error_message"]) == ("pending", 0, None)
    [again] = claim(conn, WORKER, ["alpha"], 1)  # due at once
    assert again.attempt == 1


def test_finish_records_a_mixed_batch_in_one_statement(conn: psycopg.Connection[Any]) -> None:
    ids = enqueue_many(conn, [NewTask("alpha", {"i": i}) for i in range(4)])
    tasks = {t.id: t for t in claim(conn, WORKER, ["alpha"], 10)}
    later = datetime.now(UTC) + timedelta(minutes=1)
    outcomes = [
        Outcome(tasks[ids[0]], Status.COMPLETED, "alpha"),
        Outcome(tasks[ids[1]], Status.PENDING, "alpha", error="retry me", run_at=later),
        Outcome(tasks[ids[2]], Status.FAILED, "alpha", error="dead"),
        Outcome(tasks[ids[3]], Status.PENDING, "alpha", handed_back=True),
    ]

    assert finish(conn, WORKER, outcomes) == set(ids)

    rows = [_task_row(conn, i) for i in ids]
    assert [(r["status"], r["attempts"], r["error_message"]) for r in rows] == [
        ("completed", 1, None),
        ("pending", 1, "retry me"),
        ("failed", 1, "dead"),
        ("pending", 0, None),
    ]


# -- robot events ------------------------------------------------------------------------


def _robot_rows(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM websurfing_robot_input_event WHERE task_id = %s ORDER BY created_at",
            (task_id,),
        ).fetchall()


def test_robot_events_and_cell_writes_commit_with_the_finish(
    conn: psycopg.Connection[Any],
    make_cell: Callable[[], str],
    make_robot_cell: Callable[[str], dict[str, Any]],
    listener: psycopg.Connection[Any],
) -> None:
    robot = {**make_robot_cell("alpha"), "q": 1}
    written, failed, quiet, handed = robot["cell_id"], make_cell(), make_cell(), make_cell()
    ids = enqueue_many(
        conn,
        [
            NewTask("alpha", robot),
            NewTask("alpha", {"cell_id": failed}),
            NewTask("alpha", {"cell_id": quiet}),
            NewTask("alpha", {"cell_id": handed}),
            NewTask("alpha", {"no": "cell"}),
        ],
    )
    tasks = {t.id: t for t in claim(conn, WORKER, ["alpha"], 10)}
    outcomes = [
        Outcome(
            tasks[ids[0]],
            Status.COMPLETED,
            "alpha",
            output={"title": "Hi"},
            duration_ms=12,
            writes_cell=True,
            cell_content="Hi",
        ),
        Outcome(tasks[ids[1]], Status.FAILED, "alpha", error="nope", duration_ms=3),
        Outcome(tasks[ids[2]], Status.COMPLETED, "alpha", output=[1, 2]),  # output only, no write
        Outcome(tasks[ids[3]], Status.PENDING, "alpha", handed_back=True),
        Outcome(tasks[ids[4]], Status.COMPLETED, "alpha", output="done"),
    ]
    _notifications(listener, conn)  # drop the new_task notices

    with conn.transaction():
        assert finish(conn, WORKER, outcomes) == set(ids)
        assert record_robot_events(conn, outcomes) == 1

    [row] = _robot_rows(conn, ids[0])
    assert str(row["cell_id"]) == written
    assert row["operator_type"] == "alpha"
    assert row["input_data"] == robot
    assert row["output_data"] == {"title": "Hi"}
    assert (row["processing_time_ms"], row["success"], row["error_message"]) == (12, True, None)
    [row] = _robot_rows(conn, ids[1])
    assert (row["success"], row["error_message"], row["output_data"]) == (False, "nope", None)
    [row] = _robot_rows(conn, ids[2])
    assert (row["success"], row["output_data"]) == (True, [1, 2])
    assert _robot_rows(conn, ids[3]) == []  # a hand-back is not an attempt
    assert _robot_rows(conn, ids[4]) == []  # no cell, no audit row
    contents = dict(
        conn.execute(
            "SELECT id::text, content FROM websurfing_cell WHERE id = ANY(%s::uuid[])",
            ([written, failed, quiet],),
        ).fetchall()
    )
    assert contents == {written: "Hi", failed: None, quiet: None}
    got = _notifications(listener, conn)
    assert [(c, d["cell_id"]) for c, d in got] == [("cell_updated", written)]


def test_robot_events_roll_back_with_the_finish(
    conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cell = make_cell()
    task = _claim_one(conn, {"cell_id": cell})
    outcome = Outcome(task, Status.COMPLETED, "alpha", writes_cell=True, cell_content="x")

    with pytest.raises(RuntimeError), conn.transaction():
        finish(conn, WORKER, [outcome])
        record_robot_events(conn, [outcome])
        raise RuntimeError("the transaction fails after the writes")

    assert _task_row(conn, task.id)["status"] == "processing"
    assert _robot_rows(conn, task.id) == []
    assert _count(conn, "SELECT count(*) FROM websurfing_cell WHERE content IS NOT NULL") == 0


def test_a_task_whose_cell_was_deleted_while_it_ran_is_cancelled(
    conn: psycopg.Connection[Any],
) -> None:
    robots = robot_payloads(conn, "alpha", 2)
    ids = enqueue_many(conn, [NewTask("alpha", p) for p in robots])
    tasks = claim(conn, WORKER, ["alpha"], 10)
    conn.execute("DELETE FROM websurfing_cell WHERE id = %s", (robots[0]["cell_id"],))
    outcomes = [
        Outcome(t, Status.COMPLETED, "alpha", writes_cell=True, cell_content="x") for t in tasks
    ]

    with conn.transaction():
        finish(conn, WORKER, outcomes)
        assert record_robot_events(conn, outcomes) == 1

    gone, done = _task_row(conn, ids[0]), _task_row(conn, ids[1])
    assert gone["status"] == "cancelled"
    assert "its cell was deleted" in gone["error_message"]
    assert _robot_rows(conn, ids[0]) == []
    assert done["status"] == "completed"
    assert [e["success"] for e in _robot_rows(conn, ids[1])] == [True]


# -- at most one pending task per key (sql/migrations/0017) ---------------------------


def _new_tasks(
    listen: psycopg.Connection[Any], sender: psycopg.Connection[Any]
) -> list[dict[str, Any]]:
    return [data for channel, data in _notifications(listen, sender) if channel == "new_task"]


def _waiting_for_a_lock(conn: psycopg.Connection[Any]) -> bool:
    """Whether another session of this database waits for a lock."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    ).fetchone()
    return row is not None and row[0] > 0


def _tasks(conn: psycopg.Connection[Any], key: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, status, payload, priority, unique_key, error_message"
        " FROM websurfing_task_queue WHERE payload->>'k' = %s OR unique_key = %s"
        " ORDER BY created_at, id",
        (key, key),
    ).fetchall()


def test_a_second_enqueue_with_the_key_replaces_the_pending_task(
    conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    first = enqueue(conn, "alpha", {"k": "a", "v": 1}, unique_key="cell:1")
    second = enqueue(conn, "alpha", {"k": "a", "v": 2}, priority=9, unique_key="cell:1")
    other = enqueue(conn, "alpha", {"k": "b"}, unique_key="cell:2")

    assert second == first != other
    [(_, status, payload, priority, key, _)] = _tasks(conn, "a")
    assert (status, payload, priority, key) == ("pending", {"k": "a", "v": 2}, 9, "cell:1")
    # Each enqueue was announced, the coalesced one too.
    got = _new_tasks(listener, conn)
    assert [n.get("id") for n in got] == [str(first), None, str(other)]
    assert got[1] == {"task_type": "alpha", "priority": 9}


def test_tasks_without_a_key_are_never_coalesced(conn: psycopg.Connection[Any]) -> None:
    a = enqueue(conn, "alpha", {"k": "n"})
    b = enqueue(conn, "alpha", {"k": "n"})
    assert a != b
    assert len(_tasks(conn, "n")) == 2


def test_bulk_enqueue_keeps_the_last_task_of_each_key(
    conn: psycopg.Connection[Any], listener: psycopg.Connection[Any]
) -> None:
    pending = enqueue(conn, "alpha", {"k": "x", "v": 0}, unique_key="x")
    _new_tasks(listener, conn)

    ids = enqueue_many(
        conn,
        [
            NewTask("alpha", {"k": "x", "v": 1}, unique_key="x"),
            NewTask("alpha", {"k": "y", "v": 1}, unique_key="y"),
            NewTask("alpha", {"k": "free"}),
            NewTask("alpha", {"k": "x", "v": 2}, unique_key="x"),
            NewTask("alpha", {"k": "y", "v": 2}, unique_key="y"),
        ],
    )

    assert ids[0] == ids[3] == pending
    assert ids[1] == ids[4] != pending
    assert [row[2]["v"] for row in _tasks(conn, "x")] == [2]
    assert [row[2]["v"] for row in _tasks(conn, "y")] == [2]
    # One statement: one notification for the rows it inserted, one for the coalesced.
    got = _new_tasks(listener, conn)
    assert sorted(n.get("id", "-") for n in got) == ["-", "-"]


def test_a_claimed_task_does_not_hold_its_key(conn: psycopg.Connection[Any]) -> None:
    running = enqueue(conn, "alpha", {"k": "r", "v": 1}, unique_key="r")
    [task] = claim(conn, WORKER, ["alpha"], 10)
    assert task.id == running

    newer = enqueue(conn, "alpha", {"k": "r", "v": 2}, unique_key="r")

    assert newer != running
    statuses = {row[0]: row[1] for row in _tasks(conn, "r")}
    assert statuses == {running: "processing", newer: "pending"}


def test_a_retry_behind_a_newer_pending_task_is_cancelled_as_superseded(
    conn: psycopg.Connection[Any],
) -> None:
    enqueue(conn, "alpha", {"k": "s", "v": 1}, unique_key="s")
    [task] = claim(conn, WORKER, ["alpha"], 10)
    newer = enqueue(conn, "alpha", {"k": "s", "v": 2}, unique_key="s")
    run_at = datetime.now(UTC) + timedelta(seconds=30)

    # The worker's retry does not fail on the unique index: the old task steps aside.
    assert finish(
        conn, WORKER, [Outcome(task, Status.PENDING, "alpha", error="boom", run_at=run_at)]
    )

    rows = {row[0]: row for row in _tasks(conn, "s")}
    assert rows[task.id][1] == "cancelled"
    assert "superseded" in rows[task.id][5] and "boom" in rows[task.id][5]
    assert rows[newer][1:3] == ("pending", {"k": "s", "v": 2})


def test_a_retry_alone_gives_its_key_up(conn: psycopg.Connection[Any]) -> None:
    enqueue(conn, "alpha", {"k": "g", "v": 1}, unique_key="g")
    [task] = claim(conn, WORKER, ["alpha"], 10)
    run_at = datetime.now(UTC) + timedelta(seconds=30)

    finish(conn, WORKER, [Outcome(task, Status.PENDING, "alpha", error="boom", run_at=run_at)])
    newer = enqueue(conn, "alpha", {"k": "g", "v": 2}, unique_key="g")

    rows = {row[0]: row for row in _tasks(conn, "g")}
    assert rows[task.id][1:5:3] == ("pending", None)  # runs again, keyless
    assert rows[newer][1:5:3] == ("pending", "g")


# A hand-back (no room to start it, a stop) and a put-back (Snooze: the per-host wait of
# web_title) are not attempts: the task is pending again as if never claimed.
HAND_BACKS = {
    "handed back": lambda: None,
    "put back for later": lambda: datetime.now(UTC) + timedelta(seconds=30),
}


@pytest.mark.parametrize("due", HAND_BACKS.values(), ids=HAND_BACKS.keys())
def test_a_task_handed_back_keeps_its_key_so_a_newer_request_replaces_it(
    conn: psycopg.Connection[Any], due: Callable[[], datetime | None]
) -> None:
    first = enqueue(conn, "alpha", {"k": "h", "v": 1}, unique_key="cell:h")
    [task] = claim(conn, WORKER, ["alpha"], 10)

    finish(conn, WORKER, [Outcome(task, Status.PENDING, "alpha", handed_back=True, run_at=due())])
    newer = enqueue(conn, "alpha", {"k": "h", "v": 2}, unique_key="cell:h")

    assert newer == first
    [(_, status, payload, _, key, _)] = _tasks(conn, "h")
    assert (status, payload, key) == ("pending", {"k": "h", "v": 2}, "cell:h")


def test_deleting_the_cell_cancels_its_handed_back_task(
    conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cell = make_cell()
    task_id = enqueue(conn, "alpha", {"cell_id": cell}, unique_key=f"cell:{cell}")
    [task] = claim(conn, WORKER, ["alpha"], 10)
    finish(conn, WORKER, [Outcome(task, Status.PENDING, "alpha", handed_back=True)])

    conn.execute("DELETE FROM websurfing_cell WHERE id = %s", (cell,))

    row = _task_row(conn, task_id)
    assert row["status"] == "cancelled"
    assert "its cell was deleted" in row["error_message"]


def test_a_hand_back_behind_a_newer_pending_task_is_cancelled_as_superseded(
    conn: psycopg.Connection[Any],
) -> None:
    enqueue(conn, "alpha", {"k": "b", "v": 1}, unique_key="b")
    [task] = claim(conn, WORKER, ["alpha"], 10)
    newer = enqueue(conn, "alpha", {"k": "b", "v": 2}, unique_key="b")

    assert finish(conn, WORKER, [Outcome(task, Status.PENDING, "alpha", handed_back=True)])

    rows = {row[0]: row for row in _tasks(conn, "b")}
    assert rows[task.id][1] == "cancelled"
    assert "superseded" in rows[task.id][5]
    assert rows[newer][1:5:3] == ("pending", "b")


def test_admin_retry_of_a_failed_keyed_task_never_collides(
    conn: psycopg.Connection[Any],
) -> None:

    enqueue(conn, "alpha", {"k": "f", "v": 1}, unique_key="f")
    [task] = claim(conn, WORKER, ["alpha"], 10)
    finish(conn, WORKER, [Outcome(task, Status.FAILED, "alpha", error="gave up")])
    newer = enqueue(conn, "alpha", {"k": "f", "v": 2}, unique_key="f")

    conn.execute(QUERIES["retry_task"], {"id": task.id, "more_attempts": 1})

    rows = {row[0]: row for row in _tasks(conn, "f")}
    assert rows[task.id][1] == "pending"
    assert rows[newer][1] == "pending"


Sessions = tuple[psycopg.Connection[Any], psycopg.Connection[Any], psycopg.Connection[Any]]


@pytest.fixture
def sessions(database_url: str) -> Iterator[Sessions]:
    """Three sessions: one in autocommit, a worker's, and another producer's."""
    with (
        psycopg.connect(database_url, autocommit=True) as setup,
        psycopg.connect(database_url) as finishing,
        psycopg.connect(database_url) as inserting,
    ):
        yield setup, finishing, inserting


def test_a_retry_racing_an_uncommitted_insert_of_its_key_never_fails(sessions: Sessions) -> None:
    """A unique violation in the retry's UPDATE would abort a whole batch of finishes."""
    setup, retrying, inserting = sessions
    enqueue(setup, "alpha", {"k": "race", "v": 1}, unique_key="race")
    [task] = claim(setup, WORKER, ["alpha"], 10)
    # A newer request, not committed yet: invisible to the retry's check.
    newer = enqueue(inserting, "alpha", {"k": "race", "v": 2}, unique_key="race")
    run_at = datetime.now(UTC) + timedelta(seconds=30)

    # The newer request also asks the running task to stop (0027): a row write the
    # retry's finish waits for, so the finish runs on a thread of its own.

    def retry() -> None:
        finish(retrying, WORKER, [Outcome(task, Status.PENDING, "alpha", error="x", run_at=run_at)])
        retrying.commit()

    thread = threading.Thread(target=retry)
    thread.start()
    wait_for(lambda: _waiting_for_a_lock(setup), "the retry to wait for the insert")
    inserting.commit()
    thread.join(DEADLINE_S)
    assert not thread.is_alive()

    rows = {row[0]: row for row in _tasks(setup, "race")}
    assert rows[task.id][1] == "cancelled"  # superseded while it ran
    assert rows[newer][1:5:3] == ("pending", "race")


def test_a_hand_back_racing_an_uncommitted_insert_of_its_key_never_fails(
    sessions: Sessions,
) -> None:
    """The hand-back waits for the insert, then steps aside; its batch is not aborted."""
    setup, handing_back, inserting = sessions
    enqueue(setup, "alpha", {"k": "hb", "v": 1}, unique_key="hb")
    enqueue(setup, "alpha", {"k": "hb-other"})
    tasks = claim(setup, WORKER, ["alpha"], 10)
    [task] = [t for t in tasks if t.payload["k"] == "hb"]
    # A newer request, not committed yet: invisible to the hand-back's check.
    newer = enqueue(inserting, "alpha", {"k": "hb", "v": 2}, unique_key="hb")
    outcomes = [
        Outcome(t, Status.PENDING, "alpha", handed_back=True)
        if t is task
        else Outcome(t, Status.COMPLETED, "alpha")
        for t in tasks
    ]
    recorded: list[set[uuid.UUID]] = []
    failed: list[BaseException] = []

    def record() -> None:
        try:
            with handing_back.transaction():
                recorded.append(finish(handing_back, WORKER, outcomes))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=record)
    thread.start()
    wait_for(
        lambda: (
            _count(
                setup,
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
                handing_back.info.backend_pid,
            )
            == 1
        ),
        "the hand-back to wait for the uncommitted insert",
    )
    inserting.commit()
    thread.join(timeout=30)

    assert failed == []
    assert recorded == [{t.id for t in tasks}]
    rows = {row[0]: row for row in _tasks(setup, "hb")}
    assert rows[task.id][1] == "cancelled"
    assert "superseded" in rows[task.id][5]
    assert rows[newer][1:5:3] == ("pending", "hb")
    assert {row[1] for row in _tasks(setup, "hb-other")} == {"completed"}


def test_an_empty_key_is_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(EnqueueError, match="unique key"):
        enqueue(conn, "alpha", {}, unique_key="")


def test_the_web_app_coalesces_with_plain_sql(conn: psycopg.Connection[Any]) -> None:
    """What the README tells the web app to write."""
    upsert = (
        "INSERT INTO websurfing_task_queue (task_type, payload, unique_key)"
        " VALUES ('alpha', %s, 'web:1')"
        " ON CONFLICT (unique_key) WHERE status = 'pending'"
        " DO UPDATE SET payload = EXCLUDED.payload RETURNING id"
    )
    a = conn.execute(upsert, (json.dumps({"k": "w", "v": 1}),)).fetchone()
    b = conn.execute(upsert, (json.dumps({"k": "w", "v": 2}),)).fetchone()
    assert a == b
    assert [row[2]["v"] for row in _tasks(conn, "w")] == [2]
