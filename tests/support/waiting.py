"""``wait_for``: poll a condition until it holds or a deadline passes (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE_S = 30.0  # for a condition a test waits on, unless it says otherwise
POLL_S = 0.02
SHOWN_CHARS = 300  # of the last value, in a failure message


def wait_for(
    condition: Callable[[], T],
    describe: str,
    timeout: float = DEADLINE_S,
    *,
    poll: float = POLL_S,
    tolerate: tuple[type[BaseException], ...] = (),
    details: Callable[[], str] | None = None,
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    After ``timeout`` seconds the test fails, saying what it waited for (``describe``),
    the last value (or the last error among ``tolerate``: exceptions that mean "not
    yet", say a database restarting), and ``details()`` (a daemon's log, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            last = f"last value: {value!r}"
        except tolerate as exc:
            value = None  # type: ignore[assignment]
            last = f"last error: {type(exc).__name__}: {exc}"
        if value:
            return value
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g}s waiting for {describe} ({last[:SHOWN_CHARS]})"
            if details is not None:
                message += "\n" + details()
            raise AssertionError(message)
        time.sleep(poll)
