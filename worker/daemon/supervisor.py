"""The supervisor: starts N worker processes, restarts the ones that die, stops them all.

Design note
-----------
The supervisor never touches the database. Signal handlers only record the signal
and write to a wake-up pipe; the loop acts on it:

* SIGTERM / SIGINT: forward SIGTERM to every child (they stop claiming, finish or hand
  back their tasks within the shutdown timeout) and wait for them. A second signal is
  forwarded too, which makes the children interrupt and hand back at once. Children
  still alive at the deadline (timeout plus a margin) are killed: one whose event loop
  a handler blocks cannot drain. The tasks of a child that did not stop by itself
  (killed, or dead of a signal) are then handed back by one last short-lived process
  (``recover_only``: the supervisor itself never touches the database), charging only
  the attempts whose handler code was running, and the supervisor exits with
  ``EXIT_CHILD_KILLED``, not 0: nothing stays ``processing``, and the stop says it
  was not clean.
* SIGCHLD: reap. A child that exits while we are not stopping is restarted with
  exponential backoff (reset once it has served for a while); its replacement is told
  the dead child's worker id, so the dead child's tasks are recovered at once instead
  of after the heartbeat timeout. Each slot owns a small unlinked file, shared with its
  child, where the child notes the tasks its handler code is executing (the running
  note); read after a death, it tells the replacement which attempts could have killed
  the child (only those count) and how it died. A child that died inside a handler,
  or that exited to be recycled (a handler thread stuck past its timeout), is
  restarted without growing backoff: a poison task ends after its max attempts, and
  the daemon keeps serving the other tasks. So is one whose event loop a handler
  blocked (``EXIT_LOOP_STALLED``: it handed its tasks back before exiting).
* Backoff never delays a recovery. A child that had served is replaced at once even
  while its slot backs off: the replacement takes its predecessor's tasks back
  (uncharged unless they were running handler code), then waits out the backoff before
  it claims anything. Starting it late instead left those tasks to another process's
  reaper, which charges them (stale heartbeat, or past their timeout) once the backoff
  outlasts ``stale_after_s`` or a task's timeout. A child that never became ready holds
  no tasks of its own: its restart waits, so a crash at boot is not started in a loop.
* A child that cannot boot for a reason a restart will not fix (bad operator module,
  schema behind) stops the whole daemon with its message, instead of crash-looping.
  One that cannot reach the database stops the daemon only before any child ever
  served; afterwards it is restarted with backoff like a crash.

Children are forked from the supervisor while it has no thread but its own (the usual
case: it holds no database connection and no lock a child could need), which spares
each a fresh interpreter's imports at start; with the metrics server's thread running
(``--metrics-port``), and where there is no fork, each is a fresh interpreter started
with ``subprocess`` that gets its configuration as JSON on stdin. The loop reaps any
pid (``waitpid(-1)``), so it also works as PID 1 in a container.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

import structlog

from websurf.worker.config import RESTART_BACKOFF_MAX_S, WorkerConfig
from websurf.worker.daemon.child import (
    EXIT_BOOT_CONFIG,
    EXIT_BOOT_DATABASE,
    EXIT_LOOP_STALLED,
    EXIT_RECYCLE,
    run_forked,
)
from websurf.worker.daemon.health import (
    LIVENESS_WINDOW_S,
    READY_HEARTBEATS,
    READY_WINDOW_MIN_S,
    HealthServer,
)
from websurf.worker.process.running import note_bytes, parse_running_tasks

EXIT_OK = 0
EXIT_BOOT_FAILURE = 4
EXIT_DATABASE_UNAVAILABLE = 3
EXIT_CHILD_KILLED = 5  # a worker process had to be killed (or died) while stopping
RECOVERY_TIMEOUT_S = 30.0  # for the last process that hands back the killed ones' tasks
KILL_MARGIN_S = 5.0  # beyond the shutdown timeout, before children are killed
HEALTHY_AFTER_S = 30.0  # a child that served this long resets its restart backoff
RESTART_BACKOFF_START_S = 0.5

log = structlog.get_logger("websurf.supervisor")
CAN_FORK = hasattr(os, "fork")  # POSIX; elsewhere each worker process is a new interpreter


def restart_delay_s(failures: int) -> float:
    """The wait before restarting a slot after ``failures`` failures in a row: 0.5 s,
    doubling, capped at ``RESTART_BACKOFF_MAX_S``."""
    return min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_START_S * 2.0 ** (failures - 1))


def restart_backoff(
    failures: int, *, served_s: float, died_in_handler: bool, recycled: bool
) -> tuple[int, float]:
    """A slot's failures in a row and the wait before its restart, after its child exited.

    ``failures`` counts the slot's failures before this exit. Dying inside a handler is
    the task's doing (its attempts bound it), and a recycle (a stuck handler thread) is
    the process asking for it: neither is a crash loop, and both restart at once, so the
    replacement recovers the batch before it goes stale. A child that served
    ``HEALTHY_AFTER_S`` starts the count over.
    """
    healthy = served_s >= HEALTHY_AFTER_S or died_in_handler or recycled
    failures = 1 if healthy else failures + 1
    if died_in_handler or recycled:
        return failures, 0.0
    return failures, restart_delay_s(failures)


@dataclass
class ForkedChild:
    """A worker process forked from the supervisor: what the supervisor reads of a Popen."""

    pid: int
    stdout: io.FileIO  # its status lines (``ready``, ``error …``)
    returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            with open(os.pidfd_open(self.pid), "rb", buffering=0) as pidfd:  # readable on exit
                if not select.select([pidfd], [], [], timeout)[0]:
                    raise subprocess.TimeoutExpired(f"worker process {self.pid}", timeout or 0)
        result = self.poll()
        assert result is not None
        return result

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)


def _fork_child(settings: dict[str, Any], env: dict[str, str] | None) -> ForkedChild:
    """Fork a worker process that serves ``settings`` (see ``child.run_forked``).

    The child starts from the supervisor's memory: the interpreter, websurf's
    configuration and the modules both need are there already, which takes about a
    tenth of a second off a worker's start (a fresh interpreter imports them again).
    Only done while the supervisor is single-threaded (see ``Supervisor._spawn``).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the supervisor's code
        try:
            os.close(read_fd)
            os.dup2(write_fd, 1)  # its status lines, as a spawned child's stdout
            os.close(write_fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            if env is not None:
                os.environ.clear()
                os.environ.update(env)
            run_forked(settings)
        finally:
            os._exit(1)  # run_forked exits by itself; this only if something escaped it
    os.close(write_fd)
    return ForkedChild(pid, io.FileIO(read_fd, "rb"))


@dataclass
class Slot:
    index: int
    process: subprocess.Popen[bytes] | ForkedChild | None = None
    worker_id: str = ""
    started_at: float = 0.0
    ready: bool = False
    restart_at: float | None = None
    failures: int = 0
    predecessors: list[dict[str, Any]] = field(default_factory=list)
    status_buffer: bytes = b""
    running_file: IO[bytes] | None = None  # shared with the child: the task it is running


class Supervisor:
    def __init__(self, config: WorkerConfig, *, child_env: dict[str, str] | None = None) -> None:
        self.config = config
        self.slots = [Slot(i) for i in range(config.concurrency)]
        self.child_env = child_env
        self.signals: list[int] = []
        self.stop_deadline: float | None = None
        self.forwarded = 0
        self.ever_ready = False
        self.exit_code = EXIT_OK
        self.fatal_reason = ""
        self.last_tick = time.monotonic()  # the loop's last turn (liveness)
        self.health: HealthServer | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- signals (record only) ---------------------------------------------------

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _handle_chld(self, signum: int, frame: FrameType | None) -> None:
        pass  # the wake-up fd already woke the loop

    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._handle_signal)
        signal.signal(signal.SIGINT, self._handle_signal)
        signal.signal(signal.SIGCHLD, self._handle_chld)

    # -- children ------------------------------------------------------------------

    def _settings(self, worker_id: str, predecessors: list[dict[str, Any]]) -> dict[str, Any]:
        """What a child reads on its stdin."""
        settings = dataclasses.asdict(self.config)
        settings["operator_modules"] = list(self.config.operator_modules)
        settings["worker_id"] = worker_id
        settings["predecessors"] = predecessors
        return settings

    def _spawn(self, slot: Slot, *, serve_after_s: float = 0.0) -> None:
        slot.worker_id = f"{self.config.hostname}/{slot.index}/{uuid.uuid4().hex[:12]}"
        settings = self._settings(slot.worker_id, slot.predecessors)
        settings["serve_after_s"] = serve_after_s
        if slot.running_file is None:
            slot.running_file = tempfile.TemporaryFile()  # noqa: SIM115 (lives with the slot; unlinked)
        size = note_bytes(self.config.threads_per_process)
        os.ftruncate(slot.running_file.fileno(), size)
        os.pwrite(slot.running_file.fileno(), bytes(size), 0)
        settings["running_task_fd"] = slot.running_file.fileno()
        process: subprocess.Popen[bytes] | ForkedChild
        if CAN_FORK and threading.active_count() == 1:
            # Forked: no thread of the supervisor's can hold a lock the child then needs.
            # With the metrics server's thread running, a fresh interpreter instead.
            process = _fork_child(settings, self.child_env)
        else:
            process = subprocess.Popen(
                [sys.executable, "-m", "websurf.worker.daemon.child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self.child_env,
                pass_fds=(slot.running_file.fileno(),),
            )
            assert process.stdin is not None
            try:
                process.stdin.write(json.dumps(settings).encode())
                process.stdin.close()
            except BrokenPipeError:
                pass
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        slot.process, slot.started_at, slot.ready, slot.restart_at = (
            process,
            time.monotonic(),
            False,
            None,
        )
        slot.status_buffer = b""
        log.info("child_started", slot=slot.index, pid=process.pid, child_worker_id=slot.worker_id)

    def _start(self, slot: Slot, *, serve_after_s: float = 0.0) -> None:
        """Spawn the slot's process; if that fails (out of file descriptors or memory), retry.

        The supervisor must outlive a failed fork: it logs, and tries again with the slot's
        restart backoff, keeping the slot's predecessors for the process that does start.
        """
        try:
            self._spawn(slot, serve_after_s=serve_after_s)
        except OSError as exc:
            slot.process = None
            slot.failures += 1
            delay = restart_delay_s(slot.failures)
            slot.restart_at = time.monotonic() + delay
            log.error(
                "child_spawn_failed",
                slot=slot.index,
                error=exc.strerror or repr(exc),
                retry_in_s=round(delay, 2),
            )

    def _read_status(self, slot: Slot) -> None:
        process = slot.process
        if process is None or process.stdout is None or process.stdout.closed:
            return
        try:
            chunk = os.read(process.stdout.fileno(), 4096)
        except BlockingIOError:
            return
        slot.status_buffer += chunk
        while b"\n" in slot.status_buffer:
            line, slot.status_buffer = slot.status_buffer.split(b"\n", 1)
            text = line.decode(errors="replace").strip()
            if text == "recovered":  # its predecessors' tasks are taken back
                slot.predecessors = []
            elif text == "ready":
                slot.ready = True
                slot.predecessors = []
                self.ever_ready = True
            elif text.startswith("error "):
                self.fatal_reason = text[len("error ") :]
        if not chunk:
            process.stdout.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            slot = next((s for s in self.slots if s.process and s.process.pid == pid), None)
            if slot is None:
                continue  # an orphan reparented to us (PID 1): reaped, nothing else to do
            self._child_exited(slot, code)

    def _child_exited(self, slot: Slot, code: int) -> None:
        assert slot.process is not None
        self._read_status(slot)
        slot.process.returncode = code
        if slot.process.stdout is not None and not slot.process.stdout.closed:
            slot.process.stdout.close()
        served_s = time.monotonic() - slot.started_at
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                how = f"killed by {signal.Signals(-code).name}"
        running: list[tuple[str, int]] = []
        if slot.running_file is not None:
            size = note_bytes(self.config.threads_per_process)
            running = parse_running_tasks(os.pread(slot.running_file.fileno(), size, 0))
        dead_id = slot.worker_id
        pid = slot.process.pid
        served = slot.ready
        slot.process = None
        if self.health is not None:
            self.health.child_exited(pid)
        if self.stop_deadline is not None:
            log.info("child_exited", slot=slot.index, how=how, child_worker_id=dead_id)
            # A child the stop's signal killed while it was still booting never claimed:
            # it holds nothing, and the stop did not have to kill it.
            died_holding = code < 0 and (served or bool(running))
            if (died_holding or code == EXIT_LOOP_STALLED) and dead_id:
                # It could not stop by itself: its tasks are still processing.
                dead = {"worker_id": dead_id, "how": how, "running": running}
                slot.predecessors = [*slot.predecessors, dead]
                if self.exit_code == EXIT_OK:
                    self.exit_code = EXIT_CHILD_KILLED
            return
        if code == EXIT_BOOT_CONFIG or (code == EXIT_BOOT_DATABASE and not self.ever_ready):
            reason = self.fatal_reason or f"worker process exited with {how} while booting"
            log.error("child_cannot_boot", slot=slot.index, reason=reason, action="stopping")
            self.exit_code = (
                EXIT_DATABASE_UNAVAILABLE if code == EXIT_BOOT_DATABASE else EXIT_BOOT_FAILURE
            )
            self.fatal_reason = reason
            self._begin_stop()
            return
        slot.failures, delay = restart_backoff(
            slot.failures,
            served_s=served_s,
            died_in_handler=bool(running),
            recycled=code in (EXIT_RECYCLE, EXIT_LOOP_STALLED),
        )
        if dead_id:
            dead = {"worker_id": dead_id, "how": how, "running": running}
            slot.predecessors = [*slot.predecessors, dead]
        log.warning(
            "child_exited",
            slot=slot.index,
            how=how,
            child_worker_id=dead_id,
            served_s=round(served_s, 1),
            restart_in_s=round(delay, 2),
            running_task_ids=[task_id for task_id, _ in running],
        )
        if delay > 0 and served:
            # Its tasks go back uncharged now; the replacement waits before it serves.
            self._start(slot, serve_after_s=delay)
        else:
            slot.restart_at = time.monotonic() + delay

    def _alive(self) -> list[Slot]:
        return [s for s in self.slots if s.process is not None]

    def _send(self, signum: int) -> None:
        for slot in self._alive():
            assert slot.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.process.pid, signum)

    def _begin_stop(self) -> None:
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + self.config.shutdown_timeout_s + KILL_MARGIN_S
            for slot in self.slots:
                slot.restart_at = None
        self.forwarded += 1
        self._send(signal.SIGTERM)

    # -- the loop --------------------------------------------------------------------

    def run(self) -> int:
        self.install_signal_handlers()
        log.info("supervisor_started", concurrency=self.config.concurrency, pid=os.getpid())
        if self.config.metrics_port is not None and not self._start_health():
            log.error("supervisor_cannot_start", reason=self.fatal_reason)
            return self.exit_code
        for slot in self.slots:
            self._start(slot)
        while True:
            self.last_tick = time.monotonic()
            while self.signals:
                signum = self.signals.pop(0)
                log.info(
                    "stop_requested",
                    signal=signal.Signals(signum).name,
                    shutdown_timeout_s=self.config.shutdown_timeout_s,
                    hurry=self.forwarded > 0,
                )
                self._begin_stop()
            self._reap()
            alive = self._alive()
            if self.stop_deadline is not None:
                if not alive:
                    break
                if time.monotonic() >= self.stop_deadline:
                    log.error("children_killed", reason="still running at the shutdown deadline")
                    self._send(signal.SIGKILL)
                    self.stop_deadline = time.monotonic() + KILL_MARGIN_S
            now = time.monotonic()
            for slot in self.slots:
                if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
                    self._start(slot)
            self._sleep()
        self._recover_leftovers()
        if self.health is not None:
            self.health.stop()
        log.info("supervisor_stopped", exit_code=self.exit_code)
        return self.exit_code

    def _recover_leftovers(self) -> None:
        """Hand back the tasks of the children that did not stop by themselves (and of
        any dead child whose replacement never got to it), in one last child process."""
        dead = [d for slot in self.slots for d in slot.predecessors]
        if not dead:
            return
        worker_id = f"{self.config.hostname}/stop/{uuid.uuid4().hex[:12]}"
        settings = self._settings(worker_id, dead)
        settings["recover_only"] = True
        dead_ids = [d["worker_id"] for d in dead]
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "websurf.worker.daemon.child"],
                stdin=subprocess.PIPE,
                env=self.child_env,
            )
            process.communicate(json.dumps(settings).encode(), timeout=RECOVERY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            log.error("stop_recovery_failed", dead_worker_ids=dead_ids, reason="timed out")
            return
        except OSError as exc:
            log.error("stop_recovery_failed", dead_worker_ids=dead_ids, reason=str(exc))
            return
        if process.returncode != 0:
            log.error(
                "stop_recovery_failed",
                dead_worker_ids=dead_ids,
                reason=f"exit code {process.returncode}",
            )

    def _start_health(self) -> bool:
        """Serve /metrics, /healthz, /readyz; children write metrics where it reads them."""
        assert self.config.metrics_port is not None
        self.health = HealthServer(
            self.config.metrics_port,
            host=self.config.metrics_host,
            metrics_dir=self.config.metrics_dir,
            alive=lambda: time.monotonic() - self.last_tick < LIVENESS_WINDOW_S,
            stopping=lambda: self.stop_deadline is not None,
            processes=lambda: (
                sum(1 for s in self.slots if s.ready and s.process is not None),
                self.config.concurrency,
            ),
            ready_window_s=max(
                READY_WINDOW_MIN_S, READY_HEARTBEATS * self.config.heartbeat_interval_s
            ),
        )
        try:
            env = self.health.start()
        except OSError as exc:
            self.health = None
            self.exit_code = EXIT_BOOT_FAILURE
            self.fatal_reason = (
                f"cannot serve metrics on {self.config.metrics_host}:{self.config.metrics_port}:"
                f" {exc.strerror or exc}"
            )
            return False
        self.child_env = {**(self.child_env if self.child_env is not None else os.environ), **env}
        return True

    def _sleep(self) -> None:
        now = time.monotonic()
        timeout = 1.0
        for slot in self.slots:
            if slot.restart_at is not None:
                timeout = min(timeout, max(0.0, slot.restart_at - now))
        if self.stop_deadline is not None:
            timeout = min(timeout, max(0.0, self.stop_deadline - now))
        fds = [self._wake_r]
        readers = {}
        for slot in self._alive():
            assert slot.process is not None
            if slot.process.stdout is not None and not slot.process.stdout.closed:
                fds.append(slot.process.stdout.fileno())
                readers[slot.process.stdout.fileno()] = slot
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        for fd in ready:
            if fd == self._wake_r:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif fd in readers:
                self._read_status(readers[fd])
