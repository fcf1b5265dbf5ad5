"""The running-task note: which tasks a worker process is executing, for crash attribution.

Design note
-----------
A process with many tasks in flight that dies (a native crash, ``os._exit`` in a
handler, the OOM killer) must charge an attempt only to the task(s) that could have
killed it; the others go back without losing one. The supervisor creates a small
unlinked file per slot and passes it to the child; the child maps it (an mmap: no
system call per note) and keeps one 32-byte line per place where handler code runs:

* line 0: the async handler step the event loop is executing right now (asyncio runs
  one coroutine step at a time, so at most one);
* line 1..N: the plain handler each thread of the pool is running.

A task waiting on I/O, queued for a slot, or finished and waiting to be recorded is
not on a line: it cannot have killed the process. After a death the supervisor reads
the lines and tells the replacement process, which charges exactly those attempts.

This module is read by the supervisor, which never imports psycopg: keep it light.
"""

from __future__ import annotations

import mmap
import os
import uuid

LINE_BYTES = 32  # a mark byte, the task id's 16 bytes, the attempt (4, little-endian)
LOOP_LINE = 0
_MARK = b"\x01"  # a line in use starts with this; a cleared one with NUL
_PADDING = bytes(LINE_BYTES - 1 - 16 - 4)


def note_bytes(threads: int) -> int:
    """Size of the note for a process with ``threads`` pool threads."""
    return LINE_BYTES * (1 + threads)


def parse_running_tasks(raw: bytes) -> list[tuple[str, int]]:
    """The (task id, attempt) pairs a dead process noted as running, without repeats."""
    found: dict[tuple[str, int], None] = {}
    for start in range(0, len(raw) - LINE_BYTES + 1, LINE_BYTES):
        if raw[start : start + 1] != _MARK:
            continue
        task_id = uuid.UUID(bytes=raw[start + 1 : start + 17])
        found[(str(task_id), int.from_bytes(raw[start + 17 : start + 21], "little"))] = None
    return list(found)


def line_for(task_id: uuid.UUID, attempt: int) -> bytes:
    """The bytes noted for one task attempt (computed once per task, written per step):
    binary, so noting costs no UUID formatting on the hot path."""
    return _MARK + task_id.bytes + attempt.to_bytes(4, "little") + _PADDING


class RunningNote:
    """The child's side: marks and clears lines of the shared file."""

    def __init__(self, fd: int, threads: int) -> None:
        size = note_bytes(threads)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.lines = 1 + threads
        # The loop's line, written twice per async handler step (see executor._Noted):
        # a view, so that costs no method call.
        self.loop_line = memoryview(self._map)[LOOP_LINE * LINE_BYTES : LINE_BYTES]

    def mark(self, line: int, text: bytes) -> None:
        start = line * LINE_BYTES
        self._map[start : start + LINE_BYTES] = text

    def clear(self, line: int) -> None:
        start = line * LINE_BYTES
        self._map[start : start + 1] = b"\0"

    def clear_all(self) -> None:
        for line in range(self.lines):
            self.clear(line)
