"""Slots: how many tasks a process may start now, and which claims that allows.

Async handlers share the process's ``tasks_per_process`` slots, plain ones also need a
free thread, and an operator with ``concurrency=N`` is capped on its own. The claim
loop asks :meth:`Slots.claims` what to claim so it never claims a task it cannot start
at once (tasks claimed and left waiting in memory would hold their claim for nothing
and time out in the reaper's eyes). A finished task keeps its slot until its outcome is
recorded, so a slow database slows claiming instead of piling up outcomes in memory.

A few slots beyond ``tasks_per_process`` (``reserve``: one in fifty, at least one) are
kept for urgent tasks (priority above the default: a person's edit). When bulk work
fills every other slot, an urgent task does not wait for one of them to free (a whole
bulk task's run): the loop claims it into the reserve at once.

An operator with a limit across the cluster (``limited``: a row in
websurfing_task_limit, see ``core/limits.py``) is a pool of its own that is never
merged into a claim over other operators: its claims go through ``claim_limited``, one
operator at a time, and the urgent claim leaves it out.

Pacing a saturated capped operator
----------------------------------
An operator with ``concurrency=N`` whose handlers all take about as long (a model API
awaited for 1 s) falls into lockstep under a backlog: its N slots fill at once, free at
once, fill at once again, so its starts come N at a time once per run. A newcomer (a
person's single edit, which the fair claim puts first) then waits for the next release:
half a run on average, a whole run at worst. Each capped operator has a :class:`Pacer`
that learns its run time (a moving average of the handler durations the runner reports)
and, while the operator is saturated (its last claim came back full: work waits) and its
runs are regular, lets a freed slot start no sooner than the even schedule of one start
every run time / N (half a gap early at most): the starts spread out within one run and
stay spread, a newcomer waits at most about a gap, and the operator still starts N per
run time (its slots free no faster than that). It is also gentler on the service behind
the operator: no bursts of N calls at once.

What it costs: nothing for operators without a cap, and nothing for a capped operator
that is not saturated (no clock read, no timer) or whose runs vary by more than
``PACE_REGULAR_SHARE`` (their starts do not bunch: varied run times spread them by
themselves, and an even schedule at exactly the operator's rate would cost throughput:
every start it holds back is lost). A paced operator is claimed for one task at a time,
a round trip per start instead of per N (it is slow by nature: its gap is at least
``PACE_MIN_GAP_S``), and the loop waits for the schedule's next start with a timeout
(:attr:`Slots.paced_until`), no timer of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from websurf.worker.core.registry import Operator

RESERVE_SHARE = 50  # one extra slot per this many, at least one, for urgent tasks
PACE_WEIGHT = 0.2  # of each new run in a pacer's moving averages
PACE_REGULAR_SHARE = 0.05  # paced only while runs deviate by at most this share of their mean
PACE_TOLERANCE = 0.5  # of a gap: how early against the even schedule a start may come
PACE_MIN_GAP_S = 0.005  # shorter gaps are not paced (the claim cooldown spaces them already)


class Pacer:
    """Spaces the starts of one capped operator while it is saturated (see the module note).

    The even schedule is kept as the next start's due time (GCRA's theoretical arrival
    time): a start may come half a gap before it, and moves it a gap past the later of
    itself and the start.
    """

    __slots__ = ("concurrency", "deviation_s", "due", "run_s", "runs", "saturated")

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        self.run_s = 0.0  # moving average of the handlers' durations
        self.deviation_s = 0.0  # moving average of their distance from run_s
        self.runs = 0
        self.saturated = False  # its last claim came back full: work waits
        self.due = float("-inf")  # the even schedule's next start

    @property
    def gap_s(self) -> float:
        return self.run_s / self.concurrency

    def ran(self, duration_s: float) -> None:
        if self.runs == 0:
            self.run_s = duration_s
        else:
            self.deviation_s += PACE_WEIGHT * (abs(duration_s - self.run_s) - self.deviation_s)
            self.run_s += PACE_WEIGHT * (duration_s - self.run_s)
        self.runs += 1

    def pacing(self) -> bool:
        """Saturated, with a pool's worth of regular runs learned and a gap worth keeping."""
        return (
            self.saturated
            and self.runs >= self.concurrency
            and self.gap_s >= PACE_MIN_GAP_S
            and self.deviation_s <= PACE_REGULAR_SHARE * self.run_s
        )

    def next_start(self) -> float:
        return self.due - PACE_TOLERANCE * self.gap_s

    def started(self, now: float) -> None:
        self.due = max(self.due, now) + self.gap_s


class Slots:
    """Who may start now, and what the next claims may take."""

    def __init__(
        self,
        capacity: int,
        threads: int,
        operators: dict[str, Operator],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.reserve = max(1, capacity // RESERVE_SHARE)
        self.threads = threads
        self.operators = operators
        self.running = 0
        self.unrecorded = 0  # finished, outcome not yet written: still holds its claim
        self.plain_running = 0
        self.per_operator = dict.fromkeys(operators, 0)
        self.limited: frozenset[str] = frozenset()  # claimed one by one, by claim_limited
        self.clock = clock
        self.pacers = {
            name: Pacer(op.concurrency)
            for name, op in operators.items()
            if op.concurrency is not None
        }
        # When a pool its pacer holds back may start next (clock time; inf: none held):
        # set by claims(), the loop's wait ends there at the latest.
        self.paced_until = float("inf")

    def free(self) -> int:
        return self.capacity - self.running - self.unrecorded

    def urgent_free(self) -> int:
        """Room for urgent tasks: the free slots and the reserve's."""
        return self.free() + self.reserve

    def claims(
        self, stuck_threads: int, limit: int, *, drained: Collection[str] = ()
    ) -> tuple[list[tuple[list[str], int]], bool]:
        """The claims to make now: (task types, how many), one per pool of slots; and
        whether a pool had no room (its tasks must be claimed for when room frees).

        Async operators share the process's free slots, plain ones its free threads,
        and an operator with its own cap is a pool of its own. When the capped and
        plain pools fit in the free slots, each pool claims what it can start (usually
        there is only the async one: one claim), the async pool last, taking what the
        others leave. When they compete for fewer slots, one claim over all of them
        takes the highest priorities, and a task its pool cannot start is handed back
        at once (see :meth:`can_start`): priority order holds across operators. An
        idle process makes one claim over every pool, as large as the smallest pool's
        room: a task arriving at an idle worker costs one claim, not one per pool.

        Operators in ``drained`` are left out: their last claim came back short and
        nothing has announced new tasks of theirs since (the runner keeps that set). A
        claim that is sure to find nothing still costs a round trip and a walk of the
        pending tasks of every other type.

        A saturated capped operator's pool gets what its pacer allows now: one start,
        or none before the even schedule's next (``paced_until``).
        """
        self.paced_until = float("inf")
        free = min(self.free(), limit)
        if free <= 0:
            return [], True
        threads = self.threads - self.plain_running - stuck_threads
        pools: dict[str, tuple[list[str], int]] = {}
        limited: list[tuple[list[str], int]] = []
        starved = False
        for name, op in sorted(self.operators.items()):
            if name in drained:
                continue
            if name in self.limited:
                room = free
                if op.concurrency is not None:
                    room = min(room, op.concurrency - self.per_operator[name])
                if not op.is_async:
                    room = min(room, threads)
                if op.concurrency is not None:
                    room = self._paced(name, room)
                if room > 0:
                    limited.append(([name], room))
                else:
                    starved = True
            elif op.concurrency is not None:
                room = op.concurrency - self.per_operator[name]
                if not op.is_async:
                    room = min(room, threads)
                room = self._paced(name, room)
                if room > 0:
                    pools[name] = ([name], room)
                else:
                    starved = True
            elif op.is_async:
                pools.setdefault("async", ([], free))[0].append(name)
            elif threads > 0:
                pools.setdefault("plain", ([], threads))[0].append(name)
            else:
                starved = True
        shared = pools.pop("async", None)
        claims = [(types, min(room, free)) for types, room in pools.values()]
        if claims and sum(n for _, n in claims) >= free and (shared or len(claims) > 1):
            every = [t for types, _ in claims for t in types] + (shared[0] if shared else [])
            return [(sorted(every), free), *limited], starved
        if shared is not None:
            claims.append(shared)  # last: it takes the free slots the others leave
        if len(claims) > 1 and self.running == 0 and self.unrecorded == 0:
            # Idle: one claim over every pool, no larger than the smallest pool's room
            # (so none overflows), makes a pickup one round trip instead of one per
            # pool. Once tasks run, the next claims go per pool again.
            every = sorted(t for types, _ in claims for t in types)
            return [(every, min(n for _, n in claims)), *limited], starved
        return claims + limited, starved

    def _paced(self, name: str, room: int) -> int:
        """``room`` as the operator's pacer allows now: all of it when not pacing, else one
        start once its time has come, none before (noting when in ``paced_until``)."""
        pacer = self.pacers[name]
        if room <= 0 or not pacer.pacing():
            return room
        at = pacer.next_start()
        if self.clock() >= at:
            return 1
        self.paced_until = min(self.paced_until, at)
        return 0

    def claimed(self, types: list[str], full: bool) -> None:
        """A claim of ``types`` came back full (work waits) or short: a capped operator
        claimed on its own is saturated, or no longer."""
        if len(types) == 1 and (pacer := self.pacers.get(types[0])) is not None:
            pacer.saturated = full

    def ran(self, op: Operator, duration_s: float) -> None:
        """A capped operator's handler ran this long (its pacer learns the run time)."""
        self.pacers[op.name].ran(duration_s)

    def can_start(self, op: Operator, stuck_threads: int, *, urgent: bool = False) -> bool:
        if (self.urgent_free() if urgent else self.free()) <= 0:
            return False
        if op.concurrency is not None and self.per_operator[op.name] >= op.concurrency:
            return False
        return op.is_async or self.plain_running + stuck_threads < self.threads

    def started(self, op: Operator) -> None:
        self.running += 1
        self.per_operator[op.name] += 1
        if not op.is_async:
            self.plain_running += 1
        if op.concurrency is not None and (pacer := self.pacers[op.name]).pacing():
            pacer.started(self.clock())

    def finished(self, op: Operator) -> None:
        self.running -= 1
        self.per_operator[op.name] -= 1
        if not op.is_async:
            self.plain_running -= 1
