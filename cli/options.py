"""Options shared by the commands, each defined once with its WEBSURF_<OPTION> variable.

A command that works on the database is decorated with :func:`pass_runtime`: it gets a
:class:`Runtime` (logging set up, the database to use) instead of the shared options,
and opens its connection with :func:`open_db`.

What a command is given is checked here, before the command runs, by the parameter
types: text websurf can store (:class:`Text`: valid Unicode, no NUL, a length bound where
one is needed; bytes in argv that are not UTF-8 reach Python as lone surrogates), finite
numbers (:class:`FiniteFloatRange`: NaN passes every comparison, so a plain range lets
it through), durations (:class:`Duration`) and JSON objects (:class:`JsonObject`).
:func:`option` and :func:`argument` give every string parameter the :class:`Text`
type and every float one that refuses NaN and infinity, so a new option is checked without asking.
A refusal is a click usage error, shown as one line by :mod:`websurf.cli.main`.
"""

from __future__ import annotations

import functools
import math
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import click
import structlog

from websurf.cli.render import EXIT_DATABASE_UNAVAILABLE, EXIT_USAGE, CommandError, one_line_errors
from websurf.sql.target import (
    DIRECT_URL_ENV_VARS,
    DatabaseTarget,
    DatabaseUnavailable,
    configured_direct_url,
    configured_url,
)
from websurf.worker.core.payloads import PayloadError, parse_object
from websurf.worker.core.payloads import problem as json_problem
from websurf.worker.logs import LOG_FORMATS, LOG_LEVELS, configure_logging

if TYPE_CHECKING:  # psycopg is imported when a command connects: `websurf worker` never does
    import psycopg

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


UNIQUE_KEY_MAX_LENGTH = 255  # a longer key would not fit the unique index's entry


class Text(click.ParamType[str]):
    """A string websurf can store: valid Unicode, no NUL, at most ``max_length`` characters
    if given (other length limits are the domain's: a sheet name's, a task type's)."""

    name = "text"

    def __init__(self, max_length: int | None = None) -> None:
        self.max_length = max_length

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        reason = json_problem(value)
        if reason is None and self.max_length is not None and len(value) > self.max_length:
            reason = f"is {len(value)} characters, more than {self.max_length}"
        if reason:
            self.fail(reason, param, ctx)
        return value


TEXT = Text()


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that refuses NaN (every comparison with NaN is false) and infinity."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value} is not a number", param, ctx)
        if math.isinf(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        return number


def _finite(kind: Any) -> FiniteFloatRange:
    """The finite version of a float type: ``float``, ``click.FLOAT`` or a FloatRange."""
    if isinstance(kind, click.FloatRange):
        return FiniteFloatRange(kind.min, kind.max, kind.min_open, kind.max_open, kind.clamp)
    return FiniteFloatRange()


class JsonObject(click.ParamType[dict[str, Any]]):
    """A JSON object websurf can store (:func:`~websurf.worker.core.payloads.parse_object`)."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse_object(value)
        except PayloadError as exc:
            self.fail(str(exc), param, ctx)


JSON_OBJECT = JsonObject()


def _checked(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Text for string parameters, a finite range for floats."""
    kind = kwargs.get("type")
    floats = kind is float or isinstance(kind, click.types.FloatParamType)
    if floats and not isinstance(kind, FiniteFloatRange):
        kwargs["type"] = _finite(kind)
    elif kind is None and not kwargs.get("is_flag") and not kwargs.get("count"):
        default = kwargs.get("default")
        if default is None or isinstance(default, str | tuple):
            kwargs["type"] = TEXT
    return kwargs


def option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """click.option with a WEBSURF_<OPTION> environment variable and defaults shown,
    strings checked by :class:`Text` and floats refusing NaN and infinity."""
    long_name = next(d for d in decls if d.startswith("--")).split("/")[0]
    kwargs.setdefault("envvar", "WEBSURF_" + long_name[2:].upper().replace("-", "_"))
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*decls, **_checked(kwargs))


def argument(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """click.argument with strings checked by :class:`Text`."""
    return click.argument(*decls, **_checked(kwargs))


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

    def inherit(self, parent: Runtime | None) -> None:
        """Take the database URLs a parent command (a group) was given where none is set."""
        if parent is not None:
            self.database_url_option = self.database_url_option or parent.database_url_option
            self.direct_url_option = self.direct_url_option or parent.direct_url_option

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


SHARED_OPTIONS = ("database_url", "log_level", "log_format")  # what common_options adds


def common_options(func: F) -> F:
    """--database-url, --log-level and --log-format, for every command."""
    decorators = [
        click.option(
            "--database-url",
            envvar=["WEBSURF_DATABASE_URL", "DATABASE_URL"],
            show_envvar=True,
            default=None,
            type=TEXT,
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
    type=TEXT,
    help="Direct PostgreSQL URL (not through a transaction pooler) for what needs a"
    " session: LISTEN and migrations. Without one, --database-url is used for those too.",
)


def operators_option(help: str) -> Callable[[F], F]:
    """``--operators``: modules that register operators (each command says what for)."""
    return option("--operators", "operator_modules", multiple=True, default=(), help=help)


def allow_unknown_type_option(help: str) -> Callable[[F], F]:
    """``--allow-unknown-type``: accept a task type no operator here handles."""
    return option("--allow-unknown-type", is_flag=True, default=False, help=help)


def task_type_options(func: F) -> F:
    """``--operators`` and ``--allow-unknown-type``: for commands that enqueue a task type."""
    func = allow_unknown_type_option(
        "Accept a task type no operator here handles (for other workers)."
    )(func)
    return operators_option(
        "Module that registers operators, to know their task types (repeatable)."
    )(func)


def json_option(help: str) -> Callable[[F], F]:
    """``--json``: print JSON instead of text (the command gets ``as_json``)."""
    return option("--json", "as_json", is_flag=True, default=False, help=help)


def pass_runtime(func: Callable[Concatenate[Runtime, P], R]) -> Callable[P, R]:
    """The shared options (:func:`common_options`, and ``--direct-database-url`` when the
    command declares it below): the command gets them as its Runtime, its first argument."""

    @functools.wraps(func)
    def command(*args: P.args, **kwargs: P.kwargs) -> R:
        shared: dict[str, Any] = {name: kwargs.pop(name) for name in SHARED_OPTIONS}
        direct: str | None = kwargs.pop("direct_database_url", None)  # type: ignore[assignment]
        rt = runtime(click.get_current_context(), **shared, direct_database_url=direct)
        return func(rt, *args, **kwargs)

    return common_options(command)


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


def database_errors() -> AbstractContextManager[None]:
    """Turn DatabaseUnavailable into a one-line error with exit code 3."""
    return one_line_errors(DatabaseUnavailable, exit_code=EXIT_DATABASE_UNAVAILABLE)


@contextmanager
def open_db(
    rt: Runtime, url: str | None = None, *, retry_for_s: float | None = None
) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the command's database (or to ``url``), closed at the
    end; a database that cannot be reached is a one-line error with exit code 3."""
    from websurf.sql.database import connect

    retry: dict[str, Any] = {} if retry_for_s is None else {"retry_for_s": retry_for_s}
    with database_errors(), connect(url or rt.database().url, autocommit=True, **retry) as conn:
        yield conn


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
MAX_DURATION = timedelta(days=36_500)  # a century: longer is a typo, and overflows dates


def parse_duration(text: str, minimum: timedelta = timedelta(0)) -> timedelta:
    """'30s', '5m', '2h', '1.5d', '250ms' (a bare number is seconds), from ``minimum``
    up to MAX_DURATION."""
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 5m, 2h or 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION.total_seconds():
        raise click.BadParameter(f"{text!r} is longer than {MAX_DURATION.days}d")
    if seconds < minimum.total_seconds():
        raise click.BadParameter(f"{text!r} is shorter than {_duration_text(minimum)}")
    return timedelta(seconds=seconds)


def _duration_text(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


class Duration(click.ParamType[timedelta]):
    """A duration option (:func:`parse_duration`), as a timedelta."""

    name = "duration"

    def __init__(self, minimum: timedelta = timedelta(0)) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(TEXT.convert(value, param, ctx), self.minimum)
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


DURATION = Duration()


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
