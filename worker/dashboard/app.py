"""The dashboard's web application: its routes, the action endpoint and the event stream.

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

Adding a page: a handler in :mod:`pages` and its route in :func:`create_app`, a template,
its reads in :mod:`reads` with a named query in sql/queries/dashboard.sql, and an entry in
``web.NAVIGATION`` (as the tenants and limits page was).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import structlog
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from websurf.sql.database import describe, scrub
from websurf.worker.dashboard import actions, pages
from websurf.worker.dashboard.live import event_stream
from websurf.worker.dashboard.security import DashboardAuth, csrf_problem, refuse, who
from websurf.worker.dashboard.web import DashboardConfig, DashboardState, render, state

__all__ = ["DashboardConfig", "create_app"]

log = structlog.get_logger("websurf.dashboard")


async def action_endpoint(request: Request) -> Response:
    """Confirm, then do, one action; refused when read-only or without a valid CSRF token."""
    shared = state(request)
    name = request.path_params["name"]
    action = actions.ACTIONS.get(name)
    if action is None:
        return render(request, "missing.html", {"what": f"action {name}"}, status=404)
    if shared.config.read_only:
        return render(
            request, "done.html", {"ok": False, "message": "this dashboard is read-only"}, 403
        )
    form = await request.form()
    problem = csrf_problem(request, form)
    if problem:
        log.warning("dashboard_action_refused", action=name, who=who(request), reason=problem)
        return render(request, "done.html", {"ok": False, "message": problem}, 403)
    target = str(form.get("target", "")).strip()
    back = _local_path(str(form.get("back", "/")))
    if form.get("confirmed") != "yes":
        return render(
            request,
            "confirm.html",
            {"action": action, "name": name, "target": target, "back": back},
        )
    return await _perform(request, name, target, back)


async def _perform(request: Request, name: str, target: str, back: str) -> Response:
    def work() -> str:
        with state(request).pool.connection() as conn:
            return actions.perform(conn, name, target)

    person = who(request)
    try:
        message = await run_in_threadpool(work)
    except actions.ActionError as exc:
        log.warning(
            "dashboard_action_failed", action=name, target=target, who=person, error=str(exc)
        )
        return render(request, "done.html", {"ok": False, "message": str(exc), "back": back}, 409)
    log.info("dashboard_action", action=name, target=target, who=person, result=message)
    return render(request, "done.html", {"ok": True, "message": message, "back": back})


def _local_path(path: str) -> str:
    """Where to go back after an action: a path on this dashboard, never another site."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


async def events_endpoint(request: Request) -> Response:
    return StreamingResponse(
        event_stream(state(request).broadcaster),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def database_unavailable(request: Request, exc: Exception) -> Response:
    """A page that could not read the database: 503 with the reason, not a stack trace."""
    url = state(request).config.database_url
    reason = scrub(
        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url
    )
    log.warning("dashboard_database_unavailable", path=request.url.path, error=reason)
    message = f"the database at {describe(url)} is not answering: {reason}"
    return render(request, "done.html", {"ok": False, "message": message}, 503)


def create_app(config: DashboardConfig) -> Starlette:
    """The dashboard as an ASGI app (uvicorn serves it; tests use Starlette's TestClient)."""
    shared = DashboardState(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        shared.pool.open(wait=True)
        listener = asyncio.create_task(shared.broadcaster.run())
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            shared.pool.close()

    app = Starlette(
        routes=[
            Route("/", pages.overview_page),
            Route("/failures", pages.failures_page),
            Route("/failures/{task_type}/{fingerprint}", pages.failure_group_page),
            Route("/tasks", pages.tasks_page),
            Route("/tasks/{task_id}", pages.task_page),
            Route("/schedules", pages.schedules_page),
            Route("/tenants", pages.tenants_page),
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
        exception_handlers={
            psycopg.OperationalError: database_unavailable,
            PoolTimeout: database_unavailable,
        },
        lifespan=lifespan,
    )
    app.state.dashboard = shared
    return app
