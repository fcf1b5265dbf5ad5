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
"""

from __future__ import annotations

from collections.abc import Collection

from websurf.worker.core.registry import Operator

RESERVE_SHARE = 50  # one extra slot per this many, at least one, for urgent tasks


class Slots:
    """Who may start now, and what the next claims may take."""

    def __init__(self, capacity: int, threads: int, operators: dict[str, Operator]) -> None:
        self.capacity = capacity
        self.reserve = max(1, capacity // RESERVE_SHARE)
        self.threads = threads
        self.operators = operators
        self.running = 0
        self.unrecorded = 0  # finished, outcome not yet written: still holds its claim
        self.plain_running = 0
        self.per_operator = dict.fromkeys(operators, 0)
        self.limited: frozenset[str] = frozenset()  # claimed one by one, by claim_limited

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
        """
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
                if room > 0:
                    limited.append(([name], room))
                else:
                    starved = True
            elif op.concurrency is not None:
                room = op.concurrency - self.per_operator[name]
                if not op.is_async:
                    room = min(room, threads)
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

    def finished(self, op: Operator) -> None:
        self.running -= 1
        self.per_operator[op.name] -= 1
        if not op.is_async:
            self.plain_running -= 1
