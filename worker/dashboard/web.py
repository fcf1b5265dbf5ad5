"""What every dashboard request shares: the process's configuration and state (pool,
listener, templates), and rendering a page or only its live part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from psycopg_pool import ConnectionPool
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from websurf.worker.dashboard import actions
from websurf.worker.dashboard.history import ClosedBuckets
from websurf.worker.dashboard.live import Broadcaster
from websurf.worker.dashboard.security import CSRF_FIELD, Access, csrf_token, keep_csrf, who

POOL_MAX_SIZE = 4  # pages read in a few short queries; more connections buy nothing
NAVIGATION = (
    ("/", "Overview"),
    ("/failures", "Failures"),
    ("/tasks", "Tasks"),
    ("/schedules", "Schedules"),
    ("/tenants", "Tenants & limits"),
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
        "tenants.html",
    }
)


@dataclass(frozen=True)
class DashboardConfig:
    """How one dashboard process runs."""

    database_url: str
    listen_url: str | None = None  # a session for LISTEN (the direct URL); None: database_url
    access: Access = field(default_factory=Access)
    read_only: bool = False


class DashboardState:
    """What the routes share: the pool, the broadcaster, the templates."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.pool = ConnectionPool(
            config.database_url,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            kwargs={"autocommit": True},
            # A connection is checked as it is handed out: after a database restart the
            # first page gets a new one instead of an error.
            check=ConnectionPool.check_connection,
            open=False,
            name="dashboard",
        )
        self.closed_buckets = ClosedBuckets()
        self.broadcaster = Broadcaster(config.listen_url or config.database_url)
        environment = Environment(
            loader=PackageLoader("websurf.worker.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates = Jinja2Templates(env=environment)


def state(request: Request) -> DashboardState:
    """The dashboard process's shared state, for a request."""
    found: DashboardState = request.app.state.dashboard
    return found


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A page, or only its live part when htmx asks for it."""
    shared = state(request)
    fragment = request.headers.get("hx-request") == "true" and name in LIVE_PAGES
    template = name.replace(".html", "_live.html") if fragment else name
    response = shared.templates.TemplateResponse(
        request,
        template,
        {
            "navigation": NAVIGATION,
            "read_only": shared.config.read_only,
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token(request),
            "actions": actions.ACTIONS,
            "who": who(request),
            **context,
        },
        status_code=status,
    )
    return keep_csrf(request, response)
