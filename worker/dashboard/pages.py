"""The dashboard's pages: each reads what it shows, gives the connection back, renders."""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response

from websurf.worker.core import admin
from websurf.worker.core.model import Status
from websurf.worker.dashboard import charts, reads
from websurf.worker.dashboard.web import render, state

FINGERPRINT = re.compile(r"[0-9a-f]{16}")  # a failure group's name (dashboard.sql)


def overview_page(request: Request) -> Response:
    with state(request).pool.connection() as conn:
        found = reads.overview(conn, state(request).closed_buckets)
    return render(
        request,
        "overview.html",
        {
            "overview": found,
            "many_attempts": reads.MANY_ATTEMPTS,
            "hour_completed": charts.line_chart(
                "Completed per minute, last hour", found.hour.buckets, found.hour.completed
            ),
            "hour_failed": charts.line_chart(
                "Failed per minute, last hour", found.hour.buckets, found.hour.failed
            ),
            "day_completed": charts.line_chart(
                "Completed per 15 minutes, last day", found.day.buckets, found.day.completed
            ),
            "day_failed": charts.line_chart(
                "Failed per 15 minutes, last day", found.day.buckets, found.day.failed
            ),
            "latency": charts.line_chart(
                "Pickup latency (due to started), last hour",
                found.hour.buckets,
                (found.hour.mean_wait_s, found.hour.max_wait_s),
                unit="s",
            ),
        },
    )


def failures_page(request: Request) -> Response:
    with state(request).pool.connection() as conn:
        groups = reads.failure_groups(conn)
    return render(
        request,
        "failures.html",
        {
            "groups": groups,
            "window_s": reads.FAILURE_WINDOW_S,
            "sample_full": sum(g.failed for g in groups) >= reads.SAMPLE,
            "sample": reads.SAMPLE,
        },
    )


def failure_group_page(request: Request) -> Response:
    task_type = request.path_params["task_type"]
    fingerprint = request.path_params["fingerprint"]
    if not FINGERPRINT.fullmatch(fingerprint):
        return render(request, "missing.html", {"what": f"failure group {fingerprint}"}, 404)
    with state(request).pool.connection() as conn:
        group, tasks = reads.failure_group(conn, task_type, fingerprint)
    # A group whose tasks were all retried or cancelled is shown empty, not as missing:
    # the page a person just acted on says so.
    return render(
        request,
        "failure_group.html",
        {
            "group": group,
            "tasks": tasks,
            "task_type": task_type,
            "fingerprint": fingerprint,
            "target": f"{fingerprint}:{task_type}",
        },
    )


def _task_filter(request: Request) -> tuple[reads.TaskFilter, str | None]:
    """The tasks page's filters from its query string, and a problem with them if any."""
    query = request.query_params

    def text(name: str) -> str | None:
        value = query.get(name, "").strip()
        return value or None

    status = text("status") or "failed"
    problem = None
    if status not in {s.value for s in Status}:
        problem, status = f"unknown status {status!r}", "failed"
    wanted = reads.TaskFilter(
        status=status,
        task_type=text("task_type"),
        spreadsheet_id=text("spreadsheet_id"),
        fairness_key=text("fairness_key"),
        error=text("error"),
    )
    return wanted, problem


def tasks_page(request: Request) -> Response:
    wanted, problem = _task_filter(request)
    with state(request).pool.connection() as conn:
        tasks = reads.find_tasks(conn, wanted)
    return render(
        request,
        "tasks.html",
        {
            "tasks": tasks,
            "wanted": asdict(wanted),
            "statuses": [s.value for s in Status],
            "problem": problem,
            "window_s": wanted.window_s,
        },
        status=400 if problem else 200,
    )


def task_page(request: Request) -> Response:
    raw = request.path_params["task_id"]
    try:
        task_id = uuid.UUID(raw)
    except ValueError:
        return render(request, "missing.html", {"what": f"task {raw}"}, status=404)
    try:
        with state(request).pool.connection() as conn:
            page = reads.task_page(conn, task_id)
    except admin.TaskNotFound:
        return render(request, "missing.html", {"what": f"task {task_id}"}, status=404)
    return render(request, "task.html", {"page": page, "task": page.task})


def schedules_page(request: Request) -> Response:
    with state(request).pool.connection() as conn:
        schedules = reads.schedules(conn)
    return render(request, "schedules.html", {"schedules": schedules})


def tenants_page(request: Request) -> Response:
    with state(request).pool.connection() as conn:
        found = reads.tenants(conn)
    return render(request, "tenants.html", {"tenants": found, "top_keys": reads.TOP_KEYS})
