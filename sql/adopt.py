"""Adopt a database whose ``websurfing_*`` tables someone else built.

Design note
-----------
The web app may build the tables first, from the shipped schema.ts (``drizzle-kit
generate`` + ``migrate``, or ``push``), before ``websurf migrate`` ever ran. The
migrations that create those tables would then fail on "already exists", and
everything only SQL adds (triggers, functions, the ``websurf`` schema, roles) would be
missing: unaudited edits, no ``new_task`` notifications.

* When: a pending migration would create a ``websurfing_*`` table, column, constraint or
  index that already exists (statements with ``IF NOT EXISTS`` excepted). Nothing is
  built when no pending migration collides, so an ordinary upgrade never pays for this.
* Verify: a scratch database on the same server gets the shipped migrations one at a
  time; after each, its catalog of the ``websurfing_*`` tables (columns with type,
  nullability and default; constraints; indexes) is compared with the target's. The
  last migration after which they are equal is how far the tables go. No match:
  refuse, naming every differing object, and change nothing.
* Adopt: in ONE transaction, run every statement of the adopted migrations except those
  that build ``websurfing_*`` table structure (CREATE TABLE, CREATE INDEX, DROP INDEX,
  ALTER TABLE … ADD/DROP/ALTER/RENAME), record the files as applied, and compare the
  target with the scratch database once more, triggers and the ``websurf`` schema's
  functions included; any difference rolls it all back. The remaining migrations then
  run as usual. It is generic: a later migration adding a column, a CHECK or a trigger
  is covered without a change here.
* Cost and rights: the scratch database needs CREATEDB for the migrating user; it is
  dropped afterwards. Role creation in the migrations (server-wide, IF NOT EXISTS) may
  happen while the scratch database is built, even when adoption is then refused.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import structlog
from psycopg import conninfo, sql

from websurf.sql import QUERIES
from websurf.sql.migrate import (
    _BOOTSTRAP,
    Migration,
    MigrationError,
    MigrationState,
    _apply_one,
    _literal,
    _record,
    split_statements,
)

log = structlog.get_logger("websurf.migrate")

SCRATCH_PREFIX = "websurf_adopt_"
MAX_LISTED = 40  # differing objects named in a refusal
# What a table's structure is made of, and what adoption must end up equal in, too.
STRUCTURE = ("catalog_tables", "catalog_columns", "catalog_constraints", "catalog_indexes")
EVERYTHING = (*STRUCTURE, "catalog_triggers", "catalog_websurf_objects")
# How many leading fields of each catalog row name the object.
_KEY_FIELDS = {
    "catalog_tables": 1,
    "catalog_columns": 2,
    "catalog_constraints": 2,
    "catalog_indexes": 2,
    "catalog_triggers": 2,
    "catalog_websurf_objects": 2,
}
_KIND = {
    "catalog_tables": "table",
    "catalog_columns": "column",
    "catalog_constraints": "constraint",
    "catalog_indexes": "index",
    "catalog_triggers": "trigger",
    "catalog_websurf_objects": "websurf",
}

_NAME = r'"?(\w+)"?'
_TABLE = r'(?:public\.)?"?(websurfing_\w+)"?'
_CREATE_TABLE = re.compile(
    rf"^CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{_TABLE}", re.I
)
_CREATE_INDEX = re.compile(
    rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(IF\s+NOT\s+EXISTS\s+)?{_NAME}"
    rf"\s+ON\s+(?:ONLY\s+)?{_TABLE}",
    re.I,
)
# Our migrations drop only indexes of websurfing_* tables (a DROP INDEX names no table).
_DROP_INDEX = re.compile(rf"^DROP\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?{_NAME}", re.I)
_ALTER_TABLE = re.compile(
    rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_TABLE}\s+(.*)$", re.I | re.S
)
_ADD_COLUMN = re.compile(rf"\bADD\s+COLUMN\s+(IF\s+NOT\s+EXISTS\s+)?{_NAME}", re.I)
_ADD_CONSTRAINT = re.compile(rf"\bADD\s+CONSTRAINT\s+{_NAME}", re.I)
# ALTER TABLE actions that do not build structure: storage options, triggers, RLS, owner.
_SETTINGS_ALTER = re.compile(
    r"^(?:SET\s*\(|RESET\s*\(|ENABLE\b|DISABLE\b|FORCE\b|NO\s+FORCE\b|OWNER\b|CLUSTER\b"
    r"|REPLICA\b|VALIDATE\b)",
    re.I,
)


class AdoptionRefused(MigrationError):
    """The existing tables are not what the migrations build; nothing was changed."""


def _code(statement: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S).strip()


def builds_structure(statement: str) -> bool:
    """Does this statement build ``websurfing_*`` table structure (skipped when adopting)?"""
    code = _code(statement)
    if _CREATE_TABLE.match(code) or _CREATE_INDEX.match(code) or _DROP_INDEX.match(code):
        return True
    alter = _ALTER_TABLE.match(code)
    return alter is not None and not _SETTINGS_ALTER.match(alter.group(2).strip())


def _existing(conn: psycopg.Connection[Any]) -> set[tuple[str, str | None, str | None]]:
    return {
        (row[0], row[1], row[2]) for row in conn.execute(QUERIES["existing_websurfing_objects"])
    }


def collisions(conn: psycopg.Connection[Any], pending: Sequence[Migration]) -> list[str]:
    """Objects that pending migrations would create and that exist already."""
    existing = _existing(conn)
    found: list[str] = []
    for migration in pending:
        for statement in split_statements(migration.text):
            code = _code(statement)
            if (m := _CREATE_TABLE.match(code)) and not m.group(1):
                if ("table", m.group(2), None) in existing:
                    found.append(f"table {m.group(2)} ({migration.name})")
            elif (m := _CREATE_INDEX.match(code)) and not m.group(1):
                if ("relation", None, m.group(2)) in existing:
                    found.append(f"index {m.group(2)} ({migration.name})")
            elif m := _ALTER_TABLE.match(code):
                table, action = m.group(1), m.group(2)
                for col in _ADD_COLUMN.finditer(action):
                    if not col.group(1) and ("column", table, col.group(2)) in existing:
                        found.append(f"column {table}.{col.group(2)} ({migration.name})")
                for con in _ADD_CONSTRAINT.finditer(action):
                    if ("constraint", table, con.group(1)) in existing:
                        found.append(f"constraint {con.group(1)} ({migration.name})")
    return found


def casing_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """Columns of websurfing_* tables spelled in camelCase (Drizzle without snake_case)."""
    return sorted(
        f"{table}.{column}"
        for kind, table, column in _existing(conn)
        if kind == "column" and column is not None and column != column.lower()
    )


def check_casing(conn: psycopg.Connection[Any]) -> None:
    problems = casing_problems(conn)
    if problems:
        raise MigrationError(
            f"the websurfing_* tables have camelCase columns ({', '.join(problems[:8])}"
            f"{', …' if len(problems) > 8 else ''}): the web app created them without"
            ' casing: "snake_case". websurf and schema.ts use snake_case column names: set'
            ' casing: "snake_case" in drizzle.config.ts and in drizzle(client, { casing:'
            ' "snake_case" }), rename or recreate these tables, and run websurf migrate'
            " again; nothing was changed"
        )


Catalog = dict[str, set[tuple[Any, ...]]]


def read_catalog(conn: psycopg.Connection[Any], kinds: Iterable[str] = EVERYTHING) -> Catalog:
    return {kind: {tuple(row) for row in conn.execute(QUERIES[kind])} for kind in kinds}


def differences(database: Catalog, websurf: Catalog) -> list[str]:
    """One line per object that differs, naming it and saying how."""
    lines: list[str] = []
    for kind, rows in websurf.items():
        width = _KEY_FIELDS[kind]
        ours = {row[:width]: row[width:] for row in rows}
        theirs = {row[:width]: row[width:] for row in database.get(kind, set())}
        label = _KIND[kind]
        for key in sorted(set(ours) | set(theirs), key=repr):
            name = ".".join(str(part) for part in key)
            if key not in theirs:
                lines.append(f"{label} {name}: missing from the database")
            elif key not in ours:
                lines.append(f"{label} {name}: in the database, not built by websurf")
            elif ours[key] != theirs[key]:
                lines.append(
                    f"{label} {name}: {_show(theirs[key])} in the database,"
                    f" {_show(ours[key])} from websurf's migrations"
                )
    return lines


def _show(values: tuple[Any, ...]) -> str:
    return " ".join(repr(v) if v is None or v == "" else str(v) for v in values)


@contextlib.contextmanager
def scratch_database(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """An empty database beside ``conn``'s, as the same user; dropped afterwards."""
    name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege:
        raise AdoptionRefused(
            f"to adopt the existing websurfing_* tables websurf compares them with a scratch"
            f" database built from its migrations, and {conn.info.user} may not create"
            " databases: run websurf migrate once as a user with CREATEDB; nothing was changed"
        ) from None
    try:
        url = conninfo.make_conninfo(conn.info.dsn, dbname=name, password=conn.info.password)
        with psycopg.connect(url, autocommit=True) as scratch:
            yield scratch
    finally:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _refusal(found: Sequence[str], lines: Sequence[str]) -> AdoptionRefused:
    casing = [line for line in lines if re.search(r"\.[a-z]+[A-Z]\w*: in the database", line)]
    hint = (
        ' (camelCase columns: the web app created them without casing: "snake_case")'
        if casing
        else ""
    )
    shown = "\n".join(f"  {line}" for line in lines[:MAX_LISTED])
    more = f"\n  … and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return AdoptionRefused(
        f"the database already has websurfing_* objects that websurf's migrations create"
        f" ({', '.join(found[:5])}{', …' if len(found) > 5 else ''}), and its tables are not"
        f" what those migrations build{hint}, so websurf will not adopt them; nothing was"
        " changed. Make them equal the schema.ts shipped with this websurf (drizzle-kit"
        " push, or drop the tables and let websurf migrate create them). Differences:\n"
        f"{shown}{more}"
    )


def adopt(
    conn: psycopg.Connection[Any],
    states: Sequence[MigrationState],
    shipped: Sequence[Migration],
    found: Sequence[str],
    lock_timeout_s: float,
) -> list[tuple[Migration, int]]:
    """Verify the existing tables against a scratch build, then adopt them (see above).

    Returns the migrations recorded as applied, with the time each took.
    """
    applied = {s.applied.version for s in states if s.applied is not None}
    floor = max(applied, default=0)
    target = read_catalog(conn, STRUCTURE)
    match: int | None = None
    with scratch_database(conn) as scratch:
        scratch.execute(_literal(_BOOTSTRAP))
        for index, migration in enumerate(shipped):
            _apply_one(scratch, migration, lock_timeout_s)
            if migration.version > floor and read_catalog(scratch, STRUCTURE) == target:
                match, expected = index, read_catalog(scratch)
        if match is None:
            raise _refusal(found, differences(target, read_catalog(scratch, STRUCTURE)))
    adopted = [m for m in shipped[: match + 1] if m.version not in applied]
    recorded: list[tuple[Migration, int]] = []
    timeout = f"{int(lock_timeout_s * 1000)}ms"
    with conn.transaction():
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
        conn.execute(_literal(_BOOTSTRAP))
        for migration in adopted:
            started = time.perf_counter()
            for statement in split_statements(migration.text):
                if not builds_structure(statement):
                    conn.execute(_literal(statement))
            duration_ms = int((time.perf_counter() - started) * 1000)
            _record(conn, migration, duration_ms)
            recorded.append((migration, duration_ms))
        after = differences(read_catalog(conn), expected)
        if after:
            # Rolls the transaction back: never a half-adopted database.
            raise AdoptionRefused(
                "adopting the existing websurfing_* tables would not give the schema websurf"
                " builds, so nothing was changed:\n"
                + "\n".join(f"  {line}" for line in after[:MAX_LISTED])
            )
    for migration, duration_ms in recorded:
        log.info("migration_adopted", file=migration.name, duration_ms=duration_ms)
    return recorded
