"""The operator registry: registering handlers, their options, and loading modules."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from websurf.worker.core.model import BACKOFF_MAX_S
from websurf.worker.core.registry import (
    MAX_ATTEMPTS,
    TIMEOUT_S,
    Backoff,
    Context,
    Limit,
    OperatorError,
    PermanentError,
    Registry,
    Result,
    SlowDown,
    Snooze,
    Task,
    load_operators,
    registry,
)


def _handler(task: Task, context: Context) -> Any:
    return {"ok": True}


def _other(task: Task, context: Context) -> Any:
    return None


def _task(payload: dict[str, Any]) -> Task:
    return Task(uuid.uuid4(), "t", payload, attempt=1, max_attempts=3)


def test_register_keeps_options_and_defaults() -> None:
    reg = Registry()
    plain = reg.register("plain", _handler)
    tuned = reg.register(
        "tuned",
        _other,
        timeout_s=5.0,
        max_attempts=7,
        retry=Backoff(base_s=2.0),
        permanent_errors=(KeyError,),
    )

    assert (plain.timeout_s, plain.max_attempts, plain.retry) == (
        TIMEOUT_S,
        MAX_ATTEMPTS,
        Backoff(),
    )
    assert (tuned.timeout_s, tuned.max_attempts, tuned.retry.base_s) == (5.0, 7, 2.0)
    assert reg.get("tuned") is tuned
    assert reg.get("missing") is None
    assert reg.names() == ["plain", "tuned"]


def test_decorator_registers_and_returns_the_handler() -> None:
    reg = Registry()

    @reg.operator("decorated", max_attempts=2)
    def handler(task: Task, context: Context) -> Any:
        return 1

    op = reg.get("decorated")
    assert op is not None and op.handler is handler and op.max_attempts == 2


def test_same_name_twice_is_refused_but_reimport_is_harmless() -> None:
    reg = Registry()
    reg.register("x", _handler)
    reg.register("x", _handler)  # importing a module twice registers the same function

    with pytest.raises(OperatorError, match="registered twice"):
        reg.register("x", _other)


@pytest.mark.parametrize("name", ["", "n" * 101])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(OperatorError, match="1 to 100 characters"):
        Registry().register(name, _handler)


def test_max_attempts_below_one_is_refused() -> None:
    with pytest.raises(OperatorError, match="max_attempts"):
        Registry().register("x", _handler, max_attempts=0)


def test_operators_mapping_is_a_copy() -> None:
    reg = Registry()
    reg.register("x", _handler)
    view = reg.operators
    assert list(view) == ["x"]
    assert isinstance(view, dict)
    view.clear()
    assert reg.names() == ["x"]


def test_permanent_errors() -> None:
    op = Registry().register("x", _handler, permanent_errors=(KeyError,))
    assert op.is_permanent(PermanentError("no"))
    assert op.is_permanent(KeyError("k"))
    assert not op.is_permanent(ValueError("v"))


def test_backoff_grows_exponentially_within_jitter_and_is_capped() -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, max_s=60.0, jitter=0.25)
    for attempt, nominal in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (20, 60.0)]:
        delays = [backoff.delay_s(attempt) for _ in range(200)]
        assert all(nominal * 0.75 <= d <= nominal * 1.25 for d in delays), (attempt, delays)
        assert len(set(delays)) > 1  # jitter spreads retries of tasks that failed together
    assert Backoff(jitter=0.0).delay_s(100) == BACKOFF_MAX_S


def test_task_cell_id_comes_from_the_payload() -> None:
    cell = uuid.uuid4()
    assert _task({"cell_id": cell}).cell_id == str(cell)
    assert _task({"cell_id": str(cell)}).cell_id == str(cell)
    assert _task({}).cell_id is None


def test_result_writes_cell_only_when_content_given() -> None:
    assert not Result(output=1).writes_cell
    assert Result(output=1, cell_content="x").writes_cell
    assert Result(cell_content=None).writes_cell  # clearing a cell is a write


def test_context_without_connection_says_so() -> None:
    ctx = Context(log=None, deadline=0.0, worker_id="w")
    with pytest.raises(RuntimeError, match="no database connection"), ctx.connection():
        pass


def test_load_operators_registers_the_builtin_noop() -> None:
    loaded = load_operators([])
    assert loaded is registry
    assert "noop" in loaded.names()


def test_load_operators_names_the_module_it_cannot_import() -> None:
    with pytest.raises(OperatorError) as caught:
        load_operators(["no_such_module_websurf_test"], use_entry_points=False)
    message = str(caught.value)
    assert "'no_such_module_websurf_test'" in message
    assert "ModuleNotFoundError" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limit(), "needs a maximum running at once, a rate, or both"),
        (Limit(rate=5), "a rate needs its period"),
        (Limit(max_running=1, burst=2), "a burst needs a rate"),
        (Limit(rate=5, per_s=float("nan")), "a period must be more than 0"),
        (Limit(key="", max_running=1), "1 to 255 characters"),
        ([Limit(max_running=1), Limit(max_running=2)], "two limits for the same key"),
    ],
)
def test_bad_limits_are_refused_when_the_operator_registers(limits: Any, message: str) -> None:
    with pytest.raises(OperatorError, match=message):
        Registry().register("x", lambda task, context: None, limits=limits)


def test_limits_are_kept_as_a_tuple_and_slow_down_is_a_snooze_with_a_cap() -> None:
    op = Registry().register("x", lambda task, context: None, limits=Limit(max_running=2))

    assert op.limits == (Limit(max_running=2),)
    assert isinstance(SlowDown(30), Snooze) and SlowDown(30).delay_s == 30
    assert SlowDown(10**9).retry_after == 86_400.0 and SlowDown(-5).retry_after == 0.0
