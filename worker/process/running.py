"""The running-task note: which tasks a worker process is executing, for crash attribution.

Design note
-----------
A process with many tasks in flight that dies (a native crash, ``os._exit`` in a
handler, the OOM killer) must charge an attempt only to the task(s) that could have
killed it; the others go back without losing one. The supervisor creates a small
unlinked file per slot and passes it to the child; the child maps it (an mmap: no
system call per note) and keeps one 64-byte line per place where handler code runs:

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
from typing import Any

LINE_BYTES = 64  # "<uuid> <attempt>", NUL-padded; a leading NUL means none
LOOP_LINE = 0


def note_bytes(threads: int) -> int:
    """Size of the note for a process with ``threads`` pool threads."""
    return LINE_BYTES * (1 + threads)


def parse_running_tasks(raw: bytes) -> list[tuple[str, int]]:
    """The (task id, attempt) pairs a dead process noted as running, without repeats."""
    found: dict[tuple[str, int], None] = {}
    for start in range(0, len(raw) - LINE_BYTES + 1, LINE_BYTES):
        line = raw[start : start + LINE_BYTES].split(b"\0", 1)[0]
        fields = line.decode(errors="replace").split()
        if len(fields) != 2 or not fields[1].isdigit():
            continue
        try:
            found[(str(uuid.UUID(fields[0])), int(fields[1]))] = None
        except ValueError:
            continue
    return list(found)


def line_for(task_id: Any, attempt: int) -> bytes:
    """The bytes noted for one task attempt (computed once per task, written per step)."""
    return f"{task_id} {attempt}".encode().ljust(LINE_BYTES, b"\0")[:LINE_BYTES]


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

    def mark(self, line: int, text: bytes) -> None:
        start = line * LINE_BYTES
        self._map[start : start + LINE_BYTES] = text

    def clear(self, line: int) -> None:
        start = line * LINE_BYTES
        self._map[start : start + 1] = b"\0"

    def clear_all(self) -> None:
        for line in range(self.lines):
            self.clear(line)
