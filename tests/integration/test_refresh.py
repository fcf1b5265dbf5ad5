"""Robot columns that refresh themselves, driven by hand with an injected clock.

What a user would notice: a column with refresh_every re-runs its robot for every filled
row once per interval; a 100,000-row sheet does so without ever holding more than a
window of refresh tasks in the queue; a person's edit made during a refresh is picked
before the refresh's tasks; a cell that already has a pending task gets no second one;
and the schedule follows the column (interval changed, refresh switched off).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from websurf.worker.app import refresh, sheets
from websurf.worker.core import queue, schedules
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.schedules import ScheduleError
from websurf.worker.maintenance import scheduler

WEBSURF = str(Path(sys.executable).with_name("websurf"))
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
WORKER = "test-worker"


def robot_sheet(
    conn: psycopg.Connection[Any], owner: str, rows: int, filled: int
) -> tuple[UUID, UUID]:
    """A sheet whose column B is filled by 'noop' from column A; A filled in rows 1..filled."""
    sheet = sheets.create_spreadsheet(conn, owner, "prices", rows=rows, columns=2)
    a, b = sheets.list_columns(conn, sheet.id)
    with conn.transaction():
        sheets.name_author(conn, owner)
        conn.execute(
            "UPDATE websurfing_cell SET content = 'https://example.test/' || row_number"
            " WHERE column_id = %s AND row_number <= %s",
            (a.id, filled),
        )
    sheets.set_column_operator(conn, b.id, "noop", source_column_id=a.id, options={"k": 1})
    return sheet.id, b.id


def refresh_tasks(conn: psycopg.Connection[Any], *statuses: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM websurfing_task_queue WHERE payload ? 'refresh' AND status = ANY(%s)",
        (list(statuses),),
    ).fetchone()
    assert row is not None
    return int(row[0])


def work(conn: psycopg.Connection[Any], limit: int, status: str = Status.COMPLETED) -> list[Any]:
    """Play a worker: claim up to ``limit`` due tasks in queue order and finish them."""
    claimed = queue.claim(conn, WORKER, ["noop"], limit)
    queue.finish(conn, WORKER, [Outcome(t, status, t.task_type) for t in claimed])
    return claimed


# The edit trigger's payload keys, the column's operator option k, and the refresh mark.
PAYLOAD_KEYS = (
    *("cell_id", "source_cell_id", "input", "spreadsheet_id", "column_id", "row_number"),
    *("k", "refresh"),
)


def payloads(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return [row[0] for row in conn.execute("SELECT payload FROM websurfing_task_queue")]


def the_schedule(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    (row,) = [r for r in schedules.list_schedules(conn) if r["source"] == "column"]
    return row


def test_a_100k_row_sheet_refreshes_in_a_bounded_window_behind_peoples_edits(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    rows, window = 100_000, 2_000
    owner = make_user()
    sheet_id, column_id = robot_sheet(conn, owner, rows, rows)
    refresh.set_column_refresh(conn, column_id, HOUR)
    assert refresh.run_once(conn, T0).columns_added == 1
    assert the_schedule(conn)["next_run_at"] == T0 + HOUR

    # Row 10's robot cell already has a pending task (a retry due later, say).
    cell_10 = sheets.get_cell(conn, sheet_id, column_id, 10)
    assert cell_10 is not None
    queue.enqueue(
        conn,
        "noop",
        {"cell_id": str(cell_10.id)},
        priority=8,
        delay=timedelta(days=1),
        unique_key=refresh.unique_key(cell_10.id),
    )

    assert scheduler.run_once(conn, T0 + HOUR).rounds_started == 1
    most_in_queue = 0
    edited = False
    for _ in range(rows // window * 3):
        refresh.run_once(conn, T0 + HOUR, window=window)
        in_queue = refresh_tasks(conn, "pending", "processing")
        most_in_queue = max(most_in_queue, in_queue)
        if not edited and the_schedule(conn)["refresh_rows"] >= rows // 2:
            # A person edits a cell in the middle of the refresh: picked first.
            sheets.edit_cell(conn, sheet_id, sheets.list_columns(conn, sheet_id)[0].id,
                             rows - 1, "https://example.test/new", user_id=owner)  # fmt: skip
            (first,) = work(conn, 1)
            assert first.payload["input"] == "https://example.test/new"
            assert "refresh" not in first.payload
            edited = True
        if not work(conn, window // 2) and the_schedule(conn)["refresh_after_row"] is None:
            break
    assert edited
    assert 0 < most_in_queue <= window
    row = the_schedule(conn)
    assert row["refresh_after_row"] is None and row["refresh_done_at"] is not None
    assert row["refresh_rows"] == rows - 1  # every filled row but row 10
    assert refresh_tasks(conn, "completed") == rows - 1
    counts = conn.execute(
        "SELECT count(DISTINCT payload->>'cell_id'), min(priority), max(priority)"
        " FROM websurfing_task_queue WHERE payload ? 'refresh'"
    ).fetchone()
    assert counts == (rows - 1, refresh.REFRESH_PRIORITY, refresh.REFRESH_PRIORITY)
    pending_10 = conn.execute(
        "SELECT count(*), max(priority) FROM websurfing_task_queue WHERE payload->>'cell_id' = %s",
        (str(cell_10.id),),
    ).fetchone()
    assert pending_10 == (1, 8)  # coalesced: no refresh task beside it, its priority kept
    sample = conn.execute(
        "SELECT payload FROM websurfing_task_queue WHERE payload ? 'refresh'"
        " AND payload->>'row_number' = '7'"
    ).fetchone()
    assert sample is not None
    assert sample[0]["input"] == "https://example.test/7"
    assert sample[0]["k"] == 1  # the column's operator options, as in an edit's task


def test_only_filled_rows_refresh_and_the_round_reports_its_failures(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    _, column_id = robot_sheet(conn, make_user(), rows=20, filled=5)
    refresh.set_column_refresh(conn, column_id, HOUR)
    refresh.run_once(conn, T0)
    scheduler.run_once(conn, T0 + HOUR)
    refresh.run_once(conn, T0 + HOUR)
    assert refresh_tasks(conn, "pending") == 5
    work(conn, 2, Status.FAILED)
    work(conn, 10)
    # The next tick is due, but the round has not ended yet: it waits for the round.
    assert scheduler.run_once(conn, T0 + 2 * HOUR).rounds_started == 0
    assert refresh.run_once(conn, T0 + 2 * HOUR).rounds_finished == 1
    row = the_schedule(conn)
    assert (row["refresh_rows"], row["refresh_failed"]) == (5, 2)
    assert schedules.list_schedules(conn)[0]["refresh_done_at"] is not None
    # ... and then runs once, though its hour had passed while the round ran.
    assert scheduler.run_once(conn, T0 + 2 * HOUR + timedelta(minutes=5)).rounds_started == 1
    refresh.run_once(conn, T0 + 2 * HOUR)
    assert refresh_tasks(conn, "pending") == 5


def test_the_schedule_follows_the_column(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    sheet_id, column_id = robot_sheet(conn, make_user(), rows=3, filled=3)
    refresh.set_column_refresh(conn, column_id, HOUR)
    refresh.run_once(conn, T0)
    refresh.set_column_refresh(conn, column_id, timedelta(minutes=10))
    assert refresh.run_once(conn, T0).columns_changed == 1
    assert the_schedule(conn)["next_run_at"] == T0 + timedelta(minutes=10)
    assert refresh.run_once(conn, T0).columns_changed == 0  # nothing to do: nothing written
    refresh.set_column_refresh(conn, column_id, None)
    assert refresh.run_once(conn, T0).columns_dropped == 1
    assert schedules.list_schedules(conn) == []

    refresh.set_column_refresh(conn, column_id, HOUR)
    refresh.run_once(conn, T0)
    sheets.set_column_operator(conn, column_id, None)  # no robot any more: no refresh
    assert refresh.run_once(conn, T0).columns_dropped == 1

    with pytest.raises(ScheduleError, match="at most once a minute"):
        refresh.set_column_refresh(conn, column_id, timedelta(seconds=30))
    with pytest.raises(ScheduleError, match="only a robot column"):
        refresh.set_column_refresh(conn, sheets.list_columns(conn, sheet_id)[0].id, HOUR)
    a = sheets.list_columns(conn, sheet_id)[0].id
    sheets.set_column_operator(conn, column_id, "noop", source_column_id=a)
    refresh.set_column_refresh(conn, column_id, HOUR)
    refresh.run_once(conn, T0)
    with pytest.raises(ScheduleError, match="clear the column's refresh_every instead"):
        schedules.remove_schedule(conn, f"column:{column_id}")
    conn.execute("DELETE FROM websurfing_column WHERE id = %s", (column_id,))
    assert schedules.list_schedules(conn) == []  # a deleted column takes its schedule along


def test_the_worker_role_may_run_schedules_and_refreshes(
    conn: psycopg.Connection[Any], database_url: str, make_user: Callable[..., str]
) -> None:
    _, column_id = robot_sheet(conn, make_user(), rows=4, filled=4)
    refresh.set_column_refresh(conn, column_id, HOUR)
    schedules.add_schedule(conn, schedules.Spec("s", "noop", cron="0 * * * *"), now=T0)
    code = schedules.ScheduleRegistry()
    code.schedule("*/5 * * * *", "noop", name="from-code")
    with psycopg.connect(database_url, autocommit=True) as worker:
        worker.execute("SET ROLE websurf_worker")
        schedules.sync_code_schedules(worker, code, now=T0)
        refresh.run_once(worker, T0)
        assert scheduler.run_once(worker, T0 + HOUR).rounds_started == 1
        assert refresh.run_once(worker, T0 + HOUR).enqueued == 4
        assert len(schedules.list_schedules(worker)) == 3


def test_refresh_tasks_carry_their_source_cells_edit_version_and_write_their_cells(
    conn: psycopg.Connection[Any], make_user: Callable[..., str]
) -> None:
    """A robot cell takes only a result for a version its source cell's content really
    had (0024): a refresh reuses the version of the source cell's latest edit."""
    _, column_id = robot_sheet(conn, make_user(), rows=3, filled=3)
    refresh.set_column_refresh(conn, column_id, HOUR)
    refresh.run_once(conn, T0)
    scheduler.run_once(conn, T0 + HOUR)
    refresh.run_once(conn, T0 + HOUR)
    assert [sorted(p) for p in payloads(conn)] == [sorted((*PAYLOAD_KEYS, "input_version"))] * 3
    edits = dict(
        conn.execute(
            "SELECT cell_id::text, max(input_version) FROM websurfing_cell_edit_event"
            " GROUP BY cell_id"
        ).fetchall()
    )
    assert {p["source_cell_id"]: p["input_version"] for p in payloads(conn)} == edits

    claimed = queue.claim(conn, WORKER, ["noop"], 10)
    outcomes = [
        Outcome(t, Status.COMPLETED, "noop", writes_cell=True, cell_content="refreshed")
        for t in claimed
    ]
    with conn.transaction():
        queue.finish(conn, WORKER, outcomes)
        assert queue.record_robot_events(conn, outcomes) == 3
    written = conn.execute(
        "SELECT content, input_version FROM websurfing_cell WHERE column_id = %s ORDER BY 2",
        (column_id,),
    ).fetchall()
    assert written == [("refreshed", v) for v in sorted(edits.values())]


def test_cli_switches_a_columns_refresh_on_and_off(
    conn: psycopg.Connection[Any], database_url: str, make_user: Callable[..., str]
) -> None:
    sheet_id, column_id = robot_sheet(conn, make_user(), rows=2, filled=2)

    def websurf(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WEBSURF, "schedules", "refresh", "--database-url", database_url, str(sheet_id), *args],
            env={k: v for k, v in os.environ.items() if not k.startswith("WEBSURF_")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert websurf("B", "--every", "1h").stdout.strip() == "B: refreshes every 1h"
    assert conn.execute(
        "SELECT refresh_every FROM websurfing_column WHERE id = %s", (column_id,)
    ).fetchone() == (HOUR,)
    too_often = websurf("B", "--every", "10s")
    assert too_often.returncode == 1
    assert too_often.stderr.strip().splitlines()[-1] == (
        "error: a column refreshes at most once a minute"
    )
    assert websurf("A", "--every", "1h").stderr.strip().splitlines()[-1] == (
        "error: only a robot column (one with an operator) can refresh"
    )
    assert websurf("B", "--off").stdout.strip() == "B: no longer refreshes"
    listed = subprocess.run(
        [WEBSURF, "schedules", "list", "--json", "--database-url", database_url],
        env={k: v for k, v in os.environ.items() if not k.startswith("WEBSURF_")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(listed.stdout) == []
