"""Careless input at the command line: one clear line, a non-zero exit, nothing written.

What a user would notice: a payload websurf cannot store, a number out of range, a
name too long, a row past the bound, a session input that is not an object: each gets
one ``error: …`` line (no traceback) and leaves the database as it was. And a sheet
with a cell far down is read one page at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from websurf.cli.main import cli
from websurf.worker.app import sheets

WEBSURF = str(Path(sys.executable).with_name("websurf"))
LONG_NAME = "n" * 256
# Bytes that are not UTF-8 in argv reach Python as lone surrogates (os.fsdecode).
UNDECODABLE = b"caf\xe9".decode("utf-8", "surrogateescape")
NO_SESSION = "00000000-0000-4000-8000-000000000000"
EVERY_MINUTE = ["--every", "1m"]
ROBOT_COLUMN = ["set-operator", "{sheet}", "B", "uppercase", "--source", "A"]
SCHEDULES = "SELECT count(*) FROM websurf.schedule"
COLUMNS = "SELECT title, operator_type FROM websurfing_column ORDER BY 1"
COUNTED = (
    "websurfing_task_queue",
    "websurfing_spreadsheet",
    "websurfing_column",
    "websurfing_cell",
    "websurfing_cell_edit_event",
    "websurfing_transformer_session",
)


def _counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts = {}
    for table in COUNTED:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 (constants)
        assert row is not None
        counts[table] = row[0]
    return counts


def _refused(database_url: str, conn: psycopg.Connection[Any], args: list[str]) -> str:
    """Run ``websurf ARGS`` in-process; check the one-line refusal; return the line."""
    return _refusal(database_url, conn, args)[0]


def _refusal(database_url: str, conn: psycopg.Connection[Any], args: list[str]) -> tuple[str, int]:
    """Run ``websurf ARGS`` in-process; check the one-line refusal; the line and exit code."""
    before = _counts(conn)
    group, *rest = args
    command = [group, *rest[:1], "--database-url", database_url, *rest[1:]]
    if group in ("enqueue", "prune", "status", "migrate"):
        command = [group, "--database-url", database_url, *rest]
    result = CliRunner().invoke(cli, command)

    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert _counts(conn) == before
    return lines[0], result.exit_code


def _run_websurf(*args: bytes) -> tuple[int, list[str]]:
    """Run the real ``websurf`` with these argv bytes: its exit code and its error lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSURF_")}
    done = subprocess.run(
        [WEBSURF.encode(), *args], capture_output=True, env=env, timeout=60, check=False
    )
    lines = done.stderr.decode(errors="replace").splitlines()
    return done.returncode, [line for line in lines if line[:1] != "{"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('{"a": "x\\u0000y"}', "contains \\u0000"),
        ('{"a": NaN}', "has NaN"),
        ('{"a": -Infinity}', "has -Infinity"),
        ('{"a": 1e400}', "has the number 1e400, out of range"),
        ('{"a": ' + "9" * 4400 + "}", "integer of 4400 digits"),
        ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nested more than 64 levels"),
        ('{"a": ' + "[" * 150 + "]" * 150 + "}", "nested more than 64 levels"),
        ('{"a": "\\ud800"}', "lone surrogate"),
        ("[1]", "must be a JSON object, not list"),
    ],
)
def test_payloads_websurf_cannot_store_are_refused(
    database_url: str, conn: psycopg.Connection[Any], payload: str, reason: str
) -> None:
    line = _refused(database_url, conn, ["enqueue", "noop", "--payload", payload])
    assert line.startswith("error: --payload ") and reason in line


def test_undecodable_bytes_in_the_payload_argument_are_refused(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates (a real process's argv)."""
    code, errors = _run_websurf(
        *(b"enqueue", b"--database-url", database_url.encode(), b"noop"),
        *(b"--payload", b'{"a": "\xff"}', b"--log-format", b"json"),
    )
    assert code == 2
    assert len(errors) == 1 and "lone surrogate" in errors[0]
    assert _counts(conn)["websurfing_task_queue"] == 0


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["enqueue", "noop", "--priority", str(2**31)], "--priority must be between"),
        (["enqueue", "noop", "--priority", str(-(2**31) - 1)], "--priority must be between"),
        (["enqueue", "noop", "--max-attempts", str(2**31)], "--max-attempts must be between"),
        (["enqueue", "noop", "--max-attempts", "0"], "--max-attempts must be between"),
        (["enqueue", "noop", "--delay", "999999999d"], "longer than 36500d"),
        (["enqueue", "noop", "--delay", "99999999999999999999d"], "longer than 36500d"),
        (["prune", "--older-than", "99999999999d"], "--older-than '99999999999d' is longer"),
        (["sessions", "start", "word_stats", "--input", "[1]"], "must be a JSON object"),
        (["sessions", "start", "word_stats", "--input", '{"t": NaN}'], "--input has NaN"),
    ],
)
def test_out_of_range_options_are_refused(
    database_url: str, conn: psycopg.Connection[Any], args: list[str], reason: str
) -> None:
    assert reason in _refused(database_url, conn, args)


@pytest.fixture
def sheet(conn: psycopg.Connection[Any], make_user: Callable[..., str]) -> sheets.Spreadsheet:
    return sheets.create_spreadsheet(conn, make_user(), "S", columns=2, rows=2)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["create", LONG_NAME, "--owner", "{owner}"], "at most 255 characters, not 256"),
        (["add-column", "{sheet}", LONG_NAME], "at most 255 characters"),
        (["rename-column", "{sheet}", "A", LONG_NAME], "at most 255 characters"),
        (["edit", "{sheet}", "A", "2000000000", "x", "--user", "{owner}"], "1 to 1000000"),
        (["edit", "{sheet}", "A", "0", "x", "--user", "{owner}"], "1 to 1000000"),
        (["edit", "{sheet}", "A", "1", "x", "--user", "{owner}", "--edit-type", "e" * 51], "50"),
        ([*ROBOT_COLUMN, "--options", "[1]"], "must be a JSON object"),
        ([*ROBOT_COLUMN, "--options", '{"a": 1e999}'], "out of range"),
    ],
)
def test_bad_sheet_input_is_refused(
    database_url: str,
    conn: psycopg.Connection[Any],
    sheet: sheets.Spreadsheet,
    args: list[str],
    reason: str,
) -> None:
    filled = [a.replace("{sheet}", str(sheet.id)).replace("{owner}", sheet.owner_id) for a in args]
    before = conn.execute(COLUMNS).fetchall()
    assert reason in _refused(database_url, conn, ["sheets", *filled])
    assert conn.execute(COLUMNS).fetchall() == before


def test_a_sheet_is_read_one_page_at_a_time_however_far_down_its_last_cell(
    database_url: str, conn: psycopg.Connection[Any], sheet: sheets.Spreadsheet
) -> None:
    a, _b = sheets.list_columns(conn, sheet.id)
    sheets.edit_cell(conn, sheet.id, a.id, 3, "near", user_id=sheet.owner_id)
    sheets.edit_cell(conn, sheet.id, a.id, sheets.MAX_ROW_NUMBER, "far", user_id=sheet.owner_id)

    first = sheets.read_sheet(conn, sheet.id)
    last = sheets.read_sheet(conn, sheet.id, first_row=sheets.MAX_ROW_NUMBER - 1, rows=10)
    shown = CliRunner().invoke(
        cli, ["sheets", "show", str(sheet.id), "--database-url", database_url, "--rows", "5"]
    )

    assert (len(first.rows), first.first_row, first.last_row) == (100, 1, 1_000_000)
    assert first.cell(3, "A") == "near"
    assert [r[0] for r in last.rows] == [None, "far"]  # the page ends at the last row
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[-1] == "rows 1-5 of 1000000" and len(lines) == 3 + 5 + 1


def test_add_column_on_a_long_sheet_writes_no_cells(
    conn: psycopg.Connection[Any], sheet: sheets.Spreadsheet
) -> None:
    a, _b = sheets.list_columns(conn, sheet.id)
    sheets.edit_cell(conn, sheet.id, a.id, 900_000, "far", user_id=sheet.owner_id)
    before = _counts(conn)["websurfing_cell"]

    added = sheets.add_column(conn, sheet.id, "C")

    assert _counts(conn)["websurfing_cell"] == before
    page = sheets.read_sheet(conn, sheet.id, first_row=900_000, rows=1)
    assert [c.id for c in page.columns][-1] == added.id
    assert page.rows == [["far", None, None]]


@pytest.mark.parametrize(
    ("args", "named", "exit_code"),
    [
        (["enqueue", UNDECODABLE], "TASK_TYPE contains a lone surrogate", 2),
        (["enqueue", "noop", "--unique-key", UNDECODABLE], "--unique-key contains a lone", 2),
        (["enqueue", "noop", "--unique-key", "k" * 10_000], "--unique-key is 10000 characters", 2),
        (["tasks", "list", "--type", UNDECODABLE], "--type contains a lone surrogate", 2),
        (["schedules", "add", UNDECODABLE, "noop", *EVERY_MINUTE], "NAME contains a lone", 2),
        (["schedules", "add", "n", UNDECODABLE, *EVERY_MINUTE], "TASK_TYPE contains a lone", 2),
        (
            ["schedules", "add", "n", "noop", "--every", "0.0001s"],
            "--every '0.0001s' is shorter",
            2,
        ),
        (["schedules", "add", "n", "noop", "--cron", UNDECODABLE], "--cron contains a lone", 2),
        (["schedules", "add", "n", "noop", "--timezone", UNDECODABLE], "--timezone contains", 2),
        (
            ["schedules", "add", "n", "noop", *EVERY_MINUTE, "--priority", str(2**31)],
            "--priority 2147483648 is not in the range",
            2,
        ),
        (
            ["schedules", "add", "n", "noop", *EVERY_MINUTE, "--payload", "[" * 5000 + "]" * 5000],
            "--payload is nested more than 64 levels",
            2,
        ),
        (
            ["schedules", "add", "n", "noop", *EVERY_MINUTE, "--payload", '{"a": "\\udcff"}'],
            "--payload contains a lone surrogate",
            2,
        ),
        (["schedules", "pause", UNDECODABLE], "NAME contains a lone surrogate", 2),
        (["schedules", "resume", UNDECODABLE], "NAME contains a lone surrogate", 2),
        (["schedules", "remove", UNDECODABLE], "NAME contains a lone surrogate", 2),
        (["sheets", "create", UNDECODABLE, "--owner", "{owner}"], "NAME contains a lone", 2),
        (["sheets", "create", "S", "--owner", UNDECODABLE], "--owner contains a lone", 2),
        (["sheets", "list", "--owner", UNDECODABLE], "--owner contains a lone surrogate", 2),
        (
            ["sheets", "edit", "{sheet}", "A", "1", UNDECODABLE, "--user", "{owner}"],
            "CONTENT contains a lone surrogate",
            2,
        ),
        (
            ["sheets", "edit", "{sheet}", UNDECODABLE, "1", "x", "--user", "{owner}"],
            "COLUMN contains a lone surrogate",
            2,
        ),
        (
            ["sheets", "edit", "{sheet}", "A", "1", "x", "--user", "{owner}", "--edit-type", "\0"],
            "--edit-type contains \\u0000",
            2,
        ),
        (["sessions", "resume", UNDECODABLE], "SESSION_ID contains a lone surrogate", 2),
        (["sessions", "resume", NO_SESSION, "--input", UNDECODABLE], "--input contains a", 2),
        (["status", "--window", "NaN"], "--window NaN is not a number", 2),
        (["status", "--window", "inf"], "--window inf is not in the range", 2),
        (["migrate", "--lock-timeout", "NaN"], "--lock-timeout NaN is not a number", 2),
        (["migrate", "--lock-timeout", "-inf"], "--lock-timeout -inf is not a finite", 2),
        (["tasks", "list", "--limit", "0"], "--limit 0 is not in the range", 2),
        (["enqueue"], "Missing argument 'TASK_TYPE'", 2),
    ],
)
def test_text_numbers_and_durations_websurf_cannot_use_are_refused_naming_the_option(
    database_url: str,
    conn: psycopg.Connection[Any],
    sheet: sheets.Spreadsheet,
    args: list[str],
    named: str,
    exit_code: int,
) -> None:
    filled = [a.replace("{sheet}", str(sheet.id)).replace("{owner}", sheet.owner_id) for a in args]
    schedules_before = conn.execute(SCHEDULES).fetchone()

    line, code = _refusal(database_url, conn, filled)

    assert named in line and code == exit_code
    assert conn.execute(SCHEDULES).fetchone() == schedules_before


@pytest.mark.parametrize("args", [[], ["sheets"], ["tasks"]])
def test_a_command_group_without_a_command_shows_its_help(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, prog_name="websurf")

    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: websurf") and "Commands:" in result.stderr
    assert "error:" not in result.stderr


def test_undecodable_bytes_in_a_name_are_refused_by_the_real_command(
    database_url: str, conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    code, errors = _run_websurf(
        *(b"sheets", b"create", b"caf\xe9", b"--owner", make_user().encode()),
        *(b"--database-url", database_url.encode()),
    )
    assert code == 2
    assert errors == ["error: NAME contains a lone surrogate (not valid Unicode)"]
    assert _counts(conn)["websurfing_spreadsheet"] == 0
