"""Stored text cannot drive the terminal of the person reading websurf's output.

What a user would notice: a cell, a sheet name, a column title, a task's error or a
schedule name holding an escape sequence (OSC 52 writes the clipboard of whoever
prints it; CSI moves the cursor and clears the screen; a bidi override reorders what
follows) shows up as visible text, ``\\x1b]52;…``, in every human-readable command
that prints it, and the tables keep their columns.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from websurf.cli.main import cli
from websurf.cli.render import visible
from websurf.worker.app import sheets

OSC_52 = "\x1b]52;c;ZXZpbA==\x07"  # set the clipboard to "evil"
CLEAR = "\x1b[2J"
C1_CSI = "\x9b31m"  # the one-byte CSI of the C1 set
BIDI = "\u202e"  # right-to-left override
HOSTILE = f"x{OSC_52}{CLEAR}{C1_CSI}{BIDI}\r"


def _invisible(text: str) -> list[str]:
    """Characters a terminal acts on instead of showing (a line break is fine)."""
    return [
        c
        for c in text
        if c != "\n" and (unicodedata.category(c) == "Cc" or c == BIDI or "\x80" <= c <= "\x9f")
    ]


@pytest.fixture
def hostile(conn: psycopg.Connection[Any], make_user: Callable[..., str]) -> sheets.Spreadsheet:
    """Escape sequences in a sheet name, a column title, a cell, a failed task, a schedule."""
    owner = make_user()
    sheet = sheets.create_spreadsheet(conn, owner, f"sheet {HOSTILE}", columns=2, rows=2)
    a, _b = sheets.list_columns(conn, sheet.id)
    sheets.rename_column(conn, a.id, f"title {HOSTILE}")
    sheets.edit_cell(conn, sheet.id, a.id, 1, f"cell {HOSTILE}", user_id=owner)
    conn.execute(
        "INSERT INTO websurfing_task_queue"
        " (task_type, payload, status, attempts, error_message, failed_at, completed_at)"
        " VALUES ('fetch', %s, 'failed', 1, %s, now(), now())",
        (psycopg.types.json.Jsonb({"note": HOSTILE}), f"error {HOSTILE}"),
    )
    conn.execute(
        "INSERT INTO websurf.schedule (name, cron, time_zone, task_type, next_run_at)"
        " VALUES (%s, '0 * * * *', 'UTC', 'noop', now() + interval '1 hour')",
        (f"schedule {HOSTILE}",),
    )
    return sheet


def _output(database_url: str, args: list[str]) -> str:
    result = CliRunner().invoke(cli, [*args, "--database-url", database_url])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["sheets", "show", "{sheet}"], ["sheet x\\x1b]52;c;", "title x\\x1b]52", "cell x\\x1b"]),
        (["sheets", "list"], ["sheet x\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\x9b31m\\u202e\\x0d"]),
        (["sheets", "history", "{sheet}"], ["cell x\\x1b]52;c;"]),
        (["tasks", "list"], ["error x\\x1b]52;c;"]),
        (["tasks", "show", "{task}"], ["error x\\x1b]52;c;ZXZpbA==\\x07"]),
        (["schedules", "list"], ["schedule x\\x1b]52;c;"]),
        (["status"], ["error x\\x1b]52;c;", "schedule x\\x1b]52;c;"]),
    ],
)
def test_escape_sequences_in_stored_text_are_shown_not_obeyed(
    database_url: str,
    conn: psycopg.Connection[Any],
    hostile: sheets.Spreadsheet,
    args: list[str],
    shown: list[str],
) -> None:
    row = conn.execute("SELECT id FROM websurfing_task_queue").fetchone()
    assert row is not None
    filled = [a.replace("{sheet}", str(hostile.id)).replace("{task}", str(row[0])) for a in args]

    text = _output(database_url, filled)

    assert _invisible(text) == []
    for fragment in shown:
        assert fragment in text


def test_the_sheet_table_keeps_its_columns(database_url: str, hostile: sheets.Spreadsheet) -> None:
    lines = _output(database_url, ["sheets", "show", str(hostile.id)]).splitlines()

    titles, _rule, first, second = lines[1:5]
    assert first.index("|", 6) == titles.index("|", 6) == second.index("|", 6)


def test_visible_leaves_ordinary_text_alone() -> None:
    assert visible("naïve café\ttab\nnext line, 日本語") == "naïve café\ttab\nnext line, 日本語"
    assert visible("\x00\x1b\x7f\x85\u2066") == "\\x00\\x1b\\x7f\\x85\\u2066"
