"""Operators for the acceptance tests, loaded by the worker with ``--operators``.

Not a test module: the worker subprocess imports it (its folder is put on
PYTHONPATH). Sleeping inside a handler is the workload under test, not a way of
waiting for something.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from websurf.worker.core.registry import Context, Result, Task, operator


@operator("test_sleep", timeout_s=None, max_attempts=3)
def sleep(task: Task, context: Context) -> Any:
    """Touch ``started_file`` (so a test knows the handler runs), then sleep ``sleep_s``.

    With ``sleep_attempts`` set, only the first that many attempts sleep; later ones
    return at once (a task recovered after its process was killed then completes).
    """
    started = task.payload.get("started_file")
    if started:
        Path(started).with_name(f"{Path(started).name}.{task.attempt}").touch()
    seconds = float(task.payload.get("sleep_s", 1.0))
    if task.attempt <= int(task.payload.get("sleep_attempts", 1_000_000)):
        time.sleep(seconds)
    return {"slept_s": seconds, "attempt": task.attempt}


GATE_DEADLINE_S = 30.0


@operator("test_gated_upper", timeout_s=None, max_attempts=1)
def gated_upper(task: Task, context: Context) -> Result:
    """Write the input in capitals; an input starting ``wait:`` first waits for the file
    named by the column option ``gate`` (at most ``GATE_DEADLINE_S``), so a test can
    make an older edit's task finish after a newer one's."""
    text = str(task.payload.get("input") or "")
    if text.startswith("wait:"):
        gate = Path(str(task.payload["gate"]))
        deadline = time.monotonic() + GATE_DEADLINE_S
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return Result(output={"text": text.upper()}, cell_content=text.upper())


@operator("test_async_gate", timeout_s=None, max_attempts=1)
async def async_gate(task: Task, context: Context) -> Any:
    """Await the file named ``gate`` (at most ``GATE_DEADLINE_S``), then return.

    Awaiting runs no handler code: a process killed meanwhile dies outside handlers, so
    these attempts are not the death's culprits.
    """
    gate = Path(str(task.payload["gate"]))
    deadline = time.monotonic() + GATE_DEADLINE_S
    while not gate.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return {"attempt": task.attempt}


@operator("test_loop_blocker", timeout_s=None)
async def loop_blocker(task: Task, context: Context) -> Any:
    """A faulty ``async def`` handler: blocks the event loop (a synchronous sleep) until
    the file named ``gate`` exists, at most ``GATE_DEADLINE_S``; with ``block_attempts``,
    only the first that many attempts block."""
    Path(str(task.payload["started_file"])).touch()
    if task.attempt > int(task.payload.get("block_attempts", 1_000_000)):
        return {"attempt": task.attempt}
    gate = Path(str(task.payload["gate"]))
    deadline = time.monotonic() + GATE_DEADLINE_S
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"attempt": task.attempt}


@operator("test_flaky", timeout_s=None, max_attempts=1)
def flaky(task: Task, context: Context) -> Any:
    """Fail the first ``fail_attempts`` attempts (default 1) as an unreachable ``url`` would,
    then succeed: a failure a person retries (the dashboard's browser test)."""
    if task.attempt <= int(task.payload.get("fail_attempts", 1)):
        raise ConnectionError(f"could not reach {task.payload.get('url')}: connection refused")
    return {"attempt": task.attempt}
