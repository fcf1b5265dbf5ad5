"""Where the database is, and how to reach it without leaking its password.

The URL comes from ``--database-url``, else ``WEBSURF_DATABASE_URL``, else
``DATABASE_URL``; with none of them the caller falls back to the embedded server
(``websurf.sql.embedded``). Connecting retries with exponential backoff for a bounded
time, then raises :class:`DatabaseUnavailable` whose message names host, port and
database but never the password.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from psycopg import conninfo
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from websurf.sql.target import (  # re-exported: where to connect
    URL_ENV_VARS as URL_ENV_VARS,
)
from websurf.sql.target import DatabaseTarget as DatabaseTarget
from websurf.sql.target import DatabaseUnavailable as DatabaseUnavailable
from websurf.sql.target import configured_url as configured_url

log = structlog.get_logger("websurf.database")

CONNECT_TIMEOUT_S = 2
CONNECT_RETRY_FOR_S = 10.0


class InvalidDatabaseUrl(DatabaseUnavailable):
    """The connection string cannot be parsed (the message never quotes it)."""


def redact(url: str) -> str:
    """The connection string with any password removed, for logs and error messages."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    params.pop("password", None)
    return conninfo.make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def describe(url: str) -> str:
    """host:port/dbname of a connection string (no user, no password)."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or params.get("user") or ""
    return f"{host}:{port}/{dbname}"


def scrub(message: str, url: str) -> str:
    """Remove the password of ``url`` from an error message, wherever it appears."""
    try:
        password = conninfo.conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return message
    if password:
        message = message.replace(str(password), "****")
    return message


def connect(
    url: str,
    *,
    retry_for_s: float = CONNECT_RETRY_FOR_S,
    autocommit: bool = False,
    application_name: str = "websurf",
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Connect, retrying transient failures for up to ``retry_for_s`` seconds."""
    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        # libpq's parse errors quote fragments of the string, which may be the password.
        raise InvalidDatabaseUrl(
            "the database URL is not a valid PostgreSQL connection string"
            " (expected postgresql://user:password@host:port/dbname or key=value pairs)"
        ) from None

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "database_connect_retry",
            target=describe(url),
            attempt=state.attempt_number,
            error=scrub(str(exc).strip(), url),
        )

    retrying = Retrying(
        retry=retry_if_exception_type(psycopg.OperationalError),
        stop=stop_after_delay(retry_for_s),
        # Full jitter; not wait_exponential_jitter, whose `initial` is deprecated in tenacity 9.
        wait=wait_random_exponential(multiplier=0.1, max=2.0),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                return psycopg.connect(
                    url,
                    autocommit=autocommit,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    application_name=application_name,
                    **kwargs,
                )
    except psycopg.OperationalError as exc:
        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc), url)
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {describe(url)} after {retry_for_s:g}s: {reason}"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover
