"""Plan analysis: EXPLAIN (ANALYZE, BUFFERS) of the claim query in a big, mostly finished
queue, both as a one-off statement (the custom plan psycopg's first executions get) and as
a prepared statement forced to its generic plan (what a long-lived session may switch
to). Either should read the queue table through an index, never scan it."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from websurf.sql import QUERIES
from websurf.worker.bench.harness import BENCH_WORKER_ID, reset, scratch_connection
from websurf.worker.config import BATCH_MAX
from websurf.worker.core.queue import CLAIM_MAX_BYTES, LOWEST_PRIORITY

EXPLAIN_REPEATS = 5
_EXECUTION_TIME = re.compile(r"Execution Time: ([\d.]+) ms")
_PLACEHOLDER = re.compile(r"%\((\w+)\)[sbt]")


@dataclass(frozen=True)
class ClaimPlan:
    finished_rows: int
    future_rows: int
    due_rows: int
    limit: int
    index_driven: bool  # custom plan (what psycopg's first executions get)
    execution_ms: float  # median of EXPLAIN_REPEATS runs
    generic_index_driven: bool  # generic plan (a prepared statement after a few runs)
    generic_execution_ms: float
    summary: str
    plan: str
    generic_plan: str


def _explain_custom(conn: psycopg.Connection[Any], params: dict[str, Any]) -> str:
    """The plan the claim gets as a one-off statement (psycopg's first executions)."""
    with conn.transaction(force_rollback=True):  # EXPLAIN ANALYZE really claims the rows
        rows = conn.execute(
            QUERIES["bench_explain"].format(statement=QUERIES["claim_tasks"]), params
        ).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def _explain_generic(url: str, params: dict[str, Any], repeats: int) -> list[str]:
    """The generic plan of the claim as a prepared statement (psycopg prepares it after a
    few executions, and PostgreSQL may then switch to a generic plan)."""
    claim = QUERIES["claim_tasks"]
    # psycopg numbers named placeholders $1, $2, ... in order of first appearance.
    names = list(dict.fromkeys(_PLACEHOLDER.findall(claim.as_string())))
    claims_nothing = dict(params, task_types=[f"{BENCH_WORKER_ID}-no-such-type"])
    plans = []
    for _ in range(repeats):
        # A fresh session each time: a rollback makes psycopg forget what it prepared.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(claim, claims_nothing, prepare=True)
            row = conn.execute(QUERIES["bench_prepared_statement"]).fetchone()
            assert row is not None
            name, types = row
            # EXECUTE takes no bind parameters: the values go in as quoted literals, cast
            # to the types the server gave the statement's parameters.
            arguments = sql.SQL(", ").join(
                sql.SQL("CAST({} AS {})").format(sql.Literal(params[n]), sql.SQL(t))
                for n, t in zip(names, types, strict=True)
            )
            explain = QUERIES["bench_explain_execute"].format(
                name=sql.Identifier(name), arguments=arguments
            )
            with conn.transaction(force_rollback=True):
                conn.execute(QUERIES["bench_force_generic_plan"])
                rows = conn.execute(explain).fetchall()
            plans.append("\n".join(str(r[0]) for r in rows))
    return plans


def execution_ms(plan: str) -> float:
    found = _EXECUTION_TIME.search(plan)
    return float(found.group(1)) if found else float("nan")


def index_driven(plan: str) -> bool:
    """The claim reads the queue table through an index, never a sequential scan of it."""
    return "Seq Scan on websurfing_task_queue" not in plan and bool(
        re.search(r"Index (Only )?Scan (Backward )?using \w+ on websurfing_task_queue", plan)
    )


def scan_summary(plan: str) -> str:
    found = re.search(
        r"(Index (?:Only )?Scan(?: Backward)? using \w+|Seq Scan|Bitmap Heap Scan)"
        r" on websurfing_task_queue",
        plan,
    )
    return found.group(1) if found else "no scan of websurfing_task_queue found"


def measure_claim_plan(
    url: str, *, finished: int, future: int, due: int, limit: int = BATCH_MAX
) -> ClaimPlan:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim query in a big, mostly finished queue."""
    with scratch_connection(url) as conn:
        reset(conn)
        conn.execute(QUERIES["bench_seed_finished_tasks"], {"count": finished})
        conn.execute(QUERIES["bench_seed_future_tasks"], {"count": future})
        conn.execute(QUERIES["bench_seed_due_tasks"], {"count": due})
        conn.execute(QUERIES["bench_analyze_queue"])
        params = {
            "task_types": ["noop"],
            "limit": limit,
            "worker_id": BENCH_WORKER_ID,
            "min_priority": LOWEST_PRIORITY,
            "max_bytes": CLAIM_MAX_BYTES,
        }
        custom = [_explain_custom(conn, params) for _ in range(EXPLAIN_REPEATS + 1)]
    generic = _explain_generic(url, params, EXPLAIN_REPEATS + 1)
    # The first run warms the cache; the last one's plan text is reported.
    plan, ms = custom[-1], statistics.median(execution_ms(p) for p in custom[1:])
    generic_plan = generic[-1]
    generic_ms = statistics.median(execution_ms(p) for p in generic[1:])
    custom_index, generic_index = index_driven(plan), index_driven(generic_plan)
    summary = (
        f"{'index-driven' if custom_index else 'NOT index-driven'} ({scan_summary(plan)}),"
        f" {ms:.2f} ms to claim {min(limit, due)} of {due:,} due among {finished:,} finished"
        f" + {future:,} future-dated rows; generic plan:"
        f" {'index-driven' if generic_index else 'NOT index-driven'}"
        f" ({scan_summary(generic_plan)}), {generic_ms:.2f} ms"
    )
    return ClaimPlan(
        finished,
        future,
        due,
        limit,
        custom_index,
        ms,
        generic_index,
        generic_ms,
        summary,
        plan,
        generic_plan,
    )
