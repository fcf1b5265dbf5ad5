"""Tick arithmetic of schedules (no database): cron in a time zone, intervals, catch-up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from websurf.worker.core.schedules import latest_tick, next_tick

PARIS = "Europe/Paris"


def ticks(cron: str, zone: str, start: datetime, count: int) -> list[datetime]:
    found, at = [], start
    for _ in range(count):
        at = next_tick(cron, None, zone, at)
        found.append(at)
    return found


def test_a_daily_job_runs_once_on_both_daylight_saving_days() -> None:
    # 02:30 does not exist in Paris on 29 March 2026 and exists twice on 25 October 2026.
    spring = ticks("30 2 * * *", PARIS, datetime(2026, 3, 28, 12, tzinfo=UTC), 3)
    assert spring == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST, the first instant after 02:30
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
        datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
    ]
    autumn = ticks("30 2 * * *", PARIS, datetime(2026, 10, 24, 12, tzinfo=UTC), 2)
    assert autumn == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # the first 02:30 (CEST) only
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
    ]


def test_ticks_are_instants_in_utc_whatever_the_zone() -> None:
    at = next_tick("0 9 * * 1-5", None, "America/New_York", datetime(2026, 1, 9, 15, tzinfo=UTC))
    assert at == datetime(2026, 1, 12, 14, tzinfo=UTC)  # Monday 09:00 EST
    assert at.tzinfo is UTC


def test_an_interval_counts_from_the_previous_tick() -> None:
    start = datetime(2026, 1, 1, 0, 0, 7, tzinfo=UTC)
    assert next_tick(None, timedelta(minutes=5), "UTC", start) == start + timedelta(minutes=5)


def test_the_latest_tick_and_how_many_were_missed() -> None:
    due = datetime(2026, 1, 1, 10, tzinfo=UTC)
    now = datetime(2026, 1, 1, 13, 30, tzinfo=UTC)
    assert latest_tick("0 * * * *", None, "UTC", due, now) == (
        datetime(2026, 1, 1, 13, tzinfo=UTC),
        3,
    )
    assert latest_tick(None, timedelta(minutes=20), "UTC", due, now) == (
        datetime(2026, 1, 1, 13, 20, tzinfo=UTC),
        10,
    )
    assert latest_tick("0 * * * *", None, "UTC", due, due) == (due, 0)


def test_a_very_long_outage_jumps_to_the_tick_before_now() -> None:
    due = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime(2026, 3, 1, 0, 0, 30, tzinfo=UTC)  # 59 days of minute ticks missed
    tick, missed = latest_tick("* * * * *", None, "UTC", due, now)
    assert tick == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert missed >= 10_000
