"""``noop``: does nothing and returns at once (benchmarks, smoke tests).

With ``{"cell_content": "..."}`` in its payload it writes that content to the task's
cell, which exercises the whole audited write path without doing any work. It is an
``async def`` handler, like the robots that wait on the network: it runs on the
worker's event loop, not in a thread.
"""

from __future__ import annotations

from typing import Any

from websurf.worker.core.registry import Context, Result, Task, operator


@operator("noop", timeout_s=None)
async def noop(task: Task, context: Context) -> Any:
    content = task.payload.get("cell_content")
    if content is not None and task.cell_id is not None:
        return Result(output=None, cell_content=str(content))
    return None
