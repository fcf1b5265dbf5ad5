"""The migrator's Python API against a real PostgreSQL.

Pending, edited and failing files are synthetic ``Migration`` objects appended to the
shipped ones (versions 9001+), so no test touches the real files.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

import psycopg
import pytest

from websurf.sql.migrate import (
    Migration,
    MigrationError,
    migrate,
    migration_states,
    shipped_migrations,
)

ELEVEN_TABLES = {
    "websurfing_user",
    "websurfing_account",
    "websurfing_session",
    "websurfing_verification_token",
    "websurfing_spreadsheet",
    "websurfing_column",
    "websurfing_cell",
    "websurfing_task_queue",
    "websurfing_cell_edit_event",
    "websurfing_robot_input_event",
    "websurfing_transformer_session",
}

# What drizzle-kit generates for the T3 / next-auth template's four tables.
WEB_APP_AUTH_TABLES = """
CREATE TABLE "websurfing_user" (
    "id" varchar(255) PRIMARY KEY NOT NULL,
    "name" varchar(255),
    "email" varchar(255) NOT NULL,
    "email_verified" timestamp with time zone DEFAULT CURRENT_TIMESTAMP,
    "image" varchar(255)
);
CREATE TABLE "websurfing_account" (
    "user_id" varchar(255) NOT NULL,
    "type" varchar(255) NOT NULL,
    "provider" varchar(255) NOT NULL,
    "provider_account_id" varchar(255) NOT NULL,
    "refresh_token" text,
    "access_token" text,
    "expires_at" integer,
    "token_type" varchar(255),
    "scope" varchar(255),
    "id_token" text,
    "session_state" varchar(255),
    CONSTRAINT "websurfing_account_provider_provider_account_id_pk"
        PRIMARY KEY("provider","provider_account_id")
);
CREATE TABLE "websurfing_session" (
    "session_token" varchar(255) PRIMARY KEY NOT NULL,
    "user_id" varchar(255) NOT NULL,
    "expires" timestamp with time zone NOT NULL
);
CREATE TABLE "websurfing_verification_token" (
    "identifier" varchar(255) NOT NULL,
    "token" varchar(255) NOT NULL,
    "expires" timestamp with time zone NOT NULL,
    CONSTRAINT "websurfing_verification_token_identifier_token_pk"
        PRIMARY KEY("identifier","token")
);
ALTER TABLE "websurfing_account" ADD CONSTRAINT "websurfing_account_user_id_websurfing_user_id_fk"
    FOREIGN KEY ("user_id") REFERENCES "public"."websurfing_user"("id")
    ON DELETE no action ON UPDATE no action;
ALTER TABLE "websurfing_session" ADD CONSTRAINT "websurfing_session_user_id_websurfing_user_id_fk"
    FOREIGN KEY ("user_id") REFERENCES "public"."websurfing_user"("id")
    ON DELETE no action ON UPDATE no action;
CREATE INDEX "account_user_id_idx" ON "websurfing_account" USING btree ("user_id");
CREATE INDEX "t_user_id_idx" ON "websurfing_session" USING btree ("user_id");
"""


@pytest.fixture
def empty_conn(empty_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(empty_database_url, autocommit=True) as connection:
        yield connection


def _with(*extra: Migration) -> list[Migration]:
    return [*shipped_migrations(), *extra]


def _recorded(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, str]]:
    rows = conn.execute("SELECT version, name, checksum FROM websurf.schema_migrations").fetchall()
    return {version: (name, checksum) for version, name, checksum in rows}


def _exists(conn: psycopg.Connection[Any], relation: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()
    return bool(row and row[0])


def _tables(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_name LIKE 'websurfing\\_%'"
    ).fetchall()
    return {row[0] for row in rows}


def test_fresh_database_gets_every_shipped_file_in_order_recorded_with_its_checksum(
    empty_conn: psycopg.Connection[Any],
) -> None:
    folder = files("websurf.sql").joinpath("migrations")
    before = empty_conn.execute("SELECT clock_timestamp()").fetchone()

    result = migrate(empty_conn)

    after = empty_conn.execute("SELECT clock_timestamp()").fetchone()
    shipped = shipped_migrations()
    assert [m.name for m, _ in result.applied] == [m.name for m in shipped]
    rows = empty_conn.execute(
        "SELECT version, name, checksum, applied_at, duration_ms"
        " FROM websurf.schema_migrations ORDER BY version"
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in shipped]
    for (_, name, checksum, _, duration_ms), (_, reported_ms) in zip(
        rows, result.applied, strict=True
    ):
        assert checksum == hashlib.sha256(folder.joinpath(name).read_bytes()).hexdigest()
        assert duration_ms == reported_ms >= 0
    applied_at = [r[3] for r in rows]
    assert before and after
    assert before[0] <= applied_at[0]
    assert applied_at == sorted(applied_at)
    assert applied_at[-1] <= after[0]


def test_running_again_applies_nothing(empty_conn: psycopg.Connection[Any]) -> None:
    migrate(empty_conn)
    first = empty_conn.execute("SELECT * FROM websurf.schema_migrations ORDER BY 1").fetchall()

    again = migrate(empty_conn)

    assert again.applied == []
    assert again.pending_before == []
    assert empty_conn.execute("SELECT * FROM websurf.schema_migrations ORDER BY 1").fetchall() == (
        first
    )


def test_the_eleven_websurfing_tables_exist(conn: psycopg.Connection[Any]) -> None:
    assert _tables(conn) >= ELEVEN_TABLES


def test_auth_tables_created_first_by_the_web_app_are_adopted(
    empty_conn: psycopg.Connection[Any],
) -> None:
    with empty_conn.transaction():
        empty_conn.execute(WEB_APP_AUTH_TABLES)
        empty_conn.execute(
            "INSERT INTO websurfing_user (id, name, email) VALUES ('u1', 'Ada', 'ada@example.test')"
        )

    result = migrate(empty_conn)

    assert [m.name for m, _ in result.applied] == [m.name for m in shipped_migrations()]
    assert empty_conn.execute("SELECT id, name, email FROM websurfing_user").fetchall() == [
        ("u1", "Ada", "ada@example.test")
    ]
    assert _tables(empty_conn) >= ELEVEN_TABLES


def test_an_applied_file_edited_afterwards_is_refused_by_name_and_nothing_is_applied(
    conn: psycopg.Connection[Any],
) -> None:
    original = Migration(9001, "9001_widgets.sql", "CREATE TABLE websurf_test_widget (id int);")
    migrate(conn, shipped=_with(original))
    edited = Migration(9001, original.name, original.text + "\n-- tweaked afterwards\n")
    new = Migration(9002, "9002_gadgets.sql", "CREATE TABLE websurf_test_gadget (id int);")

    with pytest.raises(MigrationError, match=r"9001_widgets\.sql was edited after it was applied"):
        migrate(conn, shipped=_with(edited, new))
    with pytest.raises(MigrationError, match=r"9001_widgets\.sql"):
        migrate(conn, shipped=_with(edited, new), dry_run=True)

    recorded = _recorded(conn)
    assert recorded[9001] == (original.name, original.checksum)
    assert 9002 not in recorded
    assert not _exists(conn, "websurf_test_gadget")
    changed = [
        s.migration.name for s in migration_states(conn, _with(edited)) if s.changed and s.migration
    ]
    assert changed == ["9001_widgets.sql"]


def test_a_failing_file_rolls_back_completely_and_earlier_files_stay_applied(
    conn: psycopg.Connection[Any],
) -> None:
    good = Migration(9001, "9001_good.sql", "CREATE TABLE websurf_test_good (id int);")
    broken = Migration(
        9002,
        "9002_broken.sql",
        "CREATE TABLE websurf_test_partial (id int);\n"
        "INSERT INTO websurf_test_partial VALUES (1);\n"
        "INSERT INTO websurf_test_missing VALUES (1);\n",
    )
    later = Migration(9003, "9003_later.sql", "CREATE TABLE websurf_test_later (id int);")

    with pytest.raises(MigrationError) as raised:
        migrate(conn, shipped=_with(good, broken, later))

    message = str(raised.value)
    assert "9002_broken.sql" in message
    assert 'relation "websurf_test_missing" does not exist' in message
    assert _exists(conn, "websurf_test_good")
    assert not _exists(conn, "websurf_test_partial")
    assert not _exists(conn, "websurf_test_later")
    assert set(_recorded(conn)) >= {9001}
    assert not set(_recorded(conn)) & {9002, 9003}

    fixed = Migration(9002, broken.name, "CREATE TABLE websurf_test_partial (id int);")
    result = migrate(conn, shipped=_with(good, fixed, later))

    assert [m.name for m, _ in result.applied] == ["9002_broken.sql", "9003_later.sql"]


def test_no_transaction_file_builds_indexes_concurrently(conn: psycopg.Connection[Any]) -> None:
    table = Migration(9001, "9001_table.sql", "CREATE TABLE websurf_test_item (a int, b text);")
    indexes = Migration(
        9002,
        "9002_item_indexes.sql",
        "-- websurf:no-transaction\n"
        "-- Built without blocking writes.\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS websurf_test_item_a_idx"
        " ON websurf_test_item (a);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS websurf_test_item_b_idx"
        " ON websurf_test_item (b);\n",
    )

    result = migrate(conn, shipped=_with(table, indexes))

    assert [m.name for m, _ in result.applied] == ["9001_table.sql", "9002_item_indexes.sql"]
    valid = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = 'websurf_test_item'::regclass AND i.indisvalid ORDER BY 1"
    ).fetchall()
    assert valid == [("websurf_test_item_a_idx",), ("websurf_test_item_b_idx",)]
    assert _recorded(conn)[9002] == (indexes.name, indexes.checksum)


def test_concurrent_index_without_the_marker_fails_naming_the_file(
    conn: psycopg.Connection[Any],
) -> None:
    table = Migration(9001, "9001_table.sql", "CREATE TABLE websurf_test_item (a int);")
    index = Migration(
        9002,
        "9002_index.sql",
        "CREATE INDEX CONCURRENTLY websurf_test_idx ON websurf_test_item (a);",
    )

    with pytest.raises(MigrationError, match=r"9002_index\.sql.*inside a transaction block"):
        migrate(conn, shipped=_with(table, index))


def test_dry_run_reports_pending_files_and_changes_nothing(
    empty_conn: psycopg.Connection[Any],
) -> None:
    result = migrate(empty_conn, dry_run=True)

    assert result.applied == []
    assert [m.name for m in result.pending_before] == [m.name for m in shipped_migrations()]
    row = empty_conn.execute("SELECT to_regnamespace('websurf') IS NULL").fetchone()
    assert row == (True,)
    assert _tables(empty_conn) == set()


@pytest.mark.parametrize("no_transaction", [False, True], ids=["transaction", "no-transaction"])
def test_ddl_behind_a_long_transaction_fails_fast_naming_the_file(
    conn: psycopg.Connection[Any], database_url: str, no_transaction: bool
) -> None:
    conn.execute("CREATE TABLE websurf_test_busy (id int)")
    marker = "-- websurf:no-transaction\n" if no_transaction else ""
    alter = Migration(
        9001,
        "9001_alter_busy.sql",
        marker + "ALTER TABLE websurf_test_busy ADD COLUMN IF NOT EXISTS note text;",
    )

    with psycopg.connect(database_url) as holder:  # a transaction left open by someone
        holder.execute("LOCK TABLE websurf_test_busy IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(MigrationError) as raised:
            migrate(conn, shipped=_with(alter), lock_timeout_s=0.2)
        waited = time.monotonic() - started
        holder.rollback()

    assert waited < 3
    assert "9001_alter_busy.sql" in str(raised.value)
    assert "lock timeout" in str(raised.value)
    assert 9001 not in _recorded(conn)
    assert [m.name for m, _ in migrate(conn, shipped=_with(alter)).applied] == [alter.name]
