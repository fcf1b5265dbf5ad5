"""The operators the fault-injection suite runs: ``chaos`` (a plain function, run in a
handler thread) and ``chaos_async`` (``async def``, run on the event loop with many others
in flight), whose payload says how to behave.

Loaded by the worker under test with ``--operators chaos_operators`` (this directory is
on its PYTHONPATH). ``kind`` in the payload picks the behaviour; the attempt number
decides the ``*_once`` kinds. Every attempt that succeeds appends ``<task id> <attempt>
<worker id>`` to the file named by ``$WEBSURF_CHAOS_SIDE_EFFECTS``: the side effect the
suite counts.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from typing import Any

from websurf.worker.core.registry import Backoff, Context, Result, Task, operator

TIMEOUT_S = 1.0
MAX_ATTEMPTS = 3
HANG_S = 30.0  # far past the timeout: only the alarm ends it
STUBBORN_HANG_S = 8.0  # past timeout + the reaper's grace, with the alarm blocked
SLOW_S = 0.25  # well inside the timeout
SIDE_EFFECTS_ENV = "WEBSURF_CHAOS_SIDE_EFFECTS"

# kind -> what the suite expects at the end
SUCCEEDS = {"ok", "ok_cell", "slow", "flaky", "exit_once", "hang_once", "stubborn_hang"}
FAILS = {"raise", "exit_always", "kill_always", "segfault", "hang_always"}
KILLS_ITS_PROCESS = {"exit_once", "exit_always", "kill_always", "segfault"}


def _side_effect(task: Task, context: Context) -> None:
    path = os.environ.get(SIDE_EFFECTS_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{task.id} {task.attempt} {context.worker_id}\n".encode())
    finally:
        os.close(fd)


def _crash(kind: str) -> None:
    if kind.startswith("exit"):
        os._exit(1)
    if kind == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    os.kill(os.getpid(), signal.SIGKILL)


@operator(
    "chaos",
    timeout_s=TIMEOUT_S,
    max_attempts=MAX_ATTEMPTS,
    retry=Backoff(base_s=0.05, factor=2.0, max_s=0.4),
)
def chaos(task: Task, context: Context) -> Any:
    kind = task.payload["kind"]
    first = task.attempt == 1
    if kind == "raise" or (kind == "flaky" and first):
        raise RuntimeError(f"chaos {kind} on attempt {task.attempt}")
    if kind in ("exit_always", "kill_always", "segfault") or (kind == "exit_once" and first):
        _crash(kind)
    if kind == "slow":
        time.sleep(SLOW_S)
    if kind == "hang_always" or (kind == "hang_once" and first):
        time.sleep(HANG_S)  # the worker's alarm raises TaskTimeout in here
    if kind == "stubborn_hang" and first:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            time.sleep(STUBBORN_HANG_S)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    _side_effect(task, context)
    if task.cell_id is not None:
        return Result(output={"kind": kind}, cell_content=f"{kind}:{task.id}")
    return {"kind": kind}


@operator("chaos_long", timeout_s=None, max_attempts=MAX_ATTEMPTS)
def chaos_long(task: Task, context: Context) -> Any:
    """Sleeps ``seconds`` on its first attempt (a long task to kill a worker under)."""
    if task.attempt == 1:
        time.sleep(float(task.payload["seconds"]))
    _side_effect(task, context)
    return {"attempt": task.attempt}


@operator(
    "chaos_async",
    timeout_s=TIMEOUT_S,
    max_attempts=MAX_ATTEMPTS,
    retry=Backoff(base_s=0.05, factor=2.0, max_s=0.4),
)
async def chaos_async(task: Task, context: Context) -> Any:
    """``chaos`` on the event loop: waits are awaited, crashes happen inside a loop step."""
    kind = task.payload["kind"]
    first = task.attempt == 1
    await asyncio.sleep(0)  # a first step: it shares the loop with the tasks in flight
    if kind == "raise" or (kind == "flaky" and first):
        raise RuntimeError(f"chaos {kind} on attempt {task.attempt}")
    if kind in ("exit_always", "kill_always", "segfault") or (kind == "exit_once" and first):
        _crash(kind)
    if kind == "slow":
        await asyncio.sleep(SLOW_S)
    if kind == "hang_always" or (kind in ("hang_once", "stubborn_hang") and first):
        await asyncio.sleep(HANG_S)  # cancelled at the operator's timeout
    _side_effect(task, context)
    if task.cell_id is not None:
        return Result(output={"kind": kind}, cell_content=f"{kind}:{task.id}")
    return {"kind": kind}
