"""The loop watchdog: notices an event loop that has stopped turning.

Design note
-----------
* An ``async def`` handler that makes a blocking call (``time.sleep``, a synchronous
  HTTP client, seconds of CPU) holds the process's event loop: every other task, the
  claim loop, the recorder and the stop signal wait behind it, and its own timeout
  (``asyncio.timeout``) cannot fire. Plain handlers run in threads and have their own
  way out (the executor recycles a process whose thread is stuck); this is the same
  for the loop.
* The loop notes the time on each turn of a repeating callback (every ``TICK_S``); a
  thread of its own reads the note. When the loop has not turned for ``limit_s``, the
  watchdog calls ``on_stall`` once, from its thread. The runner then hands the
  process's tasks back itself (the blocked loop can record nothing), charging only
  the attempt on the loop's running line (the one blocking it), and the worker
  process exits to be replaced (``EXIT_LOOP_STALLED``).
* Traded away: a loop step that takes longer than the limit for a good reason is
  treated the same way. No step of a well-behaved handler takes seconds; the limit is
  the worker's ``stuck_grace_s`` (5 s), the grace a stuck handler thread gets too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

TICK_S = 0.5  # the loop notes a turn this often; the watchdog looks this often


class LoopWatchdog:
    """Calls ``on_stall(stalled_s)`` once if ``loop`` does not turn for ``limit_s``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limit_s: float,
        on_stall: Callable[[float], None],
        *,
        tick_s: float = TICK_S,
    ) -> None:
        self._loop = loop
        self._limit_s = limit_s
        self._on_stall = on_stall
        self._tick_s = tick_s
        self._turned_at = time.monotonic()
        self._done = threading.Event()
        self._handle: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)

    def start(self) -> None:
        """Start watching (on the loop's thread)."""
        self._tick()
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (on the loop's thread)."""
        self._done.set()
        if self._handle is not None:
            self._handle.cancel()

    def _tick(self) -> None:
        self._turned_at = time.monotonic()
        self._handle = self._loop.call_later(self._tick_s, self._tick)

    def _watch(self) -> None:
        while not self._done.wait(self._tick_s):
            # How late the loop's next turn is: a healthy loop notes a turn every tick, so
            # the time since the last note alone reaches tick_s without any stall (with a
            # limit as short as the tick, every look would be an alarm).
            stalled_s = time.monotonic() - self._turned_at - self._tick_s
            if stalled_s > self._limit_s:
                self._done.set()
                self._on_stall(stalled_s)
