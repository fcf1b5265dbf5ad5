"""Completion lines written in batches read exactly like the lines structlog writes one by one."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from websurf.worker import logs


class _Stream:
    """A stream that keeps each write apart (the unit a pipe keeps whole)."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:], root.level = handlers, level
    logs._json_lines = None


@pytest.fixture
def stream() -> Iterator[_Stream]:
    out = _Stream()
    logs.configure_logging("info", "json", out)  # type: ignore[arg-type]
    yield out


def _event(i: int, task_type: str = "noop") -> dict[str, Any]:
    return {
        "worker_id": "host/1/abc",
        "task_id": f"00000000-0000-0000-0000-{i:012d}",
        "task_type": task_type,
        "attempt": 1,
        "duration_ms": i,
        "event": "task_completed",
    }


def test_a_batch_line_has_the_keys_and_order_of_structlogs_own(stream: _Stream) -> None:
    expected = _event(1)
    structlog.get_logger().bind(worker_id=expected["worker_id"]).info(
        "task_completed",
        task_id=expected["task_id"],
        task_type="noop",
        attempt=1,
        duration_ms=1,
    )
    assert logs.write_info_lines([_event(1)])
    one_by_one, batched = (json.loads(w) for w in stream.writes)
    assert list(batched) == list(one_by_one)
    assert {k: v for k, v in batched.items() if k != "timestamp"} == {
        k: v for k, v in one_by_one.items() if k != "timestamp"
    }


def test_many_lines_go_in_few_writes_each_of_whole_lines_a_pipe_keeps_together(
    stream: _Stream,
) -> None:
    assert logs.write_info_lines([_event(i) for i in range(500)])
    assert len(stream.writes) < 50
    lines = []
    for write in stream.writes:
        assert len(write.encode()) <= logs.PIPE_ATOMIC_BYTES
        assert write.endswith("\n")
        lines += [json.loads(line) for line in write.splitlines()]
    assert [line["duration_ms"] for line in lines] == list(range(500))
    assert {line["level"] for line in lines} == {"info"}


def test_secrets_are_masked_in_batched_lines_too(stream: _Stream) -> None:
    assert logs.write_info_lines([_event(1, task_type="postgresql://u:hunter2@db/x")])
    assert "hunter2" not in stream.writes[0]


def test_nothing_is_batched_unless_info_lines_are_json() -> None:
    logs.configure_logging("warning", "json", _Stream())  # type: ignore[arg-type]
    assert not logs.write_info_lines([_event(1)])
    logs.configure_logging("info", "console", _Stream())  # type: ignore[arg-type]
    assert not logs.write_info_lines([_event(1)])


def test_captured_logs_get_every_line_one_by_one(stream: _Stream) -> None:
    """Under structlog.testing.capture_logs (which swaps the chain in place), nothing is
    written around it: the caller logs each event, and the capture sees them."""
    with capture_logs():
        assert not logs.write_info_lines([_event(1)])
    assert stream.writes == []
