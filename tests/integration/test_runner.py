"""One worker process's loop, driven by hand in-process: claim, execute, record.

The Runner is built with a fresh Registry of test operators, booted against the
test's database, and each test runs its steps (``_claim``, ``_execute``, ``_record``)
itself instead of starting the loop, so nothing waits on a clock.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from websurf.sql import QUERIES
from websurf.worker.config import WorkerConfig
from websurf.worker.queue import NewTask, enqueue, enqueue_many
from websurf.worker.registry import Backoff, Context, PermanentError, Registry, Result, Task
from websurf.worker.runner import BootError, Runner

RETRY = Backoff(base_s=10.0, factor=2.0, max_s=300.0, jitter=0.25)


def _boom(task: Task, context: Context) -> Any:
    raise ValueError(f"boom on attempt {task.attempt}")


def _permanent(task: Task, context: Context) -> Any:
    raise PermanentError("this input can never work")


def _write(task: Task, context: Context) -> Any:
    text = str(task.payload["text"])
    return Result(output={"length": len(text)}, cell_content=text.upper())


def _bad_output(task: Task, context: Context) -> Any:
    return {"not json": object()}


def _reads(task: Task, context: Context) -> Any:
    with context.connection() as conn:
        row = conn.execute("SELECT count(*) FROM websurfing_task_queue").fetchone()
    assert row is not None
    return {"tasks": row[0]}


def _hangs(task: Task, context: Context) -> Any:
    time.sleep(30)  # the workload: interrupted by the operator's timeout
    return None


def _registry() -> Registry:
    reg = Registry()
    reg.register("boom", _boom, timeout_s=None, max_attempts=3, retry=RETRY)
    reg.register("permanent", _permanent, timeout_s=None, max_attempts=3)
    reg.register("write", _write, timeout_s=None)
    reg.register("bad_output", _bad_output, timeout_s=None)
    reg.register("reads", _reads, timeout_s=None)
    reg.register("hangs", _hangs, timeout_s=0.3, max_attempts=2, retry=RETRY)
    return reg


@pytest.fixture
def runner(database_url: str) -> Iterator[Runner]:
    worker = Runner(WorkerConfig(database_url=database_url), "test/0/runner", registry=_registry())
    worker.boot()
    try:
        yield worker
    finally:
        worker._close()


def _task(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(QUERIES["get_task"], {"id": task_id}).fetchone()
    assert row is not None
    return row


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


def _one_round(runner: Runner) -> int:
    """One iteration of the loop: claim a batch, run it, record it; returns the batch size."""
    tasks = runner._claim()
    if tasks:
        runner._record(runner._execute(tasks))
    return len(tasks)


def _make_due(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> None:
    """Skip the retry's wait (the backoff itself is checked before this is called)."""
    conn.execute("UPDATE websurfing_task_queue SET scheduled_for = now() WHERE id = %s", (task_id,))


def test_boot_registers_the_worker(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(QUERIES["list_workers"]).fetchall()
    assert [(r[0], r[3], r[6]) for r in rows] == [
        ("test/0/runner", sorted(_registry().names()), False)
    ]
    runner._close()
    runner.pool = None  # closed: the fixture's second _close has nothing to do
    assert conn.execute(QUERIES["list_workers"]).fetchall() == []


def test_boot_refuses_a_schema_that_is_behind(empty_database_url: str) -> None:
    from websurf.sql.migrate import migrate, shipped_migrations

    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        migrate(conn, shipped=shipped_migrations()[:3])
    worker = Runner(WorkerConfig(database_url=empty_database_url), "w", registry=_registry())

    with pytest.raises(BootError, match="run `websurf migrate`") as caught:
        worker.boot()
    assert not caught.value.database_unreachable
    worker._close()


def test_a_write_commits_task_cell_and_audit_row_together(
    runner: Runner, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cell = make_cell()
    task_id = enqueue(conn, "write", {"cell_id": cell, "text": "hello"})

    assert _one_round(runner) == 1

    row = _task(conn, task_id)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("completed", 1, "test/0/runner")
    assert _content(conn, cell) == "HELLO"
    [event] = _robot_rows(conn, task_id)
    assert (event["success"], event["operator_type"]) == (True, "write")
    assert event["output_data"] == {"length": 5}
    assert event["input_data"] == {"cell_id": cell, "text": "hello"}
    assert event["processing_time_ms"] >= 0
    assert runner.counts["completed"] == 1


def test_a_raising_handler_is_retried_with_backoff_then_failed(
    runner: Runner, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cell = make_cell()
    task_id = enqueue(conn, "boom", {"cell_id": cell}, max_attempts=3)

    for attempt in (1, 2):
        before = datetime.now(UTC)
        assert _one_round(runner) == 1
        row = _task(conn, task_id)
        assert (row["status"], row["attempts"]) == ("pending", attempt)
        assert row["error_message"] == f"ValueError: boom on attempt {attempt}"
        nominal = RETRY.base_s * RETRY.factor ** (attempt - 1)
        wait_s = (row["scheduled_for"] - before).total_seconds()
        assert nominal * 0.75 - 1 <= wait_s <= nominal * 1.25 + 1, (attempt, wait_s)
        assert _one_round(runner) == 0  # not due yet
        _make_due(conn, task_id)

    assert _one_round(runner) == 1

    row = _task(conn, task_id)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["error_message"] == "ValueError: boom on attempt 3"
    assert row["failed_at"] is not None
    events = _robot_rows(conn, task_id)
    assert [(e["success"], e["error_message"]) for e in events] == [
        (False, f"ValueError: boom on attempt {n}") for n in (1, 2, 3)
    ]
    assert _content(conn, cell) is None
    assert (runner.counts["retried"], runner.counts["failed"]) == (2, 1)


def test_a_permanent_error_fails_at_once(
    runner: Runner, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cell = make_cell()
    task_id = enqueue(conn, "permanent", {"cell_id": cell}, max_attempts=5)

    assert _one_round(runner) == 1

    row = _task(conn, task_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["error_message"] == "PermanentError: this input can never work"
    [event] = _robot_rows(conn, task_id)
    assert event["success"] is False


def test_output_that_is_not_json_fails_permanently(
    runner: Runner, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cell = make_cell()
    task_id = enqueue(conn, "bad_output", {"cell_id": cell}, max_attempts=5)

    assert _one_round(runner) == 1

    row = _task(conn, task_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "not JSON-serialisable" in row["error_message"]
    [event] = _robot_rows(conn, task_id)
    assert (event["success"], event["output_data"]) == (False, None)


def test_one_bad_write_in_a_batch_fails_only_its_task(
    runner: Runner, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cells = [make_cell() for _ in range(5)]
    ids = enqueue_many(
        conn, [NewTask("write", {"cell_id": c, "text": f"t{i}"}) for i, c in enumerate(cells)]
    )
    tasks = runner._claim()
    assert len(tasks) == 5
    # The cell of one task is deleted while it runs: its audit row cannot be inserted.
    conn.execute("DELETE FROM websurfing_cell WHERE id = %s", (cells[2],))

    runner._record(runner._execute(tasks))

    statuses = [_task(conn, i)["status"] for i in ids]
    assert statuses == ["completed", "completed", "failed", "completed", "completed"]
    assert "could not record the result" in _task(conn, ids[2])["error_message"]
    for i in (0, 1, 3, 4):
        assert _content(conn, cells[i]) == f"T{i}"
        assert [e["success"] for e in _robot_rows(conn, ids[i])] == [True]


def test_counts_follow_what_was_recorded_after_a_bad_write(
    runner: Runner, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cells = [make_cell() for _ in range(2)]
    enqueue_many(conn, [NewTask("write", {"cell_id": c, "text": "x"}) for c in cells])
    tasks = runner._claim()
    conn.execute("DELETE FROM websurfing_cell WHERE id = %s", (cells[0],))

    runner._record(runner._execute(tasks))

    # worker_stopped logs these counts: a task that failed must not be counted completed.
    assert (runner.counts["completed"], runner.counts["failed"]) == (1, 1)


def test_a_task_without_a_cell_completes_without_an_audit_row(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    task_id = enqueue(conn, "reads", {})

    assert _one_round(runner) == 1

    assert _task(conn, task_id)["status"] == "completed"
    assert _robot_rows(conn, task_id) == []


def test_a_handler_can_read_through_its_context(
    runner: Runner, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cell = make_cell()
    task_id = enqueue(conn, "reads", {"cell_id": cell})

    assert _one_round(runner) == 1

    [event] = _robot_rows(conn, task_id)
    assert event["output_data"] == {"tasks": 1}


def test_a_handler_past_its_timeout_is_interrupted_and_retried(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    previous = signal.signal(signal.SIGALRM, runner._on_alarm)
    try:
        task_id = enqueue(conn, "hangs", {})
        started = time.monotonic()
        assert _one_round(runner) == 1
        took = time.monotonic() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    assert took < 10
    row = _task(conn, task_id)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert "TaskTimeout" in row["error_message"] and "0.3s timeout" in row["error_message"]


def test_unstarted_tasks_are_handed_back_when_stopping(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    ids = enqueue_many(conn, [NewTask("reads", {}) for _ in range(3)])
    tasks = runner._claim()
    runner.stop.requested = 1  # as the first SIGTERM does
    runner.stop.deadline = time.monotonic() + 30

    runner._record(runner._execute(tasks))

    rows = [_task(conn, i) for i in ids]
    assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 0)] * 3
    assert runner.counts["handed_back"] == 3


def test_a_result_for_a_lost_claim_is_discarded(
    runner: Runner, conn: psycopg.Connection[Any], make_cell: Callable[[], str]
) -> None:
    cell = make_cell()
    task_id = enqueue(conn, "write", {"cell_id": cell, "text": "late"})
    tasks = runner._claim()
    outcomes = runner._execute(tasks)
    # Meanwhile the task was presumed lost and handed to another worker.
    conn.execute(
        "UPDATE websurfing_task_queue SET worker_id = 'other', attempts = 2 WHERE id = %s",
        (task_id,),
    )

    runner._record(outcomes)

    row = _task(conn, task_id)
    assert (row["status"], row["worker_id"]) == ("processing", "other")
    assert _content(conn, cell) is None
    assert _robot_rows(conn, task_id) == []
    assert runner.counts["lost"] == 1


def test_batch_size_adapts_to_task_time(runner: Runner, conn: psycopg.Connection[Any]) -> None:
    enqueue_many(conn, [NewTask("reads", {}) for _ in range(50)])

    first = runner._claim()
    runner._record(runner._execute(first))

    assert len(first) == 10  # the first batch is small: nothing is known yet
    assert 1 <= runner._limit <= runner.config.batch_max
    assert runner._task_s > 0
    assert _one_round(runner) == min(40, runner._limit)


def test_registered_task_types_are_the_only_ones_claimed(
    runner: Runner, conn: psycopg.Connection[Any]
) -> None:
    other = enqueue(conn, "someone_elses", {}, allow_unknown_type=True)

    assert _one_round(runner) == 0
    assert _task(conn, other)["status"] == "pending"


@pytest.mark.parametrize(("durable", "expected"), [(False, "off"), (True, "on")])
def test_claims_wait_for_the_disk_only_when_asked(
    database_url: str, durable: bool, expected: str
) -> None:
    config = WorkerConfig(database_url=database_url, durable_claims=durable)
    worker = Runner(config, f"test/0/durable-{durable}", registry=_registry())
    worker.boot()
    try:
        assert worker._claim() == []
        row = worker._claim_connection().execute("SHOW synchronous_commit").fetchone()
        assert row == (expected,)
    finally:
        worker._close()
