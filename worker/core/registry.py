"""Operators: named task handlers and their options.

A handler receives the :class:`Task` and a :class:`Context` and returns its output:
any JSON-serialisable value, or a :class:`Result` carrying the output and new content
for the task's cell. Raise :class:`PermanentError` (or an error listed in the
operator's ``permanent_errors``) for failures that retrying cannot fix,
:class:`Snooze` to put the task back for a while without spending an attempt, and
:class:`SlowDown` when the service asks to slow down (pauses the task's limit key for
every worker). ``limits=`` caps an operator across the cluster (:class:`Limit`).

A handler is either ``async def`` (run concurrently on the worker process's event
loop: the right shape for robots that wait on the network) or a plain function (run
in the process's bounded thread pool, so a blocking call stalls nothing else).
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

import structlog

from websurf.worker.core.model import Backoff as Backoff
from websurf.worker.core.model import Task as Task

ENTRY_POINT_GROUP = "websurf.operators"
TIMEOUT_S = 60.0
MAX_ATTEMPTS = 3
PAUSE_MAX_S = 86_400.0  # a SlowDown longer than a day is read as a day
LIMIT_KEY_MAX_LENGTH = 255  # websurfing_task_queue.limit_key, websurfing_task_limit.limit_key
OPERATOR_MAX_LENGTH = 100
INT32_MAX = 2**31 - 1
PERIOD_MAX_S = 86_400.0  # a day (CHECK task_limit_period_check)


class PermanentError(Exception):
    """A failure that retrying cannot fix: the task fails at once."""


class OperatorError(Exception):
    """An operator is defined or loaded wrongly."""


class Snooze(Exception):  # a request, not a failure (River's JobSnooze)
    """Put the task back, due again in ``delay_s``, without spending an attempt.

    For a handler that cannot start its work yet (a busy host, a rate limit). The
    task keeps its attempt count; nothing is written to its cell or audit trail.
    """

    def __init__(self, delay_s: float, reason: str = "") -> None:
        super().__init__(reason or f"snoozed for {delay_s:g}s")
        self.delay_s = max(0.0, float(delay_s))


class SlowDown(Snooze):
    """The service asked to slow down: pause this task's limit key for every worker.

    Raise it from a handler that got "429 Too Many Requests" or a 503 with Retry-After.
    The task goes back to pending, due in ``retry_after`` seconds, with no attempt
    spent, and its ``limit_key`` (the whole operator when the task has none) is paused
    until then on every worker: their claims skip it.
    """

    def __init__(self, retry_after: float, reason: str = "") -> None:
        super().__init__(min(max(0.0, float(retry_after)), PAUSE_MAX_S), reason)
        self.retry_after = self.delay_s


class LimitError(ValueError):
    """A limit is given wrongly, or names nothing; the message says why."""


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit of an operator: at most ``max_running`` at once, and/or at most ``rate``
    starts in any ``per_s`` seconds (at most ``burst`` of them within burst/rate of the
    period). ``key``: only tasks with this ``limit_key`` (None: all of the operator's)."""

    max_running: int | None = None
    rate: int | None = None
    per_s: float | None = None
    burst: int | None = None
    key: str | None = None

    def validate(self, operator: str) -> Limit:
        if not operator or len(operator) > OPERATOR_MAX_LENGTH:
            raise LimitError(f"operator name must be 1 to {OPERATOR_MAX_LENGTH} characters")
        if self.key is not None and not 1 <= len(self.key) <= LIMIT_KEY_MAX_LENGTH:
            raise LimitError(f"a limit key must be 1 to {LIMIT_KEY_MAX_LENGTH} characters")
        if self.max_running is None and self.rate is None:
            raise LimitError("a limit needs a maximum running at once, a rate, or both")
        if self.max_running is not None and not 0 <= self.max_running <= INT32_MAX:
            raise LimitError("the maximum running at once must be 0 or more")
        if (self.rate is None) != (self.per_s is None):
            raise LimitError("a rate needs its period, and a period its rate")
        if self.rate is not None and not 1 <= self.rate <= INT32_MAX:
            raise LimitError("a rate must be at least 1 per period")
        if self.per_s is not None and not (
            math.isfinite(self.per_s) and 0 < self.per_s <= PERIOD_MAX_S
        ):
            raise LimitError(f"a period must be more than 0 and at most {PERIOD_MAX_S:g}s")
        if self.burst is not None and (self.rate is None or not 1 <= self.burst <= INT32_MAX):
            raise LimitError("a burst needs a rate, and must be at least 1")
        return self

    def describe(self) -> str:
        parts = []
        if self.max_running is not None:
            parts.append(f"at most {self.max_running} running")
        if self.rate is not None:
            parts.append(f"{self.rate} per {self.per_s:g}s")
        if self.burst is not None:
            parts.append(f"burst {self.burst}")
        return ", ".join(parts)


_NO_CONTENT: Any = object()


@dataclass(frozen=True, slots=True)
class Result:
    """A handler's output, and optionally the new content of the task's cell."""

    output: Any = None
    cell_content: str | None = _NO_CONTENT

    @property
    def writes_cell(self) -> bool:
        return self.cell_content is not _NO_CONTENT


@dataclass
class Context:
    """What a handler may use besides its task."""

    log: Any  # a structlog BoundLogger bound to task_id, task_type, attempt, worker_id
    deadline: float  # time.monotonic() value after which the handler is interrupted
    worker_id: str
    _connection: Callable[[], Any] | None = None
    _async_connection: Callable[[], Any] | None = None
    # Set by the worker (on its event loop) when someone cancels the running task; a
    # plain bool, which a handler thread reads safely and costs nothing to create.
    _cancel_requested: bool = False
    _timed_out: bool = False  # set when the worker cancelled an async handler at its deadline

    def cancel_requested(self) -> bool:
        """Whether this task was cancelled while it ran (``websurf.cancel_task``, a newer edit).

        An ``async def`` handler is cancelled outright (``asyncio.CancelledError`` at its
        next ``await``); a plain function cannot be, so it should check this between
        steps of long work and return early. Whatever it returns after a cancel is not
        recorded as a result: the task ends cancelled and its cell is not written.
        """
        return self._cancel_requested

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for reads (its transaction is not the task's)."""
        if self._connection is None:
            raise RuntimeError("this context has no database connection")
        with self._connection() as conn:
            yield conn

    @asynccontextmanager
    async def async_connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """An async pooled connection for reads, for ``async def`` handlers."""
        if self._async_connection is None:
            raise RuntimeError("this context has no async database connection")
        async with self._async_connection() as conn:
            yield conn


Handler = Callable[[Task, Context], Any]  # a plain function, or one returning an awaitable
AsyncHandler = Callable[[Task, Context], Awaitable[Any]]


@dataclass(frozen=True)
class Operator:
    name: str
    handler: Handler
    timeout_s: float | None = TIMEOUT_S
    max_attempts: int = MAX_ATTEMPTS
    retry: Backoff = field(default_factory=Backoff)
    permanent_errors: tuple[type[BaseException], ...] = ()
    concurrency: int | None = None  # tasks of this operator in flight per process, at most
    limits: tuple[Limit, ...] = ()  # across the cluster (stored in websurfing_task_limit)

    # ``async def`` handlers run on the event loop; the others in the thread pool.
    is_async: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        call = getattr(self.handler, "__call__", None)  # noqa: B004 (an async callable object)
        asynchronous = inspect.iscoroutinefunction(self.handler) or (
            call is not None and inspect.iscoroutinefunction(call)
        )
        object.__setattr__(self, "is_async", asynchronous)  # frozen: set once, here

    def is_permanent(self, exc: BaseException) -> bool:
        return isinstance(exc, (PermanentError, *self.permanent_errors))


class Registry:
    """Operators by name."""

    def __init__(self) -> None:
        self._operators: dict[str, Operator] = {}
        self._on_stop: list[Callable[[], Any]] = []

    def on_stop(self, hook: Callable[[], Any]) -> Callable[[], Any]:
        """Register ``hook`` (a function or ``async def``) to run when a worker process stops.

        For what operators share across tasks: an HTTP client's pooled connections, say.
        It runs on the process's event loop after the last task ended; errors are logged.
        """
        if hook not in self._on_stop:
            self._on_stop.append(hook)
        return hook

    @property
    def stop_hooks(self) -> list[Callable[[], Any]]:
        return list(self._on_stop)

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        timeout_s: float | None = TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
        retry: Backoff | None = None,
        permanent_errors: tuple[type[BaseException], ...] = (),
        concurrency: int | None = None,
        limits: Limit | Sequence[Limit] = (),
    ) -> Operator:
        """Register ``handler`` (``async def`` or a plain function) for tasks of type ``name``.

        :param timeout_s: seconds an attempt may run (None: no limit); past it an async
            handler is cancelled and a plain one abandoned, and the attempt fails.
        :param max_attempts: runs before the task fails for good (a task's own
            ``max_attempts`` overrides it).
        :param retry: the backoff between attempts (exponential with jitter by default).
        :param permanent_errors: exception types that fail the task at once, like
            :class:`PermanentError`.
        :param concurrency: at most this many of its tasks in flight per worker process.
        :param limits: cluster-wide limits (:class:`Limit`), stored for every worker.
        """
        if not name or len(name) > 100:
            raise OperatorError(f"operator name {name!r} must be 1 to 100 characters")
        existing = self._operators.get(name)
        if existing is not None and existing.handler is not handler:
            raise OperatorError(f"operator {name!r} is registered twice")
        if max_attempts < 1:
            raise OperatorError(f"operator {name!r}: max_attempts must be at least 1")
        if concurrency is not None and concurrency < 1:
            raise OperatorError(f"operator {name!r}: concurrency must be at least 1")
        if timeout_s is not None and timeout_s <= 0:
            raise OperatorError(f"operator {name!r}: timeout_s must be positive")
        declared = (limits,) if isinstance(limits, Limit) else tuple(limits)
        try:
            for limit in declared:
                limit.validate(name)
        except LimitError as exc:
            raise OperatorError(f"operator {name!r}: {exc}") from None
        if len({limit.key for limit in declared}) < len(declared):
            raise OperatorError(f"operator {name!r}: two limits for the same key")
        op = Operator(
            name,
            handler,
            timeout_s,
            max_attempts,
            retry or Backoff(),
            permanent_errors,
            concurrency,
            declared,
        )
        self._operators[name] = op
        return op

    def operator(self, name: str, **options: Any) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(handler: Handler) -> Handler:
            self.register(name, handler, **options)
            return handler

        return decorate

    def get(self, name: str) -> Operator | None:
        return self._operators.get(name)

    def names(self) -> list[str]:
        return sorted(self._operators)

    @property
    def operators(self) -> Mapping[str, Operator]:
        return dict(self._operators)


registry = Registry()
operator = registry.operator
on_stop = registry.on_stop


def load_operators(
    modules: tuple[str, ...] | list[str], *, use_entry_points: bool = True
) -> Registry:
    """Import the modules that register operators (and the entry-point group's)."""
    log = structlog.get_logger("websurf.operators")
    targets = ["websurf.worker.app.operators"]
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.value not in targets:
                targets.append(ep.value)
    targets.extend(m for m in modules if m not in targets)
    for module in targets:
        try:
            importlib.import_module(module.split(":", 1)[0])
        except Exception as exc:
            raise OperatorError(
                f"cannot import operator module {module!r}: {type(exc).__name__}: {exc}"
            ) from exc
        log.debug("operators_loaded", module=module)
    return registry
