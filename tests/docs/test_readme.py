"""The README's own samples work: its operator runs in a real worker as a robot column,
and its SQL edit names its author and queues the robot (its TypeScript sample is
type-checked in test_typescript_samples.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
from support.daemon import Daemons
from support.samples import readme_block
from support.waiting import wait_for

from websurf.worker.app import sheets


def test_the_readme_operator_fills_a_robot_column_through_its_sql_edit(
    conn: psycopg.Connection[Any], database_url: str, daemons: Daemons, tmp_path: Path
) -> None:
    (tmp_path / "myrobots.py").write_text(readme_block("python"), encoding="utf-8")
    owner = sheets.ensure_user(conn, "readme@example.test")
    sheet = sheets.create_spreadsheet(conn, owner, "readme", columns=2, rows=1)
    source, robot = sheets.list_columns(conn, sheet.id)
    sheets.set_column_operator(
        conn, robot.id, "shout", source_column_id=source.id, allow_unknown_type=True
    )
    cell = sheets.get_cell(conn, sheet.id, source.id, 1)
    assert cell is not None
    daemons.worker(database_url, concurrency=1, operators=["myrobots"], pythonpath=[tmp_path])

    sql = re.sub(r"\$\d", "%s", readme_block("sql"))
    with psycopg.connect(database_url, autocommit=True) as edit:
        for statement in filter(str.strip, sql.split(";")):
            params = {1: (owner,), 2: ("from the readme", cell.id)}.get(statement.count("%s"))
            edit.execute(statement, params)

    wait_for(
        lambda: (
            (shouted := sheets.get_cell(conn, sheet.id, robot.id, 1)) is not None
            and shouted.content == "FROM THE README"
        ),
        "the README's operator to write the robot cell",
    )
    [(author,)] = conn.execute(
        "SELECT user_id FROM websurfing_cell_edit_event WHERE cell_id = %s", (cell.id,)
    ).fetchall()
    assert author == owner
