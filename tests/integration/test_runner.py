"""One worker process, served in-process against the test's database.

Each test builds a Runner with a fresh Registry of test operators, boots it, serves it
on a background thread (its own event loop), enqueues work, and waits for what a user
would see in the database. ``request_stop`` ends it, as SIGTERM does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from support.rows import robot_payloads
from support.serving import Serving
from support.waiting import wait_for

from websurf.sql import QUERIES
from websurf.worker.config import WorkerConfig
from websurf.worker.core.queue import NewTask, enqueue, enqueue_many
from websurf.worker.core.registry import (
    Backoff,
    Context,
    PermanentError,
    Registry,
    Result,
    Snooze,
    Task,
)
from websurf.worker.process.runner import BootError, Runner

RETRY = Backoff(base_s=10.0, factor=2.0, max_s=300.0, jitter=0.25)
DEADLINE_S = 30.0

Serve = Callable[..., Runner]


class Gate:
    """Handlers wait on it (thread-safe); the test opens it."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.order: list[str] = []

    def enter(self, name: str = "") -> None:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.order.append(name)

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1

    async def wait_async(self) -> None:
        while not self.opened.is_set():
            await asyncio.sleep(0.005)


def _registry(gate: Gate) -> Registry:
    reg = Registry()

    def boom(task: Task, context: Context) -> Any:
        raise ValueError(f"boom on attempt {task.attempt}")

    def permanent(task: Task, context: Context) -> Any:
        raise PermanentError("this input can never work")

    async def write(task: Task, context: Context) -> Any:
        text = str(task.payload["text"])
        return Result(output={"length": len(text)}, cell_content=text.upper())

    def write_plain(task: Task, context: Context) -> Any:
        return Result(output=None, cell_content=str(task.payload["text"]))

    def bad_output(task: Task, context: Context) -> Any:
        return {"not json": object()}

    async def nul_title(task: Task, context: Context) -> Any:
        return Result(output={"title": "a\x00b"}, cell_content="a\x00b")

    def reads(task: Task, context: Context) -> Any:
        with context.connection() as conn:
            row = conn.execute("SELECT count(*) FROM websurfing_task_queue").fetchone()
        assert row is not None
        return {"tasks": row[0]}

    async def reads_async(task: Task, context: Context) -> Any:
        async with context.async_connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM websurfing_task_queue")
            row = await cur.fetchone()
        assert row is not None
        return {"tasks": row[0]}

    async def waits(task: Task, context: Context) -> Any:
        gate.enter(str(task.payload.get("name", "")))
        try:
            await gate.wait_async()
        finally:
            gate.leave()
        return {"waited": True}

    def blocks(task: Task, context: Context) -> Any:
        gate.enter(str(task.payload.get("name", "")))
        try:
            gate.opened.wait(DEADLINE_S)
        finally:
            gate.leave()
        return {"blocked": True}

    async def sleeps_async(task: Task, context: Context) -> Any:
        await asyncio.sleep(30)

    async def swallows_timeout(task: Task, context: Context) -> Any:
        # a handler that catches its cancellation and returns anyway
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return {"late": True}

    def sleeps_plain(task: Task, context: Context) -> Any:
        gate.opened.wait(DEADLINE_S)  # overruns its timeout until the test opens the gate

    async def snoozes(task: Task, context: Context) -> Any:
        if task.payload.get("snoozed"):
            return {"ok": True}
        raise Snooze(60.0, "the host is busy")

    reg.register("boom", boom, timeout_s=None, max_attempts=3, retry=RETRY)
    reg.register("permanent", permanent, timeout_s=None, max_attempts=3)
    reg.register("write", write, timeout_s=None)
    reg.register("write_plain", write_plain, timeout_s=None)
    reg.register("bad_output", bad_output, timeout_s=None)
    reg.register("nul_title", nul_title, timeout_s=None)
    reg.register("reads", reads, timeout_s=None)
    reg.register("reads_async", reads_async, timeout_s=None)
    reg.register("waits", waits, timeout_s=None)
    reg.register("limited", waits, timeout_s=None, concurrency=2)
    reg.register("blocks", blocks, timeout_s=None)
    reg.register("sleeps_async", sleeps_async, timeout_s=0.2, max_attempts=2, retry=RETRY)
    reg.register("swallows_timeout", swallows_timeout, timeout_s=0.2, max_attempts=1)
    reg.register("sleeps_plain", sleeps_plain, timeout_s=0.2, max_attempts=2, retry=RETRY)
    reg.register("snoozes", snoozes, timeout_s=None)
    return reg


@pytest.fixture
def gate() -> Iterator[Gate]:
    opened = Gate()
    yield opened
    opened.opened.set()  # nothing stays blocked past the test


@pytest.fixture
def serve(database_url: str, gate: Gate) -> Iterator[Serve]:
    """Boot and serve a Runner on a thread; stop and join it at the end of the test."""
    serving = Serving(database_url, lambda: _registry(gate))
    yield serving.start
    serving.close()


def _task(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(QUERIES["get_task"], {"id": task_id}).fetchone()
    assert row is not None
    return row


def _status(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> str:
    return str(_task(conn, task_id)["status"])


def _robot_rows(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM websurfing_robot_input_event WHERE task_id = %s ORDER BY created_at",
            (task_id,),
        ).fetchall()


def _content(conn: psycopg.Connection[Any], cell_id: str) -> str | None:
    row = conn.execute("SELECT content FROM websurfing_cell WHERE id = %s", (cell_id,)).fetchone()
    assert row is not None
    value: str | None = row[0]
    return value


def _count(conn: psycopg.Connection[Any], status: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM websurfing_task_queue WHERE status = %s", (status,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _finished(conn: psycopg.Connection[Any], *ids: uuid.UUID) -> bool:
    return all(_status(conn, i) in ("completed", "failed", "cancelled") for i in ids)


def _make_due(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> None:
    """Skip the retry's wait (the backoff itself is checked before this is called)."""
    conn.execute("UPDATE websurfing_task_queue SET scheduled_for = now() WHERE id = %s", (task_id,))


# -- boot ------------------------------------------------------------------------------


def test_boot_registers_and_a_stop_deregisters(
    serve: Serve, conn: psycopg.Connection[Any], gate: Gate
) -> None:
    runner = serve()
    rows = conn.execute(QUERIES["list_workers"]).fetchall()
    assert [(r[0], r[3], r[6]) for r in rows] == [
        ("test/0/runner", sorted(_registry(gate).names()), False)
    ]

    runner.request_stop()
    wait_for(lambda: conn.execute(QUERIES["list_workers"]).fetchall() == [], "deregistration")


def test_a_stop_right_after_the_server_dropped_every_connection_still_deregisters(
    serve: Serve, conn: psycopg.Connection[Any]
) -> None:
    """The pool still holds the dropped connections: deregistering must not give up on
    the first dead one (the roster row would stay until it went stale)."""
    runner = serve()
    runner.connections.pool.wait(timeout=DEADLINE_S)  # idle pooled connections, soon dead
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    runner.request_stop()
    wait_for(lambda: conn.execute(QUERIES["list_workers"]).fetchall() == [], "deregistration")


def test_boot_refuses_a_schema_that_is_behind(empty_database_url: str, gate: Gate) -> None:
    from websurf.sql.migrate import migrate, shipped_migrations

    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        migrate(conn, shipped=shipped_migrations()[:3])
    worker = Runner(WorkerConfig(database_url=empty_database_url), "w", registry=_registry(gate))

    with pytest.raises(BootError, match="run `websurf migrate`") as caught:
        worker.boot()
    assert not caught.value.database_unreachable


# -- what a task's attempt leaves behind ---------------------------------------------------


def test_a_write_commits_task_cell_and_audit_row_together(
    serve: Serve, conn: psycopg.Connection[Any], make_robot_cell: Callable[[str], dict[str, Any]]
) -> None:
    serve()
    payload = {**make_robot_cell("write"), "text": "hello"}
    cell = payload["cell_id"]
    task_id = enqueue(conn, "write", payload)

    wait_for(lambda: _finished(conn, task_id), "the task")

    row = _task(conn, task_id)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("completed", 1, "test/0/runner")
    assert _content(conn, cell) == "HELLO"
    [event] = _robot_rows(conn, task_id)
    assert (event["success"], event["operator_type"]) == (True, "write")
    assert event["output_data"] == {"length": 5}
    assert event["input_data"] == payload
    assert event["processing_time_ms"] >= 0


def test_a_raising_handler_is_retried_with_backoff_then_failed(
    serve: Serve, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    runner = serve()
    cell = make_cell()
    task_id = enqueue(conn, "boom", {"cell_id": cell}, max_attempts=3)

    for attempt in (1, 2):
        before = datetime.now(UTC)
        wait_for(lambda a=attempt: _task(conn, task_id)["attempts"] == a and _status(
            conn, task_id) == "pending", f"attempt {attempt} to be recorded")  # fmt: skip
        row = _task(conn, task_id)
        assert row["error_message"] == f"ValueError: boom on attempt {attempt}"
        nominal = RETRY.base_s * RETRY.factor ** (attempt - 1)
        wait_s = (row["scheduled_for"] - before).total_seconds()
        assert nominal * 0.75 - 1 <= wait_s <= nominal * 1.25 + 1, (attempt, wait_s)
        _make_due(conn, task_id)

    wait_for(lambda: _finished(conn, task_id), "the last attempt")
    row = _task(conn, task_id)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["error_message"] == "ValueError: boom on attempt 3"
    events = _robot_rows(conn, task_id)
    assert [(e["success"], e["error_message"]) for e in events] == [
        (False, f"ValueError: boom on attempt {n}") for n in (1, 2, 3)
    ]
    assert _content(conn, cell) is None
    assert (runner.counts["retried"], runner.counts["failed"]) == (2, 1)


def test_a_permanent_error_fails_at_once(
    serve: Serve, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    serve()
    task_id = enqueue(conn, "permanent", {"cell_id": make_cell()}, max_attempts=5)

    wait_for(lambda: _finished(conn, task_id), "the task")

    row = _task(conn, task_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["error_message"] == "PermanentError: this input can never work"
    assert [e["success"] for e in _robot_rows(conn, task_id)] == [False]


def test_output_the_database_cannot_store_fails_alone_and_permanently(
    serve: Serve, conn: psycopg.Connection[Any], make_robot_cell: Callable[[str], dict[str, Any]]
) -> None:
    serve()
    robots = [make_robot_cell(op) for op in ("bad_output", "write", "nul_title", "write")]
    cells = [r["cell_id"] for r in robots]
    ids = enqueue_many(
        conn,
        [
            NewTask("bad_output", robots[0], max_attempts=5),
            NewTask("write", {**robots[1], "text": "fine"}),
            NewTask("nul_title", robots[2], max_attempts=5),
            NewTask("write", {**robots[3], "text": "also fine"}),
        ],
    )

    wait_for(lambda: _finished(conn, *ids), "the batch")

    rows = [_task(conn, i) for i in ids]
    assert [(r["status"], r["attempts"]) for r in rows] == [
        ("failed", 1),
        ("completed", 1),
        ("failed", 1),
        ("completed", 1),
    ]
    assert "not JSON-serialisable" in rows[0]["error_message"]
    assert "NUL character" in rows[2]["error_message"]
    assert [_content(conn, c) for c in cells] == [None, "FINE", None, "ALSO FINE"]


def test_malformed_rows_fail_alone_and_the_rest_complete_first_time(
    serve: Serve, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    """Issue 11's reproduction: rows the web app can write must not hurt their batch."""
    # The schema may refuse non-object payloads; a row written before that check (or by
    # a superuser who dropped it) must still not kill the worker.
    for (name,) in conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'websurfing_task_queue'::regclass"
        " AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%%payload%%'"
    ).fetchall():
        conn.execute(f'ALTER TABLE websurfing_task_queue DROP CONSTRAINT "{name}"')
    robots = robot_payloads(conn, "write", 20)
    good_cells = [r["cell_id"] for r in robots]
    doomed = make_cell()
    good = enqueue_many(
        conn, [NewTask("write", {**r, "text": f"t{i}"}) for i, r in enumerate(robots)]
    )
    bad_rows = conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, max_attempts) VALUES"
        " ('write', '[1]', 3), ('write', '\"text\"', 3),"
        ' (\'write\', \'{"cell_id": "not-a-uuid", "text": "x"}\', 3),'
        ' (\'write\', \'{"cell_id": 42, "text": "x"}\', 3),'
        " ('write', '{\"cell_id\": null}', 1),"  # understood: the handler's KeyError decides
        " ('write', %s, 3) RETURNING id",
        (psycopg.types.json.Jsonb({"cell_id": doomed, "text": "gone"}),),
    ).fetchall()
    bad = [r[0] for r in bad_rows]
    conn.execute("DELETE FROM websurfing_cell WHERE id = %s", (doomed,))
    serve()

    wait_for(lambda: _finished(conn, *good, *bad), "every task to end")

    for task_id in good:
        row = _task(conn, task_id)
        assert (row["status"], row["attempts"]) == ("completed", 1)
    for i, cell in enumerate(good_cells):
        assert _content(conn, cell) == f"T{i}"
    errors = []
    for task_id in bad[:-1]:
        row = _task(conn, task_id)
        assert (row["status"], row["attempts"]) == ("failed", 1), row
        errors.append(row["error_message"])
    gone = _task(conn, bad[-1])  # its cell was deleted: nothing to write, nothing to retry
    assert gone["status"] == "cancelled", gone
    assert "payload must be a JSON object, not list" in errors[0]
    assert "payload must be a JSON object, not str" in errors[1]
    assert "'not-a-uuid' is not a UUID" in errors[2]
    assert "'42' is not a UUID" in errors[3]
    assert "KeyError" in errors[4]  # the handler's own error: the payload has no text
    assert "its cell was deleted" in gone["error_message"]


def test_a_task_without_a_cell_completes_without_an_audit_row(
    serve: Serve, conn: psycopg.Connection[Any]
) -> None:
    serve()
    task_id = enqueue(conn, "reads", {})

    wait_for(lambda: _finished(conn, task_id), "the task")

    assert _status(conn, task_id) == "completed"
    assert _robot_rows(conn, task_id) == []


@pytest.mark.parametrize("operator", ["reads", "reads_async"])
def test_a_handler_can_read_through_its_context(
    serve: Serve, conn: psycopg.Connection[Any], make_cell: Callable[[], str], operator: str
) -> None:
    serve()
    task_id = enqueue(conn, operator, {"cell_id": make_cell()})

    wait_for(lambda: _finished(conn, task_id), "the task")

    [event] = _robot_rows(conn, task_id)
    assert (event["success"], event["output_data"]) == (True, {"tasks": 1})


def test_a_snoozed_task_goes_back_without_spending_an_attempt(
    serve: Serve, conn: psycopg.Connection[Any]
) -> None:
    serve()
    task_id = enqueue(conn, "snoozes", {})

    wait_for(lambda: _task(conn, task_id)["worker_id"] is not None, "the task to be claimed")
    wait_for(lambda: _status(conn, task_id) == "pending", "the snooze to be recorded")

    row = _task(conn, task_id)
    assert row["attempts"] == 0
    assert (row["scheduled_for"] - datetime.now(UTC)).total_seconds() > 30


def test_a_result_for_a_lost_claim_is_discarded(
    serve: Serve, conn: psycopg.Connection[Any], make_cell: Callable[[], str], gate: Gate
) -> None:
    runner = serve()
    task_id = enqueue(conn, "waits", {"cell_id": make_cell()})
    wait_for(lambda: gate.inside == 1, "the handler to start")
    # Meanwhile the task was presumed lost and handed to another worker.
    conn.execute(
        "UPDATE websurfing_task_queue SET worker_id = 'other', attempts = 2 WHERE id = %s",
        (task_id,),
    )
    gate.opened.set()

    wait_for(lambda: runner.counts.get("lost") == 1, "the result to be discarded")
    row = _task(conn, task_id)
    assert (row["status"], row["worker_id"]) == ("processing", "other")
    assert _robot_rows(conn, task_id) == []


def test_registered_task_types_are_the_only_ones_claimed(
    serve: Serve, conn: psycopg.Connection[Any]
) -> None:
    serve()
    other = enqueue(conn, "someone_elses", {}, allow_unknown_type=True)
    mine = enqueue(conn, "reads", {})

    wait_for(lambda: _finished(conn, mine), "the worker's own task")
    assert _status(conn, other) == "pending"


@pytest.mark.parametrize(("durable", "expected"), [(False, "off"), (True, "on")])
def test_claims_wait_for_the_disk_only_when_asked(
    serve: Serve, conn: psycopg.Connection[Any], durable: bool, expected: str
) -> None:
    # What the claim's transaction ran with, seen from inside it: a trigger on the claim
    # (the update to 'processing') notes the session's synchronous_commit.
    conn.execute(
        "CREATE TABLE claim_settings (synchronous_commit text);"
        " CREATE FUNCTION note_claim_settings() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO claim_settings VALUES (current_setting('synchronous_commit'));"
        " RETURN NULL; END $$;"
        " CREATE TRIGGER note_claim_settings AFTER UPDATE ON websurfing_task_queue"
        " FOR EACH ROW WHEN (NEW.status = 'processing') EXECUTE FUNCTION note_claim_settings()"
    )
    serve(f"test/0/durable-{durable}", durable_claims=durable)
    task_id = enqueue(conn, "reads", {})

    wait_for(lambda: _finished(conn, task_id), "the task")

    assert conn.execute("SELECT * FROM claim_settings").fetchall() == [(expected,)]


# -- many tasks in flight ------------------------------------------------------------------


def test_async_handlers_run_concurrently_up_to_the_process_limit(
    serve: Serve, conn: psycopg.Connection[Any], gate: Gate
) -> None:
    serve(tasks_per_process=50)
    ids = enqueue_many(conn, [NewTask("waits", {}) for _ in range(80)])

    # All 50 slots fill while every handler waits: they run at once, not one by one,
    # and the process holds no more claims than it has slots.
    wait_for(lambda: gate.inside == 50, "50 handlers waiting at once")
    assert _count(conn, "processing") == 50
    gate.opened.set()

    wait_for(lambda: _finished(conn, *ids), "all 80 tasks")
    assert gate.most_inside == 50
    assert {_task(conn, i)["attempts"] for i in ids} == {1}


def test_plain_handlers_run_in_threads_without_stalling_async_ones(
    serve: Serve,
    conn: psycopg.Connection[Any],
    gate: Gate,
    make_robot_cell: Callable[[str], dict[str, Any]],
) -> None:
    serve(threads_per_process=4)
    blocked = enqueue_many(conn, [NewTask("blocks", {}) for _ in range(6)])
    wait_for(lambda: gate.inside == 4, "every thread blocked")

    robot = make_robot_cell("write")
    cell = robot["cell_id"]
    quick = enqueue(conn, "write", {**robot, "text": "still served"})
    wait_for(lambda: _finished(conn, quick), "an async task while every thread is blocked")
    assert _content(conn, cell) == "STILL SERVED"
    # Claims only what it can run: 4 threads busy, the other 2 plain tasks stay pending.
    assert sorted(_status(conn, i) for i in blocked) == ["pending"] * 2 + ["processing"] * 4

    gate.opened.set()
    wait_for(lambda: _finished(conn, *blocked), "the plain tasks")
    assert gate.most_inside == 4


def test_plain_tasks_beyond_the_threads_start_as_threads_free_without_a_poll(
    serve: Serve, conn: psycopg.Connection[Any]
) -> None:
    serve(threads_per_process=2, poll_interval_s=120.0)
    robots = robot_payloads(conn, "write_plain", 9)
    cells = [r["cell_id"] for r in robots]
    ids = enqueue_many(
        conn, [NewTask("write_plain", {**r, "text": f"t{i}"}) for i, r in enumerate(robots)]
    )

    # Each wave of 2 is claimed for when its threads free, not at the next poll (2 min).
    wait_for(lambda: _finished(conn, *ids), "9 plain tasks through 2 threads")
    assert [_content(conn, c) for c in cells] == [f"t{i}" for i in range(9)]


def test_an_announced_task_of_an_operator_that_had_nothing_to_do_runs_without_a_poll(
    serve: Serve,
    conn: psycopg.Connection[Any],
    gate: Gate,
    make_robot_cell: Callable[[str], dict[str, Any]],
) -> None:
    # Busy with async work, the process stops claiming for the plain operators whose
    # claims came back empty; their next task's notification puts them back at once.
    serve(poll_interval_s=120.0)
    busy = enqueue_many(conn, [NewTask("waits", {}) for _ in range(20)])
    wait_for(lambda: gate.inside == 20, "the async work under way")

    robot = make_robot_cell("write_plain")
    cell = robot["cell_id"]
    plain = enqueue(conn, "write_plain", {**robot, "text": "announced"})

    wait_for(lambda: _finished(conn, plain), "the plain task, long before the 2-minute poll")
    assert _content(conn, cell) == "announced"
    gate.opened.set()
    wait_for(lambda: _finished(conn, *busy), "the async work")


def test_a_task_made_due_without_an_announcement_runs_at_the_next_poll(
    serve: Serve, conn: psycopg.Connection[Any], make_robot_cell: Callable[[str], dict[str, Any]]
) -> None:
    serve(poll_interval_s=0.3)
    warm = enqueue(conn, "write_plain", {"text": "first"})  # the plain claims then drain
    wait_for(lambda: _finished(conn, warm), "the first plain task")
    robot = make_robot_cell("write_plain")
    cell = robot["cell_id"]
    later = enqueue(conn, "write_plain", {**robot, "text": "due now"}, delay=timedelta(hours=1))

    _make_due(conn, later)  # an UPDATE: no notification

    wait_for(lambda: _finished(conn, later), "the task made due, at a poll")
    assert _content(conn, cell) == "due now"


def test_an_operator_concurrency_limit_holds(
    serve: Serve, conn: psycopg.Connection[Any], gate: Gate
) -> None:
    serve()
    ids = enqueue_many(conn, [NewTask("limited", {}) for _ in range(8)])
    others = enqueue_many(conn, [NewTask("waits", {}) for _ in range(5)])

    wait_for(lambda: gate.inside == 7, "2 limited and 5 unlimited handlers")
    assert sum(_status(conn, i) == "processing" for i in ids) == 2
    gate.opened.set()

    wait_for(lambda: _finished(conn, *ids, *others), "every task")
    assert gate.most_inside == 7


def test_priority_order_holds_across_operators(
    serve: Serve, conn: psycopg.Connection[Any], gate: Gate
) -> None:
    low = enqueue_many(
        conn,
        [NewTask("waits", {"name": f"low{i}"}, priority=1) for i in range(3)]
        + [NewTask("blocks", {"name": "low-plain"}, priority=2)],
    )
    high = enqueue_many(
        conn,
        [
            NewTask("blocks", {"name": "high-plain"}, priority=9),
            NewTask("waits", {"name": "high"}, priority=8),
        ],
    )
    serve(tasks_per_process=1)

    wait_for(lambda: gate.inside == 1, "the first task")
    gate.opened.set()
    wait_for(lambda: _finished(conn, *low, *high), "every task")
    assert gate.order[:2] == ["high-plain", "high"]
    assert gate.order[2:] == ["low-plain", "low0", "low1", "low2"]


def test_an_urgent_task_runs_at_once_while_bulk_work_holds_every_slot(
    serve: Serve,
    conn: psycopg.Connection[Any],
    gate: Gate,
    make_robot_cell: Callable[[str], dict[str, Any]],
) -> None:
    serve(tasks_per_process=4)
    bulk = enqueue_many(conn, [NewTask("waits", {}) for _ in range(4)])
    wait_for(lambda: gate.inside == 4, "bulk work in every slot")

    more_bulk = enqueue(conn, "waits", {})
    robot = make_robot_cell("write")
    cell = robot["cell_id"]
    edit = enqueue(conn, "write", {**robot, "text": "a person waits"}, priority=8)

    # The edit's robot does not wait for a bulk task to end; more bulk work does.
    wait_for(lambda: _finished(conn, edit), "the urgent task, with every slot taken")
    assert _content(conn, cell) == "A PERSON WAITS"
    assert [_status(conn, i) for i in bulk] == ["processing"] * 4
    assert _status(conn, more_bulk) == "pending"

    gate.opened.set()
    wait_for(lambda: _finished(conn, *bulk, more_bulk), "the bulk work")


# -- deadlines and stopping ----------------------------------------------------------------


def test_an_async_handler_past_its_timeout_is_cancelled_and_retried(
    serve: Serve, conn: psycopg.Connection[Any]
) -> None:
    serve()
    task_id = enqueue(conn, "sleeps_async", {})

    wait_for(lambda: _task(conn, task_id)["error_message"], "the timeout to be recorded")

    row = _task(conn, task_id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["error_message"] == "TaskTimeout: handler ran past its 0.2s timeout"


def test_an_async_handler_that_swallows_its_timeout_still_fails_as_timed_out(
    serve: Serve, conn: psycopg.Connection[Any]
) -> None:
    serve()
    task_id = enqueue(conn, "swallows_timeout", {})

    wait_for(lambda: _status(conn, task_id) == "failed", "the late result to be refused")

    row = _task(conn, task_id)
    assert row["error_message"] == "TaskTimeout: handler ran past its 0.2s timeout"


def test_a_plain_handler_past_its_timeout_fails_its_attempt_then_recycles_the_process(
    serve: Serve, conn: psycopg.Connection[Any], gate: Gate
) -> None:
    runner = serve(stuck_grace_s=0.5)
    task_id = enqueue(conn, "sleeps_plain", {})

    wait_for(lambda: _task(conn, task_id)["error_message"], "the timeout to be recorded")
    row = _task(conn, task_id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert "0.2s timeout" in row["error_message"]

    wait_for(lambda: runner.recycle_reason, "the process to ask to be recycled")
    assert f"task {task_id}" in str(runner.recycle_reason)
    wait_for(lambda: conn.execute(QUERIES["list_workers"]).fetchall() == [], "the process to stop")


def test_stopping_hands_back_running_and_waiting_tasks_without_counting_them(
    serve: Serve, conn: psycopg.Connection[Any], gate: Gate
) -> None:
    runner = serve(tasks_per_process=10, shutdown_timeout_s=0.3)
    async_ids = enqueue_many(conn, [NewTask("waits", {}) for _ in range(4)])
    plain_ids = enqueue_many(conn, [NewTask("blocks", {}) for _ in range(2)])
    limited = enqueue_many(conn, [NewTask("limited", {}) for _ in range(4)])
    wait_for(lambda: gate.inside == 8, "8 handlers running")

    runner.request_stop()

    wait_for(lambda: _count(conn, "processing") == 0, "nothing left processing")
    ids = [*async_ids, *plain_ids, *limited]
    assert {(_status(conn, i), _task(conn, i)["attempts"]) for i in ids} == {("pending", 0)}
    # the 8 interrupted ones; a limited task claimed past its cap is handed back too
    wait_for(lambda: runner.counts["handed_back"] >= 8, "the hand-backs to be counted")


def test_in_flight_tasks_finish_when_they_can_within_the_shutdown_timeout(
    serve: Serve, conn: psycopg.Connection[Any], gate: Gate
) -> None:
    runner = serve(shutdown_timeout_s=DEADLINE_S)
    ids = enqueue_many(conn, [NewTask("waits", {}) for _ in range(5)])
    wait_for(lambda: gate.inside == 5, "5 handlers running")

    runner.request_stop()
    late = enqueue(conn, "waits", {})
    gate.opened.set()

    wait_for(lambda: _finished(conn, *ids), "the running tasks to finish")
    assert {_status(conn, i) for i in ids} == {"completed"}
    wait_for(lambda: conn.execute(QUERIES["list_workers"]).fetchall() == [], "the process to stop")
    assert _status(conn, late) == "pending"  # nothing claimed after the stop
