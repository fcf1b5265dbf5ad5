"""Entry point of one worker process, started by the supervisor.

The supervisor writes the configuration as JSON on the child's stdin (so the database
URL, which may hold a password, never shows in ``ps``). The child answers on stdout
with one line: ``ready`` once it serves, or ``error <reason>`` when it cannot boot.

Around every handler call the child writes the task's id and attempt into a small file
the supervisor passed it (an mmap: no system call per task), and clears it afterwards. If
the child dies, the supervisor reads the file and tells the replacement which attempt
the child died in; the replacement recovers the dead worker's tasks at boot, counting
only that attempt (see ``websurf.worker.reaper.recover_dead_worker``).
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import os
import signal
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog

from websurf.worker.config import WorkerConfig
from websurf.worker.logs import configure_logging
from websurf.worker.registry import Context, Handler, OperatorError, Task

if TYPE_CHECKING:
    from websurf.worker.runner import Runner

EXIT_OK = 0
EXIT_BOOT_CONFIG = 78  # cannot boot and never will: bad operator module, schema behind
EXIT_BOOT_DATABASE = 69  # cannot boot now: the database is unreachable
PARENT_CHECK_INTERVAL_S = 1.0
RUNNING_TASK_BYTES = 64  # "<uuid> <attempt>", NUL-padded; a leading NUL means none
PREDECESSOR_TRIES = 5  # then the stale-heartbeat reaper recovers them instead
PREDECESSOR_RETRY_S = 0.5


def parse_running_task(raw: bytes) -> tuple[str, int] | None:
    """The (task id, attempt) a dead child noted in its running-task file, if any."""
    fields = raw[:RUNNING_TASK_BYTES].split(b"\0", 1)[0].decode(errors="replace").split()
    if len(fields) != 2 or not fields[1].isdigit():
        return None
    try:
        return str(uuid.UUID(fields[0])), int(fields[1])
    except ValueError:
        return None


class RunningTask:
    """Notes the task being run in the supervisor's file, around each handler call."""

    def __init__(self, fd: int) -> None:
        try:
            self._map = mmap.mmap(fd, RUNNING_TASK_BYTES)
        finally:
            os.close(fd)

    def wrap(self, handler: Handler) -> Handler:
        note = self._map

        def run(task: Task, context: Context) -> Any:
            note[:] = f"{task.id} {task.attempt}".encode().ljust(RUNNING_TASK_BYTES, b"\0")
            try:
                return handler(task, context)
            finally:
                note[0:1] = b"\0"

        return run


def _recover_predecessors(runner: Runner, predecessors: list[dict[str, Any]], log: Any) -> None:
    """Take back the tasks of the processes this one replaces (they are known to be dead)."""
    import psycopg

    from websurf.worker import reaper

    assert runner.pool is not None
    remaining = list(predecessors)
    for attempt in range(1, PREDECESSOR_TRIES + 1):
        try:
            while remaining:
                dead = remaining[0]
                running = dead.get("running")
                with runner.pool.connection() as conn:
                    reaper.recover_dead_worker(
                        conn,
                        dead["worker_id"],
                        how=dead.get("how", "unknown"),
                        running=(running[0], int(running[1])) if running else None,
                    )
                remaining.pop(0)
            return
        except psycopg.OperationalError as exc:
            log.warning("predecessor_recovery_retry", attempt=attempt, error=str(exc).strip())
            time.sleep(PREDECESSOR_RETRY_S * attempt)
    log.warning(
        "predecessor_recovery_deferred",
        dead_worker_ids=[d["worker_id"] for d in remaining],
        reason="the reaper recovers them once their heartbeat is stale",
    )


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
    predecessors: list[dict[str, Any]] = data.pop("predecessors", [])
    running_fd: int | None = data.pop("running_task_fd", None)
    data["operator_modules"] = tuple(data.get("operator_modules", ()))
    config = WorkerConfig(**data)
    configure_logging(config.log_level, config.log_format)
    log = structlog.get_logger("websurf.worker").bind(worker_id=worker_id)
    threading.Thread(
        target=_stop_when_orphaned, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()
    from websurf.worker.runner import BootError, Runner  # heavy: not for the supervisor

    try:
        runner = Runner(config, worker_id)
        if running_fd is not None:
            note = RunningTask(running_fd)
            runner.operators = {
                name: dataclasses.replace(op, handler=note.wrap(op.handler))
                for name, op in runner.operators.items()
            }
        runner.install_signal_handlers()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        runner.boot()
    except (BootError, OperatorError) as exc:
        database = isinstance(exc, BootError) and exc.database_unreachable
        log.error("worker_boot_failed", error=str(exc))
        _tell_parent(f"error {exc}")
        sys.exit(EXIT_BOOT_DATABASE if database else EXIT_BOOT_CONFIG)
    if predecessors:
        _recover_predecessors(runner, predecessors, log)
    _tell_parent("ready")
    runner.run()
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
