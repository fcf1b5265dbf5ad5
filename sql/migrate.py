"""Apply the numbered SQL files in ``migrations/`` to a database.

Design note
-----------
* Files are ``NNNN_slug.sql``, applied in version order, forward only. Each runs in its
  own transaction together with the row that records it, so a file is either applied
  and recorded or not at all. A file whose first line is ``-- websurf:no-transaction``
  runs statement by statement outside a transaction (for ``CREATE INDEX
  CONCURRENTLY``); it must be written to be re-runnable (``IF NOT EXISTS``) because a
  failure part-way leaves the earlier statements applied and the file unrecorded.
* Every applied file is recorded in ``websurf.schema_migrations`` with its SHA-256. A
  recorded file whose content changed stops the run before anything is applied.
* Concurrent runs (many containers starting at once) are serialised by a session
  advisory lock held on the migrating connection: one applies, the others wait, then
  find nothing pending. The lock dies with the connection, so a crashed run never
  leaves it behind.
* DDL runs with ``lock_timeout`` so a migration never queues forever behind a long
  transaction (and, while queued, blocks every other query on that table).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from typing import Any

import psycopg
import structlog
from psycopg import sql

log = structlog.get_logger("websurf.migrate")

LOCK_TIMEOUT_S = 5.0
LOCK_POLL_START_S = 0.05
LOCK_POLL_MAX_S = 1.0
NO_TRANSACTION_MARKER = "-- websurf:no-transaction"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Key of the advisory lock that serialises migration runs (any constant works; this is
# the first 8 bytes of sha256("websurf.migrate") read as a signed bigint).
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"websurf.migrate").digest()[:8], "big", signed=True
)

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS websurf;
CREATE TABLE IF NOT EXISTS websurf.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL
);
"""


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names the file."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name, e.g. 0003_task_queue.sql
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def transactional(self) -> bool:
        first_line = self.text.lstrip("\ufeff").split("\n", 1)[0].strip()
        return first_line != NO_TRANSACTION_MARKER


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime
    duration_ms: int


@dataclass(frozen=True)
class MigrationState:
    migration: Migration | None  # None: recorded in the database but not shipped
    applied: AppliedMigration | None

    @property
    def pending(self) -> bool:
        return self.applied is None

    @property
    def changed(self) -> bool:
        return (
            self.migration is not None
            and self.applied is not None
            and self.migration.checksum != self.applied.checksum
        )


def shipped_migrations() -> list[Migration]:
    """The migration files shipped in the package, in version order."""
    found: list[Migration] = []
    for entry in files("websurf.sql").joinpath("migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if not match:
            raise MigrationError(f"{entry.name}: migration files must be named NNNN_slug.sql")
        found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for earlier, later in itertools.pairwise(found):
        if earlier.version == later.version:
            raise MigrationError(f"{earlier.name} and {later.name} share version {later.version}")
    return found


def _applied(conn: psycopg.Connection[Any]) -> dict[int, AppliedMigration]:
    exists = conn.execute("SELECT to_regclass('websurf.schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(
        "SELECT version, name, checksum, applied_at, duration_ms"
        " FROM websurf.schema_migrations ORDER BY version"
    ).fetchall()
    return {row[0]: AppliedMigration(*row) for row in rows}


def migration_states(
    conn: psycopg.Connection[Any], shipped: list[Migration] | None = None
) -> list[MigrationState]:
    """Every shipped or recorded migration with whether and how it was applied."""
    shipped = shipped_migrations() if shipped is None else shipped
    applied = _applied(conn)
    by_version = {m.version: m for m in shipped}
    versions = sorted(set(by_version) | set(applied))
    return [MigrationState(by_version.get(v), applied.get(v)) for v in versions]


def pending_migrations(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Shipped files not yet applied (what the worker refuses to start with)."""
    return [s.migration for s in migration_states(conn) if s.pending and s.migration]


def _check_unchanged(states: list[MigrationState]) -> None:
    changed = [s.migration.name for s in states if s.changed and s.migration]
    if changed:
        raise MigrationError(
            f"{changed[0]} was edited after it was applied (its checksum no longer matches);"
            " applied migrations are immutable: revert the edit and add a new migration file"
        )


def split_statements(text: str) -> Iterator[str]:
    """Split SQL text on top-level semicolons (quotes, dollar quotes and comments aware)."""
    token = re.compile(
        r"""--[^\n]*|/\*.*?\*/"""
        # E'…' strings take backslash escapes (E'it\'s'); the look-behind keeps an
        # identifier ending in e (type'…') from being read as one.
        r"""|(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*'"""
        r"""|'(?:[^']|'')*'|"(?:[^"]|"")*"|\$(\w*)\$|;""",
        re.S,
    )
    start = pos = 0
    while True:
        match = token.search(text, pos)
        if match is None:
            break
        if match.group(0) == ";":
            statement = text[start : match.start()].strip()
            if _has_code(statement):
                yield statement
            start = pos = match.end()
        elif match.group(0).startswith("$"):
            closing = text.find(match.group(0), match.end())
            if closing < 0:
                raise MigrationError("unterminated dollar-quoted string")
            pos = closing + len(match.group(0))
        else:
            pos = match.end()
    tail = text[start:].strip()
    if _has_code(tail):
        yield tail


def _has_code(statement: str) -> bool:
    stripped = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S)
    return bool(stripped.strip())


def _literal(text: str) -> sql.SQL:
    # Migration text comes from files shipped in our package, never from user input.
    return sql.SQL(text)  # our own package file, not input


def _apply_one(conn: psycopg.Connection[Any], migration: Migration, lock_timeout_s: float) -> int:
    started = time.perf_counter()
    timeout = sql.SQL("SET {} lock_timeout = {}").format
    if migration.transactional:
        with conn.transaction():
            conn.execute(timeout(sql.SQL("LOCAL"), sql.Literal(f"{int(lock_timeout_s * 1000)}ms")))
            conn.execute(_literal(migration.text))
            duration_ms = int((time.perf_counter() - started) * 1000)
            _record(conn, migration, duration_ms)
        return duration_ms
    conn.execute(timeout(sql.SQL("SESSION"), sql.Literal(f"{int(lock_timeout_s * 1000)}ms")))
    try:
        for statement in split_statements(migration.text):
            conn.execute(_literal(statement))
    finally:
        conn.execute("RESET lock_timeout")
    duration_ms = int((time.perf_counter() - started) * 1000)
    with conn.transaction():
        _record(conn, migration, duration_ms)
    return duration_ms


def _record(conn: psycopg.Connection[Any], migration: Migration, duration_ms: int) -> None:
    conn.execute(
        "INSERT INTO websurf.schema_migrations (version, name, checksum, duration_ms)"
        " VALUES (%s, %s, %s, %s)",
        (migration.version, migration.name, migration.checksum, duration_ms),
    )


def _take_migration_lock(conn: psycopg.Connection[Any]) -> None:
    """Wait for the migration lock between statements, never inside one.

    A session blocked in pg_advisory_lock() holds a snapshot, and CREATE INDEX
    CONCURRENTLY in the session that holds the lock waits for every such snapshot to
    go away: a deadlock. Polling with pg_try_advisory_lock holds no snapshot while it
    waits.
    """
    waited = False
    delay = LOCK_POLL_START_S
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,)).fetchone()
        if row and row[0]:
            if waited:
                log.info("migration_lock_acquired")
            return
        if not waited:
            log.info("migration_lock_wait", reason="another websurf migrate is running")
            waited = True
        time.sleep(delay)
        delay = min(delay * 2, LOCK_POLL_MAX_S)


@dataclass(frozen=True)
class MigrateResult:
    applied: list[tuple[Migration, int]]  # (migration, duration_ms)
    pending_before: list[Migration]
    # Recorded as applied over tables that were already there (sql/adopt.py).
    adopted: list[tuple[Migration, int]] = field(default_factory=list)
    # Dry run: existing objects that pending migrations would create (adoption needed).
    collisions: list[str] = field(default_factory=list)


def migrate(
    conn: psycopg.Connection[Any],
    *,
    dry_run: bool = False,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    shipped: list[Migration] | None = None,
) -> MigrateResult:
    """Apply every pending migration, in order, under the migration advisory lock.

    ``conn`` must be in autocommit mode: each file manages its own transaction.
    """
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection")
    from websurf.sql import adopt as adoption  # imports this module

    shipped = shipped_migrations() if shipped is None else shipped
    if dry_run:
        states = migration_states(conn, shipped)
        _check_unchanged(states)
        pending = [s.migration for s in states if s.pending and s.migration]
        return MigrateResult([], pending, collisions=adoption.collisions(conn, pending))

    _take_migration_lock(conn)
    try:
        states = migration_states(conn, shipped)
        _check_unchanged(states)
        pending = [s.migration for s in states if s.pending and s.migration]
        # Before anything is created (even the bookkeeping schema), so that a refusal
        # changes nothing.
        adopted: list[tuple[Migration, int]] = []
        if pending and pending[0].version == shipped[0].version:
            adoption.check_casing(conn)  # the web app's auth tables, before 0001 runs
        found = adoption.collisions(conn, pending)
        if found:
            adopted = adoption.adopt(conn, states, shipped, found, lock_timeout_s)
            done = {migration.version for migration, _ in adopted}
            pending_after = [m for m in pending if m.version not in done]
        else:
            pending_after = pending
        conn.execute(_literal(_BOOTSTRAP))
        applied: list[tuple[Migration, int]] = []
        for migration in pending_after:
            try:
                duration_ms = _apply_one(conn, migration, lock_timeout_s)
            except psycopg.Error as exc:
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                raise MigrationError(
                    f"{migration.name} failed and was rolled back: {detail}"
                    if migration.transactional
                    else f"{migration.name} failed (no-transaction file, statements before"
                    f" the failing one stay applied): {detail}"
                ) from exc
            log.info("migration_applied", file=migration.name, duration_ms=duration_ms)
            applied.append((migration, duration_ms))
        return MigrateResult(applied, pending, adopted)
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
