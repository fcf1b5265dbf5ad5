"""The recorder writes the most urgent outcomes first when more than a batch is waiting.

What a person notices: their edit's robot answer is not recorded behind thousands of bulk
results that finished a moment earlier.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import structlog

from websurf.worker.core import queue
from websurf.worker.core.model import Outcome, Status
from websurf.worker.daemon.metrics import NullMetrics
from websurf.worker.process.database import DatabaseRetry, DedicatedConnection
from websurf.worker.process.recorder import Recorder

WORKER = "recorder-order-test"


def test_an_urgent_outcome_is_written_in_the_first_batch(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    bulk = [queue.enqueue(conn, "noop", {"n": n}, priority=5) for n in range(6)]
    edit = queue.enqueue(conn, "noop", {"edit": True}, priority=8)
    claimed = queue.claim(conn, WORKER, ["noop"], 10)
    assert {t.id for t in claimed} == {*bulk, edit}
    # finished in this order: the bulk tasks first, the edit's last
    tasks = sorted(claimed, key=lambda t: (t.priority, str(t.payload)))
    log = structlog.get_logger()
    batches: list[list[str]] = []

    async def record_all() -> None:
        recorder = Recorder(
            DedicatedConnection(database_url, application_name=WORKER, connect_timeout_s=5),
            worker_id=WORKER,
            log=log,
            retry=DatabaseRetry(database_url, log, max_wait_s=5, stop=threading.Event()),
            metrics=NullMetrics(),
            flush_count=3,
        )
        recorder.on_recorded = lambda batch: batches.append(
            ["edit" if o.task.id == edit else "bulk" for o in batch]
        )
        for task in tasks:  # all waiting before the writer takes its first batch
            recorder.add(Outcome(task, Status.COMPLETED, task.task_type, output={}))
        recorder.start()
        await recorder.close(lambda: float("inf"))

    asyncio.run(record_all())

    assert batches[0][0] == "edit", batches
    assert sorted(o for batch in batches for o in batch) == ["bulk"] * 6 + ["edit"]
    statuses = conn.execute("SELECT DISTINCT status FROM websurfing_task_queue").fetchall()
    assert statuses == [("completed",)]
