"""The queue's model: task statuses, the retry-or-fail rule, and how outcomes are counted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from websurf.worker.core.model import (
    ClaimedRow,
    Outcome,
    OutcomeKind,
    Status,
    retry_or_fail,
)
from websurf.worker.core.registry import Backoff, Task
from websurf.worker.daemon.metrics import (
    DURATION_BUCKETS_S,
    LATENCY_BUCKETS_S,
    tally_claimed,
    tally_finished,
)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
STEADY = Backoff(base_s=2.0, factor=3.0, max_s=60.0, jitter=0.0)  # 2, 6, 18, 54, 60 …


def _task(task_type: str = "t", attempt: int = 1, max_attempts: int = 3) -> Task:
    return Task(uuid.uuid4(), task_type, {}, attempt, max_attempts)


# -- Status --------------------------------------------------------------------------------


def test_status_is_the_column_text() -> None:
    assert [str(s) for s in Status] == [
        "pending",
        "processing",
        "completed",
        "failed",
        "cancelled",
    ]
    assert Status("failed") is Status.FAILED
    assert Status.COMPLETED == "completed"


def test_finished_statuses_are_the_ones_nothing_runs_again() -> None:
    assert {s for s in Status if s.finished} == {
        Status.COMPLETED,
        Status.FAILED,
        Status.CANCELLED,
    }


# -- the retry-or-fail rule ------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "delay_s"), [(1, 2.0), (2, 6.0), (4, 54.0), (5, 60.0)])
def test_a_failure_before_the_last_attempt_retries_after_the_backoff(
    attempt: int, delay_s: float
) -> None:
    decision = retry_or_fail(attempt, 9, now=NOW, backoff=STEADY)

    assert decision.retries
    assert decision.status is Status.PENDING
    assert decision.delay_s == delay_s
    assert decision.run_at == NOW + timedelta(seconds=delay_s)
    assert not decision.handed_back  # the attempt counts


def test_the_default_backoff_retries_within_its_jitter() -> None:
    decision = retry_or_fail(1, 3, now=NOW)

    assert decision.retries
    assert decision.delay_s is not None and 0.75 <= decision.delay_s <= 1.25


def test_a_failure_of_the_last_attempt_fails_for_good() -> None:
    decision = retry_or_fail(3, 3, now=NOW, backoff=STEADY)

    assert not decision.retries
    assert decision.status is Status.FAILED
    assert decision.run_at is None


def test_a_permanent_error_fails_at_once() -> None:
    decision = retry_or_fail(1, 3, now=NOW, permanent=True, backoff=STEADY)

    assert decision.status is Status.FAILED
    assert decision.run_at is None


def test_a_snooze_hands_the_task_back_without_spending_the_attempt() -> None:
    decision = retry_or_fail(3, 3, now=NOW, snooze_s=30.0)  # even on the last attempt

    assert decision.status is Status.PENDING
    assert decision.handed_back
    assert decision.run_at == NOW + timedelta(seconds=30)


# -- outcomes and what the metrics count -------------------------------------------------------


def test_an_outcome_is_classified_once_by_status_hand_back_and_fence() -> None:
    done = Outcome(_task(), Status.COMPLETED, "t")
    retried = Outcome(_task(), Status.PENDING, "t", error="boom")
    failed = Outcome(_task(), Status.FAILED, "t", error="boom")
    back = Outcome(_task(), Status.PENDING, "t", handed_back=True)
    recorded = {o.task.id for o in (done, retried, failed, back)}

    assert [o.kind(recorded) for o in (done, retried, failed, back)] == [
        OutcomeKind.COMPLETED,
        OutcomeKind.RETRIED,
        OutcomeKind.FAILED,
        OutcomeKind.HANDED_BACK,
    ]
    assert done.kind(set()) is OutcomeKind.DISCARDED  # the fence kept it out


def test_the_finished_tally_counts_kinds_and_durations_per_task_type() -> None:
    outcomes = [
        Outcome(_task("a"), Status.COMPLETED, "a", duration_ms=3),
        Outcome(_task("a"), Status.COMPLETED, "a", duration_ms=700),
        Outcome(_task("a"), Status.FAILED, "a", duration_ms=20),
        Outcome(_task("b"), Status.PENDING, "b", duration_ms=1),  # a retry
        Outcome(_task("b"), Status.PENDING, "b", handed_back=True, duration_ms=9000),
        Outcome(_task("b"), Status.COMPLETED, "b", duration_ms=40),  # fenced out below
    ]
    recorded = {o.task.id for o in outcomes[:-1]}

    tally = tally_finished(outcomes, recorded)

    assert tally.kinds == {
        ("a", OutcomeKind.COMPLETED): 2,
        ("a", OutcomeKind.FAILED): 1,
        ("b", OutcomeKind.RETRIED): 1,
        ("b", OutcomeKind.HANDED_BACK): 1,
        ("b", OutcomeKind.DISCARDED): 1,
    }
    # a handed-back attempt has no duration worth counting; a discarded one ran
    assert tally.durations["a"].count == 3
    assert tally.durations["a"].total == pytest.approx(0.723)
    assert tally.durations["b"].count == 2
    assert tally.durations["b"].total == pytest.approx(0.041)
    buckets = tally.durations["a"].buckets
    assert len(buckets) == len(DURATION_BUCKETS_S) + 1  # the last one: above every bound
    assert buckets[DURATION_BUCKETS_S.index(0.005)] == 1  # 3 ms
    assert buckets[DURATION_BUCKETS_S.index(0.025)] == 1  # 20 ms
    assert buckets[DURATION_BUCKETS_S.index(1.0)] == 1  # 700 ms


def test_the_claimed_tally_counts_how_long_each_task_waited_by_type() -> None:
    def row(task_type: str, waited_s: float) -> ClaimedRow:
        return ClaimedRow(uuid.uuid4(), task_type, {}, 1, 3, 5, waited_s=waited_s, payload_bytes=2)

    latencies = tally_claimed([row("a", 0.002), row("a", 0.2), row("b", -5.0)])  # b: never < 0

    assert latencies["a"].count == 2
    assert latencies["a"].total == pytest.approx(0.202)
    assert latencies["a"].buckets[LATENCY_BUCKETS_S.index(0.0025)] == 1
    assert latencies["a"].buckets[LATENCY_BUCKETS_S.index(0.25)] == 1
    assert latencies["b"].total == 0.0
    assert latencies["b"].buckets[0] == 1
