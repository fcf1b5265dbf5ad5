"""``task_completed`` is logged once the result is saved, never before.

What a person notices: a worker killed between a handler's return and the recording of
its result used to log ``task_completed`` for an attempt that was then run again (and
logged again); a result the fence discarded was logged as completed too.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import structlog
from structlog.testing import capture_logs

from websurf.worker.core import queue
from websurf.worker.core.registry import Context, Registry, Task
from websurf.worker.daemon.metrics import NullMetrics
from websurf.worker.process.database import DatabaseRetry, DedicatedConnection
from websurf.worker.process.executor import Executor
from websurf.worker.process.recorder import Recorder

WORKER = "completion-log-test"


def _registry() -> Registry:
    registry = Registry()

    @registry.operator("answers")
    async def answers(task: Task, context: Context) -> Any:
        return {"answer": 42}

    return registry


def _recorder(database_url: str, log: Any) -> Recorder:
    return Recorder(
        DedicatedConnection(database_url, application_name=WORKER, connect_timeout_s=5),
        worker_id=WORKER,
        log=log,
        retry=DatabaseRetry(database_url, log, max_wait_s=5, stop=threading.Event()),
        metrics=NullMetrics(),
    )


def _completions(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in captured if entry["event"] == "task_completed"]


def test_a_completion_is_logged_once_after_its_result_is_saved(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    task_id = queue.enqueue(conn, "answers", {})
    [task] = queue.claim(conn, WORKER, ["answers"], 1)
    registry = _registry()

    async def run_then_record() -> list[dict[str, Any]]:
        log = structlog.get_logger("websurf.worker").bind(worker_id=WORKER)
        executor = Executor(
            registry.operators, worker_id=WORKER, log=log, threads=1, stuck_grace_s=1
        )
        outcome = await executor.run(task)
        before_recording = _completions(captured)
        recorder = _recorder(database_url, log)
        recorder.start()
        recorder.add(outcome)
        await recorder.close(lambda: float("inf"))
        executor.close()
        return before_recording

    with capture_logs() as captured:
        before_recording = asyncio.run(run_then_record())

    assert before_recording == []  # a kill here would have logged nothing
    [completed] = _completions(captured)
    assert completed["task_id"] == str(task_id)
    assert completed["task_type"] == "answers"
    assert completed["attempt"] == 1
    assert completed["worker_id"] == WORKER
    status = conn.execute("SELECT status FROM websurfing_task_queue WHERE id = %s", (task_id,))
    assert status.fetchone() == ("completed",)


def test_a_result_the_fence_discards_is_not_logged_as_completed(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    task_id = queue.enqueue(conn, "answers", {})
    [task] = queue.claim(conn, WORKER, ["answers"], 1)
    # Meanwhile this worker was presumed dead and another took the task over.
    conn.execute(
        "UPDATE websurfing_task_queue SET worker_id = 'other', attempts = 2 WHERE id = %s",
        (task_id,),
    )
    registry = _registry()

    async def run_then_record() -> None:
        log = structlog.get_logger("websurf.worker").bind(worker_id=WORKER)
        executor = Executor(
            registry.operators, worker_id=WORKER, log=log, threads=1, stuck_grace_s=1
        )
        recorder = _recorder(database_url, log)
        recorder.start()
        recorder.add(await executor.run(task))
        await recorder.close(lambda: float("inf"))
        executor.close()

    with capture_logs() as captured:
        asyncio.run(run_then_record())

    assert _completions(captured) == []
    assert [e["task_id"] for e in captured if e["event"] == "task_claim_lost"] == [str(task_id)]
