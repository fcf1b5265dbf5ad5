"""An operator for the hosted-PostgreSQL acceptance tests, loaded with ``--operators``.

Not a test module: the worker subprocess imports it (its folder is on PYTHONPATH).
"""

from __future__ import annotations

from typing import Any

from websurf.worker.core.registry import Context, Result, Task, operator

# A claim whose reply is lost when the pooler drops the connection leaves its task
# `processing` under a live worker: the reaper takes it back after timeout + grace.
TIMEOUT_S = 2.0


@operator("hosted_cell", timeout_s=TIMEOUT_S, max_attempts=5)
def write_cell(task: Task, context: Context) -> Any:
    """Write the payload's ``n`` into the task's cell (one audited robot write)."""
    return Result(output={"n": task.payload["n"]}, cell_content=str(task.payload["n"]))
