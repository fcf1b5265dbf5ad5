"""A task's story: each attempt with its worker, timing and error, and why a task waits.

What a user would notice: ``websurf tasks show`` (and --json) lists every attempt in
order, the current one last, whichever path ended it (a retry, a hand-back, a snooze, a
SlowDown, the reaper, a cancel, a retry from the terminal); a first-try completion
writes no attempt row; nobody but the database writes attempt rows; and a pending task
says why it has not started, each reason produced by real operations.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from support.waiting import wait_for

from websurf.cli.tasks import tasks_command
from websurf.worker.config import WorkerConfig
from websurf.worker.core import admin, limits, queue, workers
from websurf.worker.core.model import Outcome, Status, Task
from websurf.worker.core.registry import Context, Limit, Registry, SlowDown
from websurf.worker.maintenance import reaper
from websurf.worker.process.runner import Runner

WORKER = "host-a/1/story"
OTHER = "host-b/2/story"
DEADLINE_S = 30.0


def show(database_url: str, task_id: uuid.UUID, *args: str) -> Result:
    return CliRunner().invoke(
        tasks_command, ["show", "--database-url", database_url, str(task_id), *args]
    )


def claim_one(conn: psycopg.Connection[Any], worker_id: str, task_type: str = "noop") -> Task:
    [task] = queue.claim(conn, worker_id, [task_type], 1)
    return task


def run_now(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> None:
    admin.run_task_now(conn, task_id)


def attempt_rows(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> int:
    row = conn.execute(
        "SELECT count(*) FROM websurfing_task_attempt WHERE task_id = %s", [task_id]
    ).fetchone()
    assert row is not None
    return int(row[0])


def register(conn: psycopg.Connection[Any], worker_id: str, *types: str) -> None:
    workers.register(
        conn, worker_id, hostname="host", pid=1, task_types=list(types), stale_after_s=60.0
    )


def test_a_first_try_completion_writes_no_attempt_row(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    task_id = queue.enqueue(conn, "noop", {"n": 1})
    task = claim_one(conn, WORKER)
    assert queue.finish(conn, WORKER, [Outcome(task, Status.COMPLETED, "noop")]) == {task_id}

    assert attempt_rows(conn, task_id) == 0
    [only] = admin.show_task(conn, task_id).attempt_log
    assert (only.attempt, only.worker_id, only.outcome, only.counted) == (
        1,
        WORKER,
        "completed",
        True,
    )
    assert only.duration_s is not None and only.duration_s >= 0


def test_every_attempt_is_shown_in_order_whatever_ended_it(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    task_id = queue.enqueue(conn, "noop", {"n": 1}, max_attempts=2)
    later = datetime.now(UTC) + timedelta(hours=1)

    def end(worker_id: str, outcome: Outcome) -> None:
        assert queue.finish(conn, worker_id, [outcome]) == {task_id}

    task = claim_one(conn, WORKER)  # 1: fails, retried after a backoff
    end(WORKER, Outcome(task, Status.PENDING, "noop", error="ValueError: boom", run_at=later))
    run_now(conn, task_id)
    task = claim_one(conn, OTHER)  # 2: handed back at a shutdown (not counted)
    end(OTHER, Outcome(task, Status.PENDING, "noop", handed_back=True))
    task = claim_one(conn, WORKER)  # 2 again: a Snooze
    end(WORKER, Outcome(task, Status.PENDING, "noop", handed_back=True, run_at=later))
    run_now(conn, task_id)
    task = claim_one(conn, WORKER)  # 2 again: a SlowDown
    end(
        WORKER,
        Outcome(
            task, Status.PENDING, "noop", handed_back=True, run_at=later, error="429 slow down"
        ),
    )
    run_now(conn, task_id)
    task = claim_one(conn, OTHER)  # 2: fails for good
    end(OTHER, Outcome(task, Status.FAILED, "noop", error="ValueError: again"))
    admin.retry_task(conn, task_id)
    task = claim_one(conn, WORKER)  # 3: completes
    end(WORKER, Outcome(task, Status.COMPLETED, "noop"))

    result = show(database_url, task_id, "--json")
    assert result.exit_code == 0, result.output
    story = json.loads(result.stdout)["attempt_log"]
    assert [(a["attempt"], a["worker_id"], a["outcome"], a["counted"]) for a in story] == [
        (1, WORKER, "retried", True),
        (2, OTHER, "handed_back", False),
        (2, WORKER, "put_back", False),
        (2, WORKER, "slowed_down", False),
        (2, OTHER, "failed", True),
        (3, WORKER, "completed", True),
    ]
    assert [a["error_message"] for a in story] == [
        "ValueError: boom",
        None,  # the row still held attempt 1's error: not this attempt's
        None,
        "429 slow down",
        "ValueError: again",
        None,
    ]
    starts = [a["started_at"] for a in story]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(a["ended_at"] >= a["started_at"] for a in story)

    text = show(database_url, task_id)
    assert text.exit_code == 0, text.output
    table = text.stdout[text.stdout.index("attempts run:") :]
    assert "attempts run:  6" in table
    order = [table.index(word) for word in ("retried", "handed_back", "put_back", "failed")]
    assert order == sorted(order)
    assert table.index("slowed_down") < table.index("completed")
    assert "not counted against max attempts" in table


def test_the_reaper_and_a_cancel_leave_their_attempts(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    task_id = queue.enqueue(conn, "noop", {"n": 1}, max_attempts=5)
    claim_one(conn, "gone/1/worker")  # a worker that is not on the roster: it died
    assert reaper.run_once(conn, {}).handed_back == 1
    register(conn, WORKER, "noop")
    claim_one(conn, WORKER)  # runs past its timeout (of no time at all)
    assert reaper.run_once(conn, {"noop": 0.0}, grace_s=0.0).timed_out == 1
    run_now(conn, task_id)
    task = claim_one(conn, WORKER)  # cancelled while it runs

    assert admin.cancel_task(conn, task_id).running
    waiting = admin.show_task(conn, task_id).waiting
    assert waiting is not None and waiting.reason == "cancel_requested"
    assert "stopping" in waiting.line
    assert queue.finish(conn, WORKER, [Outcome(task, Status.COMPLETED, "noop")]) == {task_id}
    admin.retry_task(conn, task_id)  # the cancelled attempt goes to the log now
    task = claim_one(conn, WORKER)

    story = admin.show_task(conn, task_id).attempt_log
    assert [(a.outcome, a.counted) for a in story] == [
        ("retried", True),
        ("retried", True),
        ("cancelled", False),
        ("running", True),
    ]
    assert story[0].error_message is not None and "stopped heartbeating" in story[0].error_message
    assert story[1].error_message is not None and "past its timeout" in story[1].error_message
    assert (
        story[2].error_message is not None and "cancelled while running" in story[2].error_message
    )
    assert story[-1].ended_at is None and story[-1].worker_id == WORKER


def test_only_the_database_writes_attempt_rows_and_both_roles_cause_them(
    conn: psycopg.Connection[Any],
) -> None:
    task_id = queue.enqueue(conn, "noop", {"n": 1})
    with conn.transaction():
        conn.execute("SET LOCAL ROLE websurf_worker")
        task = claim_one(conn, WORKER)
        queue.finish(
            conn, WORKER, [Outcome(task, Status.PENDING, "noop", error="E: x", run_at=None)]
        )
    assert attempt_rows(conn, task_id) == 1
    for role in ("websurf_worker", "websurf_app"):
        for statement in (
            "INSERT INTO websurfing_task_attempt (task_id, attempt, started_at, ended_at,"
            " outcome, counted) VALUES (%s, 1, now(), now(), 'completed', true)",
            "UPDATE websurfing_task_attempt SET error_message = 'forged' WHERE task_id = %s",
            "DELETE FROM websurfing_task_attempt WHERE task_id = %s",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                conn.execute(statement, [task_id])  # type: ignore[arg-type]
        with conn.transaction():
            conn.execute(f"SET LOCAL ROLE {role}")  # type: ignore[arg-type]
            assert attempt_rows(conn, task_id) == 1  # both may read it


# Why a pending task waits: one test per reason, each from real operations.


def test_a_task_scheduled_later_says_until_when(conn: psycopg.Connection[Any]) -> None:
    register(conn, WORKER, "noop")
    task_id = queue.enqueue(conn, "noop", {"n": 1}, delay=timedelta(minutes=10))
    waiting = admin.show_task(conn, task_id).waiting
    assert waiting is not None and waiting.reason == "scheduled"
    assert waiting.until is not None and waiting.until > datetime.now(UTC)
    assert waiting.line.startswith("scheduled for later: due at")


def test_a_task_with_no_live_worker_for_its_type_says_so(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    register(conn, WORKER, "something_else")
    task_id = queue.enqueue(conn, "noop", {"n": 1})
    result = show(database_url, task_id)
    assert result.exit_code == 0, result.output
    assert "waiting:       no live worker runs 'noop'" in result.stdout


def test_a_queued_task_counts_the_tasks_ahead_of_it(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    register(conn, WORKER, "noop")
    queue.enqueue_many(conn, [queue.NewTask("noop", {"n": i}) for i in range(3)])
    queue.enqueue(conn, "noop", {"urgent": True}, priority=9)
    queue.enqueue(conn, "other", {"n": 0}, allow_unknown_type=True)  # another operator's
    task_id = queue.enqueue(conn, "noop", {"n": 3})
    waiting = admin.show_task(conn, task_id).waiting
    assert waiting is not None and waiting.reason == "queued"
    assert waiting.line.startswith("queued behind 4 tasks of 'noop' ahead of it")
    claim_one(conn, WORKER)
    waiting = admin.show_task(conn, task_id).waiting
    assert waiting is not None and waiting.line.startswith("queued behind 3 tasks")
    result = show(database_url, task_id, "--json")
    assert json.loads(result.stdout)["waiting"]["reason"] == "queued"


def test_a_full_cap_says_how_many_run(conn: psycopg.Connection[Any]) -> None:
    register(conn, WORKER, "noop")
    limits.set_limit(conn, "noop", Limit(max_running=1))
    first, second = (queue.enqueue(conn, "noop", {"n": i}) for i in range(2))
    claimed, _ = limits.claim_rows(conn, WORKER, "noop", 5, min_priority=-1000)
    assert [row.id for row in claimed] == [first]
    waiting = admin.show_task(conn, second).waiting
    assert waiting is not None and waiting.reason == "cap_full"
    assert waiting.line == "operator 'noop' is at its cap: 1 running of 1 allowed at once"


def test_a_used_up_rate_window_says_when_the_next_start_is_allowed(
    conn: psycopg.Connection[Any],
) -> None:
    register(conn, WORKER, "noop")
    limits.set_limit(conn, "noop", Limit(rate=1, per_s=600.0, key="api"))
    ids = [queue.enqueue(conn, "noop", {"n": i}, limit_key="api") for i in range(2)]
    claimed, _ = limits.claim_rows(conn, WORKER, "noop", 5, min_priority=-1000)
    assert [row.id for row in claimed] == ids[:1]
    waiting = admin.show_task(conn, ids[1]).waiting
    assert waiting is not None and waiting.reason == "rate_used"
    assert waiting.line.startswith("key 'api' of 'noop' used its rate (1 per 600s)")
    assert waiting.until is not None
    assert timedelta(seconds=590) < waiting.until - datetime.now(UTC) < timedelta(seconds=610)
    assert "limit of key 'api': 1 started of 1 per 600s" in waiting.details


@pytest.fixture
def slowing_worker(database_url: str) -> Iterator[Runner]:
    """A real worker whose 'polite' operator asks to slow down on its first task."""
    reg = Registry()
    slowed: list[str] = []

    @reg.operator("polite")
    async def polite(task: Task, context: Context) -> Any:
        if not slowed:
            slowed.append(str(task.id))
            raise SlowDown(retry_after=300.0, reason="429 Too Many Requests")
        await asyncio.sleep(0)
        return {"ok": True}

    runner = Runner(
        WorkerConfig(database_url=database_url, poll_interval_s=0.2), WORKER, registry=reg
    )
    runner.boot()
    thread = threading.Thread(target=runner.serve, name="serve-story")
    thread.start()
    yield runner
    runner.request_stop()
    runner.request_stop()
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), "the runner did not stop"


def test_a_slow_down_from_a_real_worker_pauses_the_key_and_says_until_when(
    conn: psycopg.Connection[Any], database_url: str, slowing_worker: Runner
) -> None:
    first = queue.enqueue(
        conn, "polite", {"n": 1}, limit_key="api.example", registry=None, allow_unknown_type=True
    )
    wait_for(lambda: attempt_rows(conn, first) == 1, "the SlowDown's attempt logged")
    second = queue.enqueue(
        conn, "polite", {"n": 2}, limit_key="api.example", allow_unknown_type=True
    )
    for task_id in (first, second):
        waiting = admin.show_task(conn, task_id).waiting
        assert waiting is not None
        if task_id == first:  # put back until the pause ends: scheduled comes first
            assert waiting.reason == "scheduled"
            continue
        assert waiting.reason == "paused"
        assert waiting.line.startswith("key 'api.example' of 'polite' is paused until")
        assert waiting.line.endswith("(429 Too Many Requests)")
    [slowed] = admin.show_task(conn, first).attempt_log
    assert (slowed.outcome, slowed.counted, slowed.error_message) == (
        "slowed_down",
        False,
        "429 Too Many Requests",
    )
