"""How every command prints: one-line errors and their exit codes, JSON, times and ages.

What a command shows (a task table, the status report, a sheet) is in this package's
modules, one per kind of thing; the command modules only call them.

Everything printed goes through :func:`echo` (or :class:`CommandError`), which shows
control characters instead of sending them to the terminal (:func:`visible`): stored
text comes from whoever could write a row, and an escape sequence in a cell (OSC 52
writes the reader's clipboard, CSI moves the cursor) must not act on the reader's
terminal. JSON output already escapes them.
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

# C0 controls but tab and line feed, DEL, the C1 set (0x9b is a one-byte CSI), and the
# bidi controls that reorder what follows them on screen.
_CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]
_BIDI = [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SHOWN = str.maketrans({c: f"\\x{c:02x}" for c in _CONTROLS} | {c: f"\\u{c:04x}" for c in _BIDI})

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
        click.echo(f"error: {visible(self.format_message())}", err=True)


def parameter_name(param: click.Parameter) -> str:
    """How the user wrote a parameter: ``--type`` for an option, ``TASK_TYPE`` for an argument."""
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name


def usage_line(exc: click.UsageError) -> str:
    """A usage error in one line, naming the parameter: ``--limit 0 is not in the range …``
    (click's own show() prints the usage, a hint and the error on three lines)."""
    if (
        isinstance(exc, click.BadParameter)
        and not isinstance(exc, click.MissingParameter)
        and exc.param is not None
    ):
        return f"{parameter_name(exc.param)} {exc.message}"
    command = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return exc.format_message() + command


@contextmanager
def usage_errors_in_one_line() -> Iterator[None]:
    """A click usage error, raised while parsing or by a command, as ``error: …``, exit 2
    (a group given no command still shows its help)."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.UsageError as exc:
        raise CommandError(usage_line(exc), EXIT_USAGE) from None


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


def visible(text: str) -> str:
    """``text`` with control characters shown as ``\\x1b`` (bidi controls as ``\\u202e``)."""
    return text.translate(_SHOWN)


def echo(text: str = "") -> None:
    click.echo(visible(text), file=sys.stdout)


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
