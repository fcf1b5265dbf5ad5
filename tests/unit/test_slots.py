"""Which claims a worker process may make: never more than it can start at once."""

from __future__ import annotations

import itertools
from typing import Any

from websurf.worker.core.registry import Context, Registry, Task
from websurf.worker.process.slots import Slots


async def _waits(task: Task, context: Context) -> Any:
    return None


def _blocks(task: Task, context: Context) -> Any:
    return None


def _slots(capacity: int = 100, threads: int = 4) -> Slots:
    reg = Registry()
    reg.register("a1", _waits)
    reg.register("a2", _waits)
    reg.register("capped", _waits, concurrency=3)
    reg.register("p1", _blocks)
    reg.register("p2", _blocks)
    return Slots(capacity, threads, dict(reg.operators))


def test_each_pool_claims_what_it_can_start_and_async_takes_the_rest() -> None:
    slots = _slots(capacity=101)
    slots.started(slots.operators["a1"])  # busy: claims go per pool

    claims, starved = slots.claims(stuck_threads=0, limit=500)

    assert claims == [(["capped"], 3), (["p1", "p2"], 4), (["a1", "a2"], 100)]
    assert not starved


def test_an_idle_process_makes_one_claim_no_pool_can_overflow() -> None:
    slots = _slots()

    claims, starved = slots.claims(stuck_threads=0, limit=500)

    # one round trip for a pickup; 3 is the capped pool's room, the smallest
    assert claims == [(["a1", "a2", "capped", "p1", "p2"], 3)]
    assert not starved


def test_busy_threads_and_a_full_cap_leave_their_pools_out_and_keep_the_loop_wanting() -> None:
    slots = _slots()
    ops = slots.operators
    for _ in range(3):
        slots.started(ops["capped"])
    for _ in range(3):
        slots.started(ops["p1"])

    claims, starved = slots.claims(stuck_threads=1, limit=500)  # 3 running + 1 stuck = 4

    assert claims == [(["a1", "a2"], 94)]
    assert starved


def test_pools_competing_for_few_slots_share_one_priority_ordered_claim() -> None:
    slots = _slots(capacity=2)

    claims, _ = slots.claims(stuck_threads=0, limit=500)

    assert claims == [(["a1", "a2", "capped", "p1", "p2"], 2)]
    assert slots.can_start(slots.operators["p1"], 0)


def test_a_full_process_claims_nothing() -> None:
    slots = _slots(capacity=1)
    slots.started(slots.operators["a1"])

    assert slots.claims(stuck_threads=0, limit=500) == ([], True)
    assert not slots.can_start(slots.operators["a2"], 0)
    slots.finished(slots.operators["a1"])
    assert slots.can_start(slots.operators["a2"], 0)


def test_a_full_process_keeps_a_reserve_for_urgent_tasks_only() -> None:
    slots = _slots(capacity=100)
    a1 = slots.operators["a1"]
    for _ in range(100):
        slots.started(a1)

    assert slots.claims(stuck_threads=0, limit=500) == ([], True)  # no bulk claim
    assert not slots.can_start(a1, 0)
    assert slots.reserve == 2 and slots.urgent_free() == 2
    assert slots.can_start(a1, 0, urgent=True)
    slots.started(a1)
    slots.started(a1)
    assert not slots.can_start(a1, 0, urgent=True)  # the reserve is bounded too


def test_even_a_one_slot_process_has_one_reserve_slot() -> None:
    assert _slots(capacity=1).reserve == 1


def test_drained_operators_are_left_out_and_all_drained_means_no_claim() -> None:
    slots = _slots()
    slots.started(slots.operators["a1"])

    claims, starved = slots.claims(stuck_threads=0, limit=500, drained={"p1", "p2", "capped"})
    nothing, still_starved = slots.claims(
        stuck_threads=0, limit=500, drained={"a1", "a2", "capped", "p1", "p2"}
    )

    assert claims == [(["a1", "a2"], 99)] and not starved
    assert nothing == [] and not still_starved  # nothing to claim, and no pool waits for room


def test_a_limited_operator_is_claimed_on_its_own_never_in_a_shared_claim() -> None:
    slots = _slots()
    slots.limited = frozenset({"a2", "p1"})

    idle, _ = slots.claims(stuck_threads=0, limit=500)
    slots.started(slots.operators["a1"])
    busy, _ = slots.claims(stuck_threads=0, limit=500)

    # idle: one claim over the unlimited pools, then each limited operator alone
    assert idle == [(["a1", "capped", "p2"], 3), (["a2"], 100), (["p1"], 4)]
    assert busy == [(["capped"], 3), (["p2"], 4), (["a1"], 99), (["a2"], 99), (["p1"], 4)]


# -- pacing a saturated capped operator (a fake clock: the pacer is pure bookkeeping) ----


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def _capped_slots(clock: _Clock) -> Slots:
    reg = Registry()
    reg.register("a1", _waits)
    reg.register("capped", _waits, concurrency=5)
    return Slots(100, 4, dict(reg.operators), clock=clock)


def _run_backlog(
    slots: Slots, clock: _Clock, durations: list[float], *, waiting: bool = True
) -> list[float]:
    """Drive the claim loop's part by hand: a backlog of ``capped`` tasks (more than
    ``durations``; ``waiting``: every claim comes back full), each running its duration;
    the start times."""
    capped = slots.operators["capped"]
    finishes: list[tuple[float, float]] = []  # (finish time, duration)
    starts: list[float] = []
    todo = list(durations)
    while todo or finishes:
        claims, _ = slots.claims(stuck_threads=0, limit=500, drained={"a1"})
        if claims and todo:  # claim, start, and look again (as the loop does)
            [(types, room)] = claims
            slots.claimed(types, full=waiting)
            for _ in range(min(room, len(todo))):
                assert slots.can_start(capped, 0)
                slots.started(capped)
                starts.append(clock.now)
                duration = todo.pop(0)
                finishes.append((clock.now + duration, duration))
            continue
        # the loop sleeps until a run ends (its event) or the pacer's time (its timeout)
        finishes.sort()
        nxt = min([finishes[0][0]] if finishes else [], default=float("inf"))
        clock.now = max(clock.now, min(nxt, slots.paced_until))
        while finishes and finishes[0][0] <= clock.now:
            _, duration = finishes.pop(0)
            slots.finished(capped)
            slots.ran(capped, duration)
    return starts


def _gaps(starts: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(starts)]


def test_a_saturated_capped_operators_starts_spread_out_and_keep_their_rate() -> None:
    """Five slots of a 1 s robot under a backlog: without pacing they would start five at
    once every second, and a newcomer would wait up to a second for a slot; paced, the
    starts spread to one every 0.2 s within a run or two, five a second as before."""
    clock = _Clock()
    slots = _capped_slots(clock)

    starts = _run_backlog(slots, clock, [1.0] * 100)

    assert starts[:5] == [0.0] * 5  # nothing learned yet: the first fill is all at once
    steady = [t for t in starts if t >= 3.0]
    assert max(_gaps(steady)) <= 0.2 * 1.5 + 1e-9  # a newcomer waits at most ~a gap
    assert min(_gaps(steady)) >= 0.2 * 0.5 - 1e-9  # never two at once again
    assert len([t for t in starts if 3.0 <= t < 13.0]) == 50  # still 5 per second


def test_a_capped_operator_without_waiting_work_is_not_paced() -> None:
    """Claims coming back short: a task that arrives starts at once, all slots at once."""
    clock = _Clock()
    slots = _capped_slots(clock)

    starts = _run_backlog(slots, clock, [1.0] * 20, waiting=False)

    assert _gaps(starts) == [0.0, 0.0, 0.0, 0.0, 1.0] * 3 + [0.0] * 4
    assert slots.paced_until == float("inf")


def test_irregular_run_times_are_not_paced() -> None:
    """Run times that vary spread the starts by themselves; an even schedule at the
    operator's own rate would only lose the starts it holds back."""
    clock, unpaced_clock = _Clock(), _Clock()
    runs = [0.5, 1.5] * 30

    starts = _run_backlog(_capped_slots(clock), clock, runs)
    unpaced = _run_backlog(_capped_slots(unpaced_clock), unpaced_clock, runs, waiting=False)

    # each slot restarts the moment it frees, as with no pacer at all
    assert starts == unpaced


def test_a_held_back_pool_says_when_its_turn_comes_and_the_loop_keeps_wanting() -> None:
    clock = _Clock()
    slots = _capped_slots(clock)
    capped = slots.operators["capped"]
    for _ in range(5):
        slots.started(capped)
        slots.finished(capped)
        slots.ran(capped, 1.0)
    slots.claimed(["capped"], full=True)
    assert slots.claims(0, 500, drained={"a1"}) == ([(["capped"], 1)], False)
    slots.started(capped)  # the one start allowed now: the next is due a gap later

    claims, starved = slots.claims(0, 500, drained={"a1"})

    assert claims == [] and starved
    assert slots.paced_until == 0.1  # half a gap early at most (0.2 s gap)
    clock.now = 0.1
    assert slots.claims(0, 500, drained={"a1"}) == ([(["capped"], 1)], False)


def test_operators_without_a_cap_never_read_the_clock() -> None:
    clock = _Clock()
    slots = _capped_slots(clock)
    a1 = slots.operators["a1"]

    for _ in range(10):
        slots.claims(0, 500)
        slots.started(a1)
        slots.claimed(["a1"], full=True)
        slots.finished(a1)

    assert clock.reads == 0
