"""How every command prints: one-line errors and their exit codes, JSON, times and ages.

What a command shows (a task table, the status report, a sheet) is in this package's
modules, one per kind of thing; the command modules only call them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime, timedelta
from typing import Any

import click

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATABASE_UNAVAILABLE = 3


class CommandError(click.ClickException):
    """A one-line error shown as ``error: …`` with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (a database error's detail and hint follow it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def one_line_errors(
    *kinds: type[Exception],
    exit_code: int = EXIT_FAILURE,
    prefix: str = "",
    detail: Callable[[Exception], str] = str,
) -> Iterator[None]:
    """Show an error of these kinds as ``error: <prefix><detail>`` and exit with exit_code."""
    try:
        yield
    except kinds as exc:
        raise CommandError(prefix + detail(exc), exit_code) from None


def echo(text: str = "") -> None:
    click.echo(text, file=sys.stdout)


def echo_lines(lines: Iterable[str]) -> None:
    for line in lines:
        echo(line)


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)  # ids (UUID) and the like


def to_json(value: Any, **options: Any) -> str:
    """JSON text of a result: dataclasses as objects, times in ISO 8601, ids as strings."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    elif isinstance(value, list):
        value = [asdict(v) if is_dataclass(v) and not isinstance(v, type) else v for v in value]
    return json.dumps(value, default=json_value, **options)


def timestamp(value: datetime | None) -> str:
    """A moment to the second with its UTC offset, or ``-`` for none."""
    return f"{value:%Y-%m-%d %H:%M:%S%z}" if value else "-"


def age(seconds: float | None) -> str:
    """A duration in its largest sensible unit, to one decimal (``-`` for none)."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
