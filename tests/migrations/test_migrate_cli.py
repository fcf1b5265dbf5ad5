"""``websurf migrate`` run as a real command in a subprocess, as a container would."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import psycopg
import pytest
from support.daemon import WEBSURF, clean_env, error_lines
from support.waiting import wait_for

from websurf.sql.migrate import MIGRATION_LOCK_KEY, migrate, shipped_migrations

DEADLINE_S = 20.0


def websurf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WEBSURF, *args], capture_output=True, text=True, env=clean_env(), timeout=60, check=False
    )


def _versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM websurf.schema_migrations ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def _catalog(url: str) -> set[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('public', 'websurf')"
            " UNION ALL SELECT n.nspname, p.proname, 'function' FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname IN ('public', 'websurf')"
        ).fetchall()
    return {tuple(row) for row in rows}


def test_fresh_database_then_nothing_to_apply(empty_database_url: str) -> None:
    first = websurf("migrate", "--database-url", empty_database_url)
    again = websurf("migrate", "--database-url", empty_database_url)

    names = [m.name for m in shipped_migrations()]
    assert first.returncode == 0, first.stderr
    assert re.findall(r"^applied (\S+) in \d+ ms$", first.stdout, re.MULTILINE) == names
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "nothing to apply: the schema is up to date"
    assert _versions(empty_database_url) == [m.version for m in shipped_migrations()]


def test_logs_are_json_lines_when_stderr_is_not_a_terminal(empty_database_url: str) -> None:
    result = websurf("migrate", "--database-url", empty_database_url)

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records
    assert all(isinstance(r, dict) and r.get("event") for r in records)
    applied = [r["file"] for r in records if r["event"] == "migration_applied"]
    assert applied == [m.name for m in shipped_migrations()]


def test_status_lists_pending_then_applied_files_with_exit_codes(
    empty_database_url: str,
) -> None:
    names = [m.name for m in shipped_migrations()]

    before = websurf("migrate", "status", "--database-url", empty_database_url)
    websurf("migrate", "--database-url", empty_database_url)
    after = websurf("migrate", "--database-url", empty_database_url, "status")

    assert before.returncode == 1, before.stderr
    assert re.findall(r"^pending  (\S+)$", before.stdout, re.MULTILINE) == names
    assert f"{len(names)} pending: run `websurf migrate`" in before.stdout
    assert after.returncode == 0, after.stderr
    assert re.findall(r"^applied  (\S+)  \d{4}-\d\d-\d\d ", after.stdout, re.MULTILINE) == names
    assert "pending" not in after.stdout


def test_dry_run_prints_pending_files_and_changes_nothing(empty_database_url: str) -> None:
    before = _catalog(empty_database_url)

    result = websurf("migrate", "--dry-run", "--database-url", empty_database_url)

    assert result.returncode == 0, result.stderr
    assert re.findall(r"^would apply (\S+)", result.stdout, re.MULTILINE) == [
        m.name for m in shipped_migrations()
    ]
    assert _catalog(empty_database_url) == before
    status = websurf("migrate", "status", "--database-url", empty_database_url)
    assert status.returncode == 1


def test_dry_run_on_an_up_to_date_database_says_so(database_url: str) -> None:
    result = websurf("migrate", "--dry-run", "--database-url", database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nothing to apply: the schema is up to date"


def test_edited_file_is_refused_by_name_and_nothing_is_applied(database_url: str) -> None:
    first, last = shipped_migrations()[0], shipped_migrations()[-1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        # As if the shipped file had been edited since it was applied, and the last
        # file were new: the refusal must come before anything is applied.
        conn.execute(
            "UPDATE websurf.schema_migrations SET checksum = repeat('0', 64) WHERE version = %s",
            (first.version,),
        )
        conn.execute("DELETE FROM websurf.schema_migrations WHERE version = %s", (last.version,))

    result = websurf("migrate", "--database-url", database_url)
    status = websurf("migrate", "status", "--database-url", database_url)

    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"error: {first.name} was edited after it was applied (its checksum no longer matches);"
        " applied migrations are immutable: revert the edit and add a new migration file"
    ]
    assert last.version not in _versions(database_url)
    assert status.returncode == 1
    assert f"CHANGED  {first.name}  (edited after it was applied)" in status.stdout


def test_failing_file_is_rolled_back_named_and_exits_non_zero(
    empty_database_url: str, databases: Any
) -> None:
    shipped = shipped_migrations()
    failing = next(m for m in shipped if "CREATE FUNCTION websurf.touch_updated_at" in m.text)
    earlier = [m for m in shipped if m.version < failing.version]
    # Someone else's function in the way makes that file fail part-way through. (A table
    # in the way is a case for adoption instead: tests/migrations/test_adopt.py.)
    conflict = (
        "CREATE SCHEMA websurf;"
        " CREATE FUNCTION websurf.touch_updated_at() RETURNS int LANGUAGE sql AS 'SELECT 1'"
    )
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(conflict)
    # The same database as it should look afterwards: only the earlier files applied.
    expected_url = databases.url(databases.create())
    with psycopg.connect(expected_url, autocommit=True) as conn:
        conn.execute(conflict)
        migrate(conn, shipped=earlier)

    result = websurf("migrate", "--database-url", empty_database_url)

    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"error: {failing.name} failed and was rolled back:"
        ' function "touch_updated_at" already exists with same argument types'
    ]
    assert _versions(empty_database_url) == [m.version for m in earlier]
    assert _catalog(empty_database_url) == _catalog(expected_url)


def test_concurrent_runs_are_serialised_and_apply_each_file_once(
    empty_database_url: str,
) -> None:
    runs = 5
    dbname = psycopg.conninfo.conninfo_to_dict(empty_database_url)["dbname"]
    with psycopg.connect(empty_database_url, autocommit=True) as holder:
        # Hold the migration lock so that every process is started and waiting on it
        # before any of them can apply anything.
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        processes = [
            subprocess.Popen(
                [WEBSURF, "migrate", "--database-url", empty_database_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=clean_env(),
            )
            for _ in range(runs)
        ]
        try:

            def all_waiting() -> bool:
                # The runs poll for the lock between statements (a session blocked
                # inside pg_advisory_lock would deadlock a CREATE INDEX CONCURRENTLY),
                # so "waiting" means: connected, and the lock seen taken at least once.
                row = holder.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = %s AND application_name = 'websurf'"
                    " AND query LIKE '%%pg_try_advisory_lock%%'",
                    (dbname,),
                ).fetchone()
                return bool(row and row[0] == runs)

            wait_for(all_waiting, f"{runs} migrate processes to wait on the lock", DEADLINE_S)
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            outputs = [p.communicate(timeout=60) for p in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()

    assert [p.returncode for p in processes] == [0] * runs, [err for _, err in outputs]
    applied = re.findall(r"^applied (\S+)", "".join(out for out, _ in outputs), re.MULTILINE)
    assert sorted(applied) == [m.name for m in shipped_migrations()]
    nothing = [out for out, _ in outputs if out.startswith("nothing to apply")]
    assert len(nothing) == runs - 1
    assert _versions(empty_database_url) == [m.version for m in shipped_migrations()]


def test_unreachable_database_is_one_line_naming_host_and_port_without_password() -> None:
    started = time.monotonic()

    result = websurf(
        "migrate",
        "--connect-retry",
        "0.5",
        "--database-url",
        "postgresql://postgres:s3cret@127.0.0.1:1/x",
    )

    assert result.returncode == 3
    errors = error_lines(result.stderr)
    assert len(errors) == 1
    assert errors[0].startswith("error: cannot reach PostgreSQL at 127.0.0.1:1/x")
    assert "s3cret" not in result.stderr + result.stdout
    assert time.monotonic() - started < 8  # the default retry budget is 10 s


def test_connect_retry_budget_can_come_from_the_environment() -> None:
    env = clean_env() | {"WEBSURF_CONNECT_RETRY": "0.2", "WEBSURF_LOG_LEVEL": "error"}

    result = subprocess.run(
        [WEBSURF, "migrate", "status", "--database-url", "postgresql://u:s3cret@127.0.0.1:1/x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 3
    assert len(result.stderr.splitlines()) == 1  # at level error, only the error itself
    assert "after 0.2s" in result.stderr
    assert "s3cret" not in result.stderr


def test_unparseable_database_url_is_one_line_without_a_traceback() -> None:
    result = websurf(
        "migrate", "--log-level", "error", "--database-url", "host=127.0.0.1 password=s3 cret"
    )

    assert result.returncode == 3
    assert len(result.stderr.splitlines()) == 1
    assert "not a valid PostgreSQL connection string" in result.stderr
    assert "cret" not in result.stderr


def test_database_error_outside_a_migration_file_is_one_line(empty_database_url: str) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        # Another tool's bookkeeping table where websurf keeps its own.
        conn.execute("CREATE SCHEMA websurf")
        conn.execute("CREATE TABLE websurf.schema_migrations (id serial PRIMARY KEY)")

    result = websurf("migrate", "--database-url", empty_database_url)

    assert result.returncode == 1
    assert error_lines(result.stderr) == ['error: database error: column "version" does not exist']


@pytest.mark.parametrize("command", [["migrate"], ["migrate", "status"]])
def test_help_shows_the_connect_retry_default_and_variable(command: list[str]) -> None:
    result = websurf(*command, "--help")

    assert result.returncode == 0
    assert "--connect-retry" in result.stdout
    assert "WEBSURF_CONNECT_RETRY" in result.stdout
