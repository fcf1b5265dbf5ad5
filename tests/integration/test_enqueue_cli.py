"""``websurf enqueue`` run as a real command, as a script or a person would."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from support.daemon import WEBSURF, clean_env, error_lines

from websurf.sql import QUERIES


def enqueue(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WEBSURF, "enqueue", "--database-url", database_url, "--log-format", "json", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


def _task(conn: psycopg.Connection[Any], task_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(QUERIES["get_task"], {"id": task_id}).fetchone()
    assert row is not None
    return row


def _task_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM websurfing_task_queue").fetchone()
    assert row is not None
    return int(row[0])


def test_enqueue_prints_the_id_of_the_new_task(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    done = enqueue(database_url, "noop", "--payload", '{"a": 1}')

    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    uuid.UUID(task_id)
    row = _task(conn, task_id)
    assert (row["task_type"], row["payload"], row["status"]) == ("noop", {"a": 1}, "pending")
    assert (row["priority"], row["max_attempts"]) == (5, 3)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [("[1]", "must be a JSON object, not list"), ("nope", "not valid JSON")],
)
def test_payload_that_is_not_a_json_object_is_refused(
    database_url: str, conn: psycopg.Connection[Any], payload: str, reason: str
) -> None:
    done = enqueue(database_url, "noop", "--payload", payload)

    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert line.startswith("error: --payload ")
    assert reason in line
    assert done.stdout == ""
    assert _task_count(conn) == 0


def test_unknown_type_is_refused_unless_allowed(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    refused = enqueue(database_url, "fetch_weather", "--payload", "{}")

    assert refused.returncode == 2
    [line] = error_lines(refused.stderr)
    assert line.startswith("error: ")
    assert "'fetch_weather'" in line and "noop" in line
    assert _task_count(conn) == 0

    allowed = enqueue(database_url, "fetch_weather", "--allow-unknown-type")
    assert allowed.returncode == 0, allowed.stderr
    assert _task(conn, allowed.stdout.strip())["payload"] == {}


def test_delay_schedules_the_task_later(database_url: str, conn: psycopg.Connection[Any]) -> None:
    before = datetime.now(UTC)
    done = enqueue(database_url, "noop", "--delay", "30s")

    assert done.returncode == 0, done.stderr
    due = _task(conn, done.stdout.strip())["scheduled_for"]
    assert before + timedelta(seconds=29) <= due <= datetime.now(UTC) + timedelta(seconds=31)


def test_at_schedules_the_task_at_that_time(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    done = enqueue(database_url, "noop", "--at", "2031-05-06T07:08:09+02:00")

    assert done.returncode == 0, done.stderr
    due = _task(conn, done.stdout.strip())["scheduled_for"]
    assert due == datetime(2031, 5, 6, 5, 8, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--at", "2031-05-06T07:08:09"], "--at needs a time zone"),
        (["--at", "tomorrow"], "not an ISO 8601 time"),
        (["--delay", "soon"], "--delay 'soon' is not a duration"),
        (["--delay", "5s", "--at", "2031-05-06T07:08:09+00:00"], "not both"),
    ],
)
def test_bad_times_are_refused(
    database_url: str, conn: psycopg.Connection[Any], args: list[str], reason: str
) -> None:
    done = enqueue(database_url, "noop", *args)

    assert done.returncode == 2
    [line] = error_lines(done.stderr)
    assert line.startswith("error: ") and reason in line
    assert _task_count(conn) == 0


def test_max_attempts_and_priority_are_stored(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    done = enqueue(database_url, "noop", "--max-attempts", "7", "--priority", "9")

    assert done.returncode == 0, done.stderr
    row = _task(conn, done.stdout.strip())
    assert (row["max_attempts"], row["priority"]) == (7, 9)


def test_max_attempts_below_one_is_refused(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    done = enqueue(database_url, "noop", "--max-attempts", "0")

    assert done.returncode == 2
    assert "--max-attempts" in done.stderr
    assert _task_count(conn) == 0


def test_a_unique_key_coalesces_into_the_pending_task(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    first = enqueue(database_url, "noop", "--payload", '{"v": 1}', "--unique-key", "k")
    second = enqueue(database_url, "noop", "--payload", '{"v": 2}', "--unique-key", "k")

    assert first.returncode == second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    assert _task(conn, first.stdout.strip())["payload"] == {"v": 2}
    assert _task_count(conn) == 1
