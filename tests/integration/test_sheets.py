"""The spreadsheet API: default layout, column changes, reading and editing cells."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from websurf.worker.app import sheets
from websurf.worker.app.sheets import SheetError


def _titles(conn: psycopg.Connection[Any], sheet_id: Any) -> list[str]:
    return [c.title for c in sheets.list_columns(conn, sheet_id)]


def _positions(conn: psycopg.Connection[Any], sheet_id: Any) -> list[int]:
    return [c.position for c in sheets.list_columns(conn, sheet_id)]


def test_a_new_spreadsheet_has_the_plans_default_columns_and_rows_of_empty_cells(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    owner = make_user()

    created = sheets.create_spreadsheet(conn, owner, "Leads")
    sheet = sheets.read_sheet(conn, created.id)

    assert (created.default_columns, created.default_rows) == (2, 8)
    assert [c.title for c in sheet.columns] == ["A", "B"]
    assert sheet.rows == [[None, None]] * 8
    assert all(cell_id is not None for row in sheet.cell_ids for cell_id in row)
    count = conn.execute(
        "SELECT count(*) FROM websurfing_cell WHERE spreadsheet_id = %s", (created.id,)
    ).fetchone()
    assert count == (16,)


def test_a_spreadsheet_can_be_created_with_its_own_size(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    created = sheets.create_spreadsheet(conn, make_user(), "Wide", columns=28, rows=3)

    sheet = sheets.read_sheet(conn, created.id)

    assert [c.title for c in sheet.columns][-3:] == ["Z", "AA", "AB"]
    assert len(sheet.rows) == 3
    assert sheets.list_spreadsheets(conn, created.owner_id)[0].id == created.id


def test_adding_a_column_in_the_middle_shifts_the_others_and_writes_no_cells(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    created = sheets.create_spreadsheet(conn, make_user(), "S", columns=3, rows=4)

    added = sheets.add_column(conn, created.id, "Notes", position=1)

    assert _titles(conn, created.id) == ["A", "Notes", "B", "C"]
    assert _positions(conn, created.id) == [0, 1, 2, 3]
    assert added.position == 1
    sheet = sheets.read_sheet(conn, created.id)
    assert [row[1] for row in sheet.cell_ids] == [None] * 4  # cells come when first written
    assert [row[1] for row in sheet.rows] == [None] * 4  # and read as empty until then
    cell = sheets.edit_cell(conn, created.id, added.id, 2, "note", user_id=created.owner_id)
    assert sheets.read_sheet(conn, created.id).cell_ids[1][1] == cell.id


def test_moving_columns_keeps_positions_unique(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    created = sheets.create_spreadsheet(conn, make_user(), "S", columns=4, rows=1)
    columns = {c.title: c for c in sheets.list_columns(conn, created.id)}

    sheets.move_column(conn, columns["D"].id, 0)
    assert _titles(conn, created.id) == ["D", "A", "B", "C"]
    sheets.move_column(conn, columns["A"].id, 2)  # a swap of neighbours
    assert _titles(conn, created.id) == ["D", "B", "A", "C"]
    sheets.move_column(conn, columns["D"].id, 3)
    assert _titles(conn, created.id) == ["B", "A", "C", "D"]
    assert _positions(conn, created.id) == [0, 1, 2, 3]
    with pytest.raises(SheetError, match="between 0 and 3"):
        sheets.move_column(conn, columns["D"].id, 4)


def test_renamed_and_hidden_columns_show_as_such(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    created = sheets.create_spreadsheet(conn, make_user(), "S", rows=1)
    first, second = sheets.list_columns(conn, created.id)

    sheets.rename_column(conn, first.id, "URL")
    sheets.hide_column(conn, second.id)

    assert [c.title for c in sheets.read_sheet(conn, created.id).columns] == ["URL"]
    every = sheets.read_sheet(conn, created.id, include_hidden=True).columns
    assert [(c.title, c.is_visible) for c in every] == [("URL", True), ("B", False)]
    assert sheets.find_column(conn, created.id, "url").id == first.id
    assert sheets.find_column(conn, created.id, "1").id == second.id
    with pytest.raises(SheetError, match="no column 'Price'"):
        sheets.find_column(conn, created.id, "Price")


def test_an_edited_cell_reads_back_and_new_rows_grow_the_sheet(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    user = make_user()
    created = sheets.create_spreadsheet(conn, user, "S", rows=2)
    a, b = sheets.list_columns(conn, created.id)

    cell = sheets.edit_cell(conn, created.id, a.id, 1, "hello", user_id=user)
    sheets.edit_cell(conn, created.id, b.id, 5, "far down", user_id=user)

    assert sheets.get_cell(conn, created.id, a.id, 1) == sheets.get_cell_by_id(conn, cell.id)
    assert cell.content == "hello"
    sheet = sheets.read_sheet(conn, created.id)
    assert sheet.cell(1, "A") == "hello"
    assert len(sheet.rows) == 5 and sheet.cell(5, "B") == "far down"


def test_a_robot_column_must_be_fed_by_another_column_of_the_same_sheet(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    user = make_user()
    one = sheets.create_spreadsheet(conn, user, "One", rows=1)
    other = sheets.create_spreadsheet(conn, user, "Other", rows=1)
    a, b = sheets.list_columns(conn, one.id)
    foreign = sheets.list_columns(conn, other.id)[0]

    with pytest.raises(SheetError, match="cannot feed itself"):
        sheets.set_column_operator(conn, b.id, "uppercase", source_column_id=b.id)
    with pytest.raises(SheetError, match="same spreadsheet"):
        sheets.set_column_operator(conn, b.id, "uppercase", source_column_id=foreign.id)
    with pytest.raises(SheetError, match="needs a source column"):
        sheets.set_column_operator(conn, b.id, "uppercase")

    configured = sheets.set_column_operator(
        conn, b.id, "uppercase", source_column_id=a.id, options={"style": "loud"}
    )
    assert (configured.operator_type, configured.source_column_id) == ("uppercase", a.id)
    assert configured.operator_options == {"style": "loud"}
    cleared = sheets.set_column_operator(conn, b.id, None)
    assert (cleared.operator_type, cleared.source_column_id, cleared.operator_options) == (
        None,
        None,
        None,
    )


def test_bad_ids_and_names_are_refused_with_a_reason(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    with pytest.raises(SheetError, match="is not a spreadsheet id"):
        sheets.read_sheet(conn, "nope")
    with pytest.raises(SheetError, match="no spreadsheet"):
        sheets.read_sheet(conn, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(SheetError, match="needs a name"):
        sheets.create_spreadsheet(conn, make_user(), "  ")


def test_a_robot_column_with_an_unknown_operator_is_refused(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    created = sheets.create_spreadsheet(conn, make_user(), "typo", columns=2, rows=1)
    a, b = sheets.list_columns(conn, created.id)

    with pytest.raises(sheets.UnknownOperatorError, match=r"'uppercsae'.*would stay pending"):
        sheets.set_column_operator(conn, b.id, "uppercsae", source_column_id=a.id)
    assert sheets.get_column(conn, b.id).operator_type is None

    # Known to a live worker (one with --operators this process never loaded): accepted.
    conn.execute(
        "INSERT INTO websurf.worker (id, hostname, pid, task_types)"
        " VALUES ('h/0/x', 'h', 1, '{shout}')"
    )
    assert sheets.set_column_operator(conn, b.id, "shout", source_column_id=a.id).operator_type
    # Explicitly allowed, for a worker that is not up yet.
    sheets.set_column_operator(
        conn, b.id, "later_robot", source_column_id=a.id, allow_unknown_type=True
    )
