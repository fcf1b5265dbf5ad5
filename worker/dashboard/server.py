"""Serving the dashboard: who may reach it, and uvicorn.

The rule the command enforces: a dashboard without credentials (no token, no user and
password) listens on a loopback address only, so only this host (or the reverse proxy
on it that logs people in) reaches it.
"""

from __future__ import annotations

import ipaddress
import signal
from collections.abc import Mapping
from types import FrameType

from websurf.worker.dashboard.security import Access

GRACEFUL_SHUTDOWN_S = 3.0  # open event streams would otherwise hold a shutdown forever
TOKEN_ENV = "WEBSURF_DASHBOARD_TOKEN"
USER_ENV = "WEBSURF_DASHBOARD_USER"
PASSWORD_ENV = "WEBSURF_DASHBOARD_PASSWORD"
USER_HEADER_ENV = "WEBSURF_DASHBOARD_USER_HEADER"


class BindRefused(ValueError):
    """The address may not be used with these credentials; the message says why."""


def access_from(environment: Mapping[str, str]) -> Access:
    """The credentials the environment configures (empty values count as unset)."""

    def value(name: str) -> str | None:
        return environment.get(name) or None

    user, password = value(USER_ENV), value(PASSWORD_ENV)
    if bool(user) != bool(password):
        raise BindRefused(f"set both {USER_ENV} and {PASSWORD_ENV}, or neither")
    return Access(
        token=value(TOKEN_ENV), user=user, password=password, user_header=value(USER_HEADER_ENV)
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, access: Access) -> None:
    """BindRefused when ``host`` is not loopback and no credentials are required."""
    if not access.required and not is_loopback(host):
        raise BindRefused(
            f"refusing to serve the dashboard on {host} without authentication:"
            f" set {TOKEN_ENV} (or {USER_ENV} and {PASSWORD_ENV}), or bind 127.0.0.1"
        )


def serve(app: object, host: str, port: int) -> None:
    """Run uvicorn until SIGTERM or SIGINT, then shut down gracefully and return.

    uvicorn handles the signal, and once shut down sends it again to the handler that
    was there before it; that handler is a no-op here, so the command exits 0 after a
    clean stop instead of dying of the signal.
    """
    import uvicorn

    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.run(
            app,  # type: ignore[arg-type]
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
            server_header=False,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The signal uvicorn passes on after its graceful shutdown: nothing left to do."""
