"""The dashboard's web application: pages, the live event stream and the action endpoint.

Design: a Starlette app (built by :func:`create_app`) over a small psycopg pool of
autocommit connections. A page handler (a plain function, run in Starlette's thread
pool) reads everything it shows through :mod:`reads` inside ``with pool.connection()``,
gives the connection back, and only then renders: no transaction is open while a
template renders. Pages with live parts wrap them in an element that htmx re-fetches on
the ``changed`` server-sent event (:mod:`live`); the fragment is the same template part,
asked for with the ``HX-Request`` header.

Every action is a POST to /actions/<name> with a CSRF token (:mod:`security`); the
first POST answers with a confirmation page, and only its "yes" (confirmed=yes) does the
work, which is logged (``dashboard_action``) with who did it. ``read_only`` refuses all
actions and hides their buttons.

Adding a page: a route in ROUTES, a template, its reads in :mod:`reads` with a named query
in sql/queries/dashboard.sql, and an entry in NAVIGATION (the tenants and limits page of
the fairness and limits work is meant to be added this way).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from websurf.worker.core import admin
from websurf.worker.core.model import Status
from websurf.worker.dashboard import actions, charts, reads
from websurf.worker.dashboard.live import Broadcaster, event_stream
from websurf.worker.dashboard.security import (
    CSRF_FIELD,
    Access,
    DashboardAuth,
    csrf_problem,
    csrf_token,
    keep_csrf,
    refuse,
    who,
)

FINGERPRINT = re.compile(r"[0-9a-f]{16}")  # a failure group's name (dashboard.sql)
POOL_MAX_SIZE = 4  # pages read in a few short queries; more connections buy nothing
NAVIGATION = (
    ("/", "Overview"),
    ("/failures", "Failures"),
    ("/tasks", "Tasks"),
    ("/schedules", "Schedules"),
)
# Pages whose live part (templates/<page>_live.html) htmx fetches again on `changed`.
LIVE_PAGES = frozenset(
    {
        "overview.html",
        "failures.html",
        "failure_group.html",
        "tasks.html",
        "task.html",
        "schedules.html",
    }
)

log = structlog.get_logger("websurf.dashboard")


@dataclass(frozen=True)
class DashboardConfig:
    """How one dashboard process runs."""

    database_url: str
    listen_url: str | None = None  # a session for LISTEN (the direct URL); None: database_url
    access: Access = field(default_factory=Access)
    read_only: bool = False


class _State:
    """What the routes share: the pool, the broadcaster, the templates."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.pool = ConnectionPool(
            config.database_url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            kwargs={"autocommit": True},
            open=False,
            name="dashboard",
        )
        self.closed_buckets = reads.ClosedBuckets()
        self.broadcaster = Broadcaster(config.listen_url or config.database_url)
        environment = Environment(
            loader=PackageLoader("websurf.worker.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates = Jinja2Templates(env=environment)


def _state(request: Request) -> _State:
    state: _State = request.app.state.dashboard
    return state


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page, or only its live part when htmx asks for it."""
    state = _state(request)
    fragment = request.headers.get("hx-request") == "true" and name in LIVE_PAGES
    template = name.replace(".html", "_live.html") if fragment else name
    response = state.templates.TemplateResponse(
        request,
        template,
        {
            "navigation": NAVIGATION,
            "read_only": state.config.read_only,
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token(request),
            "actions": actions.ACTIONS,
            "who": who(request),
            **context,
        },
        status_code=status,
    )
    return keep_csrf(request, response)


def overview_page(request: Request) -> Response:
    with _state(request).pool.connection() as conn:
        found = reads.overview(conn, _state(request).closed_buckets)
    return _render(
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
    with _state(request).pool.connection() as conn:
        groups = reads.failure_groups(conn)
    return _render(request, "failures.html", {"groups": groups, "window_s": reads.FAILURE_WINDOW_S})


def failure_group_page(request: Request) -> Response:
    task_type = request.path_params["task_type"]
    fingerprint = request.path_params["fingerprint"]
    if not FINGERPRINT.fullmatch(fingerprint):
        return _render(request, "missing.html", {"what": f"failure group {fingerprint}"}, 404)
    with _state(request).pool.connection() as conn:
        group, tasks = reads.failure_group(conn, task_type, fingerprint)
    # A group whose tasks were all retried or cancelled is shown empty, not as missing:
    # the page a person just acted on says so.
    return _render(
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
        error=text("error"),
    )
    return wanted, problem


def tasks_page(request: Request) -> Response:
    wanted, problem = _task_filter(request)
    with _state(request).pool.connection() as conn:
        tasks = reads.find_tasks(conn, wanted)
    return _render(
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
        return _render(request, "missing.html", {"what": f"task {raw}"}, status=404)
    try:
        with _state(request).pool.connection() as conn:
            page = reads.task_page(conn, task_id)
    except admin.TaskNotFound:
        return _render(request, "missing.html", {"what": f"task {task_id}"}, status=404)
    return _render(request, "task.html", {"page": page, "task": page.task})


def schedules_page(request: Request) -> Response:
    with _state(request).pool.connection() as conn:
        schedules = reads.schedules(conn)
    return _render(request, "schedules.html", {"schedules": schedules})


async def action_endpoint(request: Request) -> Response:
    """Confirm, then do, one action; refused when read-only or without a valid CSRF token."""
    state = _state(request)
    name = request.path_params["name"]
    action = actions.ACTIONS.get(name)
    if action is None:
        return _render(request, "missing.html", {"what": f"action {name}"}, status=404)
    if state.config.read_only:
        return _render(
            request, "done.html", {"ok": False, "message": "this dashboard is read-only"}, 403
        )
    form = await request.form()
    problem = csrf_problem(request, form)
    if problem:
        log.warning("dashboard_action_refused", action=name, who=who(request), reason=problem)
        return _render(request, "done.html", {"ok": False, "message": problem}, 403)
    target = str(form.get("target", "")).strip()
    back = _local_path(str(form.get("back", "/")))
    if form.get("confirmed") != "yes":
        return _render(
            request,
            "confirm.html",
            {"action": action, "name": name, "target": target, "back": back},
        )
    return await _perform(request, name, target, back)


async def _perform(request: Request, name: str, target: str, back: str) -> Response:
    from starlette.concurrency import run_in_threadpool

    def work() -> str:
        with _state(request).pool.connection() as conn:
            return actions.perform(conn, name, target)

    person = who(request)
    try:
        message = await run_in_threadpool(work)
    except actions.ActionError as exc:
        log.warning(
            "dashboard_action_failed", action=name, target=target, who=person, error=str(exc)
        )
        return _render(request, "done.html", {"ok": False, "message": str(exc), "back": back}, 409)
    log.info("dashboard_action", action=name, target=target, who=person, result=message)
    return _render(request, "done.html", {"ok": True, "message": message, "back": back})


def _local_path(path: str) -> str:
    """Where to go back after an action: a path on this dashboard, never another site."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


async def events_endpoint(request: Request) -> Response:
    return StreamingResponse(
        event_stream(_state(request).broadcaster),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def create_app(config: DashboardConfig) -> Starlette:
    """The dashboard as an ASGI app (uvicorn serves it; tests use Starlette's TestClient)."""
    import asyncio

    state = _State(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.pool.open(wait=True)
        listener = asyncio.create_task(state.broadcaster.run())
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            state.pool.close()

    app = Starlette(
        routes=[
            Route("/", overview_page),
            Route("/failures", failures_page),
            Route("/failures/{task_type}/{fingerprint}", failure_group_page),
            Route("/tasks", tasks_page),
            Route("/tasks/{task_id}", task_page),
            Route("/schedules", schedules_page),
            Route("/actions/{name}", action_endpoint, methods=["POST"]),
            Route("/events", events_endpoint),
            Mount(
                "/static",
                # Our own package's files; a development install links them in.
                StaticFiles(packages=[("websurf.worker.dashboard", "static")], follow_symlink=True),
                name="static",
            ),
        ],
        middleware=[
            Middleware(
                AuthenticationMiddleware, backend=DashboardAuth(config.access), on_error=refuse
            )
        ],
        lifespan=lifespan,
    )
    app.state.dashboard = state
    return app
