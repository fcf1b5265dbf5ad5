"""``bench_latency``: the benchmark's pickup-latency probe (``websurf bench`` only).

Not a built-in: the benchmark starts its worker daemon with ``--operators
websurf.worker.operators.bench`` (see ``websurf.worker.benchmark``). The producer puts
``t0 = time.time()``, taken just before its INSERT, in the payload; the handler's first
act is to read the clock, and it appends the difference in milliseconds as one line to
the payload's ``file`` (``O_APPEND``, so concurrent worker processes never interleave a
line). It only writes to files named ``websurf-bench-*``, so a stray task cannot append
to anything else. A task without ``file`` (the benchmark's warm-up) does nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from websurf.worker.benchmark import LATENCY_OPERATOR, PROBE_FILE_PREFIX
from websurf.worker.registry import Context, PermanentError, Task, operator


@operator(LATENCY_OPERATOR, timeout_s=None, max_attempts=1)
def bench_latency(task: Task, context: Context) -> Any:
    now = time.time()
    path = task.payload.get("file")
    if path is None:
        return None
    if not Path(str(path)).name.startswith(PROBE_FILE_PREFIX):
        raise PermanentError(f"bench_latency only writes files named {PROBE_FILE_PREFIX}*")
    line = f"{(now - float(task.payload['t0'])) * 1000.0:.3f}\n".encode()
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return None
