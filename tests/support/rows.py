"""Rows a test needs before the worker has anything to do: a column, and cells in it.

Plain SQL, as the web app writes them (no websurf code in between), so what the tests
exercise starts where the web app's writes end.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg


def new_user(conn: psycopg.Connection[Any]) -> str:
    """A user with a unique e-mail; returns its id."""
    user = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO websurfing_user (id, email) VALUES (%s, %s)", (user, f"{user}@t.test")
    )
    return user


def new_column(conn: psycopg.Connection[Any], owner: str) -> tuple[str, str]:
    """A spreadsheet of ``owner`` with one column 'A'; returns (spreadsheet id, column id)."""
    [(sheet,)] = conn.execute(
        "INSERT INTO websurfing_spreadsheet (name, owner_id) VALUES ('s', %s) RETURNING id",
        (owner,),
    ).fetchall()
    [(column,)] = conn.execute(
        "INSERT INTO websurfing_column (spreadsheet_id, position, title)"
        " VALUES (%s, 0, 'A') RETURNING id",
        (sheet,),
    ).fetchall()
    return str(sheet), str(column)


def robot_sheet(conn: psycopg.Connection[Any], owner: str, operator: str) -> tuple[str, str, str]:
    """A spreadsheet of ``owner`` with a source column and a robot column of ``operator``
    over it; returns (spreadsheet id, source column id, robot column id)."""
    sheet, source = new_column(conn, owner)
    [(robot,)] = conn.execute(
        "INSERT INTO websurfing_column"
        " (spreadsheet_id, position, title, operator_type, source_column_id)"
        " VALUES (%s, 1, 'robot', %s, %s) RETURNING id",
        (sheet, operator, source),
    ).fetchall()
    return sheet, source, str(robot)


def column_of_cells(url: str, count: int) -> list[str]:
    """A new user's spreadsheet with one column of ``count`` empty cells; their ids by row."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        sheet, column = new_column(conn, new_user(conn))
        cells = conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
            " SELECT %s, %s, n FROM generate_series(1, %s) AS n RETURNING id",
            (sheet, column, count),
        ).fetchall()
    return [str(c[0]) for c in cells]


def robot_payloads(
    conn: psycopg.Connection[Any], operator: str, count: int
) -> list[dict[str, Any]]:
    """Payloads of ``count`` real robot tasks of ``operator``, as the edit trigger builds them.

    A new user's spreadsheet with a source column whose cells that user filled (each edit
    takes an input_version), then a robot column of ``operator`` fed by it, with empty
    cells. Only a task with such a payload may write its cell (migration 0024); enqueue
    it with the extra keys a test's handler reads.
    """
    with conn.transaction():
        user = new_user(conn)
        sheet, source = new_column(conn, user)
        conn.execute("SELECT set_config('websurf.user_id', %s, true)", (user,))
        conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, content)"
            " SELECT %s, %s, n, 'input ' || n FROM generate_series(1, %s) AS n",
            (sheet, source, count),
        )
        conn.execute("SELECT set_config('websurf.user_id', '', true)")
        [(robot,)] = conn.execute(
            "INSERT INTO websurfing_column"
            " (spreadsheet_id, position, title, operator_type, source_column_id)"
            " VALUES (%s, 1, 'robot', %s, %s) RETURNING id",
            (sheet, operator, source),
        ).fetchall()
        rows = conn.execute(
            "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
            " SELECT %s, %s, n FROM generate_series(1, %s) AS n"
            " RETURNING id, row_number",
            (sheet, robot, count),
        ).fetchall()
        sources = dict(
            conn.execute(
                "SELECT c.row_number, jsonb_build_object('source_cell_id', c.id,"
                " 'input', c.content, 'input_version', e.input_version)"
                " FROM websurfing_cell AS c"
                " JOIN websurfing_cell_edit_event AS e ON e.cell_id = c.id"
                " WHERE c.column_id = %s",
                (source,),
            ).fetchall()
        )
    return [
        {
            "cell_id": str(cell),
            **sources[row],
            "spreadsheet_id": str(sheet),
            "column_id": str(robot),
            "row_number": row,
        }
        for cell, row in sorted(rows, key=lambda r: r[1])
    ]


def robot_column(url: str, operator: str, count: int) -> list[dict[str, Any]]:
    """:func:`robot_payloads` on its own connection to ``url``."""
    with psycopg.connect(url, autocommit=True) as conn:
        return robot_payloads(conn, operator, count)
