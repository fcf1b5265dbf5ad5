"""What ``websurf sheets`` and ``websurf demo`` print: a page of a sheet, its audit trail."""

from __future__ import annotations

from typing import Any

from websurf.cli.render import visible
from websurf.worker.app.sheets import Sheet

CELL_WIDTH_MAX = 28


def _shown(value: str | None) -> str:
    """A value as the table shows it: one line, control characters visible."""
    return "" if value is None else visible(" ".join(value.split()))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_sheet(sheet: Sheet) -> list[str]:
    """The sheet as a text table, with each robot column's operator under its title."""
    titles = [_shown(c.title) for c in sheet.columns]
    notes = [f"<- {_shown(c.operator_type)}" if c.operator_type else "" for c in sheet.columns]
    rows = [[_shown(v) for v in row] for row in sheet.rows]
    widths = [
        min(CELL_WIDTH_MAX, max([len(titles[j]), len(notes[j]), *(len(r[j]) for r in rows)]))
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
    for number, row in enumerate(rows, start=sheet.first_row):
        out.append(line(row, str(number)))
    shown_to = sheet.first_row + len(sheet.rows) - 1
    if sheet.first_row > 1 or shown_to < sheet.last_row:
        out.append(f"rows {sheet.first_row}-{shown_to} of {sheet.last_row}")
    return out


def render_audit(rows: list[dict[str, Any]]) -> list[str]:
    """Audit rows, a line each: when, which cell, person or robot, what changed."""
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
