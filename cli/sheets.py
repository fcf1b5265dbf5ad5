"""``websurf sheets``: create, show and edit spreadsheets from a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import psycopg

from websurf.cli.options import CommandError, common_options, database_errors, echo, option, runtime
from websurf.sql.database import connect
from websurf.worker.app import sheets
from websurf.worker.app.sheets import Sheet, SheetError, UnknownOperatorError
from websurf.worker.core.payloads import PayloadError, parse_object
from websurf.worker.core.registry import OperatorError, load_operators

CELL_WIDTH_MAX = 28
SHOW_ROWS_MAX = 10_000  # one page of `sheets show`


@contextmanager
def _sheet_conn(
    ctx: click.Context, database_url: str | None, log_level: str, log_format: str
) -> Iterator[psycopg.Connection[Any]]:
    rt = runtime(ctx, database_url, log_level, log_format)
    with database_errors(), connect(rt.database().url, autocommit=True) as conn:
        try:
            yield conn
        except SheetError as exc:
            raise CommandError(str(exc)) from None
        except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
            raise CommandError(str(exc).splitlines()[0]) from None


def _user(conn: psycopg.Connection[Any], ref: str) -> str:
    found = sheets.find_user(conn, ref)
    if found is None:
        raise CommandError(f"no user {ref!r} (give a websurfing_user id or email)")
    return str(found["id"])


def _clip(value: str | None, width: int) -> str:
    text = "" if value is None else " ".join(value.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_sheet(sheet: Sheet) -> list[str]:
    """The sheet as a text table, with each robot column's operator under its title."""
    titles = [c.title for c in sheet.columns]
    notes = [f"<- {c.operator_type}" if c.operator_type else "" for c in sheet.columns]
    widths = [
        min(
            CELL_WIDTH_MAX,
            max([len(titles[j]), len(notes[j]), *(len(r[j] or "") for r in sheet.rows)]),
        )
        for j in range(len(titles))
    ]

    def line(cells: list[str], row_label: str = "") -> str:
        return f"{row_label:>4} | " + " | ".join(
            _clip(v, w).ljust(w) for v, w in zip(cells, widths, strict=True)
        )

    out = [f"{sheet.spreadsheet.name}  ({sheet.spreadsheet.id})", line(titles)]
    if any(notes):
        out.append(line(notes))
    out.append("-" * len(out[-1]))
    for number, row in enumerate(sheet.rows, start=sheet.first_row):
        out.append(line([v or "" for v in row], str(number)))
    shown_to = sheet.first_row + len(sheet.rows) - 1
    if sheet.first_row > 1 or shown_to < sheet.last_row:
        out.append(f"rows {sheet.first_row}-{shown_to} of {sheet.last_row}")
    return out


def render_audit(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        where = f"{r['column_title']}{r['row_number']}"
        when = r["created_at"].strftime("%H:%M:%S.%f")[:-3]
        if r["kind"] == "person":
            what = f"{r['old_content']!r} -> {r['new_content']!r} ({r['action']})"
        else:
            status = "ok" if r["success"] else f"failed: {r['error_message']}"
            what = f"{r['new_content'] or ''} [{status}]"
        out.append(f"{when}  {where:<12} {r['kind']:<6} {r['author'][:36]:<24} {what}")
    return out


@click.group("sheets")
def sheets_group() -> None:
    """Spreadsheets: create, show, edit cells as a person, configure robot columns."""


@sheets_group.command("create")
@common_options
@click.argument("name")
@option("--owner", required=True, help="Owner's websurfing_user id or email.")
@option(
    "--create-owner", is_flag=True, default=False, help="Create the owner (by email) if missing."
)
@option("--columns", type=click.IntRange(0, sheets.MAX_COLUMNS), default=sheets.DEFAULT_COLUMNS)
@option("--rows", type=click.IntRange(0, sheets.MAX_ROWS), default=sheets.DEFAULT_ROWS)
@click.pass_context
def create_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    name: str,
    owner: str,
    create_owner: bool,
    columns: int,
    rows: int,
) -> None:
    """Create a spreadsheet NAME with empty cells and print its id."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
        owner_id = sheets.ensure_user(conn, owner) if create_owner else _user(conn, owner)
        created = sheets.create_spreadsheet(conn, owner_id, name, columns=columns, rows=rows)
    echo(str(created.id))


@sheets_group.command("list")
@common_options
@option("--owner", default=None, help="Only this owner's (id or email).")
@click.pass_context
def list_command(
    ctx: click.Context, database_url: str | None, log_level: str, log_format: str, owner: str | None
) -> None:
    """List spreadsheets, newest first."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
        owner_id = _user(conn, owner) if owner else None
        for s in sheets.list_spreadsheets(conn, owner_id):
            echo(f"{s.id}  {s.name}")


@sheets_group.command("show")
@common_options
@click.argument("spreadsheet_id")
@option("--all", "include_hidden", is_flag=True, default=False, help="Show hidden columns too.")
@option("--history", type=click.IntRange(0), default=0, help="Also print this many audit rows.")
@option("--from-row", "first_row", type=click.IntRange(1), default=1, help="First row shown.")
@option(
    "--rows",
    type=click.IntRange(0, SHOW_ROWS_MAX),
    default=sheets.PAGE_ROWS,
    help="Rows shown, from --from-row.",
)
@click.pass_context
def show_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    include_hidden: bool,
    history: int,
    first_row: int,
    rows: int,
) -> None:
    """Print a page of a spreadsheet as a table (robot columns name their operator)."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
        page = sheets.read_sheet(
            conn, spreadsheet_id, include_hidden=include_hidden, first_row=first_row, rows=rows
        )
        for line in render_sheet(page):
            echo(line)
        if history:
            echo()
            for line in render_audit(sheets.audit_trail(conn, spreadsheet_id, history)):
                echo(line)


@sheets_group.command("history")
@common_options
@click.argument("spreadsheet_id")
@option("--limit", type=click.IntRange(1), default=sheets.AUDIT_TRAIL_LIMIT)
@click.pass_context
def history_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    limit: int,
) -> None:
    """Print the latest changes of a spreadsheet's cells, people's and robots'."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
        for line in render_audit(sheets.audit_trail(conn, spreadsheet_id, limit)):
            echo(line)


@sheets_group.command("edit")
@common_options
@click.argument("spreadsheet_id")
@click.argument("column")
@click.argument("row", type=int)
@click.argument("content")
@option("--user", required=True, help="Who edits: a websurfing_user id or email.")
@option("--edit-type", default=sheets.EDIT_TYPE, help="Recorded in the audit row.")
@click.pass_context
def edit_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    column: str,
    row: int,
    content: str,
    user: str,
    edit_type: str,
) -> None:
    """Set the cell at COLUMN (title, position or id) and ROW (1..1000000) to CONTENT."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
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
@common_options
@click.argument("spreadsheet_id")
@click.argument("title")
@option("--position", type=click.IntRange(0), default=None, help="0-based [default: last].")
@click.pass_context
def add_column_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    title: str,
    position: int | None,
) -> None:
    """Add a column titled TITLE."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
        column = sheets.add_column(conn, spreadsheet_id, title, position=position)
    echo(str(column.id))


@sheets_group.command("rename-column")
@common_options
@click.argument("spreadsheet_id")
@click.argument("column")
@click.argument("title")
@click.pass_context
def rename_column_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    column: str,
    title: str,
) -> None:
    """Rename COLUMN to TITLE."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
        sheets.rename_column(conn, sheets.find_column(conn, spreadsheet_id, column).id, title)


@sheets_group.command("move-column")
@common_options
@click.argument("spreadsheet_id")
@click.argument("column")
@click.argument("position", type=click.IntRange(0))
@click.pass_context
def move_column_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    column: str,
    position: int,
) -> None:
    """Move COLUMN to the 0-based POSITION."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
        sheets.move_column(conn, sheets.find_column(conn, spreadsheet_id, column).id, position)


@sheets_group.command("hide-column")
@common_options
@click.argument("spreadsheet_id")
@click.argument("column")
@option("--show", is_flag=True, default=False, help="Show it again instead.")
@click.pass_context
def hide_column_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    column: str,
    show: bool,
) -> None:
    """Hide (or with --show, show) COLUMN."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
        sheets.hide_column(conn, sheets.find_column(conn, spreadsheet_id, column).id, not show)


@sheets_group.command("set-operator")
@common_options
@click.argument("spreadsheet_id")
@click.argument("column")
@click.argument("operator_type")
@option("--source", required=True, help="The column whose edits feed this one.")
@option("--options", "options_json", default=None, help="JSON object added to each task's payload.")
@option(
    "--operators",
    "operator_modules",
    multiple=True,
    default=(),
    help="Module that registers operators, to check OPERATOR_TYPE (repeatable).",
)
@option(
    "--allow-unknown-type", is_flag=True, default=False, help="Accept an operator not known here."
)
@click.pass_context
def set_operator_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    column: str,
    operator_type: str,
    source: str,
    options_json: str | None,
    operator_modules: tuple[str, ...],
    allow_unknown_type: bool,
) -> None:
    """Let OPERATOR_TYPE fill COLUMN whenever a person edits the --source column."""
    options = None
    if options_json:
        try:
            options = parse_object(options_json)
        except PayloadError as exc:
            raise CommandError(f"--options {exc}", 2) from None
    try:
        known = load_operators(operator_modules)
    except OperatorError as exc:
        raise CommandError(str(exc), 2) from None
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
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
            raise CommandError(f"{exc} (--allow-unknown-type)", 2) from None
    echo(f"{target.title} <- {operator_type}({feeder.title})")


@sheets_group.command("clear-operator")
@common_options
@click.argument("spreadsheet_id")
@click.argument("column")
@click.pass_context
def clear_operator_command(
    ctx: click.Context,
    database_url: str | None,
    log_level: str,
    log_format: str,
    spreadsheet_id: str,
    column: str,
) -> None:
    """Stop filling COLUMN by a robot."""
    with _sheet_conn(ctx, database_url, log_level, log_format) as conn:
        sheets.set_column_operator(conn, sheets.find_column(conn, spreadsheet_id, column).id, None)
