"""``websurf sheets``: create, show and edit spreadsheets from a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import psycopg

from websurf.cli.options import (
    JSON_OBJECT,
    Runtime,
    allow_unknown_type_option,
    argument,
    open_db,
    operators_option,
    option,
    pass_runtime,
)
from websurf.cli.render import (
    EXIT_USAGE,
    CommandError,
    echo,
    echo_lines,
    first_line,
    one_line_errors,
)
from websurf.cli.render.sheets import render_audit, render_sheet
from websurf.worker.app import sheets
from websurf.worker.app.sheets import SheetError, UnknownOperatorError
from websurf.worker.core.registry import OperatorError, load_operators

SHOW_ROWS_MAX = 10_000  # one page of `sheets show`


@contextmanager
def _sheet_conn(rt: Runtime) -> Iterator[psycopg.Connection[Any]]:
    """The database; a refused edit or a value the table rejects is a one-line error."""
    rejected = (psycopg.errors.IntegrityError, psycopg.errors.DataError)
    with (
        open_db(rt) as conn,
        one_line_errors(SheetError),
        one_line_errors(*rejected, detail=first_line),
    ):
        yield conn


def _user(conn: psycopg.Connection[Any], ref: str) -> str:
    found = sheets.find_user(conn, ref)
    if found is None:
        raise CommandError(f"no user {ref!r} (give a websurfing_user id or email)")
    return str(found["id"])


@click.group("sheets")
def sheets_group() -> None:
    """Spreadsheets: create, show, edit cells as a person, configure robot columns."""


@sheets_group.command("create")
@pass_runtime
@argument("name")
@option("--owner", required=True, help="Owner's websurfing_user id or email.")
@option(
    "--create-owner", is_flag=True, default=False, help="Create the owner (by email) if missing."
)
@option("--columns", type=click.IntRange(0, sheets.MAX_COLUMNS), default=sheets.DEFAULT_COLUMNS)
@option("--rows", type=click.IntRange(0, sheets.MAX_ROWS), default=sheets.DEFAULT_ROWS)
def create_command(
    rt: Runtime, name: str, owner: str, create_owner: bool, columns: int, rows: int
) -> None:
    """Create a spreadsheet NAME with empty cells and print its id."""
    with _sheet_conn(rt) as conn:
        owner_id = sheets.ensure_user(conn, owner) if create_owner else _user(conn, owner)
        created = sheets.create_spreadsheet(conn, owner_id, name, columns=columns, rows=rows)
    echo(str(created.id))


@sheets_group.command("list")
@pass_runtime
@option("--owner", default=None, help="Only this owner's (id or email).")
def list_command(rt: Runtime, owner: str | None) -> None:
    """List spreadsheets, newest first."""
    with _sheet_conn(rt) as conn:
        owner_id = _user(conn, owner) if owner else None
        for s in sheets.list_spreadsheets(conn, owner_id):
            echo(f"{s.id}  {s.name}")


@sheets_group.command("show")
@pass_runtime
@argument("spreadsheet_id")
@option("--all", "include_hidden", is_flag=True, default=False, help="Show hidden columns too.")
@option("--history", type=click.IntRange(0), default=0, help="Also print this many audit rows.")
@option("--from-row", "first_row", type=click.IntRange(1), default=1, help="First row shown.")
@option(
    "--rows",
    type=click.IntRange(0, SHOW_ROWS_MAX),
    default=sheets.PAGE_ROWS,
    help="Rows shown, from --from-row.",
)
def show_command(
    rt: Runtime, spreadsheet_id: str, include_hidden: bool, history: int, first_row: int, rows: int
) -> None:
    """Print a page of a spreadsheet as a table (robot columns name their operator)."""
    with _sheet_conn(rt) as conn:
        page = sheets.read_sheet(
            conn, spreadsheet_id, include_hidden=include_hidden, first_row=first_row, rows=rows
        )
        echo_lines(render_sheet(page))
        if history:
            echo()
            echo_lines(render_audit(sheets.audit_trail(conn, spreadsheet_id, history)))


@sheets_group.command("history")
@pass_runtime
@argument("spreadsheet_id")
@option("--limit", type=click.IntRange(1), default=sheets.AUDIT_TRAIL_LIMIT)
def history_command(rt: Runtime, spreadsheet_id: str, limit: int) -> None:
    """Print the latest changes of a spreadsheet's cells, people's and robots'."""
    with _sheet_conn(rt) as conn:
        echo_lines(render_audit(sheets.audit_trail(conn, spreadsheet_id, limit)))


@sheets_group.command("edit")
@pass_runtime
@argument("spreadsheet_id")
@argument("column")
@argument("row", type=int)
@argument("content")
@option("--user", required=True, help="Who edits: a websurfing_user id or email.")
@option("--edit-type", default=sheets.EDIT_TYPE, help="Recorded in the audit row.")
def edit_command(
    rt: Runtime, spreadsheet_id: str, column: str, row: int, content: str, user: str, edit_type: str
) -> None:
    """Set the cell at COLUMN (title, position or id) and ROW (1..1000000) to CONTENT."""
    with _sheet_conn(rt) as conn:
        target = sheets.find_column(conn, spreadsheet_id, column)
        cell = sheets.edit_cell(
            conn,
            spreadsheet_id,
            target.id,
            row,
            content,
            user_id=_user(conn, user),
            edit_type=edit_type,
        )
    echo(str(cell.id))


@sheets_group.command("add-column")
@pass_runtime
@argument("spreadsheet_id")
@argument("title")
@option("--position", type=click.IntRange(0), default=None, help="0-based [default: last].")
def add_column_command(rt: Runtime, spreadsheet_id: str, title: str, position: int | None) -> None:
    """Add a column titled TITLE."""
    with _sheet_conn(rt) as conn:
        column = sheets.add_column(conn, spreadsheet_id, title, position=position)
    echo(str(column.id))


@sheets_group.command("rename-column")
@pass_runtime
@argument("spreadsheet_id")
@argument("column")
@argument("title")
def rename_column_command(rt: Runtime, spreadsheet_id: str, column: str, title: str) -> None:
    """Rename COLUMN to TITLE."""
    with _sheet_conn(rt) as conn:
        sheets.rename_column(conn, sheets.find_column(conn, spreadsheet_id, column).id, title)


@sheets_group.command("move-column")
@pass_runtime
@argument("spreadsheet_id")
@argument("column")
@argument("position", type=click.IntRange(0))
def move_column_command(rt: Runtime, spreadsheet_id: str, column: str, position: int) -> None:
    """Move COLUMN to the 0-based POSITION."""
    with _sheet_conn(rt) as conn:
        sheets.move_column(conn, sheets.find_column(conn, spreadsheet_id, column).id, position)


@sheets_group.command("hide-column")
@pass_runtime
@argument("spreadsheet_id")
@argument("column")
@option("--show", is_flag=True, default=False, help="Show it again instead.")
def hide_column_command(rt: Runtime, spreadsheet_id: str, column: str, show: bool) -> None:
    """Hide (or with --show, show) COLUMN."""
    with _sheet_conn(rt) as conn:
        sheets.hide_column(conn, sheets.find_column(conn, spreadsheet_id, column).id, not show)


@sheets_group.command("set-operator")
@pass_runtime
@argument("spreadsheet_id")
@argument("column")
@argument("operator_type")
@option("--source", required=True, help="The column whose edits feed this one.")
@option(
    "--options",
    type=JSON_OBJECT,
    default=None,
    help="JSON object added to each task's payload.",
)
@operators_option("Module that registers operators, to check OPERATOR_TYPE (repeatable).")
@allow_unknown_type_option("Accept an operator not known here.")
def set_operator_command(
    rt: Runtime,
    spreadsheet_id: str,
    column: str,
    operator_type: str,
    source: str,
    options: dict[str, Any] | None,
    operator_modules: tuple[str, ...],
    allow_unknown_type: bool,
) -> None:
    """Let OPERATOR_TYPE fill COLUMN whenever a person edits the --source column."""
    with one_line_errors(OperatorError, exit_code=EXIT_USAGE):
        known = load_operators(operator_modules)
    with _sheet_conn(rt) as conn:
        target = sheets.find_column(conn, spreadsheet_id, column)
        feeder = sheets.find_column(conn, spreadsheet_id, source)
        try:
            sheets.set_column_operator(
                conn,
                target.id,
                operator_type,
                source_column_id=feeder.id,
                options=options,
                registry=known,
                allow_unknown_type=allow_unknown_type,
            )
        except UnknownOperatorError as exc:
            raise CommandError(f"{exc} (--allow-unknown-type)", EXIT_USAGE) from None
    echo(f"{target.title} <- {operator_type}({feeder.title})")


@sheets_group.command("clear-operator")
@pass_runtime
@argument("spreadsheet_id")
@argument("column")
def clear_operator_command(rt: Runtime, spreadsheet_id: str, column: str) -> None:
    """Stop filling COLUMN by a robot."""
    with _sheet_conn(rt) as conn:
        sheets.set_column_operator(conn, sheets.find_column(conn, spreadsheet_id, column).id, None)
