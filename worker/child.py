"""Entry point of one worker process, started by the supervisor.

The supervisor writes the configuration as JSON on the child's stdin (so the database
URL, which may hold a password, never shows in ``ps``). The child answers on stdout
with one line: ``ready`` once it serves, or ``error <reason>`` when it cannot boot.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

import structlog

from websurf.worker.config import WorkerConfig
from websurf.worker.logs import configure_logging
from websurf.worker.registry import OperatorError
from websurf.worker.runner import BootError, Runner

EXIT_OK = 0
EXIT_BOOT_CONFIG = 78  # cannot boot and never will: bad operator module, schema behind
EXIT_BOOT_DATABASE = 69  # cannot boot now: the database is unreachable
PARENT_CHECK_INTERVAL_S = 1.0


def _tell_parent(line: str) -> None:
    try:
        sys.stdout.write(line.replace("\n", " ") + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass


def _stop_when_orphaned(parent: int) -> None:
    """If the supervisor dies without telling us, stop as if it had sent SIGTERM."""
    stop = threading.Event()
    while not stop.wait(PARENT_CHECK_INTERVAL_S):
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the supervisor's
    data: dict[str, Any] = json.loads(sys.stdin.read())
    sys.stdin.close()
    worker_id: str = data.pop("worker_id")
    predecessors: list[str] = data.pop("predecessors", [])
    data["operator_modules"] = tuple(data.get("operator_modules", ()))
    config = WorkerConfig(**data)
    configure_logging(config.log_level, config.log_format)
    log = structlog.get_logger("websurf.worker").bind(worker_id=worker_id)
    threading.Thread(
        target=_stop_when_orphaned, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()
    try:
        runner = Runner(config, worker_id, predecessors=predecessors)
        runner.install_signal_handlers()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        runner.boot()
    except (BootError, OperatorError) as exc:
        database = isinstance(exc, BootError) and exc.database_unreachable
        log.error("worker_boot_failed", error=str(exc))
        _tell_parent(f"error {exc}")
        sys.exit(EXIT_BOOT_DATABASE if database else EXIT_BOOT_CONFIG)
    _tell_parent("ready")
    runner.run()
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
