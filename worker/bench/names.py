"""Names the benchmark and its operators share; imports nothing, so the operators module
(loaded into the benchmark's worker daemons) never pulls in the harness."""

# The operators live in their own module, imported only by the benchmark's daemon, so
# importing the harness never registers them anywhere else.
BENCH_OPERATORS_MODULE = "websurf.worker.bench.operators"
LATENCY_OPERATOR = "bench_latency"
SLEEP_OPERATOR = "bench_sleep"  # async def, awaits asyncio.sleep(payload sleep_s)
SLEEP_PLAIN_OPERATOR = "bench_sleep_plain"  # a plain function calling time.sleep
HANG_OPERATOR = "bench_hang"  # async def, awaits what never comes until it is cancelled
FAIR_OPERATOR = "bench_slow_llm"  # async def, awaits payload sleep_s; the slow_llm
FAIR_CONCURRENCY = 5  # its per-process limit, as `@operator("slow_llm", concurrency=5)`
PROBE_FILE_PREFIX = "websurf-bench-"  # the only files bench_latency appends to
