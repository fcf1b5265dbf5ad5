"""structlog set-up: JSON lines off a terminal, readable console output on one.

Each event is one line written with a single ``write`` (the N worker processes share
the supervisor's stderr; a line written in two pieces could interleave with another
process's and break the JSON). Event names are stable snake_case keys; values that
look like secrets are masked before rendering (a password in a connection string, or
any field whose name says it holds a password, secret or token).

Used as a library (a script or the web app's backend importing websurf), websurf logs
nothing until the application configures logging: structlog unconfigured prints every
event, debug included, to stdout. :func:`quiet_until_configured` (run when the
``websurf.sql`` and ``websurf.worker`` packages are imported) sends websurf's events
to Python's ``logging`` under the ``websurf`` logger, which has a NullHandler, as the
standard library advises libraries to do; other structlog loggers keep structlog's
default. The application's ``structlog.configure`` or ``logging`` set-up then decides.
websurf's own processes call :func:`configure_logging`, which replaces all of this.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
MASK = "****"
_SECRET_KEY_PARTS = ("password", "passwd", "secret", "token")
# user:password@ in a URL, and password=… in a key=value connection string.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]+@")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask passwords in values and fields named like secrets."""
    for key, value in event_dict.items():
        if not isinstance(value, str):
            continue
        if any(part in key.lower() for part in _SECRET_KEY_PARTS):
            event_dict[key] = MASK
        elif "://" in value or "password" in value.lower():
            value = _URL_PASSWORD.sub(rf"\1{MASK}@", value)
            event_dict[key] = _KV_PASSWORD.sub(rf"\1{MASK}", value)
    return event_dict


LIBRARY_LOGGER = "websurf"  # the standard-library logger websurf's events use unconfigured


def _library_or_default_logger(*args: Any) -> Any:
    """websurf's loggers: the standard library's; any other: structlog's default (stdout)."""
    name = str(args[0]) if args else ""
    if name == LIBRARY_LOGGER or name.startswith(LIBRARY_LOGGER + "."):
        return logging.getLogger(name)
    return structlog.PrintLoggerFactory()(*args)


def quiet_until_configured() -> None:
    """Silence websurf's events until the application configures logging (see above)."""
    if structlog.is_configured():
        return
    logging.getLogger(LIBRARY_LOGGER).addHandler(logging.NullHandler())
    structlog.configure(logger_factory=_library_or_default_logger)


class _JsonLines:
    """What :func:`write_info_lines` needs: where JSON lines go, and how they are made."""

    def __init__(self, stream: TextIO, renderer: Any, stamper: Any, level: int) -> None:
        self.stream, self.renderer, self.stamper, self.level = stream, renderer, stamper, level


_json_lines: _JsonLines | None = None  # set by configure_logging when lines are JSON
PIPE_ATOMIC_BYTES = 4096  # POSIX PIPE_BUF: a write this size or less never interleaves


def write_info_lines(events: list[dict[str, Any]]) -> bool:
    """Write many info events as JSON lines at once; False when that cannot be done.

    For events logged by the thousand a second (``task_completed``): the lines are the
    ones structlog's processors would make (same renderer, same secret masking), with
    one timestamp for the batch and one ``write`` per 4 KiB of whole lines instead of
    one per line, so the N processes sharing stderr still never interleave a line.
    Returns False (the caller logs each event the usual way) when logging is not
    configured for JSON or the info level is filtered out.
    """
    out = _json_lines
    if out is None or out.level > logging.INFO:
        return False
    chain = structlog.get_config()["processors"]
    if not chain or chain[-1] is not out.renderer:
        # Configured since by someone else: structlog.testing.capture_logs (which swaps
        # the chain's contents in place), or an application.
        return False
    stamp = out.stamper(None, "info", {})
    chunk: list[str] = []
    size = 0
    for event in events:
        event["level"] = "info"
        event.update(stamp)
        line = out.renderer(None, "info", mask_secrets(None, "info", event)) + "\n"
        if chunk and size + len(line) > PIPE_ATOMIC_BYTES:
            _write(out.stream, "".join(chunk))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line)
    if chunk:
        _write(out.stream, "".join(chunk))
    return True


def _write(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for this process (call once per process, children too)."""
    global _json_lines
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    threshold = logging.getLevelNamesMapping()[level.upper()]
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamper,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        mask_secrets,
        renderer,
    ]
    _json_lines = _JsonLines(stream, renderer, stamper, threshold) if use_json else None
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library (psycopg's pool reports failed
    # connection attempts): render their records the same way, one line each.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                mask_secrets,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
