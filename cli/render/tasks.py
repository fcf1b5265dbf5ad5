"""What ``websurf tasks`` and ``websurf prune`` print."""

from __future__ import annotations

import json
from collections.abc import Sequence

from websurf.cli.render import age, json_value, timestamp, to_json
from websurf.worker.core.admin import TaskDetail, TaskSummary
from websurf.worker.core.story import Attempt
from websurf.worker.maintenance.pruner import PruneCounts


def task_table(rows: Sequence[TaskSummary]) -> list[str]:
    """The tasks as a table, one line each, the error's first line clipped."""
    if not rows:
        return ["no tasks"]
    lines = [f"{'id':36}  {'type':20}  {'status':10}  {'tries':>5}  {'created':24}  error"]
    for r in rows:
        error = r.error_message.splitlines()[0][:60] if r.error_message else ""
        lines.append(
            f"{r.id!s:36}  {r.task_type[:20]:20}  {r.status:10}"
            f"  {r.attempts}/{r.max_attempts:<3}  {timestamp(r.created_at):24}  {error}"
        )
    return lines


def task_json_lines(rows: Sequence[TaskSummary]) -> list[str]:
    """One JSON object per task (``--json``)."""
    return [to_json(row) for row in rows]


def task_detail(task: TaskDetail) -> list[str]:
    """One task, a field a line, then its attempts' audit rows."""
    fields = [
        ("id", task.id),
        ("type", task.task_type),
        ("status", task.status),
        ("priority", task.priority),
        ("attempts", f"{task.attempts} of {task.max_attempts}"),
        ("created", timestamp(task.created_at)),
        ("scheduled for", timestamp(task.scheduled_for)),
        ("started", timestamp(task.started_at)),
        ("completed", timestamp(task.completed_at)),
        ("failed", timestamp(task.failed_at)),
        ("updated", timestamp(task.updated_at)),
        ("worker", task.worker_id or "-"),
        ("error", task.error_message or "-"),
        ("payload", json.dumps(task.payload, default=json_value)),
    ]
    lines = [f"{name + ':':15}{value}" for name, value in fields]
    if task.waiting is not None:
        lines.append(f"{'waiting:':15}{task.waiting.line}")
        lines += [f"{'':15}{detail}" for detail in task.waiting.details]
    lines += attempt_table(task.attempt_log)
    lines.append(f"{'audit rows:':15}{len(task.robot_events)}")
    for e in task.robot_events:
        outcome = "ok" if e.success else f"failed: {e.error_message or '-'}"
        took = e.processing_time_ms if e.processing_time_ms is not None else "-"
        lines.append(
            f"  {timestamp(e.created_at)}  cell {e.cell_id}  {e.operator_type}"
            f"  {took} ms  {outcome}"
        )
    return lines


def attempt_table(attempts: Sequence[Attempt]) -> list[str]:
    """The task's attempts in order, the current one last, a line each."""
    lines = [f"{'attempts run:':15}{len(attempts)}"]
    if attempts:
        lines.append(
            f"  {'#':>3}  {'worker':28}  {'started':24}  {'ended':24}  {'took':>8}"
            f"  {'outcome':12}  error"
        )
    for a in attempts:
        counted = "" if a.counted else "*"
        error = a.error_message.splitlines()[0][:80] if a.error_message else ""
        lines.append(
            f"  {str(a.attempt) + counted:>3}  {(a.worker_id or '-')[:28]:28}"
            f"  {timestamp(a.started_at):24}  {timestamp(a.ended_at):24}  {age(a.duration_s):>8}"
            f"  {a.outcome:12}  {error}"
        )
    if any(not a.counted for a in attempts):
        lines.append("  (* not counted against max attempts)")
    return lines


def prune_report(counts: PruneCounts, *, as_json: bool) -> str:
    """What a prune deleted, as a sentence or as JSON."""
    if as_json:
        return to_json(
            {
                "deleted": counts.deleted,
                "audit_rows_detached": counts.audit_rows_detached,
                "batches": counts.batches,
                "cutoff": counts.cutoff,
            }
        )
    cutoff = f"{counts.cutoff:%Y-%m-%d %H:%M:%S%z}" if counts.cutoff else "?"
    return (
        f"deleted {counts.deleted} finished task(s) older than {cutoff}"
        f" in {counts.batches} batch(es); {counts.audit_rows_detached} audit row(s) kept,"
        " detached from their task"
    )
