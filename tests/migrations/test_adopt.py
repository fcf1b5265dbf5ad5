"""``websurf migrate`` adopts tables the web app built first, or refuses and changes nothing.

The drizzle-kit tests build the database the way the issue's web app did: the shipped
schema.ts through ``drizzle-kit generate`` and ``drizzle-kit migrate`` (pinned toolchain
of tests/migrations/conftest.py; skipped without Node.js). The others build the tables
with plain SQL, to cover what drizzle-kit is not needed for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from websurf.sql import adopt
from websurf.sql.migrate import (
    MigrationError,
    migrate,
    migration_states,
    shipped_migrations,
    split_statements,
)

WEBSURF = str(Path(sys.executable).with_name("websurf"))


def _websurf_migrate(url: str) -> subprocess.CompletedProcess[str]:
    """The real command, with no other database or log settings from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSURF_")}
    command = [WEBSURF, "migrate", "--database-url", url]
    env.pop("DATABASE_URL", None)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def _everything(url: str) -> adopt.Catalog:
    with psycopg.connect(url) as conn:
        return adopt.read_catalog(conn)


def _drizzle_kit_migrate(toolchain: Any, tmp_path: Path, url: str) -> None:
    """What the issue's web app ran: generate + migrate from the shipped schema.ts."""
    work = toolchain.project(tmp_path)
    toolchain.generate(work)
    toolchain.drizzle_kit(work, "migrate", env={"DATABASE_URL": toolchain.node_url(url)})


def _assert_audited_and_notifying(url: str) -> None:
    """The triggers adoption must add: the cell audit and the new_task notification."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO websurfing_user (id, email) VALUES ('u1', 'u1@t.test')")
        [(sheet,)] = conn.execute(
            "INSERT INTO websurfing_spreadsheet (name, owner_id) VALUES ('s', 'u1') RETURNING id"
        ).fetchall()
        [(column,)] = conn.execute(
            "INSERT INTO websurfing_column (spreadsheet_id, position, title)"
            " VALUES (%s, 0, 'a') RETURNING id",
            (sheet,),
        ).fetchall()
        with pytest.raises(errors.CheckViolation, match="must name their author"):
            conn.execute(
                "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, content)"
                " VALUES (%s, %s, 1, 'unaudited')",
                (sheet, column),
            )
        conn.execute("LISTEN new_task")
        conn.execute("INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('x', '{}')")
        assert [n.channel for n in conn.notifies(timeout=5, stop_after=1)] == ["new_task"]


@pytest.mark.node
def test_tables_built_by_drizzle_kit_from_schema_ts_are_adopted(
    toolchain: Any, tmp_path: Path, empty_database_url: str, database_url: str
) -> None:
    _drizzle_kit_migrate(toolchain, tmp_path, empty_database_url)

    result = _websurf_migrate(empty_database_url)

    assert result.returncode == 0, result.stderr
    assert "adopted 0002_spreadsheets.sql" in result.stdout
    with psycopg.connect(empty_database_url) as conn:
        assert not [s for s in migration_states(conn) if s.pending]
    # The same schema as a database websurf built alone: triggers, functions, websurf schema.
    assert adopt.differences(_everything(empty_database_url), _everything(database_url)) == []
    _assert_audited_and_notifying(empty_database_url)
    assert "nothing to apply" in _websurf_migrate(empty_database_url).stdout


@pytest.mark.node
def test_drizzle_kit_tables_that_differ_are_refused_by_name_and_nothing_changes(
    toolchain: Any, tmp_path: Path, empty_database_url: str
) -> None:
    _drizzle_kit_migrate(toolchain, tmp_path, empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE websurfing_cell DROP COLUMN input_version")
        conn.execute("CREATE INDEX cell_content_idx ON websurfing_cell (content)")
    before = _everything(empty_database_url)

    result = _websurf_migrate(empty_database_url)

    assert result.returncode != 0
    message = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("{"))
    assert "will not adopt them; nothing was changed" in message
    assert "column websurfing_cell.input_version: missing from the database" in message
    assert "index websurfing_cell.cell_content_idx: in the database, not built by websurf" in (
        message
    )
    assert _everything(empty_database_url) == before
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regnamespace('websurf')").fetchone() == (None,)


def _structure_only(conn: psycopg.Connection[Any], names: set[str]) -> None:
    """What `drizzle-kit push` of a newer schema.ts does: the tables' part of migrations."""
    for migration in shipped_migrations():
        if migration.name in names:
            for statement in split_statements(migration.text):
                if adopt.builds_structure(statement):
                    conn.execute(statement.replace("CONCURRENTLY ", "").encode())


def test_columns_pushed_ahead_of_websurf_migrate_are_adopted_generically(
    empty_database_url: str, database_url: str
) -> None:
    """The app pushed a newer schema.ts (new columns, an index) before websurf migrate ran."""
    shipped = shipped_migrations()
    # From 0017 on (unique_key, input_version, superseded, …, and whatever comes later).
    # Up to 0022: 0023 adds its CHECKs in DO blocks (re-runnable), which the statements
    # _structure_only picks cannot show; it is applied after the adoption, as on a
    # database whose schema.ts predates it.
    older = [m for m in shipped if m.version < 17]
    newer = [m for m in shipped if 17 <= m.version < 23]
    later = [m for m in shipped if m.version >= 23]
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        migrate(conn, shipped=older)
        _structure_only(conn, {m.name for m in newer})
        dry = migrate(conn, dry_run=True)

        result = migrate(conn)

    assert "column websurfing_cell.input_version (0018_latest_edit_wins.sql)" in dry.collisions

    assert [m.name for m, _ in result.adopted] == [m.name for m in newer]
    assert [m.name for m, _ in result.applied] == [m.name for m in later]
    assert adopt.differences(_everything(empty_database_url), _everything(database_url)) == []


def test_auth_tables_created_without_snake_case_are_refused_clearly(
    empty_database_url: str,
) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE websurfing_user (id varchar(255) PRIMARY KEY, name varchar(255),"
            ' email varchar(255) NOT NULL, "emailVerified" timestamptz, image varchar(255))'
        )
        conn.execute(
            'CREATE TABLE websurfing_account ("userId" varchar(255) NOT NULL, type varchar(255),'
            ' provider varchar(255), "providerAccountId" varchar(255))'
        )
        with pytest.raises(MigrationError) as refused:
            migrate(conn)
        assert conn.execute("SELECT to_regnamespace('websurf')").fetchone() == (None,)

    message = str(refused.value)
    assert 'without casing: "snake_case"' in message
    assert "websurfing_account.userId" in message and "websurfing_user.emailVerified" in message
    assert "nothing was changed" in message


def test_the_tables_websurf_only_reads_are_adopted_as_before(
    empty_database_url: str, database_url: str
) -> None:
    """Auth tables the web app made first (snake_case) need no scratch database at all."""
    [auth] = [m for m in shipped_migrations() if m.name.startswith("0001_")]
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        for statement in split_statements(auth.text):  # IF NOT EXISTS throughout
            conn.execute(statement.encode())
        result = migrate(conn)
    assert result.adopted == []
    assert len(result.applied) == len(shipped_migrations())
    assert adopt.differences(_everything(empty_database_url), _everything(database_url)) == []


@pytest.mark.parametrize(
    ("statement", "structural"),
    [
        ("CREATE TABLE websurfing_x (id int)", True),
        ("CREATE TABLE IF NOT EXISTS websurfing_x (id int)", True),
        ("CREATE TABLE websurf.worker (id int)", False),
        ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON websurfing_x (a)", True),
        ("DROP INDEX CONCURRENTLY IF EXISTS task_queue_type_idx", True),
        ("-- why\nALTER TABLE websurfing_x ADD COLUMN a int, ADD CONSTRAINT c CHECK (a > 0)", True),
        ("ALTER TABLE websurfing_x SET (autovacuum_vacuum_scale_factor = 0.01)", False),
        ("CREATE OR REPLACE FUNCTION websurf.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", False),
        ("CREATE TRIGGER t AFTER INSERT ON websurfing_x EXECUTE FUNCTION websurf.f()", False),
        ("GRANT SELECT ON websurfing_x TO websurf_worker", False),
    ],
)
def test_what_adoption_skips_is_exactly_the_table_structure(
    statement: str, structural: bool
) -> None:
    assert adopt.builds_structure(statement) is structural
