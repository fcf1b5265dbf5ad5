"""The latest edit wins with real workers: an older edit's task that finishes last
never overwrites the newer edit's output (SPEC section 7)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from support.daemon import Daemon

Start = Callable[..., Daemon]  # conftest's start_worker(database_url, *options)
ROWS = 8  # at most one claim batch of the first process (its first batch holds 10)
FILLER_ROWS = 15_000  # two columns: 30,000 cells, the size where plans turn to nested loops


def _sheet(url: str, gate: Path) -> tuple[str, str, str, str]:
    """A 30,000-cell sheet whose column 'shout' is test_gated_upper of column 'text'."""
    user = str(uuid.uuid4())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO websurfing_user (id, email) VALUES (%s, %s)", (user, f"{user}@t.test")
        )
        [(sheet,)] = conn.execute(
            "INSERT INTO websurfing_spreadsheet (name, owner_id) VALUES ('s', %s) RETURNING id",
            (user,),
        ).fetchall()
        [(source,)] = conn.execute(
            "INSERT INTO websurfing_column (spreadsheet_id, position, title)"
            " VALUES (%s, 0, 'text') RETURNING id",
            (sheet,),
        ).fetchall()
        [(robot,)] = conn.execute(
            "INSERT INTO websurfing_column (spreadsheet_id, position, title, operator_type,"
            " source_column_id, operator_options)"
            " VALUES (%s, 1, 'shout', 'test_gated_upper', %s, %s) RETURNING id",
            (sheet, source, json.dumps({"gate": str(gate)})),
        ).fetchall()
        conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
            " SELECT %s, col, r FROM unnest(%s::uuid[]) AS col, generate_series(1, %s) AS r",
            (sheet, [source, robot], FILLER_ROWS),
        )
        conn.execute("ANALYZE websurfing_cell")
    return user, str(sheet), str(source), str(robot)


def _edit(url: str, user: str, sheet: str, column: str, prefix: str) -> None:
    with psycopg.connect(url) as conn:  # one transaction, as the web app's
        conn.execute("SELECT set_config('websurf.user_id', %s, true)", (user,))
        conn.execute(
            "UPDATE websurfing_cell SET content = %s || row_number"
            " WHERE spreadsheet_id = %s AND column_id = %s AND row_number <= %s",
            (prefix, sheet, column, ROWS),
        )


def _count(daemon: Any, statement: str) -> int:
    return int(daemon.query(statement)[0][0])


def test_an_older_edit_finishing_last_does_not_overwrite_the_newer_output(
    database_url: str, start_worker: Start, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    user, sheet, source, robot = _sheet(database_url, gate)
    first = start_worker(database_url, concurrency=1)
    first.wait_ready(1)

    # The first edit's tasks are all claimed by the first process and held at the gate.
    _edit(database_url, user, sheet, source, "wait:old-")
    first.wait_for(
        lambda: (
            _count(first, "SELECT count(*) FROM websurfing_task_queue WHERE status = 'processing'")
            == ROWS
        ),
        "the first edit's tasks to be running",
    )
    # The second edit queues new tasks (running ones hold no unique key) and asks the
    # running older ones to stop (0027; this plain handler ignores its flag); a second
    # worker runs the new ones while the first still holds the older ones.
    second = start_worker(database_url, concurrency=1)
    second.wait_ready(1)
    _edit(database_url, user, sheet, source, "new-")

    def robot_cells() -> list[str | None]:
        rows = first.query(
            "SELECT content FROM websurfing_cell WHERE column_id = %s AND row_number <= %s"
            " ORDER BY row_number",
            robot,
            ROWS,
        )
        return [row[0] for row in rows]

    newest = [f"NEW-{r}" for r in range(1, ROWS + 1)]
    first.wait_for(lambda: robot_cells() == newest, "the second edit's output in every robot cell")

    gate.touch()  # the older tasks now finish, last, and anyway
    first.wait_for(
        lambda: (
            first.query("SELECT status, count(*) FROM websurfing_task_queue GROUP BY 1 ORDER BY 1")
            == [("cancelled", ROWS), ("completed", ROWS)]
        ),
        "the newer tasks to complete and the superseded older ones to end cancelled",
    )

    assert robot_cells() == newest
    superseded = first.query(
        "SELECT input_data->>'input', success FROM websurfing_robot_input_event"
        " WHERE superseded ORDER BY 1",
    )
    assert sorted(text for text, _ in superseded) == sorted(
        f"wait:old-{r}" for r in range(1, ROWS + 1)
    )
    assert not any(ok for _, ok in superseded)  # stopped, not a result
