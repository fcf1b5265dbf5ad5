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
