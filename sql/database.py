"""Where the database is, and how to reach it without leaking its password.

The URL comes from ``--database-url``, else ``WEBSURF_DATABASE_URL``, else
``DATABASE_URL``; with none of them the caller falls back to the embedded server
(``websurf.sql.embedded``). Connecting retries with exponential backoff for a bounded
time, then raises :class:`DatabaseUnavailable` whose message names host, port and
database but never the password. A refused TLS handshake is not retried.

Hosted PostgreSQL: two paths
----------------------------
Hosted servers usually sit behind a transaction-mode pooler (PgBouncer, Supavisor,
Neon's pooler, RDS Proxy): each transaction may run on a different server connection.
Through one, anything that outlives a transaction breaks: psycopg's server-side
prepared statements (``_pg3_0 already exists`` / ``does not exist``), ``LISTEN``
(hears nothing), session advisory locks (taken on one server connection, released on
another, or never), ``SET`` and startup ``options`` (PgBouncer 1.18 refuses the
connection: ``unsupported startup parameter: options``). So:

* the main URL (``--database-url``) carries everything that works per transaction:
  claims, outcomes, heartbeats, the reaper and the pruner (transaction-scoped locks),
  commands. It is treated as pooled when a direct URL is configured, or when
  :func:`pooler_between` sees a pooler; then :func:`connect_kwargs` turns prepared
  statements off and settings go per transaction (:func:`apply_settings` ``local``).
* the direct URL (``--direct-database-url``, ``WEBSURF_DIRECT_DATABASE_URL`` or
  ``DIRECT_URL``) carries what needs a session: LISTEN, migrations (a session
  advisory lock, ``CREATE INDEX CONCURRENTLY``). :func:`session_url` picks it, or the
  main URL when none is configured (the behaviour without a pooler).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
import structlog
from psycopg import conninfo
from psycopg.types.json import set_json_loads
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from websurf.sql import QUERIES
from websurf.sql.json_text import UnreadableJson as UnreadableJson  # re-exported
from websurf.sql.json_text import load_json
from websurf.sql.target import DIRECT_URL_ENV_VARS as DIRECT_URL_ENV_VARS
from websurf.sql.target import (  # re-exported: where to connect
    URL_ENV_VARS as URL_ENV_VARS,
)
from websurf.sql.target import DatabaseTarget as DatabaseTarget
from websurf.sql.target import DatabaseUnavailable as DatabaseUnavailable
from websurf.sql.target import configured_direct_url as configured_direct_url
from websurf.sql.target import configured_url as configured_url

log = structlog.get_logger("websurf.database")


set_json_loads(load_json)  # for every connection the process opens after this import

CONNECT_TIMEOUT_S = 2
CONNECT_RETRY_FOR_S = 10.0


class InvalidDatabaseUrl(DatabaseUnavailable):
    """The connection string cannot be parsed (the message never quotes it)."""


class TlsRefused(DatabaseUnavailable):
    """The TLS handshake failed for a reason retrying cannot fix (certificate, CA, mode)."""


# libpq's words for a TLS failure that is a configuration matter, not a network one.
_TLS_REFUSALS = (
    "certificate verify failed",
    "does not match host name",
    "server does not support SSL",
    "root certificate file",
    "SSL error: tlsv1 alert",
)


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
    pooled: bool = True,
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Connect, retrying transient failures for up to ``retry_for_s`` seconds.

    ``pooled`` (the default: a command runs a handful of statements, where prepared
    statements never pay off) makes the connection safe through a transaction pooler.
    """
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

    def transient(exc: BaseException) -> bool:
        return isinstance(exc, psycopg.OperationalError) and _tls_refusal(exc) is None

    retrying = Retrying(
        retry=retry_if_exception(transient),
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
                    **(connect_kwargs(pooled=pooled) | kwargs),
                )
    except psycopg.OperationalError as exc:
        refusal = _tls_refusal(exc)
        if refusal is not None:
            raise TlsRefused(
                f"TLS with PostgreSQL at {describe(url)} failed: {scrub(refusal, url)}"
                " (check sslmode and sslrootcert in the database URL)"
            ) from None
        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc), url)
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {describe(url)} after {retry_for_s:g}s: {reason}"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _tls_refusal(exc: BaseException) -> str | None:
    """libpq's line saying why TLS failed, when retrying cannot help; else None."""
    for line in str(exc).strip().splitlines():
        if any(words in line for words in _TLS_REFUSALS):
            # "connection to server at "h", port p failed: <why>": keep the why
            return line.rsplit(" failed: ", 1)[-1].strip()
    return None


# -- which path each kind of connection takes ------------------------------------------


class HasUrls(Protocol):
    """Anything with the two URLs (the worker's config, a command's options)."""

    @property
    def database_url(self) -> str: ...

    @property
    def direct_database_url(self) -> str | None: ...


def session_url(config: HasUrls) -> str:
    """The URL for LISTEN, migrations and session locks: the direct one, else the main one."""
    return config.direct_database_url or config.database_url


def connect_kwargs(*, pooled: bool) -> dict[str, Any]:
    """psycopg connect arguments for a connection on the main URL.

    ``pooled``: no server-side prepared statements (psycopg prepares a statement after
    it ran ``prepare_threshold`` times; through a transaction pooler the next run lands
    on another server connection). Settings never go as startup ``options`` on either
    path (PgBouncer refuses them): use :func:`apply_settings`.
    """
    return {"prepare_threshold": None} if pooled else {}


def pooler_between(conn: psycopg.Connection[Any]) -> bool:
    """Whether a pooler, not PostgreSQL itself, answered this connection's startup.

    PgBouncer answers the startup with a BackendKeyData of its own (cancel requests go to
    it, and it routes them): the process id the client got is not the server's
    ``pg_backend_pid()``. Checked against PgBouncer 1.18; port mappings and NAT leave the
    two equal, so they are not mistaken for a pooler. Poolers that pass the server's key
    through (some session-mode ones) are not detected: configure a direct URL for them.
    """
    row = conn.execute(QUERIES["backend_pid"]).fetchone()
    return row is not None and row[0] != conn.info.backend_pid


def apply_settings(
    conn: psycopg.Connection[Any], settings: Mapping[str, str], *, local: bool
) -> None:
    """``set_config`` each setting, for the session or (``local``) until the transaction
    ends: the only kind a transaction pooler keeps where it was set."""
    if settings:
        conn.execute(
            QUERIES["apply_settings"],
            {"names": list(settings), "values": list(settings.values()), "local": local},
        )


def set_up_session(
    conn: psycopg.Connection[Any], settings: Mapping[str, str], *, pooled: bool
) -> None:
    """Ready a long-lived main-URL connection that needs ``settings`` (the claim connection).

    Direct: the settings go to the session once (instead of startup ``options``). Pooled:
    prepared statements off; the settings go with each transaction (:func:`with_settings`).
    """
    if pooled:
        conn.prepare_threshold = None
    else:
        apply_settings(conn, settings, local=False)


@contextmanager
def with_settings(
    conn: psycopg.Connection[Any], settings: Mapping[str, str], *, pooled: bool
) -> Iterator[None]:
    """Run the block with ``settings`` in force on a connection readied by set_up_session.

    Pooled: the block runs in a transaction that first sets them LOCAL, pipelined so the
    ``set_config`` costs no round trip of its own. Direct: the session has them already.

    A connection lost mid-pipeline always surfaces as ``OperationalError``, which the
    callers' retries expect: when a pooler restarts under it, psycopg 3.3's pipeline exit
    can raise an internal error instead (``IndexError: pop from an empty deque``), and that
    ended the worker process.
    """
    if not pooled:
        yield
        return
    # pipeline mode needs libpq 14+ (the binary wheel has it; a system libpq may not)
    batched = conn.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()
    try:
        with batched, conn.transaction():
            apply_settings(conn, settings, local=True)
            yield
    except psycopg.Error:
        raise
    except Exception as exc:
        if not (conn.broken or conn.closed):
            raise
        raise psycopg.OperationalError(
            f"the connection was lost in a pipeline ({type(exc).__name__}: {exc})"
        ) from exc


@dataclass(frozen=True)
class Paths:
    """Which URL each kind of connection takes, for the boot log and ``websurf status``."""

    url: str
    direct_url: str | None
    pooled: bool  # the main URL goes through a pooler (a direct URL is configured, or seen)
    detected: bool = False  # a pooler was seen on the main URL

    @property
    def session_url(self) -> str:
        return self.direct_url or self.url

    def routes(self) -> dict[str, str]:
        """kind of connection -> where it goes (no user, no password)."""
        main = describe(self.url)
        tasks = f"{main} (pooled: prepared statements off)" if self.pooled else f"{main} (direct)"
        if self.direct_url:
            session = f"{describe(self.direct_url)} (direct)"
        elif self.pooled:
            session = f"{main} (through the pooler: LISTEN hears nothing, set a direct URL)"
        else:
            session = f"{main} (direct)"
        return {"tasks": tasks, "listen_and_migrations": session}


def resolve_paths(conn: psycopg.Connection[Any], url: str, direct_url: str | None) -> Paths:
    """The paths, seen from a connection on the main URL (one round trip).

    Logs ``pooler_detected`` once when a pooler answers the main URL.
    """
    detected = pooler_between(conn)
    if detected:
        log.info(
            "pooler_detected",
            target=describe(url),
            message="a connection pooler answers the database URL (the process id it gave"
            " is not the server's): prepared statements off, settings per transaction"
            + ("" if direct_url else "; LISTEN and migrations need a direct URL"),
        )
    return Paths(url, direct_url, pooled=detected or direct_url is not None, detected=detected)
