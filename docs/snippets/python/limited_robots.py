# --8<-- [start:limits]
from websurf.worker.core.registry import Limit, SlowDown, operator


@operator("slow_llm", limits=Limit(max_running=5))
async def slow_llm(task, context): ...


@operator(
    "search_api",
    limits=[Limit(rate=60, per_s=60, burst=5), Limit(key="free-tier", rate=10, per_s=60)],
)
async def search_api(task, context): ...


# --8<-- [end:limits]
@operator("polite_api")
async def polite_api(task, context):
    """The SlowDown sample of docs/fairness.md: the service said 429, Retry-After 30."""
    raise SlowDown(retry_after=30)
