"""The metrics port cannot take the daemon down.

What a user would notice: with many clients holding idle connections open on the metrics
port (under a 64-descriptor limit, as in the issue), ``/healthz`` still answers and a
killed worker process is still replaced; idle connections are closed after a while;
clients that hang up mid-answer leave no traceback in the log. And the supervisor
survives a spawn that fails for lack of file descriptors: it logs it and tries again.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import struct
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs
from support.daemon import Daemon, free_port, query
from support.waiting import wait_for

from websurf.worker.config import WorkerConfig
from websurf.worker.daemon import supervisor

Start = Callable[..., Daemon]  # conftest's start_worker(database_url, *options)
IDLE_CONNECTIONS = 150
FD_LIMIT = 64


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@contextlib.contextmanager
def idle_clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that send half a request and then nothing."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_idle_connections_do_not_starve_the_probes_or_the_supervisor(
    database_url: str, start_worker: Start
) -> None:
    port = free_port()
    daemon = start_worker(
        database_url,
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        concurrency=2,
        prefix=("prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--"),
    )
    before = dict(daemon.wait_ready(2))

    with idle_clients(port, IDLE_CONNECTIONS) as held:
        daemon.wait_for(lambda: get(port, "/healthz") == 200, "/healthz to answer")
        victim_id, victim = next(iter(before.items()))
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = dict(daemon.workers())
            return len(now) == 2 and victim_id not in now and victim not in now.values()

        daemon.wait_for(replaced, "a replacement process to register")
        assert get(port, "/healthz") == 200
        # an idle connection is not kept forever: the server closes it
        daemon.wait_for(lambda: closed_by_server(held[-1]), "the idle connection to be closed")

    # clients that hang up before reading the answer (RST on close)
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.close()
    assert get(port, "/metrics") == 200
    assert daemon.alive()
    assert daemon.error_lines() == []  # nothing but JSON log lines: no tracebacks
    assert not [e for e in daemon.events() if e.get("level") in ("error", "critical")]


@pytest.fixture
def fd_limit_restored() -> Iterator[None]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_supervisor_survives_a_spawn_without_file_descriptors(
    database_url: str, fd_limit_restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = WorkerConfig(database_url=database_url, concurrency=1).validate()
    sup = supervisor.Supervisor(config)
    slot = sup.slots[0]
    monkeypatch.setattr(supervisor, "log", structlog.get_logger("websurf.supervisor"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with capture_logs() as logs:
        try:
            in_use = len(os.listdir("/proc/self/fd")) - 1  # less listdir's own, closed now
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 1, hard))  # no pipe pair left
            sup._start(slot)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert slot.process is None
    assert slot.restart_at is not None and slot.failures == 1
    [failed] = [e for e in logs if e["event"] == "child_spawn_failed"]
    assert "Too many open files" in failed["error"] and failed["retry_in_s"] > 0

    sup._start(slot)  # what the loop does once the retry is due
    assert slot.process is not None
    process = slot.process

    def registered() -> list[tuple[Any, ...]]:
        assert process.poll() is None, "the child exited"
        return query(database_url, "SELECT id FROM websurf.worker")

    wait_for(registered, "the child to register")
    slot.process.send_signal(signal.SIGTERM)
    assert slot.process.wait(timeout=20) == 0
    if slot.process.stdout is not None:
        slot.process.stdout.close()
    if slot.running_file is not None:
        slot.running_file.close()
