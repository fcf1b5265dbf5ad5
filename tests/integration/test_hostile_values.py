"""No value any role can store in a websurf table stops the queue or an admin command.

What a user would notice (issue 21): one row written by the web app, the worker or by
hand, holding an extreme value in any column (infinite or far-off timestamps, integer
limits, JSON nested thousands deep or megabytes long, NULL, empty text, a schedule
every 178,000,000 years) used to stop every claim, the reaper, every schedule or
``websurf status``. Now each such value is either refused when written (a CHECK with a
clear name, or the column's type) or costs its own row alone: beside it, good tasks
are claimed and complete on their first attempt, the reaper, pruner and scheduler run,
a good schedule ticks, and every admin command answers with exit code 0 or one line.

Each value is written as the owner, as websurf_app and as websurf_worker (SET ROLE),
into a row of its own beside good rows; a failing case is named table.column=value.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import errors, sql
from support.daemon import Daemons
from support.rows import new_column, new_user
from support.waiting import wait_for

from websurf.cli.main import cli
from websurf.sql.migrate import migrate, shipped_migrations
from websurf.worker.app import sheets
from websurf.worker.core import queue
from websurf.worker.core.model import Outcome, Status
from websurf.worker.maintenance import pruner, reaper, scheduler

ROLES = ("owner", "websurf_app", "websurf_worker")
WORKER_ID = "hostile-test/1/claimer"
GOOD_TASKS = 3


def _deep(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


def _deep_list(levels: int) -> str:
    return '{"a": ' + "[" * levels + "1" + "]" * levels + "}"


HUGE_OBJECT = '{"text": "' + "x" * (2 * 2**20) + '"}'  # 2 MiB of JSON
HUGE_INTEGER = '{"n": 1' + "0" * 5000 + "}"  # more digits than Python reads by default

INTEGERS = {"min": "-2147483648", "max": "2147483647", "minus one": "-1", "null": None}
TIMES = {
    "infinity": "infinity",
    "-infinity": "-infinity",
    "year 1": "0001-01-01 00:00:00+00",
    "year 200000": "200000-01-01 00:00:00+00",
    "null": None,
}
JSON = {
    "2000 deep": _deep(2000),
    "5000 deep": _deep(5000),
    "3000 deep lists": _deep_list(3000),
    "2 MiB": HUGE_OBJECT,
    "huge integer": HUGE_INTEGER,
    "null": None,
}
INTERVALS = {
    "178000000 years": "178000000 years",
    "-1 second": "-1 second",
    "0.0001 s": "0.0001 seconds",
    "null": None,
}
TEXTS = {"empty": "", "null": None, "2 MiB": "y" * (2 * 2**20)}
REALS = {"NaN": "NaN", "Infinity": "Infinity", "-1": "-1", "zero": "0", "null": None}


@dataclass(frozen=True)
class Case:
    table: str
    column: str
    label: str
    value: str | None

    @property
    def id(self) -> str:
        return f"{self.table}.{self.column}={self.label}"


def _cases(table: str, columns: dict[str, dict[str, str | None]]) -> list[Case]:
    return [
        Case(table, column, label, value)
        for column, values in columns.items()
        for label, value in values.items()
    ]


CASES = [
    *_cases(
        "websurfing_task_queue",
        {
            "payload": JSON,
            "priority": INTEGERS,
            "attempts": INTEGERS,
            "max_attempts": INTEGERS | {"zero": "0"},
            "scheduled_for": TIMES,
            "created_at": TIMES,
            "updated_at": TIMES,
            "started_at": TIMES,
            "completed_at": TIMES,
            "failed_at": TIMES,
            "status": {"null": None},
            "task_type": {"empty": ""},
            "unique_key": TEXTS,
            "error_message": TEXTS,
            "worker_id": {"empty": ""},
        },
    ),
    *_cases(
        "websurf.schedule",
        {
            "payload": JSON,
            "every": INTERVALS,
            "next_run_at": TIMES,
            "last_run_at": TIMES,
            "priority": INTEGERS,
            "max_attempts": INTEGERS,
            "cron": {"2 MiB": TEXTS["2 MiB"], "not cron": "every tuesday-ish"},
            "time_zone": {"unknown": "Mars/Olympus_Mons", "2 MiB": TEXTS["2 MiB"]},
            "ticks_run": {"max": "9223372036854775807", "minus one": "-1"},
            "refresh_after_row": INTEGERS,
        },
    ),
    *_cases(
        "websurfing_column",
        {
            "operator_options": JSON,
            "refresh_every": INTERVALS,
            "position": INTEGERS,
            "width": INTEGERS,
            "created_at": TIMES,
        },
    ),
    *_cases(
        "websurfing_cell",
        {
            "row_number": INTEGERS,
            "created_at": TIMES,
            "updated_at": TIMES,
            "formatted_content": JSON,
        },
    ),
    *_cases(
        "websurfing_spreadsheet",
        {
            "default_rows": INTEGERS,
            "default_columns": INTEGERS,
            "created_at": TIMES,
            "updated_at": TIMES,
            "name": {"empty": ""},
        },
    ),
    *_cases(
        "websurfing_transformer_session",
        {
            "initial_input": JSON,
            "step_data": JSON,
            "current_step": INTEGERS,
            "total_steps": INTEGERS,
            "created_at": TIMES,
            "completed_at": TIMES,
        },
    ),
    *_cases(
        "websurf.worker",
        {
            "stale_after_s": REALS,
            "last_heartbeat_at": TIMES,
            "started_at": TIMES,
            "pid": INTEGERS,
        },
    ),
]


@dataclass
class World:
    """Good rows, and one victim row per table for the hostile values to land in."""

    owner: str
    sheet: str
    good_tasks: list[str]
    victims: dict[str, str]  # table -> the id of its victim row


def _one(conn: psycopg.Connection[Any], statement: str, *params: Any) -> Any:
    row = conn.execute(statement.encode(), params).fetchone()  # bytes: test-only SQL
    assert row is not None
    return row[0]


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    owner = new_user(conn)
    sheet, source = new_column(conn, owner)
    conn.execute(
        "INSERT INTO websurfing_column (spreadsheet_id, position, title, operator_type,"
        " source_column_id) VALUES (%s, 1, 'B', 'uppercase', %s)",
        (sheet, source),
    )
    conn.execute(
        "SELECT set_config('websurf.user_id', %s, false)", (owner,)
    )  # the edits below name their author
    conn.execute(
        "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number, content)"
        " VALUES (%s, %s, 1, 'hello')",
        (sheet, source),
    )
    conn.execute("SELECT set_config('websurf.user_id', '', false)")
    good_tasks = [queue.enqueue(conn, "noop", {"n": n}) for n in range(GOOD_TASKS)]
    conn.execute(
        "INSERT INTO websurf.schedule (name, every, task_type, next_run_at)"
        " VALUES ('good', '1 minute', 'noop', now() - interval '1 second')"
    )
    victim_sheet, victim_column = new_column(conn, owner)
    victims = {
        "websurfing_spreadsheet": victim_sheet,
        "websurfing_column": victim_column,
        "websurfing_cell": str(
            _one(
                conn,
                "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
                " VALUES (%s, %s, 2) RETURNING id",
                victim_sheet,
                victim_column,
            )
        ),
        "websurf.schedule": str(
            _one(
                conn,
                "INSERT INTO websurf.schedule (name, every, task_type, next_run_at)"
                " VALUES ('victim', '1 hour', 'noop', now() + interval '1 hour') RETURNING id",
            )
        ),
        "websurfing_transformer_session": str(
            _one(
                conn,
                "INSERT INTO websurfing_transformer_session (session_name, initial_input)"
                " VALUES ('word_stats', '{}') RETURNING id",
            )
        ),
        "websurf.worker": str(
            _one(
                conn,
                "INSERT INTO websurf.worker (id, hostname, pid) VALUES ('victim/1/x', 'victim', 1)"
                " RETURNING id",
            )
        ),
    }
    return World(owner, str(sheet), [str(t) for t in good_tasks], victims)


def _table(name: str) -> sql.Composable:
    return sql.Identifier(*name.split("."))


def _write(conn: psycopg.Connection[Any], case: Case, world: World) -> Any:
    """Write the case's value: a new task row, or the victim row of another table."""
    column = sql.Identifier(case.column)
    if case.table == "websurfing_task_queue":
        if case.column in ("payload", "task_type"):
            other = "task_type" if case.column == "payload" else "payload"
            filler = "noop" if other == "task_type" else "{}"
            statement = sql.SQL(
                "INSERT INTO websurfing_task_queue ({}, {}) VALUES (%s, %s) RETURNING id"
            ).format(column, sql.Identifier(other))
            return conn.execute(statement, (case.value, filler)).fetchone()
        statement = sql.SQL(
            "INSERT INTO websurfing_task_queue (task_type, payload, {}) VALUES ('noop', '{{}}', %s)"
            " RETURNING id"
        ).format(column)
        return conn.execute(statement, (case.value,)).fetchone()
    statement = sql.SQL("UPDATE {} SET {} = %s WHERE id = %s").format(_table(case.table), column)
    return conn.execute(statement, (case.value, world.victims[case.table]))


def _as(conn: psycopg.Connection[Any], role: str) -> None:
    if role != "owner":
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))


def _refusal(exc: psycopg.Error) -> str | None:
    """Why a write was refused, when the refusal is clear; None when it is not."""
    if isinstance(exc, errors.InsufficientPrivilege):
        return "not this role's to write"
    if isinstance(exc, errors.CheckViolation):
        return exc.diag.constraint_name
    if isinstance(exc, errors.IntegrityError | errors.DataError | errors.ProgramLimitExceeded):
        return type(exc).__name__
    if isinstance(exc, errors.RaiseException):  # a guard trigger's own message
        return str(exc).splitlines()[0]
    return None


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def _answers(result: Result, command: str) -> None:
    """Exit 0, or a non-zero exit with one line saying why; never a traceback."""
    assert not (result.exception is not None and not isinstance(result.exception, SystemExit)), (
        f"{command} raised {result.exception!r}"
    )
    if result.exit_code != 0:
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1, f"{command} exited {result.exit_code}: {result.output[:500]}"
    assert "Traceback" not in result.output, command


def _everything_still_works(
    conn: psycopg.Connection[Any], database_url: str, world: World, task_ids: list[str]
) -> None:
    claimed = queue.claim(conn, WORKER_ID, ["noop", "uppercase"], 100)
    by_id = {str(task.id): task for task in claimed}
    for task_id in world.good_tasks:
        assert task_id in by_id, "a good task was not claimed"
        assert by_id[task_id].attempt == 1
        assert by_id[task_id].malformed is None
    outcomes = [
        Outcome(task, Status.COMPLETED, task.task_type)
        if task.malformed is None
        else Outcome(task, Status.FAILED, task.task_type, error=task.malformed)
        for task in claimed
    ]
    recorded = queue.finish(conn, WORKER_ID, outcomes)
    assert {uuid.UUID(t) for t in world.good_tasks} <= recorded
    done = conn.execute(
        "SELECT count(*) FROM websurfing_task_queue WHERE id = ANY(%s::uuid[])"
        " AND status = 'completed' AND attempts = 1",
        (world.good_tasks,),
    ).fetchone()
    assert done == (GOOD_TASKS,)

    assert reaper.run_once(conn, {"noop": 60.0}).ran
    pruner.run_once(conn, timedelta(days=7))
    ticks = scheduler.run_once(conn)
    assert ticks.by_schedule.get("good") == "enqueued"

    for args in (
        ["status"],
        ["status", "--json"],
        ["tasks", "list"],
        ["tasks", "list", "--json"],
        ["schedules", "list"],
        ["schedules", "list", "--json"],
        ["sheets", "show", world.sheet],
        ["sheets", "show", world.victims["websurfing_spreadsheet"]],
        ["sheets", "list"],
        *(["tasks", "show", task_id] for task_id in task_ids),
    ):
        _answers(_cli(*args, "--database-url", database_url), " ".join(args[:2]))
    edit = _cli(
        "sheets", "edit", world.victims["websurfing_spreadsheet"], "A", "3", "hi",
        "--user", world.owner, "--database-url", database_url,
    )  # fmt: skip
    _answers(edit, "sheets edit")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_value_is_refused_or_harms_only_its_row(
    conn: psycopg.Connection[Any], database_url: str, world: World, case: Case
) -> None:
    task_ids: list[str] = []
    for role in ROLES:
        try:
            with conn.transaction():
                _as(conn, role)
                written = _write(conn, case, world)
        except psycopg.Error as exc:
            reason = _refusal(exc)
            assert reason, f"{case.id} as {role}: refused without a clear reason: {exc}"
            continue
        if case.table == "websurfing_task_queue" and written is not None:
            task_ids.append(str(written[0]))
    _everything_still_works(conn, database_url, world, task_ids)


# -- the claim's byte budget ---------------------------------------------------------------

BIG_PAYLOAD_BYTES = 900 * 1024


def _big_tasks(conn: psycopg.Connection[Any], count: int) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload)"
        " SELECT 'noop', jsonb_build_object('text', repeat('z', %s), 'n', n)"
        " FROM generate_series(1, %s) AS n",
        (BIG_PAYLOAD_BYTES, count),
    )


def test_a_claim_stops_taking_tasks_once_their_payloads_pass_the_byte_budget(
    conn: psycopg.Connection[Any],
) -> None:
    _big_tasks(conn, 5)

    rows = queue.claim_rows(conn, WORKER_ID, ["noop"], 10, max_bytes=2 * 2**20)

    # 0, 0.9 and 1.8 MiB came before the first three: under 2 MiB; the fourth's 2.7 not
    assert len(rows) == 3
    assert all(row.payload_bytes > BIG_PAYLOAD_BYTES for row in rows)
    assert queue.budget_spent(rows, 2 * 2**20)
    pending = conn.execute(
        "SELECT count(*) FROM websurfing_task_queue WHERE status = 'pending'"
    ).fetchone()
    assert pending == (2,)  # the others wait, unclaimed and uncounted, for the next claim


def test_a_claim_takes_one_task_even_when_it_alone_passes_the_budget(
    conn: psycopg.Connection[Any],
) -> None:
    _big_tasks(conn, 2)

    rows = queue.claim_rows(conn, WORKER_ID, ["noop"], 10, max_bytes=1)

    assert [row.attempts for row in rows] == [1]


# -- all at once, with a real worker -------------------------------------------------------

MANY_GOOD_TASKS = 200


def test_a_real_worker_completes_good_work_beside_every_value_that_got_in(
    conn: psycopg.Connection[Any], database_url: str, world: World, daemons: Daemons
) -> None:
    accepted: list[str] = []
    for case in CASES:
        for role in ROLES:
            try:
                with conn.transaction():
                    _as(conn, role)
                    _write(conn, case, world)
            except psycopg.Error:
                continue
            accepted.append(f"{case.id} as {role}")
    unreadable = _one(
        conn,
        "INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('noop', %s) RETURNING id",
        HUGE_INTEGER,
    )
    _big_tasks(conn, 12)  # more than one claim's byte budget
    good = queue.enqueue_many(
        conn, [queue.NewTask("noop", {"n": n}) for n in range(MANY_GOOD_TASKS)]
    )

    daemons.worker(database_url, "--poll-interval", "0.2", concurrency=4)

    def good_done() -> bool:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed' AND attempts = 1),"
            " count(*) FILTER (WHERE attempts > 1)"
            " FROM websurfing_task_queue WHERE id = ANY(%s::uuid[])",
            ([*map(str, good), *world.good_tasks],),
        ).fetchone()
        assert row is not None and row[1] == 0, "a good task needed a second attempt"
        return bool(row[0] == MANY_GOOD_TASKS + GOOD_TASKS)

    wait_for(good_done, f"the good tasks to complete beside {len(accepted)} hostile values")
    failed = conn.execute(
        "SELECT status, error_message FROM websurfing_task_queue WHERE id = %s", (unreadable,)
    ).fetchone()
    assert failed is not None
    assert failed[0] == "failed"
    assert "payload cannot be read" in failed[1]

    def big_done() -> bool:
        row = conn.execute(
            "SELECT count(*) FROM websurfing_task_queue"
            " WHERE payload ? 'text' AND status = 'completed' AND attempts = 1"
        ).fetchone()
        return row == (12,)

    wait_for(big_done, "the 900 KiB payloads to complete, a byte budget's worth per claim")


# -- a live database that holds such rows already -------------------------------------------

LIMITS_VERSION = 23


def test_a_database_holding_hostile_rows_migrates_and_repairs_them(
    empty_database_url: str,
) -> None:
    before = [m for m in shipped_migrations() if m.version < LIMITS_VERSION]
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        migrate(conn, shipped=before)
        owner = new_user(conn)
        sheet, column = new_column(conn, owner)
        cell = str(
            _one(
                conn,
                "INSERT INTO websurfing_cell (spreadsheet_id, column_id, row_number)"
                " VALUES (%s, %s, 1) RETURNING id",
                sheet,
                column,
            )
        )
        deep_with_cell = '{"cell_id": "' + cell + '", "x": ' + _deep(2000) + "}"
        tasks = {
            name: str(_one(conn, statement, *params))
            for name, statement, params in [
                (
                    "overflowing",
                    "INSERT INTO websurfing_task_queue (task_type, payload, attempts, priority,"
                    " created_at, scheduled_for) VALUES ('noop', '{}', 2147483647, 99999,"
                    " 'infinity', '-infinity') RETURNING id",
                    (),
                ),
                (
                    "negative",
                    "INSERT INTO websurfing_task_queue (task_type, payload, attempts)"
                    " VALUES ('noop', '{}', -2147483648) RETURNING id",
                    (),
                ),
                (
                    "deep pending",
                    "INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('noop', %s)"
                    " RETURNING id",
                    (deep_with_cell,),
                ),
                (
                    "huge completed",
                    "INSERT INTO websurfing_task_queue (task_type, payload, status, attempts)"
                    " VALUES ('noop', %s, 'completed', 1) RETURNING id",
                    (HUGE_OBJECT,),
                ),
                (
                    "good",
                    "INSERT INTO websurfing_task_queue (task_type, payload)"
                    " VALUES ('noop', '{\"n\": 1}') RETURNING id",
                    (),
                ),
            ]
        }
        conn.execute(
            "INSERT INTO websurf.schedule (name, every, task_type, next_run_at, payload)"
            " VALUES ('eons', '178000000 years', 'noop', '-infinity', '{}'),"
            " ('deep', '1 hour', 'noop', now(), %s)",
            (_deep(3000),),
        )
        conn.execute(
            "UPDATE websurfing_column SET operator_options = %s, created_at = 'infinity'",
            (_deep(2000),),
        )
        conn.execute("UPDATE websurfing_spreadsheet SET default_rows = 2147483647")
        conn.execute(
            "INSERT INTO websurfing_transformer_session (session_name, initial_input,"
            " current_step) VALUES ('word_stats', %s, -2147483648)",
            (_deep(2000),),
        )
        conn.execute(
            "INSERT INTO websurf.worker (id, hostname, pid, stale_after_s, last_heartbeat_at)"
            " VALUES ('w/1/x', 'w', 1, 'NaN', '-infinity')"
        )

        migrate(conn)

        assert conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'c' AND NOT convalidated"
        ).fetchone() == (0,)
        rows = {
            name: conn.execute(
                "SELECT status, attempts, priority, created_at::text, scheduled_for::text,"
                " payload, error_message FROM websurfing_task_queue WHERE id = %s",
                (task_id,),
            ).fetchone()
            for name, task_id in tasks.items()
        }
        schedules = {
            name: rest
            for name, *rest in conn.execute(
                "SELECT name, every::text, next_run_at::text, paused FROM websurf.schedule"
            ).fetchall()
        }
        others = conn.execute(
            "SELECT (SELECT operator_options ? 'options_removed' FROM websurfing_column),"
            " (SELECT default_rows FROM websurfing_spreadsheet),"
            " (SELECT initial_input ? 'input_removed' FROM websurfing_transformer_session),"
            " (SELECT current_step FROM websurfing_transformer_session),"
            " (SELECT stale_after_s FROM websurf.worker)"
        ).fetchone()

    status, attempts, priority, created_at, scheduled_for, _, error = rows["overflowing"]
    assert (status, attempts, priority) == ("failed", 3, 1000)  # its attempts were used up
    assert created_at.startswith("9000-01-01") and scheduled_for.startswith("1900-01-01")
    assert "migration 0023" in error and "attempts were used up" in error
    assert rows["negative"][:2] == ("pending", 0)  # clamped, and still runs
    status, _, _, _, _, payload, error = rows["deep pending"]
    assert status == "failed" and "nested more than 64 levels" in error
    assert payload["cell_id"] == cell  # its audit link is kept
    assert rows["huge completed"][0] == "completed"  # history keeps its outcome
    assert rows["huge completed"][5]["payload_removed"] == "its payload is larger than 1 MiB"
    assert rows["good"][0] == "pending" and rows["good"][5] == {"n": 1}
    assert schedules["eons"] == ["10 years", "1900-01-01 00:00:00+00", False]
    assert schedules["deep"][2] is True  # its payload had to go: paused
    assert others == (True, 100000, True, 0, 86400.0)


# -- the limits as the commands and the Python API meet them ---------------------------------


@pytest.mark.parametrize(
    ("task", "reason"),
    [
        (queue.NewTask("noop", {}, priority=1001), "priority must be between -1000 and 1000"),
        (queue.NewTask("noop", {}, max_attempts=1001), "max attempts must be between 1 and 1000"),
        (queue.NewTask("noop", {"a": [[[[]]]]}), None),  # within the limits
        (
            queue.NewTask("noop", {"text": "x" * (2 * 2**20)}),
            "breaks its limit task_queue_payload_size",
        ),
        (
            queue.NewTask("noop", {}, unique_key="k" * 10_000),
            "breaks its limit task_queue_unique_key_length",
        ),
    ],
    ids=["priority", "max attempts", "fine", "2 MiB payload", "long unique key"],
)
def test_enqueue_refuses_what_breaks_a_limit_in_one_line(
    conn: psycopg.Connection[Any], task: queue.NewTask, reason: str | None
) -> None:
    if reason is None:
        queue.enqueue_many(conn, [task])
        return
    with pytest.raises(queue.EnqueueError, match=reason):
        queue.enqueue_many(conn, [task])
    assert conn.execute("SELECT count(*) FROM websurfing_task_queue").fetchone() == (0,)


def test_enqueue_refuses_a_payload_deeper_than_the_database_keeps(
    conn: psycopg.Connection[Any],
) -> None:
    deep: dict[str, Any] = {}
    for _ in range(70):
        deep = {"a": deep}
    with pytest.raises(queue.EnqueueError, match="nested more than 64 levels deep"):
        queue.enqueue(conn, "noop", deep)


@pytest.mark.parametrize(
    "args",
    [
        ["enqueue", "noop", "--payload", '{"text": "' + "x" * (2 * 2**20) + '"}'],
        ["enqueue", "noop", "--priority", "1001"],
        ["schedules", "add", "s", "noop", "--every", "0.5s", "--allow-unknown-type"],
        ["schedules", "add", "s", "noop", "--every", "3650d", "--allow-unknown-type"],
        ["schedules", "add", "s", "noop", "--every", "1h", "--priority", "5000"],
    ],
    ids=["2 MiB payload", "priority", "every 0.5s", "every 10 years", "schedule priority"],
)
def test_a_command_asked_to_break_a_limit_says_so_in_one_line(
    database_url: str, args: list[str]
) -> None:
    result = _cli(*args, "--database-url", database_url)
    _answers(result, " ".join(args[:2]))
    assert result.exit_code != 0


def test_a_retry_past_the_attempts_limit_says_so_in_one_line(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    task = _one(
        conn,
        "INSERT INTO websurfing_task_queue (task_type, payload, status, attempts, max_attempts)"
        " VALUES ('noop', '{}', 'failed', 1000, 1000) RETURNING id",
    )

    result = _cli("tasks", "retry", str(task), "--database-url", database_url)

    _answers(result, "tasks retry")
    assert result.exit_code != 0 and "at most 1000 attempts" in result.output


def test_a_replacement_recovers_a_claim_its_predecessor_never_counted(
    conn: psycopg.Connection[Any],
) -> None:
    dead = "host-a/0/dead"
    task = _one(
        conn,
        "INSERT INTO websurfing_task_queue (task_type, payload, status, attempts, worker_id,"
        " started_at) VALUES ('noop', '{}', 'processing', 0, %s, now()) RETURNING id",
        dead,
    )

    counts = reaper.recover_dead_worker(conn, dead, how="killed by SIGKILL")

    assert counts.handed_back == 1
    row = conn.execute(
        "SELECT status, attempts FROM websurfing_task_queue WHERE id = %s", (task,)
    ).fetchone()
    assert row == ("pending", 0)


def test_an_edit_too_large_for_its_robots_payload_is_refused_whole(
    conn: psycopg.Connection[Any],
) -> None:
    user = new_user(conn)
    sheet = sheets.create_spreadsheet(conn, user, "Big", columns=2, rows=2)
    source, robot = sheets.list_columns(conn, sheet.id)
    sheets.set_column_operator(conn, robot.id, "uppercase", source_column_id=source.id)

    with pytest.raises(errors.CheckViolation, match="task_queue_payload_size"):
        sheets.edit_cell(conn, sheet.id, source.id, 1, "x" * (2 * 2**20), user_id=user)

    assert conn.execute(
        "SELECT count(*) FROM websurfing_cell WHERE content IS NOT NULL"
    ).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM websurfing_task_queue").fetchone() == (0,)


def test_a_column_refresh_beyond_ten_years_is_refused_in_one_line(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    user = new_user(conn)
    sheet = sheets.create_spreadsheet(conn, user, "Slow", columns=2, rows=1)
    source, robot = sheets.list_columns(conn, sheet.id)
    sheets.set_column_operator(conn, robot.id, "uppercase", source_column_id=source.id)

    result = _cli(
        "schedules", "refresh", str(sheet.id), str(robot.id), "--every", "3650d",
        "--database-url", database_url,
    )  # fmt: skip

    _answers(result, "schedules refresh")
    assert result.exit_code != 0 and "10 years" in result.output
    refresh_every = conn.execute(
        "SELECT refresh_every FROM websurfing_column WHERE id = %s", (robot.id,)
    ).fetchone()
    assert refresh_every == (None,)


def test_schedules_that_cannot_run_are_paused_and_stop_crowding_out_the_others(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(
        "INSERT INTO websurf.schedule (name, cron, time_zone, task_type, next_run_at) VALUES"
        " ('bad cron', 'every tuesday-ish', 'UTC', 'noop', now() - interval '3 hours'),"
        " ('bad zone', '* * * * *', 'Mars/Olympus_Mons', 'noop', now() - interval '2 hours'),"
        " ('bad payload', '* * * * *', 'UTC', 'noop', now() - interval '1 hour')"
    )
    conn.execute(
        "UPDATE websurf.schedule SET payload = %s WHERE name = 'bad payload'", (HUGE_INTEGER,)
    )
    conn.execute(
        "INSERT INTO websurf.schedule (name, every, task_type, next_run_at)"
        " VALUES ('good', '1 minute', 'noop', now() - interval '1 second')"
    )

    # Two due schedules per batch, the bad ones first in line: the run pauses what it
    # cannot run and goes on to the next batch, so the good schedule runs in this turn,
    # and the next turn finds nothing left to try.
    ran = [scheduler.run_once(conn, limit=2).by_schedule for _ in range(2)]

    assert ran[0]["good"] == "enqueued"
    assert ran[1] == {}
    paused = conn.execute("SELECT name FROM websurf.schedule WHERE paused ORDER BY name").fetchall()
    assert paused == [("bad cron",), ("bad payload",), ("bad zone",)]
