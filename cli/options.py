"""Options shared by every command, each with its WEBSURF_<OPTION> environment variable."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import Any, TypeVar

import click
import structlog

from websurf.sql.target import (
    DIRECT_URL_ENV_VARS,
    DatabaseTarget,
    DatabaseUnavailable,
    configured_direct_url,
    configured_url,
)
from websurf.worker.logs import LOG_FORMATS, LOG_LEVELS, configure_logging

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATABASE_UNAVAILABLE = 3


def option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """click.option with a WEBSURF_<OPTION> environment variable and defaults shown."""
    long_name = next(d for d in decls if d.startswith("--")).split("/")[0]
    kwargs.setdefault("envvar", "WEBSURF_" + long_name[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*decls, **kwargs)


class CommandError(click.ClickException):
    """A one-line error shown as ``error: …`` with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@dataclass
class Runtime:
    """What a command needs from the shared options: logging set up and a database."""

    database_url_option: str | None
    log_level: str
    log_format: str
    direct_url_option: str | None = None
    _stack: ExitStack = field(default_factory=ExitStack)
    _target: DatabaseTarget | None = None

    def database(self) -> DatabaseTarget:
        """The configured database, or the embedded server started for this command."""
        if self._target is None:
            self._target = configured_url(self.database_url_option) or self._stack.enter_context(
                _embedded_target()
            )
        return self._target

    def direct_database(self) -> DatabaseTarget | None:
        """The configured direct URL (for what needs a session), or None."""
        direct = configured_direct_url(self.direct_url_option)
        if direct is not None and configured_url(self.database_url_option) is None:
            raise CommandError(
                f"a direct database URL is set ({direct.source}) but no --database-url:"
                " give the pooled URL too, or neither (the embedded PostgreSQL)",
                EXIT_USAGE,
            )
        return direct

    def close(self) -> None:
        self._stack.close()


@contextmanager
def _embedded_target() -> Iterator[DatabaseTarget]:
    from websurf.sql import embedded  # optional extra: imported only when used

    log = structlog.get_logger("websurf.cli")
    try:
        server = embedded.EmbeddedServer(embedded.default_data_dir())
        dsn = server.start()
    except embedded.EmbeddedUnavailable as exc:
        raise CommandError(str(exc), EXIT_DATABASE_UNAVAILABLE) from None
    try:
        log.info(
            "embedded_database",
            message="no database configured: using the embedded PostgreSQL"
            + (" (started)" if server.started_by_us else " (already running)"),
            data_dir=str(server.data_dir),
            hint="set --database-url or WEBSURF_DATABASE_URL to use your own server",
        )
        yield DatabaseTarget(dsn, "embedded")
    finally:
        server.stop()


def common_options(func: F) -> F:
    """--database-url, --log-level and --log-format, for every command."""
    decorators = [
        click.option(
            "--database-url",
            envvar=["WEBSURF_DATABASE_URL", "DATABASE_URL"],
            show_envvar=True,
            default=None,
            help="PostgreSQL connection URL. Without one, the embedded PostgreSQL is used.",
        ),
        option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info"),
        option(
            "--log-format",
            type=click.Choice(LOG_FORMATS),
            default="auto",
            help="auto: JSON lines unless stderr is a terminal.",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


direct_url_option = click.option(
    "--direct-database-url",
    envvar=list(DIRECT_URL_ENV_VARS),
    show_envvar=True,
    default=None,
    help="Direct PostgreSQL URL (not through a transaction pooler) for what needs a"
    " session: LISTEN and migrations. Without one, --database-url is used for those too.",
)


def task_type_options(func: F) -> F:
    """``--operators`` and ``--allow-unknown-type``: for commands that enqueue a task type."""
    func = option(
        "--allow-unknown-type",
        is_flag=True,
        default=False,
        help="Accept a task type no operator here handles (for other workers).",
    )(func)
    return option(
        "--operators",
        "operator_modules",
        multiple=True,
        default=(),
        help="Module that registers operators, to know their task types (repeatable).",
    )(func)


def runtime(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    direct_database_url: str | None = None,
) -> Runtime:
    """Set up logging and return the command's Runtime, closed when the command ends."""
    configure_logging(log_level.lower(), log_format)
    rt = Runtime(database_url, log_level.lower(), log_format, direct_database_url)
    ctx.call_on_close(rt.close)
    return rt


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn DatabaseUnavailable into a one-line error with exit code 3."""
    try:
        yield
    except DatabaseUnavailable as exc:
        raise CommandError(str(exc), EXIT_DATABASE_UNAVAILABLE) from None


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
MAX_DURATION = timedelta(days=36_500)  # a century: longer is a typo, and overflows dates


def parse_duration(text: str) -> timedelta:
    """'30s', '5m', '2h', '1.5d', '250ms' (a bare number is seconds), up to MAX_DURATION."""
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 5m, 2h or 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION.total_seconds():
        raise click.BadParameter(f"{text!r} is longer than {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the command like Ctrl-C, so its clean-up runs (long-running commands)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def echo(text: str = "") -> None:
    click.echo(text, file=sys.stdout)
