"""The shipped migration files, and how the migrator reads them (no database needed)."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

import pytest

from websurf.sql.migrate import Migration, MigrationError, shipped_migrations, split_statements

FILE_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")


def _files() -> dict[str, bytes]:
    folder = files("websurf.sql").joinpath("migrations")
    return {e.name: e.read_bytes() for e in folder.iterdir() if e.name.endswith(".sql")}


def test_every_migration_file_is_named_nnnn_slug() -> None:
    names = sorted(_files())

    assert names, "no migration files are shipped in the package"
    assert [n for n in names if not FILE_NAME.match(n)] == []


def test_shipped_migrations_are_every_file_in_version_order_with_its_sha256() -> None:
    on_disk = _files()

    shipped = shipped_migrations()

    assert [m.name for m in shipped] == sorted(on_disk)
    assert [m.version for m in shipped] == sorted({int(n[:4]) for n in on_disk})
    for migration in shipped:
        assert migration.version == int(migration.name[:4])
        assert migration.checksum == hashlib.sha256(on_disk[migration.name]).hexdigest()


def test_concurrent_index_builds_are_only_in_no_transaction_files() -> None:
    # CREATE INDEX CONCURRENTLY inside a transaction fails at migrate time.
    offending = [
        m.name
        for m in shipped_migrations()
        if m.transactional and re.search(r"\bCONCURRENTLY\b", m.text, re.IGNORECASE)
    ]

    assert offending == []


def test_no_transaction_files_can_be_re_run_after_a_partial_failure() -> None:
    # Outside a transaction, statements before a failure stay applied and the file is
    # retried from the top on the next run: every statement must tolerate that.
    not_rerunnable = [
        (m.name, statement)
        for m in shipped_migrations()
        if not m.transactional
        for statement in split_statements(m.text)
        if not re.search(r"\bIF (NOT )?EXISTS\b|\bOR REPLACE\b", statement, re.IGNORECASE)
    ]

    assert not_rerunnable == []


@pytest.mark.parametrize(
    "text",
    [
        "-- websurf:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);",
        "\ufeff-- websurf:no-transaction\r\nCREATE INDEX CONCURRENTLY i ON t (a);",
        "-- websurf:no-transaction   \nSELECT 1;",
    ],
)
def test_marker_on_the_first_line_runs_the_file_outside_a_transaction(text: str) -> None:
    assert not Migration(1, "0001_x.sql", text).transactional


@pytest.mark.parametrize(
    "text",
    [
        "CREATE TABLE t (a int);",
        "-- a comment first\n-- websurf:no-transaction\nSELECT 1;",
        "-- websurf:no-transactions\nSELECT 1;",
    ],
)
def test_without_the_marker_on_the_first_line_a_file_is_one_transaction(text: str) -> None:
    assert Migration(1, "0001_x.sql", text).transactional


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"], id="plain"),
        pytest.param("SELECT 1;\n\nSELECT 2", ["SELECT 1", "SELECT 2"], id="no-final-semicolon"),
        pytest.param("SELECT 'a;b'; SELECT 'it''s;'", ["SELECT 'a;b'", "SELECT 'it''s;'"], id="q"),
        pytest.param(
            r"SELECT E'it\'s; ok'; SELECT 2", [r"SELECT E'it\'s; ok'", "SELECT 2"], id="e"
        ),
        pytest.param(
            "SELECT date'2024-01-01', 'x;'; SELECT 2",
            ["SELECT date'2024-01-01', 'x;'", "SELECT 2"],
            id="identifier-ending-in-e",
        ),
        pytest.param(
            'SELECT "a;b" FROM t; SELECT 2', ['SELECT "a;b" FROM t', "SELECT 2"], id="ident"
        ),
        pytest.param(
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
            "BEGIN PERFORM 1; RETURN 1; END;\n$$;\nSELECT f();",
            [
                "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
                "BEGIN PERFORM 1; RETURN 1; END;\n$$",
                "SELECT f()",
            ],
            id="dollar",
        ),
        pytest.param(
            "DO $body$ BEGIN RAISE NOTICE '$$;'; END $body$; SELECT $t$;$t$",
            ["DO $body$ BEGIN RAISE NOTICE '$$;'; END $body$", "SELECT $t$;$t$"],
            id="tagged-dollar",
        ),
        pytest.param(
            "-- first; comment\nSELECT 1; /* block; comment */ SELECT 2;",
            ["-- first; comment\nSELECT 1", "/* block; comment */ SELECT 2"],
            id="comments",
        ),
        pytest.param(
            "-- websurf:no-transaction\n-- only comments; here\n;;\n/* and; here */",
            [],
            id="nothing-but-comments",
        ),
        pytest.param("SELECT $1; SELECT 2", ["SELECT $1", "SELECT 2"], id="positional-param"),
    ],
)
def test_split_statements(text: str, expected: list[str]) -> None:
    assert list(split_statements(text)) == expected


def test_split_statements_refuses_an_unterminated_dollar_quote() -> None:
    with pytest.raises(MigrationError, match="unterminated dollar-quoted string"):
        list(split_statements("DO $$ BEGIN PERFORM 1; END; SELECT 2;"))


def test_every_shipped_file_splits_into_statements() -> None:
    for migration in shipped_migrations():
        assert list(split_statements(migration.text)), migration.name
