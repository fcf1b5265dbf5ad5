"""Which claims a worker process may make: never more than it can start at once."""

from __future__ import annotations

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
