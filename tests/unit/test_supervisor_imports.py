"""The supervisor stays light: it starts before any worker process, and every millisecond
of its start is one a task waits for after `websurf worker` (it imported psycopg and the
queue through the metrics module for two constants once, 80 ms)."""

from __future__ import annotations

import subprocess
import sys


def test_the_supervisor_imports_neither_psycopg_nor_the_queue() -> None:
    heavy = ("psycopg", "websurf.worker.core.queue", "websurf.worker.process.runner")
    code = (
        "import sys, websurf.cli.worker, websurf.worker.daemon.supervisor;"
        f" print(sorted(m for m in sys.modules if m.startswith({heavy!r})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert loaded == "[]"
