"""Entry point of one worker process, started by the supervisor.

The supervisor writes the configuration as JSON on the child's stdin (so the database
URL, which may hold a password, never shows in ``ps``). The child answers on stdout
with one line: ``ready`` once it serves, or ``error <reason>`` when it cannot boot.

With ``recover_only``, the process only hands back the tasks of its predecessors and
exits: the supervisor starts one such process at the end of a stop in which a child
had to be killed.

A replacement started while its slot backs off from a crash (``serve_after_s``) takes
its predecessors' tasks back at once, says ``recovered``, and waits out the backoff
before it serves (and says ``ready``).

The supervisor also passes a small file (``running_task_fd``) where the child notes
which tasks its handler code is executing (see ``websurf.worker.process.running``).
If the child dies, the supervisor reads it and tells the replacement, which recovers
the dead worker's tasks at boot, charging only those attempts.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import traceback
from typing import Any

import structlog

from websurf.worker.config import WorkerConfig
from websurf.worker.core.registry import OperatorError
from websurf.worker.logs import configure_logging

EXIT_OK = 0
EXIT_BOOT_CONFIG = 78  # cannot boot and never will: bad operator module, schema behind
EXIT_BOOT_DATABASE = 69  # cannot boot now: the database is unreachable
EXIT_RECYCLE = 75  # stopped to free a stuck handler thread: start a new one at once
EXIT_LOOP_STALLED = 76  # a handler blocked the event loop: tasks handed back, start anew
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


def _exit(code: int) -> None:
    """Exit now, even around a handler thread that never returned (it cannot be joined)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _recover_only(
    config: WorkerConfig, worker_id: str, predecessors: list[dict[str, Any]], log: Any
) -> None:
    """Hand back the tasks of dead processes (their attempts counted as they said)."""
    from websurf.sql.database import scrub
    from websurf.worker.process.connections import Connections
    from websurf.worker.process.maintenance import recover_predecessors

    connections = Connections(config, worker_id, {})
    try:
        connections.claimer.get()  # first contact: is a pooler in between?
        connections.pool.open(wait=False)
        recover_predecessors(connections.pool, predecessors, log)
    except Exception as exc:  # say why in one line; the reaper recovers them later
        error = scrub(f"{type(exc).__name__}: {exc}".strip(), config.database_url)
        log.error("stop_recovery_failed", error=error)
    finally:
        connections.close()


GC_THRESHOLDS = (50_000, 20, 100)  # young, middle, old: measured in the README's "Benchmark"


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the supervisor's
    data: dict[str, Any] = json.loads(sys.stdin.read())
    sys.stdin.close()
    serve(data)


def run_forked(settings: dict[str, Any]) -> None:
    """Serve in a process just forked from the supervisor (fd 1: the status pipe; 0: null).

    What the supervisor set up for itself goes first: its signal handlers and wake-up
    fd, and the standard streams (fresh objects, so no lock copied from its memory is
    ever waited on). Never returns: every way out is ``os._exit``.
    """
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the supervisor's
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own, for its life)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        serve(dict(settings))
    except BaseException:
        traceback.print_exc()
        _exit(1)
    _exit(EXIT_OK)


def serve(data: dict[str, Any]) -> None:
    """Boot and serve with the supervisor's settings ``data``; exits the process."""
    worker_id: str = data.pop("worker_id")
    predecessors: list[dict[str, Any]] = data.pop("predecessors", [])
    running_fd: int | None = data.pop("running_task_fd", None)
    serve_after_s = float(data.pop("serve_after_s", 0.0))
    data["operator_modules"] = tuple(data.get("operator_modules", ()))
    recover_only = bool(data.pop("recover_only", False))
    config = WorkerConfig(**data)
    configure_logging(config.log_level, config.log_format)
    log = structlog.get_logger("websurf.worker").bind(worker_id=worker_id)
    if recover_only:
        _recover_only(config, worker_id, predecessors, log)
        _exit(EXIT_OK)
    threading.Thread(
        target=_stop_when_orphaned, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()
    # heavy imports: not for the supervisor
    from websurf.worker.process.maintenance import recover_predecessors
    from websurf.worker.process.runner import BootError, Runner
    from websurf.worker.process.running import RunningNote

    note = RunningNote(running_fd, config.threads_per_process) if running_fd is not None else None
    try:
        runner = Runner(
            config, worker_id, note=note, on_loop_stalled=lambda: _exit(EXIT_LOOP_STALLED)
        )
        runner.boot(install_signal_handlers=True)
    except (BootError, OperatorError) as exc:
        database = isinstance(exc, BootError) and exc.database_unreachable
        log.error("worker_boot_failed", error=str(exc))
        _tell_parent(f"error {exc}")
        _exit(EXIT_BOOT_DATABASE if database else EXIT_BOOT_CONFIG)
    if predecessors:
        recover_predecessors(runner.connections.pool, predecessors, log)
        _tell_parent("recovered")
    if serve_after_s > 0:
        log.info("restart_backoff_waiting", serve_after_s=round(serve_after_s, 2))
        runner.wait_before_serving(serve_after_s)  # a stop request ends it (and serve)
    _tell_parent("ready")
    # What boot made (modules, operators, connections) lives as long as the process: out
    # of the collector's generations, each collection walks only what serving creates.
    gc.freeze()
    # Thousands of tasks in flight each allocate a few container objects per step, and
    # live far longer than the collector's default 700 allocations: at the default
    # thresholds the young collections keep walking them and promote them into older
    # generations to walk again. Rarer collections let most of them die first (the
    # cycle collector only frees cycles; everything else goes by reference count).
    gc.set_threshold(*GC_THRESHOLDS)
    runner.serve(install_signal_handlers=True)
    if note is not None:
        note.clear_all()  # everything was recorded: nothing here may be charged
    _exit(EXIT_RECYCLE if runner.recycle_reason else EXIT_OK)


if __name__ == "__main__":
    main()
