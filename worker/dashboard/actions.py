"""The dashboard's actions: retry, cancel, run now, pause/resume, and the same for a group.

Each action names what it will do (the confirmation page shows that) and does it with the
core's admin functions, the ones ``websurf tasks`` and ``websurf schedules`` use: one
statement per task, so a group action that meets a task another person or a worker
changed meanwhile skips it and says so. A group action touches at most
GROUP_ACTION_LIMIT tasks (the newest); run it again for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from websurf.worker.core import admin
from websurf.worker.core.schedules import ScheduleError, set_paused
from websurf.worker.dashboard import reads


class ActionError(Exception):
    """The action cannot be done as asked; the message says why in one line."""


@dataclass(frozen=True)
class Action:
    """What a person may ask for: its button, what the confirmation page says, the work."""

    label: str
    describe: Callable[[str], str]
    perform: Callable[[psycopg.Connection[Any], str], str]


def _task_id(target: str) -> Any:
    try:
        return admin.parse_task_id(target)
    except admin.InvalidRequest as exc:
        raise ActionError(str(exc)) from None


def _retry_task(conn: psycopg.Connection[Any], target: str) -> str:
    retried = admin.retry_task(conn, _task_id(target))
    return (
        f"task {retried.id} is pending again ({retried.max_attempts - retried.attempts} more run)"
    )


def _cancel_task(conn: psycopg.Connection[Any], target: str) -> str:
    cancelled = admin.cancel_task(conn, _task_id(target))
    if cancelled.running:
        return f"task {cancelled.id} was running: its worker stops it and records it cancelled"
    return f"task {cancelled.id} cancelled"


def _run_task_now(conn: psycopg.Connection[Any], target: str) -> str:
    task_id = _task_id(target)
    admin.run_task_now(conn, task_id)
    return f"task {task_id} is due now"


def _group(conn: psycopg.Connection[Any], target: str, status: str) -> list[Any]:
    """The ids of a group's tasks in ``status``; the target is ``<fingerprint>:<task type>``."""
    fingerprint, _, task_type = target.partition(":")
    if not task_type:
        raise ActionError(f"{target!r} does not name a failure group")
    _, tasks = reads.failure_group(conn, task_type, fingerprint, limit=reads.GROUP_ACTION_LIMIT)
    return [task.id for task in tasks if task.status == status]


def _for_each(
    conn: psycopg.Connection[Any], ids: list[Any], one: Callable[..., Any], done: str
) -> str:
    changed = skipped = 0
    for task_id in ids:
        try:
            one(conn, task_id)
            changed += 1
        except admin.WrongState:
            skipped += 1
        except admin.TaskNotFound:
            skipped += 1
    return f"{changed} tasks {done}" + (
        f", {skipped} skipped (changed meanwhile)" if skipped else ""
    )


def _retry_group(conn: psycopg.Connection[Any], target: str) -> str:
    return _for_each(conn, _group(conn, target, "failed"), admin.retry_task, "retried")


def _cancel_group(conn: psycopg.Connection[Any], target: str) -> str:
    return _for_each(conn, _group(conn, target, "pending"), admin.cancel_task, "cancelled")


def _pause(conn: psycopg.Connection[Any], target: str) -> str:
    try:
        set_paused(conn, target, True)
    except ScheduleError as exc:
        raise ActionError(str(exc)) from None
    return f"schedule {target!r} paused"


def _resume(conn: psycopg.Connection[Any], target: str) -> str:
    try:
        next_run_at = set_paused(conn, target, False)
    except ScheduleError as exc:
        raise ActionError(str(exc)) from None
    when = f", next run {next_run_at:%Y-%m-%d %H:%M:%S %Z}" if next_run_at else ""
    return f"schedule {target!r} resumed{when}"


ACTIONS: dict[str, Action] = {
    "retry-task": Action(
        "Retry",
        lambda t: f"Put task {t} back in the queue, due now, with one more run?",
        _retry_task,
    ),
    "cancel-task": Action(
        "Cancel",
        lambda t: (
            f"Cancel task {t}? A pending task will not run; a running one, its worker"
            " stops it (the attempt is not spent)."
        ),
        _cancel_task,
    ),
    "run-task-now": Action(
        "Run now", lambda t: f"Make pending task {t} due now (skip its wait)?", _run_task_now
    ),
    "retry-group": Action(
        "Retry all failed",
        lambda t: f"Retry every failed task of failure group {t}, each with one more run?",
        _retry_group,
    ),
    "cancel-group": Action(
        "Cancel all retrying",
        lambda t: f"Cancel every task of failure group {t} that waits for a retry?",
        _cancel_group,
    ),
    "pause-schedule": Action(
        "Pause", lambda t: f"Pause schedule {t!r}? It enqueues nothing until resumed.", _pause
    ),
    "resume-schedule": Action(
        "Resume", lambda t: f"Resume schedule {t!r} from its next tick?", _resume
    ),
}


def perform(conn: psycopg.Connection[Any], name: str, target: str) -> str:
    """Do action ``name`` on ``target``; ActionError (or admin.TaskError) says why not."""
    try:
        return ACTIONS[name].perform(conn, target)
    except admin.TaskError as exc:
        raise ActionError(str(exc)) from None
