"""websurf used as a library logs nothing until the application configures logging.

What a user would notice: a script that imports ``websurf.worker.app.sheets`` and edits
a sheet prints only what the script prints (structlog's unconfigured default writes
every event, debug included, to stdout); once the script configures Python's logging,
websurf's events go where it said, at the level it chose.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, sys
import psycopg
from websurf.worker.app import sheets

if sys.argv[2] == "configured":
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(message)s")
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    owner = sheets.ensure_user(conn, "script@example.test")
    sheet = sheets.create_spreadsheet(conn, owner, "from a script", columns=2, rows=1)
    a, b = sheets.list_columns(conn, sheet.id)
    sheets.set_column_operator(conn, b.id, "uppercase", source_column_id=a.id)
    sheets.edit_cell(conn, sheet.id, a.id, 1, "hello", user_id=owner)
print("done")
"""


def _run_script(database_url: str, logging_setup: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, database_url, logging_setup],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_a_script_using_sheets_prints_only_its_own_output(database_url: str) -> None:
    done = _run_script(database_url, "unconfigured")

    assert done.stdout == "done\n"
    assert done.stderr == ""


def test_once_the_script_configures_logging_websurf_events_follow_it(database_url: str) -> None:
    done = _run_script(database_url, "configured")

    assert done.stdout == "done\n"
    assert "websurf.operators" in done.stderr and "operators_loaded" in done.stderr
