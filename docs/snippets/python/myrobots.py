# myrobots.py
import asyncio

from websurf.worker.core.registry import Backoff, PermanentError, Result, Snooze, operator


@operator("lookup", timeout_s=15, concurrency=50)
async def lookup(task, ctx):
    """An async handler: runs on the event loop with the other tasks in flight."""
    async with ctx.async_connection() as conn:  # a pooled async connection for reads
        cur = await conn.execute("SELECT count(*) FROM websurfing_cell")
        (cells,) = await cur.fetchone()
    if cells > 1_000_000:
        raise Snooze(30, "busy: try again in 30 s")  # back in the queue, attempt not spent
    await asyncio.sleep(0.1)  # waiting on a model or an API costs nothing while it waits
    return {"cells": cells}


@operator(
    "shout",
    timeout_s=10,
    max_attempts=5,
    retry=Backoff(base_s=2, max_s=60),
    permanent_errors=(ValueError,),
)
def shout(task, ctx):
    text = task.payload.get("input")
    if text is None:
        raise PermanentError("nothing to shout")  # fails at once, no retry
    ctx.log.info("shouting", length=len(text))  # carries task_id, task_type, attempt, worker_id
    return Result(output={"length": len(text)}, cell_content=text.upper())
