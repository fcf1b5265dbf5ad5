"""Where the database is, and that its password never shows in logs or errors."""

from __future__ import annotations

import json
import time

import pytest

from websurf.sql.database import (
    DatabaseTarget,
    DatabaseUnavailable,
    InvalidDatabaseUrl,
    Paths,
    configured_direct_url,
    configured_url,
    connect,
    connect_kwargs,
    describe,
    load_json,
    redact,
    scrub,
    session_url,
)
from websurf.worker.config import WorkerConfig

# (connection string, the password as it might appear in text, a fragment that must survive)
PASSWORD_FORMS = [
    ("postgresql://alice:s3cret@db.example:6543/app", "s3cret", "db.example"),
    ("postgres://alice:s3cret@db.example/app?sslmode=require", "s3cret", "sslmode"),
    ("postgresql://alice@db.example/app?password=s3cret", "s3cret", "alice"),
    ("postgresql://alice:s3%40cret@db.example/app", "s3@cret", "app"),
    ("postgresql://alice:s3%40cret@db.example/app", "s3%40cret", "app"),
    ("host=db.example user=alice password=s3cret dbname=app", "s3cret", "db.example"),
    ("host=db.example password='s3 cret' dbname=app", "cret", "db.example"),
    ("host=db.example password = s3cret port=6543", "s3cret", "6543"),
]


@pytest.fixture
def no_database_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("WEBSURF_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("WEBSURF_DIRECT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DIRECT_URL", raising=False)
    return monkeypatch


def test_option_wins_over_environment(no_database_env: pytest.MonkeyPatch) -> None:
    no_database_env.setenv("WEBSURF_DATABASE_URL", "postgresql://env-websurf/db")
    no_database_env.setenv("DATABASE_URL", "postgresql://env-generic/db")

    assert configured_url("postgresql://option/db") == DatabaseTarget(
        "postgresql://option/db", "option"
    )


def test_websurf_variable_wins_over_database_url(no_database_env: pytest.MonkeyPatch) -> None:
    no_database_env.setenv("WEBSURF_DATABASE_URL", "postgresql://env-websurf/db")
    no_database_env.setenv("DATABASE_URL", "postgresql://env-generic/db")

    target = configured_url(None)

    assert target == DatabaseTarget("postgresql://env-websurf/db", "WEBSURF_DATABASE_URL")


def test_database_url_is_the_last_resort(no_database_env: pytest.MonkeyPatch) -> None:
    no_database_env.setenv("DATABASE_URL", "postgresql://env-generic/db")

    assert configured_url(None) == DatabaseTarget("postgresql://env-generic/db", "DATABASE_URL")


def test_nothing_configured_means_the_embedded_default(
    no_database_env: pytest.MonkeyPatch,
) -> None:
    no_database_env.setenv("WEBSURF_DATABASE_URL", "")

    assert configured_url(None) is None


@pytest.mark.parametrize(("url", "password", "kept"), PASSWORD_FORMS)
def test_redact_drops_the_password_and_keeps_the_rest(url: str, password: str, kept: str) -> None:
    redacted = redact(url)

    assert password not in redacted
    assert kept in redacted
    assert DatabaseTarget(url, "option").safe == redacted


@pytest.mark.parametrize("url", ["host=db password=s3cret oops", "postgresql://a:s3cret@[::1"])
def test_redact_of_an_unparseable_string_shows_none_of_it(url: str) -> None:
    assert "s3cret" not in redact(url)


@pytest.mark.parametrize(("url", "password", "kept"), PASSWORD_FORMS)
def test_describe_names_host_port_and_database_only(url: str, password: str, kept: str) -> None:
    described = describe(url)

    assert password not in described
    assert "alice" not in described
    assert described.startswith("db.example:")


def test_describe_fills_in_libpq_defaults() -> None:
    assert describe("postgresql://alice:s3cret@db.example/app") == "db.example:5432/app"
    assert describe("host=10.0.0.7 port=6543 dbname=app password=x") == "10.0.0.7:6543/app"


def test_scrub_removes_the_password_from_any_message() -> None:
    url = "postgresql://alice:hunter2@db.example/app"

    scrubbed = scrub("could not connect with hunter2 (hunter2)", url)

    assert "hunter2" not in scrubbed
    assert scrubbed == "could not connect with **** (****)"


def test_unreachable_database_gives_up_after_the_budget_without_the_password() -> None:
    started = time.monotonic()

    with pytest.raises(DatabaseUnavailable) as raised:
        connect("postgresql://alice:s3cret@127.0.0.1:1/app", retry_for_s=0.3)

    message = str(raised.value)
    assert "127.0.0.1:1/app" in message
    assert "s3cret" not in message
    assert "\n" not in message
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "url", ["host=127.0.0.1 port=1 password=s3 cret", "postgresql://alice:s3cret@h:1/a?x=1&y"]
)
def test_unparseable_connection_string_is_refused_at_once_without_quoting_it(url: str) -> None:
    started = time.monotonic()

    with pytest.raises(InvalidDatabaseUrl) as raised:
        connect(url, retry_for_s=30)

    assert "cret" not in str(raised.value)
    assert "not a valid PostgreSQL connection string" in str(raised.value)
    assert time.monotonic() - started < 1


def test_direct_url_comes_from_the_option_then_websurf_then_prisma_s_name(
    no_database_env: pytest.MonkeyPatch,
) -> None:
    assert configured_direct_url(None) is None
    no_database_env.setenv("DIRECT_URL", "postgresql://prisma/db")
    assert configured_direct_url(None) == DatabaseTarget("postgresql://prisma/db", "DIRECT_URL")
    no_database_env.setenv("WEBSURF_DIRECT_DATABASE_URL", "postgresql://websurf/db")
    assert configured_direct_url(None) == DatabaseTarget(
        "postgresql://websurf/db", "WEBSURF_DIRECT_DATABASE_URL"
    )
    assert configured_direct_url("postgresql://o/db") == DatabaseTarget(
        "postgresql://o/db", "option"
    )


def test_sessions_take_the_direct_url_and_without_one_the_main_url() -> None:
    pooled, direct = "postgresql://pooler:6432/app", "postgresql://db:5432/app"

    assert session_url(WorkerConfig(pooled, direct_database_url=direct)) == direct
    assert session_url(WorkerConfig(pooled)) == pooled  # as before: one URL for everything


def test_pooled_connections_never_prepare_statements_and_direct_ones_keep_the_default() -> None:
    assert connect_kwargs(pooled=True) == {"prepare_threshold": None}
    assert connect_kwargs(pooled=False) == {}


def test_routes_name_each_path_without_the_password() -> None:
    pooled = "postgresql://alice:s3cret@pooler.example:6543/app"
    direct = "postgresql://alice:s3cret@db.example:5432/app"

    both = Paths(pooled, direct, pooled=True).routes()
    detected_only = Paths(pooled, None, pooled=True, detected=True).routes()

    assert both == {
        "tasks": "pooler.example:6543/app (pooled: prepared statements off)",
        "listen_and_migrations": "db.example:5432/app (direct)",
    }
    assert "through the pooler" in detected_only["listen_and_migrations"]
    assert "s3cret" not in str(both) + str(detected_only)


@pytest.mark.parametrize("text", ['{"a": 1} x', '{"a": 1', "", "  ", "NaN x", '{"a": 1}}'])
def test_json_the_server_could_never_send_fails_as_json_loads_fails(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        load_json(text.encode())
    assert str(got.value) == str(expected.value)
