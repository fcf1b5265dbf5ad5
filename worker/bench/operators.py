"""The benchmark's operators (``websurf bench`` only).

Not built-ins: the benchmark starts its worker daemon with ``--operators
websurf.worker.bench.operators`` (see ``websurf.worker.bench.harness``). The names it
shares with the benchmark come from ``websurf.worker.bench.names``, never from the harness.

* ``bench_latency``, the pickup-latency probe. The producer puts ``t0 = time.time()``,
  taken just before its INSERT, in the payload; the handler's first act is to read the
  clock, and it appends the difference in milliseconds as one line to the payload's
  ``file`` (``O_APPEND``, so concurrent worker processes never interleave a line). It only
  writes to files named ``websurf-bench-*``, so a stray task cannot append to anything
  else. A task without ``file`` (the benchmark's warm-up) does nothing.
* ``bench_sleep`` (``async def``, awaits ``asyncio.sleep``) and ``bench_sleep_plain`` (a
  plain function, ``time.sleep`` in the worker's thread pool): a robot that waits
  ``sleep_s`` seconds without using a CPU, like one waiting on a web page or a model.
  Given a probe ``file``, ``bench_sleep`` appends ``enter <time.time()>`` and ``exit
  <time.time()>`` around its wait (the cap run counts running handlers from them).
* ``bench_hang``, the cancel-latency probe: awaits an event nobody sets, so only a
  cancel ends it; on its ``CancelledError`` it appends ``<task id> <time.time()>`` to the
  payload's ``file`` (same rules as ``bench_latency``).
* ``bench_slow_llm``: ``bench_sleep`` with the issue's ``concurrency=5`` per process, fed
  by a robot column (the fairness measurement: ``websurf.worker.bench.fairness``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from websurf.worker.bench.names import (
    FAIR_CONCURRENCY,
    FAIR_OPERATOR,
    HANG_OPERATOR,
    LATENCY_OPERATOR,
    PROBE_FILE_PREFIX,
    SLEEP_OPERATOR,
    SLEEP_PLAIN_OPERATOR,
)
from websurf.worker.core.registry import Context, PermanentError, Task, operator


def _append(task: Task, line: str) -> None:
    """Append one line to the payload's probe ``file`` (none: nothing to do)."""
    path = task.payload.get("file")
    if path is None:
        return
    if not Path(str(path)).name.startswith(PROBE_FILE_PREFIX):
        raise PermanentError(f"{task.task_type} only writes files named {PROBE_FILE_PREFIX}*")
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@operator(LATENCY_OPERATOR, timeout_s=None, max_attempts=1)
async def bench_latency(task: Task, context: Context) -> Any:
    now = time.time()
    if "t0" in task.payload:
        _append(task, f"{(now - float(task.payload['t0'])) * 1000.0:.3f}")
    return None


@operator(HANG_OPERATOR, timeout_s=None, max_attempts=1)
async def bench_hang(task: Task, context: Context) -> Any:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        _append(task, f"{task.id} {time.time():.6f}")
        raise


def _sleep_s(task: Task) -> float:
    return float(task.payload.get("sleep_s", 0.0))


@operator(SLEEP_OPERATOR, timeout_s=None, max_attempts=1)
async def bench_sleep(task: Task, context: Context) -> Any:
    if "file" not in task.payload:
        await asyncio.sleep(_sleep_s(task))
        return None
    _append(task, f"enter {time.time():.6f}")
    try:
        await asyncio.sleep(_sleep_s(task))
    finally:
        _append(task, f"exit {time.time():.6f}")
    return None


@operator(SLEEP_PLAIN_OPERATOR, timeout_s=None, max_attempts=1)
def bench_sleep_plain(task: Task, context: Context) -> Any:
    time.sleep(_sleep_s(task))
    return None


@operator(FAIR_OPERATOR, timeout_s=None, max_attempts=1, concurrency=FAIR_CONCURRENCY)
async def bench_slow_llm(task: Task, context: Context) -> Any:
    await asyncio.sleep(_sleep_s(task))
    return None
