"""Operators: named task handlers and their options.

A handler receives the :class:`Task` and a :class:`Context` and returns its output:
any JSON-serialisable value, or a :class:`Result` carrying the output and new content
for the task's cell. Raise :class:`PermanentError` (or an error listed in the
operator's ``permanent_errors``) for failures that retrying cannot fix, and
:class:`Snooze` to put the task back for a while without spending an attempt.

A handler is either ``async def`` (run concurrently on the worker process's event
loop: the right shape for robots that wait on the network) or a plain function (run
in the process's bounded thread pool, so a blocking call stalls nothing else).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
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
    ) -> Operator:
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
        op = Operator(
            name,
            handler,
            timeout_s,
            max_attempts,
            retry or Backoff(),
            permanent_errors,
            concurrency,
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
