"""The supervisor's restart backoff: how long a slot waits before its child is restarted.

What an operator would notice: a child that keeps crashing at boot is restarted ever
more slowly (0.5 s, 1 s, 2 s … up to the cap), not in a tight loop; one that served a
while, died inside a handler (a poison task) or asked to be recycled is restarted at
once or from the first step again.
"""

from __future__ import annotations

import pytest

from websurf.worker.config import RESTART_BACKOFF_MAX_S
from websurf.worker.daemon.supervisor import (
    HEALTHY_AFTER_S,
    RESTART_BACKOFF_START_S,
    restart_backoff,
    restart_delay_s,
)

QUICK_CRASH = {"served_s": 1.0, "died_in_handler": False, "recycled": False}


def test_crashes_in_a_row_double_the_wait_up_to_the_cap() -> None:
    failures, waits = 0, []
    for _ in range(10):
        failures, delay = restart_backoff(failures, **QUICK_CRASH)
        waits.append(delay)

    assert waits[:4] == [0.5, 1.0, 2.0, 4.0]
    assert waits == sorted(waits)
    assert max(waits) == RESTART_BACKOFF_MAX_S == waits[-1]
    assert failures == 10


def test_a_child_that_served_a_while_starts_the_count_over() -> None:
    assert restart_backoff(6, served_s=HEALTHY_AFTER_S, died_in_handler=False, recycled=False) == (
        1,
        RESTART_BACKOFF_START_S,
    )


@pytest.mark.parametrize(
    ("died_in_handler", "recycled"), [(True, False), (False, True), (True, True)]
)
def test_a_death_in_a_handler_or_a_recycle_restarts_at_once(
    died_in_handler: bool, recycled: bool
) -> None:
    outcome = restart_backoff(6, served_s=0.1, died_in_handler=died_in_handler, recycled=recycled)

    assert outcome == (1, 0.0)  # no crash loop: the next crash starts at the first step
    assert restart_backoff(outcome[0], **QUICK_CRASH) == (2, 1.0)


def test_a_failed_spawn_waits_like_a_crash() -> None:
    """``_start`` counts a fork that failed as a failure and waits ``restart_delay_s``."""
    assert [restart_delay_s(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert restart_delay_s(1_000) == RESTART_BACKOFF_MAX_S
