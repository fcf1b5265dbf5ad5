"""Where the database is, and that its password never shows in logs or errors."""

from __future__ import annotations

import time

import pytest

from websurf.sql.database import (
    DatabaseTarget,
    DatabaseUnavailable,
    InvalidDatabaseUrl,
    configured_url,
    connect,
    describe,
    redact,
    scrub,
)

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
