"""The supervisor's HTTP endpoint: Prometheus metrics, liveness and readiness.

Design note
-----------
* ``/metrics``: the children's samples (multiprocess files, see
  ``websurf.worker.metrics``) plus what only the supervisor knows: how many worker
  processes are up.
* ``/healthz`` (liveness): the supervisor's loop went round recently. It stays true
  while the daemon drains at shutdown, so a probe never kills a draining worker.
* ``/readyz`` (readiness): at least one live child reached the database with the
  schema at head within the last ``ready_window_s`` (it boots only with the schema at
  head, then refreshes this on every heartbeat), and the daemon is not stopping. The
  supervisor holds no database connection: it reads what the children wrote.
* A small threaded ``http.server`` in a daemon thread; the supervisor's loop and its
  signal handling are untouched by it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import structlog

from websurf.worker.metrics import DATABASE_OK_METRIC, MULTIPROC_ENV

LIVENESS_WINDOW_S = 10.0  # the supervisor's loop wakes at least once a second
READY_WINDOW_MIN_S = 15.0
READY_HEARTBEATS = 3  # readiness lasts this many heartbeat intervals after the last contact
METRICS_HOST = "0.0.0.0"
PATHS = ("/metrics", "/healthz", "/readyz")

T = TypeVar("T")
log = structlog.get_logger("websurf.health")


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
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> dict[str, str]:
        """Open the port; return the environment the children need to write metrics."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        if self._given_dir:
            os.makedirs(self._given_dir, exist_ok=True)
            for stale in glob.glob(os.path.join(self._given_dir, "*.db")):
                os.remove(stale)  # samples of an earlier run would be summed in
            self.metrics_dir = self._given_dir
        else:
            self.metrics_dir = tempfile.mkdtemp(prefix="websurf-metrics-")
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=self.metrics_dir)  # type: ignore[no-untyped-call]
        self.registry.register(_SupervisorCollector(self.processes))
        self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )
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
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.metrics_dir and not self._given_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    # -- checks ------------------------------------------------------------------

    def last_database_ok(self) -> float | None:
        """Newest time any live child reported the database reachable, schema at head."""
        from prometheus_client.multiprocess import MultiProcessCollector

        files = glob.glob(os.path.join(self.metrics_dir, "gauge_livemax_*.db"))
        newest: float | None = None
        merged = _with_retries(
            lambda: MultiProcessCollector.merge(files, accumulate=False)  # type: ignore[no-untyped-call]
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


def _handler(health: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "websurf"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                if path == "/metrics":
                    self._metrics()
                elif path == "/healthz":
                    ok = health.alive()
                    self._json(200 if ok else 503, {"alive": ok})
                elif path == "/readyz":
                    ok, body = health.readiness()
                    self._json(200 if ok else 503, body)
                else:
                    self._json(404, {"error": "not found", "paths": list(PATHS)})
            except Exception as exc:  # a probe must get an answer, never a reset
                log.warning("health_request_failed", path=path, error=repr(exc))
                self._json(500, {"error": type(exc).__name__})

        def _metrics(self) -> None:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            body = _with_retries(lambda: generate_latest(health.registry))
            self._send(200, CONTENT_TYPE_LATEST, body)

        def _json(self, code: int, body: dict[str, Any]) -> None:
            self._send(code, "application/json", json.dumps(body).encode())

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the log

    return Handler
