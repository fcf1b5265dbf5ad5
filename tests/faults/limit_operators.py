"""Operators of the limits fault test, with limits declared in code: ``capped`` (at most
CAP running across the cluster, each runs CAPPED_S) and ``rated`` (at most RATE started
in any PERIOD_S). Each handler appends ``<event> <operator> <task id> <wall time> <pid>``
lines (start, end) to the file named by ``$WEBSURF_LIMIT_EVENTS``: what the handlers
themselves saw, read by the test.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from websurf.worker.core.registry import Context, Limit, Task, operator

CAP = 3
CAPPED_S = 0.4
RATE, PERIOD_S = 10, 2.0
EVENTS_ENV = "WEBSURF_LIMIT_EVENTS"


def _note(event: str, task: Task) -> None:
    line = f"{event} {task.task_type} {task.id} {time.time():.6f} {os.getpid()}\n"
    fd = os.open(os.environ[EVENTS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@operator("capped", limits=Limit(max_running=CAP))
async def capped(task: Task, context: Context) -> Any:
    _note("start", task)
    await asyncio.sleep(CAPPED_S)
    _note("end", task)
    return {"ok": True}


@operator("rated", limits=Limit(rate=RATE, per_s=PERIOD_S))
async def rated(task: Task, context: Context) -> Any:
    _note("start", task)
    return {"ok": True}
