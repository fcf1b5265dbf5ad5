"""Who may see the dashboard, who did an action, and the CSRF check on every action.

Authentication (:class:`Access`), from the environment of ``websurf dashboard``:

* a token (WEBSURF_DASHBOARD_TOKEN): ``Authorization: Bearer <token>``, or basic
  authentication with any user name (that name is logged as who acted) and the token as
  the password, so a browser's own login prompt works;
* a user and password (WEBSURF_DASHBOARD_USER, WEBSURF_DASHBOARD_PASSWORD): basic auth;
* neither: anyone who reaches the port (the command binds a loopback address then).

Behind a reverse proxy that logs people in (the web app's login), the proxy names the
person in a header (WEBSURF_DASHBOARD_USER_HEADER, say X-Forwarded-User); that name is
who acted. The header is believed only because the dashboard then listens on loopback,
reachable by the proxy alone.

CSRF: a random token in a SameSite=Strict, HttpOnly cookie, repeated in every action's
form (the double-submit pattern); an action whose form token is missing or differs, or
whose Origin header names another host, is refused. Secrets are compared in constant time
and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    SimpleUser,
)
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response

CSRF_COOKIE = "websurf_csrf"
CSRF_FIELD = "csrf_token"
REALM = "websurf dashboard"
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Access:
    """The credentials a request must bring (none configured: open, loopback only)."""

    token: str | None = None
    user: str | None = None
    password: str | None = None
    user_header: str | None = None

    @property
    def required(self) -> bool:
        return bool(self.token or (self.user and self.password))


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class DashboardAuth(AuthenticationBackend):
    """Starlette authentication backend for :class:`Access`."""

    def __init__(self, access: Access) -> None:
        self.access = access

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser]:
        name = self._proxied_user(conn)
        if not self.access.required:
            return AuthCredentials(["view"]), SimpleUser(name or ANONYMOUS)
        scheme, _, value = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.access.token and _same(value, self.access.token):
            return AuthCredentials(["view"]), SimpleUser(name or "token")
        if scheme.lower() == "basic":
            user, password = _basic(value)
            if self.access.token and _same(password, self.access.token):
                return AuthCredentials(["view"]), SimpleUser(name or user or "token")
            if (
                self.access.user
                and self.access.password
                and _same(user, self.access.user)
                and _same(password, self.access.password)
            ):
                return AuthCredentials(["view"]), SimpleUser(name or user)
        raise AuthenticationError("authentication required")

    def _proxied_user(self, conn: HTTPConnection) -> str | None:
        if not self.access.user_header:
            return None
        return conn.headers.get(self.access.user_header) or None


def _basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def refuse(conn: HTTPConnection, exc: Exception) -> Response:
    """The answer to an unauthenticated request: 401 asking for basic auth."""
    return PlainTextResponse(
        "authentication required\n",
        status_code=401,
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )


def who(request: Request) -> str:
    """The person behind a request, as actions log it."""
    return str(request.user.display_name) if request.user.is_authenticated else ANONYMOUS


def csrf_token(request: Request) -> str:
    """This browser's CSRF token: its cookie's, or a new one :func:`keep_csrf` will set."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return str(token)


def keep_csrf(request: Request, response: Response) -> Response:
    """Set the CSRF cookie on a page that handed out a new token."""
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", path="/")
    return response


def csrf_problem(request: Request, form: Any) -> str | None:
    """Why an action's request must be refused as a possible forgery, or None."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        return "the request came from another site"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = form.get(CSRF_FIELD, "")
    if not cookie or not isinstance(given, str) or not _same(given, cookie):
        return "the form's CSRF token is missing or stale: reload the page and try again"
    return None
