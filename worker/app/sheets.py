"""Spreadsheets: create them, lay out their columns, read them, and edit cells as a person.

Design note
-----------
* Every function takes the caller's connection and works inside ``conn.transaction()``:
  on an autocommit connection that is a transaction of its own, inside the caller's
  transaction a savepoint, so a caller can group several calls atomically.
* Positions of columns are 0-based and unique per spreadsheet (a UNIQUE constraint
  checked row by row). A reorder therefore parks every column at a negative position
  first and then writes the new positions, under a row lock on the spreadsheet so two
  reorders of one sheet queue instead of colliding. Rows are numbered from 1.
* A person's edit names its author with ``set_config('websurf.user_id', …, true)``;
  the database's audit trigger (migration 0007) writes the cell_edit_event row and
  enqueues the tasks of the columns fed by the edited one, in the same transaction.
  The author stays named until that transaction ends.
* Which robot fills a column is stored on the column: ``operator_type`` (a task type),
  ``source_column_id`` (whose edits feed it) and ``operator_options`` (a JSON object
  merged into each task's payload).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row, scalar_row
from psycopg.types.json import Jsonb

from websurf.sql import QUERIES
from websurf.worker.core import payloads, workers
from websurf.worker.core.registry import Registry

DEFAULT_COLUMNS = 2  # the plan's websurfing_spreadsheet.default_columns
DEFAULT_ROWS = 8  # the plan's websurfing_spreadsheet.default_rows
COLUMN_WIDTH = 150
MAX_COLUMNS = 702  # A..ZZ
MAX_ROWS = 100_000  # blank rows a new spreadsheet starts with, at most
MAX_ROW_NUMBER = 1_000_000  # the highest row a cell may be edited at through this API
NAME_MAX_LENGTH = 255  # spreadsheet names, column titles, user emails (varchar(255))
PAGE_ROWS = 100  # rows read_sheet returns at once, by default
AUDIT_TRAIL_LIMIT = 50
EDIT_TYPE = "manual"
EDIT_TYPE_MAX_LENGTH = 50  # websurfing_cell_edit_event.edit_type
OPERATOR_TYPE_MAX_LENGTH = 100  # websurfing_column.operator_type


class SheetError(ValueError):
    """A spreadsheet operation was refused; the message says why."""


class UnknownOperatorError(SheetError):
    """A robot column was given an operator type nothing known handles."""


@dataclass(frozen=True)
class Spreadsheet:
    id: UUID
    name: str
    owner_id: str
    default_columns: int
    default_rows: int
    description: str | None = None
    is_public: bool = False
    created_at: datetime | None = None


@dataclass(frozen=True)
class Column:
    id: UUID
    spreadsheet_id: UUID
    position: int
    title: str
    width: int | None = COLUMN_WIDTH
    is_visible: bool = True
    operator_type: str | None = None
    source_column_id: UUID | None = None
    operator_options: dict[str, Any] | None = None


@dataclass(frozen=True)
class Cell:
    id: UUID
    spreadsheet_id: UUID
    column_id: UUID
    row_number: int
    content: str | None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Sheet:
    """A spreadsheet read as rows: ``rows[i][j]`` is the content under ``columns[j]``."""

    spreadsheet: Spreadsheet
    columns: list[Column]
    rows: list[list[str | None]] = field(default_factory=list)
    cell_ids: list[list[UUID | None]] = field(default_factory=list)
    first_row: int = 1  # the row number of rows[0]
    last_row: int = 0  # the sheet's last row (its height), whatever the page

    def cell(self, row_number: int, title: str) -> str | None:
        index = next(i for i, c in enumerate(self.columns) if c.title == title)
        return self.rows[row_number - self.first_row][index]


def column_title(index: int) -> str:
    """Spreadsheet-style title of the 0-based column ``index``: A, B, …, Z, AA, AB, …"""
    title = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        title = chr(ord("A") + rest) + title
    return title


def _spreadsheet(row: dict[str, Any]) -> Spreadsheet:
    return Spreadsheet(
        id=row["id"],
        name=row["name"],
        owner_id=row["owner_id"],
        # NULL (the plan's columns allow it): the plan's defaults
        default_columns=DEFAULT_COLUMNS
        if row["default_columns"] is None
        else row["default_columns"],
        default_rows=DEFAULT_ROWS if row["default_rows"] is None else row["default_rows"],
        description=row["description"],
        is_public=bool(row["is_public"]),
        created_at=row["created_at"],
    )


def _column(row: dict[str, Any]) -> Column:
    return Column(**row)


def _cell(row: dict[str, Any]) -> Cell:
    return Cell(**row)


def _one(
    conn: psycopg.Connection[Any], query: str, params: dict[str, Any]
) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row: dict[str, Any] | None = cur.execute(QUERIES[query], params).fetchone()
        return row


def _all(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(QUERIES[query], params).fetchall()


# -- spreadsheets -----------------------------------------------------------------------


def create_spreadsheet(
    conn: psycopg.Connection[Any],
    owner_id: str,
    name: str,
    *,
    description: str | None = None,
    columns: int = DEFAULT_COLUMNS,
    rows: int = DEFAULT_ROWS,
    is_public: bool = False,
) -> Spreadsheet:
    """A new spreadsheet with ``columns`` columns (A, B, …) and ``rows`` rows of empty cells."""
    if not name.strip():
        raise SheetError("a spreadsheet needs a name")
    _check_name(name, "a spreadsheet name")
    if not 0 <= columns <= MAX_COLUMNS:
        raise SheetError(f"columns must be between 0 and {MAX_COLUMNS}")
    if not 0 <= rows <= MAX_ROWS:
        raise SheetError(f"rows must be between 0 and {MAX_ROWS}")
    with conn.transaction():
        row = _one(
            conn,
            "insert_spreadsheet",
            {
                "name": name,
                "description": description,
                "owner_id": owner_id,
                "is_public": is_public,
                "default_columns": columns,
                "default_rows": rows,
            },
        )
        assert row is not None
        sheet = _spreadsheet(row)
        conn.execute(
            QUERIES["insert_columns"],
            {
                "spreadsheet_id": sheet.id,
                "positions": list(range(columns)),
                "titles": [column_title(i) for i in range(columns)],
                "widths": [None] * columns,
            },
        )
        conn.execute(
            QUERIES["insert_blank_cells"],
            {"spreadsheet_id": sheet.id, "rows": rows, "column_id": None},
        )
    return sheet


def get_spreadsheet(conn: psycopg.Connection[Any], spreadsheet_id: UUID | str) -> Spreadsheet:
    row = _one(conn, "get_spreadsheet", {"id": _uuid(spreadsheet_id, "spreadsheet")})
    if row is None:
        raise SheetError(f"no spreadsheet {spreadsheet_id}")
    return _spreadsheet(row)


def list_spreadsheets(
    conn: psycopg.Connection[Any], owner_id: str | None = None, limit: int = 100
) -> list[Spreadsheet]:
    rows = _all(conn, "list_spreadsheets", {"owner_id": owner_id, "limit": limit})
    return [_spreadsheet(r) for r in rows]


# -- columns ----------------------------------------------------------------------------


def list_columns(conn: psycopg.Connection[Any], spreadsheet_id: UUID | str) -> list[Column]:
    rows = _all(conn, "list_columns", {"spreadsheet_id": _uuid(spreadsheet_id, "spreadsheet")})
    return [_column(r) for r in rows]


def get_column(conn: psycopg.Connection[Any], column_id: UUID | str) -> Column:
    row = _one(conn, "get_column", {"id": _uuid(column_id, "column")})
    if row is None:
        raise SheetError(f"no column {column_id}")
    return _column(row)


def find_column(conn: psycopg.Connection[Any], spreadsheet_id: UUID | str, ref: str) -> Column:
    """A column named by its id, its title (case-insensitive) or its 0-based position."""
    columns = list_columns(conn, spreadsheet_id)
    for column in columns:
        if str(column.id) == ref:
            return column
    by_title = [c for c in columns if c.title.lower() == ref.strip().lower()]
    if len(by_title) == 1:
        return by_title[0]
    if len(by_title) > 1:
        raise SheetError(f"{len(by_title)} columns are titled {ref!r}: name one by its id")
    if ref.strip().isdigit():
        for column in columns:
            if column.position == int(ref):
                return column
    titles = ", ".join(c.title for c in columns) or "none"
    raise SheetError(f"no column {ref!r} in spreadsheet {spreadsheet_id} (columns: {titles})")


def _reorder(conn: psycopg.Connection[Any], spreadsheet_id: UUID, ordered: Sequence[UUID]) -> None:
    """Give ``ordered`` positions 0..n-1 without ever breaking position uniqueness."""
    conn.execute(QUERIES["park_column_positions"], {"spreadsheet_id": spreadsheet_id})
    conn.execute(
        QUERIES["set_column_positions"],
        {
            "spreadsheet_id": spreadsheet_id,
            "ids": list(ordered),
            "positions": list(range(len(ordered))),
        },
    )


def _lock(conn: psycopg.Connection[Any], spreadsheet_id: UUID) -> None:
    if conn.execute(QUERIES["lock_spreadsheet"], {"id": spreadsheet_id}).fetchone() is None:
        raise SheetError(f"no spreadsheet {spreadsheet_id}")


def add_column(
    conn: psycopg.Connection[Any],
    spreadsheet_id: UUID | str,
    title: str,
    *,
    position: int | None = None,
    width: int | None = None,
) -> Column:
    """Insert a column at ``position`` (default: last).

    It gets no cell rows: a cell is created when it is first written (edit_cell, the
    edit trigger's robot targets), and a missing cell reads as empty. So adding a column
    costs the same on a sheet of ten rows or a million.
    """
    sid = _uuid(spreadsheet_id, "spreadsheet")
    if not title.strip():
        raise SheetError("a column needs a title")
    _check_name(title, "a column title")
    with conn.transaction():
        _lock(conn, sid)
        columns = list_columns(conn, sid)
        existing = [c.id for c in columns]
        at = len(existing) if position is None else position
        if not 0 <= at <= len(existing):
            raise SheetError(f"position must be between 0 and {len(existing)}")
        free = max((c.position for c in columns), default=-1) + 1  # collides with none
        with conn.cursor(row_factory=scalar_row) as cur:
            new_id: UUID | None = cur.execute(
                QUERIES["insert_columns"],
                {"spreadsheet_id": sid, "positions": [free], "titles": [title], "widths": [width]},
            ).fetchone()
        assert new_id is not None
        _reorder(conn, sid, [*existing[:at], new_id, *existing[at:]])
        return get_column(conn, new_id)


def move_column(conn: psycopg.Connection[Any], column_id: UUID | str, position: int) -> Column:
    """Move a column to the 0-based ``position``; the others close up around it."""
    column = get_column(conn, column_id)
    with conn.transaction():
        _lock(conn, column.spreadsheet_id)
        others = [c.id for c in list_columns(conn, column.spreadsheet_id) if c.id != column.id]
        if not 0 <= position <= len(others):
            raise SheetError(f"position must be between 0 and {len(others)}")
        _reorder(conn, column.spreadsheet_id, [*others[:position], column.id, *others[position:]])
        return get_column(conn, column.id)


def update_column(
    conn: psycopg.Connection[Any],
    column_id: UUID | str,
    *,
    title: str | None = None,
    width: int | None = None,
    is_visible: bool | None = None,
) -> Column:
    """Rename, resize, hide or show a column (None leaves a field unchanged)."""
    if title is not None and not title.strip():
        raise SheetError("a column needs a title")
    if title is not None:
        _check_name(title, "a column title")
    params = {"id": _uuid(column_id, "column"), "title": title, "width": width}
    if (
        conn.execute(QUERIES["update_column"], {**params, "is_visible": is_visible}).fetchone()
        is None
    ):
        raise SheetError(f"no column {column_id}")
    return get_column(conn, column_id)


def rename_column(conn: psycopg.Connection[Any], column_id: UUID | str, title: str) -> Column:
    return update_column(conn, column_id, title=title)


def hide_column(
    conn: psycopg.Connection[Any], column_id: UUID | str, hidden: bool = True
) -> Column:
    return update_column(conn, column_id, is_visible=not hidden)


def _check_operator_known(
    conn: psycopg.Connection[Any], operator_type: str, registry: Registry | None
) -> None:
    if registry is None:
        from websurf.worker.core.registry import load_operators  # imports the operator modules

        registry = load_operators(())
    live = workers.live_task_types(conn)
    if operator_type not in set(registry.names()) | live:
        known = ", ".join(sorted(set(registry.names()) | live)) or "none"
        raise UnknownOperatorError(
            f"no operator {operator_type!r}: neither this process nor a live worker handles it"
            f" (known: {known}), so its tasks would stay pending; allow unknown types"
            " explicitly for operators of workers that are not running yet"
        )


def set_column_operator(
    conn: psycopg.Connection[Any],
    column_id: UUID | str,
    operator_type: str | None,
    *,
    source_column_id: UUID | str | None = None,
    options: dict[str, Any] | None = None,
    registry: Registry | None = None,
    allow_unknown_type: bool = False,
) -> Column:
    """Let ``operator_type`` fill this column from edits of ``source_column_id`` (None: stop).

    An operator type that neither ``registry`` (default: the built-in and entry-point
    operators) nor any live worker handles is refused, since its tasks would wait
    forever; ``allow_unknown_type`` accepts it (a worker that will handle it is not up).
    """
    column = get_column(conn, column_id)
    source: UUID | None = None
    if operator_type is not None:
        if not 1 <= len(operator_type) <= OPERATOR_TYPE_MAX_LENGTH:
            raise SheetError(f"an operator type has 1 to {OPERATOR_TYPE_MAX_LENGTH} characters")
        if not allow_unknown_type:
            _check_operator_known(conn, operator_type, registry)
        if source_column_id is None:
            raise SheetError("a robot column needs a source column whose edits feed it")
        source = get_column(conn, source_column_id).id
        if get_column(conn, source).spreadsheet_id != column.spreadsheet_id:
            raise SheetError("the source column must be in the same spreadsheet")
        if source == column.id:
            raise SheetError("a column cannot feed itself")
    if options is not None and not isinstance(options, dict):
        raise SheetError("operator options must be a JSON object")
    reason = payloads.problem(options) if options else None
    if reason:
        raise SheetError(f"operator options {reason}")
    conn.execute(
        QUERIES["set_column_operator"],
        {
            "id": column.id,
            "operator_type": operator_type,
            "source_column_id": source,
            "operator_options": Jsonb(options) if options and operator_type else None,
        },
    )
    return get_column(conn, column.id)


# -- cells ------------------------------------------------------------------------------


def _last_row(conn: psycopg.Connection[Any], sheet: Spreadsheet) -> int:
    with conn.cursor(row_factory=scalar_row) as cur:
        last = cur.execute(QUERIES["last_cell_row"], {"spreadsheet_id": sheet.id}).fetchone()
    return max(sheet.default_rows, last or 0)


def read_sheet(
    conn: psycopg.Connection[Any],
    spreadsheet_id: UUID | str,
    *,
    include_hidden: bool = False,
    first_row: int = 1,
    rows: int = PAGE_ROWS,
) -> Sheet:
    """One page of the spreadsheet: rows first_row.. (at most ``rows`` of them).

    The sheet is as tall as its last row with a cell, at least default_rows; a missing
    cell reads as None. Only the page's cells are fetched and laid out, so reading costs
    the same however far down the last cell is.
    """
    if first_row < 1 or rows < 0:
        raise SheetError("pages start at row 1 or later and hold 0 rows or more")
    sheet = get_spreadsheet(conn, spreadsheet_id)
    columns = [c for c in list_columns(conn, sheet.id) if include_hidden or c.is_visible]
    index = {c.id: i for i, c in enumerate(columns)}
    last_row = _last_row(conn, sheet)
    height = max(0, min(rows, last_row - first_row + 1))
    cells = _all(
        conn,
        "list_cells_in_rows",
        {"spreadsheet_id": sheet.id, "first_row": first_row, "last_row": first_row + height - 1},
    )
    contents: list[list[str | None]] = [[None] * len(columns) for _ in range(height)]
    ids: list[list[UUID | None]] = [[None] * len(columns) for _ in range(height)]
    for cell in cells:
        j = index.get(cell["column_id"])
        if j is not None:
            contents[cell["row_number"] - first_row][j] = cell["content"]
            ids[cell["row_number"] - first_row][j] = cell["id"]
    return Sheet(sheet, columns, contents, ids, first_row, last_row)


def get_cell(
    conn: psycopg.Connection[Any],
    spreadsheet_id: UUID | str,
    column_id: UUID | str,
    row_number: int,
) -> Cell | None:
    row = _one(
        conn,
        "get_cell",
        {
            "spreadsheet_id": _uuid(spreadsheet_id, "spreadsheet"),
            "column_id": _uuid(column_id, "column"),
            "row_number": row_number,
        },
    )
    return _cell(row) if row else None


def get_cell_by_id(conn: psycopg.Connection[Any], cell_id: UUID | str) -> Cell | None:
    row = _one(conn, "get_cell_by_id", {"id": _uuid(cell_id, "cell")})
    return _cell(row) if row else None


def name_author(conn: psycopg.Connection[Any], user_id: str, edit_type: str = EDIT_TYPE) -> None:
    """Name the person editing cells for the rest of the current transaction."""
    if not user_id:
        raise SheetError("an edit needs the id of the person making it")
    if len(edit_type) > EDIT_TYPE_MAX_LENGTH:
        raise SheetError(f"an edit type has at most {EDIT_TYPE_MAX_LENGTH} characters")
    conn.execute(QUERIES["name_edit_author"], {"user_id": user_id, "edit_type": edit_type})


def edit_cell(
    conn: psycopg.Connection[Any],
    spreadsheet_id: UUID | str,
    column_id: UUID | str,
    row_number: int,
    content: str | None,
    *,
    user_id: str,
    edit_type: str = EDIT_TYPE,
) -> Cell:
    """A person's edit: the new content, its audit row and its robots' tasks, in one commit."""
    if not 1 <= row_number <= MAX_ROW_NUMBER:
        raise SheetError(f"rows are numbered from 1 to {MAX_ROW_NUMBER}")
    with conn.transaction():
        name_author(conn, user_id, edit_type)
        row = _one(
            conn,
            "upsert_cell_content",
            {
                "spreadsheet_id": _uuid(spreadsheet_id, "spreadsheet"),
                "column_id": _uuid(column_id, "column"),
                "row_number": row_number,
                "content": content,
            },
        )
    assert row is not None
    return _cell(row)


def cell_history(conn: psycopg.Connection[Any], cell_id: UUID | str) -> list[dict[str, Any]]:
    """Every change of one cell, oldest first: people's edits and robots' attempts."""
    return _all(conn, "cell_history", {"cell_id": _uuid(cell_id, "cell")})


def audit_trail(
    conn: psycopg.Connection[Any], spreadsheet_id: UUID | str, limit: int = AUDIT_TRAIL_LIMIT
) -> list[dict[str, Any]]:
    """The latest changes of a spreadsheet's cells, newest first, with column and row."""
    return _all(
        conn,
        "spreadsheet_audit_trail",
        {"spreadsheet_id": _uuid(spreadsheet_id, "spreadsheet"), "limit": limit},
    )


# -- people -----------------------------------------------------------------------------


def find_user(conn: psycopg.Connection[Any], ref: str) -> dict[str, Any] | None:
    """A websurfing_user by id or email."""
    return _one(conn, "find_user", {"ref": ref})


def ensure_user(conn: psycopg.Connection[Any], email: str, name: str | None = None) -> str:
    """The id of the user with this email, created when missing (demo and CLI only)."""
    _check_name(email, "an email")
    if name is not None:
        _check_name(name, "a user name")
    found = find_user(conn, email)
    if found is not None:
        return str(found["id"])
    row = _one(conn, "insert_user", {"id": str(uuid.uuid4()), "name": name, "email": email})
    assert row is not None
    return str(row["id"])


def _check_name(value: str, what: str) -> None:
    if len(value) > NAME_MAX_LENGTH:
        raise SheetError(f"{what} has at most {NAME_MAX_LENGTH} characters, not {len(value)}")


def _uuid(value: UUID | str, what: str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise SheetError(f"{value!r} is not a {what} id") from None
