"""The schema and its named queries.

Queries live in ``queries/<table>.sql`` under ``-- name: <query_name>`` headers, each
followed by one comment line saying what it does and who calls it. They are loaded once
into a read-only mapping on first use; Python code runs them as
``QUERIES["claim_tasks"]``. (Loading lazily keeps psycopg out of commands that never
touch the database, such as the supervisor: it starts the worker processes sooner.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.resources import files
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from websurf.worker.logs import quiet_until_configured

if TYPE_CHECKING:
    from psycopg import sql

quiet_until_configured()  # websurf used as a library logs nothing until set up

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _parse(text: str, source: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines()]
        if not lines or not lines[0].startswith("-- "):
            raise ValueError(
                f"{source}: query {name} must start with a comment saying what it does"
            )
        statement = "\n".join(lines[1:]).strip().rstrip(";")
        if name in found:
            raise ValueError(f"{source}: query {name} defined twice")
        found[name] = statement
    return found


def load_queries() -> Mapping[str, sql.SQL]:
    """Read every ``queries/*.sql`` file shipped with the package."""
    from psycopg import sql

    queries: dict[str, sql.SQL] = {}
    for entry in sorted(files(__name__).joinpath("queries").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, statement in _parse(entry.read_text(encoding="utf-8"), entry.name).items():
            if name in queries:
                raise ValueError(f"{entry.name}: query {name} is also defined in another file")
            # Text from our own package files, never from input: safe as a literal.
            queries[name] = sql.SQL(statement)  # our own package file, not input
    return MappingProxyType(queries)


_loaded: Mapping[str, sql.SQL] | None = None

if TYPE_CHECKING:
    QUERIES: Mapping[str, sql.SQL]


def __getattr__(name: str) -> Any:
    global _loaded
    if name == "QUERIES":
        if _loaded is None:
            _loaded = load_queries()
        return _loaded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
