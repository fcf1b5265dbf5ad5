"""Through a real PgBouncer in transaction mode (conftest ``pgbouncer``): what breaks there,
and that websurf's connections, locks and settings do not.

Skipped with a reason where the ``pgbouncer`` binary is missing.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import conninfo
from support.daemon import WEBSURF, clean_env, error_lines

from websurf.sql.database import (
    apply_settings,
    connect,
    pooler_between,
    resolve_paths,
    set_up_session,
    with_settings,
)
from websurf.worker.maintenance import pruner, reaper

CLAIM_SETTINGS = {"synchronous_commit": "off"}
WEEK = timedelta(days=7)


def websurf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WEBSURF, *args], capture_output=True, text=True, env=clean_env(), timeout=60, check=False
    )


def interleave(urls: list[str], statement: str, times: int, **kwargs: Any) -> None:
    """Run ``statement`` ``times`` times on each of several connections, taking turns."""
    conns = [psycopg.connect(url, autocommit=True, **kwargs) for url in urls]
    try:
        for i in range(times):
            for conn in conns:
                conn.execute(statement, (i,))
    finally:
        for conn in conns:
            conn.close()


def test_a_pooler_is_seen_and_a_direct_server_is_not(database_url: str, pgbouncer: Any) -> None:
    with psycopg.connect(pgbouncer.url(database_url), autocommit=True) as pooled:
        assert pooler_between(pooled)
    with psycopg.connect(database_url, autocommit=True) as direct:
        assert not pooler_between(direct)


def test_the_pooler_breaks_prepared_statements_and_websurf_connections_do_not_use_them(
    database_url: str, pgbouncer: Any
) -> None:
    url = pgbouncer.url(database_url)
    with pytest.raises(
        (psycopg.errors.DuplicatePreparedStatement, psycopg.errors.InvalidSqlStatementName)
    ):
        interleave([url] * 3, "SELECT %s::int", 20)  # psycopg's default: prepared at the 5th

    conns = [connect(url, autocommit=True) for _ in range(3)]  # commands' connections
    try:
        for i in range(20):
            for conn in conns:
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    finally:
        for conn in conns:
            conn.close()


def test_claim_settings_hold_through_the_pooler_and_go_with_the_transaction(
    database_url: str, pgbouncer: Any
) -> None:
    settings = CLAIM_SETTINGS | {"lock_timeout": "1234ms"}  # the server's default: 0
    with psycopg.connect(pgbouncer.url(database_url), autocommit=True) as conn:
        set_up_session(conn, settings, pooled=True)
        for _ in range(10):
            with with_settings(conn, settings, pooled=True):
                cur = conn.execute(
                    "SELECT current_setting('synchronous_commit'), current_setting('lock_timeout')"
                )
            assert cur.fetchone() == ("off", "1234ms")
        # nothing stays on the server connection the next client gets
        assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)

    with psycopg.connect(database_url, autocommit=True) as direct:
        set_up_session(direct, settings, pooled=False)
        with with_settings(direct, settings, pooled=False):
            assert direct.execute("SHOW lock_timeout").fetchone() == ("1234ms",)


def test_pgbouncer_refuses_startup_options_which_websurf_no_longer_sends(
    database_url: str, pgbouncer: Any
) -> None:
    url = pgbouncer.url(database_url)
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(url, options="-c synchronous_commit=off")
    with psycopg.connect(url, autocommit=True) as conn:
        apply_settings(conn, {}, local=True)  # nothing to set: no statement at all
        assert conn.execute("SELECT 1").fetchone() == (1,)


def _advisory_locks(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_reaper_and_pruner_run_through_the_pooler_and_leave_no_lock_behind(
    database_url: str, pgbouncer: Any
) -> None:
    with psycopg.connect(database_url, autocommit=True) as direct:
        direct.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, status, worker_id, attempts,"
            " started_at) VALUES ('noop', '{}', 'processing', 'gone/0/dead', 1, now())"
        )
        direct.execute(
            "INSERT INTO websurfing_task_queue (task_type, payload, status, created_at,"
            " updated_at, completed_at) SELECT 'noop', '{}', 'completed', now() - interval '30d',"
            " now() - interval '30d', now() - interval '30d' FROM generate_series(1, 25)"
        )
    with connect(pgbouncer.url(database_url), autocommit=True) as pooled:
        reaped = reaper.run_once(pooled, {})
        pruned = pruner.run_once(pooled, WEEK, batch_size=10)
        again = pruner.run_once(pooled, WEEK, batch_size=10)

    assert reaped.ran and reaped.handed_back == 1
    assert pruned.ran and pruned.deleted == 25 and pruned.batches >= 3
    assert again.ran and again.deleted == 0  # not shut out by a lock left on a server
    assert _advisory_locks(database_url) == 0


def test_migrate_through_the_pooler_needs_the_direct_url(
    empty_database_url: str, pgbouncer: Any
) -> None:
    pooled = pgbouncer.url(empty_database_url)

    refused = websurf("migrate", "--database-url", pooled, "--log-format", "json")

    assert refused.returncode == 2
    [line] = error_lines(refused.stderr)  # one line for a person
    assert "connection pooler" in line and "--direct-database-url" in line
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('websurf.schema_migrations')").fetchone() == (None,)

    applied = websurf(
        "migrate", "--database-url", pooled, "--direct-database-url", empty_database_url
    )
    assert applied.returncode == 0, applied.stderr
    assert "applied 0001_" in applied.stdout
    status = websurf("migrate", "status", "--database-url", pooled)  # read-only: fine pooled
    assert status.returncode == 0, status.stderr
    assert _advisory_locks(empty_database_url) == 0


def test_a_direct_url_that_goes_through_a_pooler_too_is_warned_about(
    database_url: str, pgbouncer: Any
) -> None:
    pooled = pgbouncer.url(database_url)

    result = websurf(
        "migrate", "--database-url", pooled, "--direct-database-url", pooled, "--log-format", "json"
    )

    assert result.returncode == 0, result.stderr
    assert "direct_url_through_pooler" in result.stderr


def test_direct_url_is_read_from_direct_url_like_prisma_and_supabase(
    database_url: str, pgbouncer: Any
) -> None:
    pooled = pgbouncer.url(database_url)
    env = clean_env(DATABASE_URL=pooled, DIRECT_URL=database_url)

    result = subprocess.run(
        [WEBSURF, "status", "--json"], capture_output=True, text=True, env=env, timeout=60
    )

    assert result.returncode == 0, result.stderr
    routes = json.loads(result.stdout)["connections"]
    dbname = conninfo.conninfo_to_dict(database_url)["dbname"]
    assert (
        routes["tasks"] == f"127.0.0.1:{pgbouncer.port}/{dbname} (pooled: prepared statements off)"
    )
    assert routes["listen_and_migrations"].endswith(f"/{dbname} (direct)")
    assert str(pgbouncer.port) not in routes["listen_and_migrations"]


def test_status_says_which_path_each_kind_of_connection_takes(
    database_url: str, pgbouncer: Any
) -> None:
    pooled = pgbouncer.url(database_url)

    through_pooler = websurf("status", "--database-url", pooled, "--log-format", "json")
    direct_only = websurf("status", "--database-url", database_url)

    assert through_pooler.returncode == 0, through_pooler.stderr
    assert "pooler_detected" in through_pooler.stderr
    text = through_pooler.stdout
    assert f"tasks                  127.0.0.1:{pgbouncer.port}/" in text
    assert "(through the pooler: LISTEN hears nothing, set a direct URL)" in text
    assert direct_only.returncode == 0, direct_only.stderr
    assert "pooled" not in direct_only.stdout and "(direct)" in direct_only.stdout


def test_a_direct_url_without_the_main_one_is_refused_in_one_line(database_url: str) -> None:
    result = websurf("status", "--direct-database-url", database_url)

    assert result.returncode == 2
    assert len(error_lines(result.stderr)) == 1
    assert "no --database-url" in result.stderr


def test_paths_seen_from_a_pooled_and_a_direct_connection(
    database_url: str, pgbouncer: Any
) -> None:
    url = pgbouncer.url(database_url)
    with psycopg.connect(url, autocommit=True) as conn:
        paths = resolve_paths(conn, url, None)
    assert paths.pooled and paths.detected and paths.session_url == url
    with psycopg.connect(database_url, autocommit=True) as conn:
        direct = resolve_paths(conn, database_url, None)
    assert not direct.pooled
    assert not direct.routes()["tasks"].endswith("off)")
