"""The supervisor's HTTP endpoint: Prometheus metrics, liveness and readiness.

Design note
-----------
* ``/metrics``: the children's samples (multiprocess files, see
  ``websurf.worker.daemon.metrics``) plus what only the supervisor knows: how many worker
  processes are up.
* ``/healthz`` (liveness): the supervisor's loop went round recently. It stays true
  while the daemon drains at shutdown, so a probe never kills a draining worker.
* ``/readyz`` (readiness): at least one live child reached the database with the
  schema at head within the last ``ready_window_s`` (it boots only with the schema at
  head, then refreshes this on every heartbeat), and the daemon is not stopping. The
  supervisor holds no database connection: it reads what the children wrote.
* One daemon thread with one selector serves every connection: it accepts, reads the
  request head, answers and closes (no keep-alive), so an idle client costs a file
  descriptor and a few bytes, never a thread, and a client that goes away mid-answer is
  just closed. Bounds, so that no client can starve the probes or the supervisor of
  file descriptors: a connection has ``REQUEST_TIMEOUT_S`` to send its request head and
  ``SEND_TIMEOUT_S`` to take the answer; at most ``connection_cap()`` are open at once
  (``MAX_CONNECTIONS``, and never more than a quarter of the process's file-descriptor
  limit: the supervisor needs the rest to start children), and a new connection past
  the cap closes the oldest one, so a probe always gets in. If accepting fails (out of
  file descriptors), the oldest connection is closed, or accepting pauses briefly.
  The supervisor's loop and its signal handling are untouched by it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import resource
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

import structlog

# Shared with the worker processes' side (metrics.py), which imports them from here: the
# supervisor imports neither psycopg nor the queue, and starts 80 ms sooner for it.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DATABASE_OK_METRIC = "websurf_worker_database_ok_timestamp_seconds"

LIVENESS_WINDOW_S = 10.0  # the supervisor's loop wakes at least once a second
READY_WINDOW_MIN_S = 15.0
READY_HEARTBEATS = 3  # readiness lasts this many heartbeat intervals after the last contact
METRICS_HOST = "0.0.0.0"
PATHS = ("/metrics", "/healthz", "/readyz")
REQUEST_TIMEOUT_S = 5.0  # from accept to the end of the request head
SEND_TIMEOUT_S = 5.0  # for the client to take the whole answer
MAX_CONNECTIONS = 64  # open at once; a new one past it closes the oldest
FD_SHARE = 4  # and at most 1/FD_SHARE of the process's file-descriptor limit
MAX_REQUEST_HEAD_BYTES = 8192
ACCEPT_PAUSE_S = 0.1  # after accept() failed with no connection left to close
SELECT_INTERVAL_S = 0.25  # how often deadlines and the stop flag are checked

SAMPLE_FILE_HEADER_BYTES = 8  # a metric file's "bytes used" word, written when it is created
T = TypeVar("T")
log = structlog.get_logger("websurf.health")


class _ChildSamples:
    """The children's samples, summed (prometheus_client's multiprocess merge).

    Only files that hold their header are merged: a child creating its file leaves it
    empty for a moment (on a busy machine, for milliseconds), and merging an empty file
    fails the whole scrape. Such a file holds no sample yet.
    """

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
            sample_files(self._directory, "*.db"), accumulate=True
        )
        return iter(merged)


def sample_files(directory: str, pattern: str) -> list[str]:
    """The children's metric files matching ``pattern`` that hold at least their header."""
    files = []
    for name in glob.glob(os.path.join(directory, pattern)):
        try:
            if os.path.getsize(name) >= SAMPLE_FILE_HEADER_BYTES:
                files.append(name)
        except OSError:
            continue  # removed meanwhile: a dead child's live gauges
    return files


class _SupervisorCollector:
    """Samples only the supervisor knows, computed at scrape time."""

    def __init__(self, processes: Callable[[], tuple[int, int]]) -> None:
        self._processes = processes

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        ready, configured = self._processes()
        yield GaugeMetricFamily(
            "websurf_worker_processes", "Worker processes serving (booted and alive).", ready
        )
        yield GaugeMetricFamily(
            "websurf_worker_processes_configured",
            "Worker processes asked for (--concurrency).",
            configured,
        )


class HealthServer:
    """Serves /metrics, /healthz and /readyz for one supervisor."""

    def __init__(
        self,
        port: int,
        *,
        alive: Callable[[], bool],
        stopping: Callable[[], bool],
        processes: Callable[[], tuple[int, int]],
        ready_window_s: float,
        host: str = METRICS_HOST,
        metrics_dir: str | None = None,
    ) -> None:
        self.port = port
        self.host = host
        self.alive = alive
        self.stopping = stopping
        self.processes = processes
        self.ready_window_s = ready_window_s
        self._given_dir = metrics_dir
        self.metrics_dir = ""
        self._server: _Listener | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> dict[str, str]:
        """Open the port; return the environment the children need to write metrics."""
        from prometheus_client import CollectorRegistry

        if self._given_dir:
            os.makedirs(self._given_dir, exist_ok=True)
            for stale in glob.glob(os.path.join(self._given_dir, "*.db")):
                os.remove(stale)  # samples of an earlier run would be summed in
            self.metrics_dir = self._given_dir
        else:
            self.metrics_dir = tempfile.mkdtemp(prefix="websurf-metrics-")
        self.registry = CollectorRegistry()
        self.registry.register(_ChildSamples(self.metrics_dir))
        self.registry.register(_SupervisorCollector(self.processes))
        self._server = _Listener(self.host, self.port, self.answer)
        self.port = self._server.port
        self._thread = threading.Thread(target=self._server.serve, name="health", daemon=True)
        self._thread.start()
        log.info("metrics_serving", host=self.host, port=self.port)
        return {MULTIPROC_ENV: self.metrics_dir}

    def child_exited(self, pid: int) -> None:
        """Drop a dead child's live gauges (its counters stay in the sums)."""
        from prometheus_client import multiprocess

        if self.metrics_dir:
            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            if self._thread is not None:
                self._thread.join()
            self._server = None
        if self.metrics_dir and not self._given_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        path = path.split("?", 1)[0]
        try:
            if path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                return (
                    200,
                    CONTENT_TYPE_LATEST,
                    _with_retries(lambda: generate_latest(self.registry)),
                )
            if path == "/healthz":
                ok = self.alive()
                return _json(200 if ok else 503, {"alive": ok})
            if path == "/readyz":
                ok, body = self.readiness()
                return _json(200 if ok else 503, body)
            return _json(404, {"error": "not found", "paths": list(PATHS)})
        except Exception as exc:  # a probe must get an answer, never a reset
            log.warning("health_request_failed", path=path, error=repr(exc))
            return _json(500, {"error": type(exc).__name__})

    # -- checks ------------------------------------------------------------------

    def last_database_ok(self) -> float | None:
        """Newest time any live child reported the database reachable, schema at head."""
        from prometheus_client.multiprocess import MultiProcessCollector

        newest: float | None = None
        merged = _with_retries(
            lambda: MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
                sample_files(self.metrics_dir, "gauge_livemax_*.db"), accumulate=False
            )
        )
        for metric in merged:
            if metric.name != DATABASE_OK_METRIC:
                continue
            for sample in metric.samples:
                if sample.value > 0 and (newest is None or sample.value > newest):
                    newest = sample.value
        return newest

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        ready_processes, configured = self.processes()
        last_ok = self.last_database_ok()
        age = None if last_ok is None else round(time.time() - last_ok, 3)
        stopping = self.stopping()
        ok = not stopping and age is not None and age <= self.ready_window_s
        return ok, {
            "ready": ok,
            "stopping": stopping,
            "worker_processes": ready_processes,
            "configured": configured,
            "database_ok_age_s": age,
        }


READ_TRIES = 3


def _with_retries(read: Callable[[], T]) -> T:
    """Read the children's metric files, again if one changed under us.

    A child creates and grows its files while we read them, and the supervisor
    removes a dead child's live-gauge files: a read can meet a file half-written or
    just gone. The next read sees a consistent state.
    """
    for attempt in range(1, READ_TRIES + 1):
        try:
            return read()
        except (OSError, ValueError, struct.error):
            if attempt == READ_TRIES:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _json(code: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return code, "application/json", json.dumps(body).encode()


def connection_cap() -> int:
    """How many connections may be open at once (see the design note)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft // FD_SHARE))


@dataclass
class _Connection:
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    answer: bytes | None = None  # what is left to send, once the request is read


class _Listener:
    """A minimal HTTP/1.x server on one selector: GET, one request per connection."""

    def __init__(self, host: str, port: int, answer: Callable[[str], tuple[int, str, bytes]]):
        self._sock = socket.create_server((host, port))
        self._sock.setblocking(False)
        self.port: int = self._sock.getsockname()[1]
        self.cap = connection_cap()
        self._answer = answer
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ)
        self._accepting = True
        self._resume_at = 0.0
        self._open: dict[socket.socket, _Connection] = {}  # oldest first
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def serve(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, events in self._selector.select(SELECT_INTERVAL_S):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._sock:
                        self._accept()
                    elif sock not in self._open:
                        continue  # closed earlier in this round (the cap evicted it)
                    else:
                        self._serve_one(sock, events)
                now = time.monotonic()
                for sock in [s for s, c in self._open.items() if c.deadline <= now]:
                    self._close(sock)
                if not self._accepting and now >= self._resume_at:
                    self._selector.register(self._sock, selectors.EVENT_READ)
                    self._accepting = True
        finally:
            for sock in list(self._open):
                self._close(sock)
            self._selector.close()
            self._sock.close()

    def _serve_one(self, sock: socket.socket, events: int) -> None:
        """One client's turn; whatever goes wrong with it closes it, never the server."""
        try:
            if events & selectors.EVENT_READ:
                self._receive(sock)
            elif events & selectors.EVENT_WRITE:
                self._send(sock)
        except Exception as exc:
            log.warning("health_connection_failed", error=f"{type(exc).__name__}: {exc}")
            if sock in self._open:
                self._close(sock)

    def _accept(self) -> None:
        while True:
            try:
                sock, _address = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors, or the client gave up
                if self._open:
                    self._close(next(iter(self._open)))
                else:
                    self._selector.unregister(self._sock)
                    self._accepting = False
                    self._resume_at = time.monotonic() + ACCEPT_PAUSE_S
                    log.warning("health_accept_failed", error=exc.strerror or repr(exc))
                return
            if len(self._open) >= self.cap:
                self._close(next(iter(self._open)))
            sock.setblocking(False)
            self._open[sock] = _Connection(time.monotonic() + REQUEST_TIMEOUT_S)
            self._selector.register(sock, selectors.EVENT_READ)

    def _receive(self, sock: socket.socket) -> None:
        conn = self._open[sock]
        try:
            chunk = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self._close(sock)
            return
        if not chunk:
            self._close(sock)
            return
        conn.received += chunk
        end = conn.received.find(b"\r\n\r\n")
        if end < 0:
            end = conn.received.find(b"\n\n")
        if end >= 0:
            status, content_type, body = self._respond(bytes(conn.received[:end]))
        elif len(conn.received) > MAX_REQUEST_HEAD_BYTES:
            status, content_type, body = _json(431, {"error": "request head too large"})
        else:
            return
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Server: websurf\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        conn.answer = head.encode("latin-1") + body
        conn.deadline = time.monotonic() + SEND_TIMEOUT_S
        self._selector.modify(sock, selectors.EVENT_WRITE)
        self._send(sock)

    def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        request = head.split(b"\n", 1)[0].decode("latin-1").split()
        if len(request) != 3 or not request[2].startswith("HTTP/1."):
            return _json(400, {"error": "bad request"})
        if request[0] != "GET":
            return _json(405, {"error": "only GET", "paths": list(PATHS)})
        return self._answer(request[1])

    def _send(self, sock: socket.socket) -> None:
        conn = self._open[sock]
        assert conn.answer is not None
        try:
            sent = sock.send(conn.answer)
        except BlockingIOError:
            return
        except OSError:  # the client went away: nothing to tell anyone
            self._close(sock)
            return
        conn.answer = conn.answer[sent:]
        if not conn.answer:
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        self._open.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()
