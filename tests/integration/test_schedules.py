"""Schedules: definitions, ticks from an injected clock, catch-up, and exactly once per tick.

What a user would notice: a schedule enqueues its task on every tick of its cron
expression (in its time zone) or interval, once per tick however many workers look at
the same moment, once (not once per missed tick) after every worker was down, never
while paused; and bad expressions or time zones are refused in one line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from websurf.worker.core import schedules
from websurf.worker.core.registry import Registry
from websurf.worker.core.schedules import ScheduleError, ScheduleRegistry, Spec
from websurf.worker.maintenance import scheduler

WEBSURF = str(Path(sys.executable).with_name("websurf"))
T0 = datetime(2026, 1, 5, 12, 0, 0, 500_000, tzinfo=UTC)  # a Monday, half a second past noon


def tasks(conn: psycopg.Connection[Any], task_type: str) -> list[tuple[Any, ...]]:
    """(scheduled_for, payload, priority) of every task of ``task_type``, by due time."""
    return conn.execute(
        "SELECT scheduled_for, payload, priority FROM websurfing_task_queue"
        " WHERE task_type = %s ORDER BY scheduled_for",
        (task_type,),
    ).fetchall()


def stored(conn: psycopg.Connection[Any], name: str) -> dict[str, Any]:
    return next(r for r in schedules.list_schedules(conn) if r["name"] == name)


def add(conn: psycopg.Connection[Any], spec: Spec, now: datetime = T0) -> datetime:
    return schedules.add_schedule(conn, spec, now=now)


# -- definitions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (Spec("a", "t", cron="61 * * * *"), "cron expression '61 * * * *' is not valid"),
        (Spec("a", "t", cron="0 * * * * *"), "must have 5 fields"),
        (Spec("a", "t", cron="@hourly"), "must have 5 fields"),
        (Spec("a", "t", cron="0 9 * * *", time_zone="Mars/Olympus"), "unknown time zone"),
        (Spec("a", "t"), "give a cron expression or an interval"),
        (Spec("a", "t", cron="* * * * *", every=timedelta(minutes=1)), "not both"),
        (Spec("a", "t", every=timedelta(0)), "interval must be positive"),
        (Spec("a", "t", cron="* * * * *", catch_up="all"), "catch_up must be one of"),
        (Spec("column:x", "t", cron="* * * * *"), "belong to refreshing columns"),
    ],
)
def test_a_bad_schedule_is_refused_in_one_line(spec: Spec, message: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)) as caught:
        spec.validate()
    assert "\n" not in str(caught.value)


def test_cli_adds_lists_pauses_resumes_and_removes_a_schedule(database_url: str) -> None:
    def websurf(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WEBSURF, "schedules", *args[:1], "--database-url", database_url, *args[1:]],
            env={k: v for k, v in os.environ.items() if not k.startswith("WEBSURF_")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    added = websurf(
        "add", "nightly", "noop", "--cron", "30 2 * * *", "--timezone", "Europe/Paris",
        "--payload", '{"report": "sales"}',
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("nightly: first tick ")
    listed = websurf("list")
    assert "nightly  [cli, active]  cron '30 2 * * *' Europe/Paris -> noop" in listed.stdout
    assert "(never ran)" in listed.stdout
    assert websurf("pause", "nightly").stdout.strip() == "nightly: paused"
    assert "nightly  [cli, PAUSED]" in websurf("list").stdout
    assert websurf("resume", "nightly").stdout.startswith("nightly: active, next tick ")
    assert websurf("remove", "nightly").stdout.strip() == "nightly: removed"
    assert websurf("list").stdout.strip() == "no schedules"

    bad = websurf("add", "x", "noop", "--cron", "0 25 * * *")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        .splitlines()[-1]
        .startswith("error: cron expression '0 25 * * *' is not valid: Bad hour")
    )
    unknown = websurf("add", "x", "no_such_type", "--every", "1h")
    assert unknown.returncode == 1
    assert "no operator handles task type 'no_such_type'" in unknown.stderr
    missing = websurf("pause", "nope")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == "error: no schedule named 'nope'"


# -- ticks ----------------------------------------------------------------------------


def test_each_cron_tick_enqueues_one_task_due_at_the_tick(conn: psycopg.Connection[Any]) -> None:
    first = add(conn, Spec("quarter", "report", cron="*/15 * * * *", payload={"k": 1}))
    assert first == datetime(2026, 1, 5, 12, 15, tzinfo=UTC)
    assert scheduler.run_once(conn, T0 + timedelta(minutes=14)).enqueued == 0
    for minutes in (15, 16, 29, 30, 31, 45):  # a worker looks several times per tick
        scheduler.run_once(conn, T0 + timedelta(minutes=minutes, seconds=2))
    due = [row[0] for row in tasks(conn, "report")]
    assert due == [datetime(2026, 1, 5, 12, m, tzinfo=UTC) for m in (15, 30, 45)]
    assert {row[1]["k"] for row in tasks(conn, "report")} == {1}
    row = stored(conn, "quarter")
    assert row["last_run_at"] == datetime(2026, 1, 5, 12, 45, tzinfo=UTC)
    assert row["next_run_at"] == datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
    assert row["last_task_status"] == "pending"


def test_cron_follows_the_time_zone_across_a_daylight_saving_change(
    conn: psycopg.Connection[Any],
) -> None:
    start = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    add(conn, Spec("paris9", "report", cron="0 9 * * *", time_zone="Europe/Paris"), start)
    for day in range(4):
        scheduler.run_once(conn, start + timedelta(days=day + 1))
    # 09:00 in Paris is 08:00 UTC before the change of Sunday 29 March 2026, 07:00 UTC after.
    assert [row[0] for row in tasks(conn, "report")] == [
        datetime(2026, 3, 28, 8, tzinfo=UTC),
        datetime(2026, 3, 29, 7, tzinfo=UTC),
        datetime(2026, 3, 30, 7, tzinfo=UTC),
        datetime(2026, 3, 31, 7, tzinfo=UTC),
    ]


def test_missed_ticks_run_once_or_are_skipped(conn: psycopg.Connection[Any]) -> None:
    add(conn, Spec("once", "t_once", cron="0 * * * *"))
    add(conn, Spec("skip", "t_skip", cron="0 * * * *", catch_up="skip"))
    add(conn, Spec("every", "t_every", every=timedelta(minutes=10)))
    down_until = T0 + timedelta(hours=5, minutes=20)  # every worker was down since T0
    counts = scheduler.run_once(conn, down_until)
    assert [row[0] for row in tasks(conn, "t_once")] == [datetime(2026, 1, 5, 17, tzinfo=UTC)]
    assert tasks(conn, "t_skip") == []
    assert [row[0] for row in tasks(conn, "t_every")] == [T0 + timedelta(hours=5, minutes=20)]
    assert stored(conn, "once")["ticks_skipped"] == 4  # 13:00 .. 16:00
    assert stored(conn, "skip")["ticks_skipped"] == 5
    assert stored(conn, "every")["ticks_skipped"] == 31
    assert counts.skipped == 4 + 5 + 31
    for name in ("once", "skip"):
        assert stored(conn, name)["next_run_at"] == datetime(2026, 1, 5, 18, tzinfo=UTC)
    # A tick that is merely late (less than a minute) still runs under catch_up='skip'.
    scheduler.run_once(conn, datetime(2026, 1, 5, 18, 0, 40, tzinfo=UTC))
    assert [row[0] for row in tasks(conn, "t_skip")] == [datetime(2026, 1, 5, 18, tzinfo=UTC)]


def test_a_paused_schedule_enqueues_nothing_and_resumes_after_now(
    conn: psycopg.Connection[Any],
) -> None:
    add(conn, Spec("hourly", "t", cron="0 * * * *"))
    schedules.set_paused(conn, "hourly", True)
    scheduler.run_once(conn, T0 + timedelta(hours=3))
    assert tasks(conn, "t") == []
    following = schedules.set_paused(conn, "hourly", False, now=T0 + timedelta(hours=3))
    assert following == datetime(2026, 1, 5, 16, tzinfo=UTC)
    scheduler.run_once(conn, T0 + timedelta(hours=3, minutes=30))
    assert tasks(conn, "t") == []  # the paused hours are not caught up
    scheduler.run_once(conn, T0 + timedelta(hours=4))
    assert len(tasks(conn, "t")) == 1


def test_the_operator_registry_gives_scheduled_tasks_their_max_attempts(
    conn: psycopg.Connection[Any],
) -> None:
    registry = Registry()
    registry.register("patient", lambda task, ctx: None, max_attempts=7)
    add(conn, Spec("p", "patient", every=timedelta(minutes=1), priority=9))
    scheduler.run_once(conn, T0 + timedelta(minutes=1), registry=registry)
    row = conn.execute(
        "SELECT max_attempts, priority FROM websurfing_task_queue WHERE task_type = 'patient'"
    ).fetchone()
    assert row == (7, 9)


# -- exactly once -----------------------------------------------------------------------


def test_concurrent_workers_enqueue_each_tick_exactly_once(database_url: str) -> None:
    """Six workers, each on its own connection, look at the same instant for 60 ticks."""
    workers, ticks = 6, 60
    specs = [Spec(f"s{i}", "tick", every=timedelta(minutes=1), payload={"s": i}) for i in range(4)]
    specs.append(Spec("cron", "tick", cron="* * * * *", payload={"s": "cron"}))
    with psycopg.connect(database_url, autocommit=True) as setup:
        for spec in specs:
            add(setup, spec, T0 - timedelta(seconds=30))  # first tick: T0 + 30 s / 12:01
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []
    enqueued = Counter[int]()

    def worker(number: int) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                for k in range(1, ticks + 1):
                    barrier.wait(timeout=60)
                    counts = scheduler.run_once(conn, T0 + timedelta(minutes=k))
                    enqueued[number] += counts.enqueued
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT payload->>'s', scheduled_for, count(*) FROM websurfing_task_queue"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    assert {count for _, _, count in rows} == {1}  # no tick twice
    per_schedule = Counter(name for name, _, _ in rows)
    assert per_schedule == {**{str(i): ticks for i in range(4)}, "cron": ticks}  # none lost
    assert sum(enqueued.values()) == 5 * ticks
    assert len([n for n in enqueued.values() if n]) > 1  # the work was really shared


def test_a_worker_that_dies_after_claiming_a_tick_leaves_it_to_the_next(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        add(conn, Spec("hourly", "t", cron="0 * * * *"))
    # A worker claims the tick with the same compare-and-set, then dies before its commit.
    dying = psycopg.connect(database_url)
    claimed = dying.execute(
        "UPDATE websurf.schedule SET next_run_at = next_run_at + interval '1 hour'"
        " WHERE name = 'hourly' AND next_run_at = %s RETURNING id",
        (datetime(2026, 1, 5, 13, tzinfo=UTC),),
    ).fetchone()
    assert claimed is not None
    waiting: list[scheduler.TickCounts] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        other = threading.Thread(
            target=lambda: waiting.append(scheduler.run_once(conn, T0 + timedelta(hours=1)))
        )
        other.start()  # its compare-and-set waits on the dying worker's row lock
        dying.close()  # the process is gone: its transaction rolls back
        other.join(timeout=30)
        assert waiting and waiting[0].enqueued == 1
        assert [row[0] for row in tasks(conn, "t")] == [datetime(2026, 1, 5, 13, tzinfo=UTC)]


# -- code schedules ---------------------------------------------------------------------


def test_code_schedules_are_stored_at_boot_and_follow_the_code(
    conn: psycopg.Connection[Any],
) -> None:
    code = ScheduleRegistry()

    @code.schedule("*/15 * * * *", "prices", payload={"market": "EU"}, timezone="Europe/Berlin")
    def handler(task: Any, ctx: Any) -> None:
        return None

    code.schedule(None, "cleanup", every=timedelta(hours=6))
    assert handler(None, None) is None  # the decorator hands the function back
    assert schedules.sync_code_schedules(conn, code, now=T0) == schedules.SyncCounts(added=2)
    assert schedules.sync_code_schedules(conn, code, now=T0).unchanged == 2  # another worker
    row = stored(conn, "prices")
    assert (row["source"], row["cron"]) == ("code", "*/15 * * * *")
    assert row["time_zone"] == "Europe/Berlin"
    assert row["payload"] == {"market": "EU"}

    schedules.set_paused(conn, "prices", True)
    changed = ScheduleRegistry()
    changed.schedule("0 * * * *", "prices", payload={"market": "EU"}, timezone="Europe/Berlin")
    counts = schedules.sync_code_schedules(conn, changed, now=T0)
    assert (counts.updated, counts.added) == (1, 0)
    row = stored(conn, "prices")
    assert (row["cron"], row["paused"]) == ("0 * * * *", True)  # paused stays paused
    assert row["next_run_at"] == datetime(2026, 1, 5, 13, tzinfo=UTC)
    assert "cleanup" in {r["name"] for r in schedules.list_schedules(conn)}  # left in place

    schedules.add_schedule(conn, Spec("mine", "t", cron="0 0 * * *"), now=T0)
    clash = ScheduleRegistry()
    clash.schedule("* * * * *", "t", name="mine")
    assert schedules.sync_code_schedules(conn, clash, now=T0).conflicts == ("mine",)
    assert stored(conn, "mine")["cron"] == "0 0 * * *"


def test_declaring_one_schedule_name_twice_differently_is_refused() -> None:
    code = ScheduleRegistry()
    code.schedule("0 * * * *", "a")
    code.schedule("0 * * * *", "a")  # the same again (a module imported twice): fine
    with pytest.raises(ScheduleError, match="declared twice"):
        code.schedule("5 * * * *", "a")


# -- what the person on call sees ---------------------------------------------------------


def test_status_shows_schedules_with_their_next_and_last_tick_and_outcome(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        now = schedules.database_now(conn)
        add(conn, Spec("ok", "t_ok", every=timedelta(minutes=5)), now - timedelta(minutes=5))
        add(conn, Spec("bad", "t_bad", cron="0 * * * *"), now - timedelta(hours=1))
        add(conn, Spec("idle", "t_idle", cron="0 0 1 1 *"), now)
        schedules.set_paused(conn, "idle", True)
        scheduler.run_once(conn, now)
        conn.execute(
            "UPDATE websurfing_task_queue SET status = 'completed' WHERE task_type = 't_ok'"
        )
        conn.execute(
            "UPDATE websurfing_task_queue SET status = 'failed', error_message = 'boom'"
            " WHERE task_type = 't_bad'"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSURF_")}
    command = [WEBSURF, "status", "--database-url", database_url]
    shown = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    assert "schedules: 3" in shown
    lines = {line.split()[0]: line for line in shown.splitlines() if line.startswith("  ")}
    assert "every 300s" in lines["ok"] and "(completed)" in lines["ok"]
    assert "(failed: boom)" in lines["bad"]
    assert "PAUSED" in lines["idle"] and "last - (never ran)" in lines["idle"]
    as_json = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, env=env, check=True
    ).stdout
    by_name = {s["name"]: s for s in json.loads(as_json)["schedules"]}
    assert (by_name["ok"]["last_run_ok"], by_name["bad"]["last_run_ok"]) == (True, False)
    assert by_name["idle"]["last_run_ok"] is None and by_name["idle"]["paused"] is True
    assert by_name["bad"]["next_run_at"] > by_name["bad"]["last_run_at"]


def test_a_schedule_written_wrongly_by_hand_does_not_stop_the_others(
    conn: psycopg.Connection[Any],
) -> None:
    add(conn, Spec("good", "t_good", cron="0 * * * *"))
    for name, cron, zone in (("bad-cron", "0 99 * * *", "UTC"), ("bad-zone", "0 * * * *", "X/Y")):
        conn.execute(
            "INSERT INTO websurf.schedule (name, cron, time_zone, task_type, next_run_at)"
            " VALUES (%s, %s, %s, 't_bad', %s)",
            (name, cron, zone, T0),
        )
    scheduler.run_once(conn, T0 + timedelta(hours=1))
    assert len(tasks(conn, "t_good")) == 1
    assert tasks(conn, "t_bad") == []


def test_every_due_schedule_runs_in_its_tick_however_many_there_are(
    conn: psycopg.Connection[Any],
) -> None:
    count = scheduler.DUE_LIMIT * 2 + 50  # more than two batches
    for n in range(count):
        add(conn, Spec(f"minutely-{n}", "t_many", every=timedelta(minutes=1)))

    counts = scheduler.run_once(conn, T0 + timedelta(minutes=1, seconds=1))

    assert counts.enqueued == count
    assert counts.skipped == 0
    assert len(tasks(conn, "t_many")) == count
    assert {r["next_run_at"] for r in schedules.list_schedules(conn)} == {T0 + timedelta(minutes=2)}


def test_a_batch_full_of_schedules_that_cannot_run_does_not_hold_back_the_rest(
    conn: psycopg.Connection[Any],
) -> None:
    for n in range(4):  # due before the good ones, so they fill the first batches
        conn.execute(
            "INSERT INTO websurf.schedule (name, cron, task_type, next_run_at)"
            " VALUES (%s, '0 99 * * *', 't_bad', %s)",
            (f"bad-{n}", T0 - timedelta(hours=1)),
        )
    for n in range(5):
        add(conn, Spec(f"good-{n}", "t_good", every=timedelta(minutes=1)))

    counts = scheduler.run_once(conn, T0 + timedelta(minutes=1, seconds=1), limit=3)

    assert counts.enqueued == 5
    assert len(tasks(conn, "t_good")) == 5
    assert tasks(conn, "t_bad") == []
