"""``websurf demo`` (what ``make run`` shows) runs the real worker and stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

DEMO_TIMEOUT_S = 120.0
WORKER_LINE = re.compile(r"worker ready \(pid (\d+)")


def _demo(database_url: str, *args: str) -> subprocess.Popen[str]:
    websurf = Path(sys.executable).with_name("websurf")
    env = {**os.environ, "WEBSURF_DATABASE_URL": database_url, "WEBSURF_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [str(websurf), "demo", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_demo_fills_robot_columns_and_prints_the_audit_trail(database_url: str) -> None:
    demo = _demo(database_url, "--tasks", "50")
    out, err = demo.communicate(timeout=DEMO_TIMEOUT_S)

    assert demo.returncode == 0, err[-2000:]
    assert "ROBOTS FILL THE CELLS" in out  # the uppercase robot
    assert "Robots that fill in spreadsheets" in out  # the web_title robot, on 127.0.0.1
    assert "worker exited with code 0" in out
    trail = out.split("audit trail (newest first):")[1]
    assert "person demo@websurf.invalid" in trail and "robot  uppercase" in trail
    assert "transformer session" in out and ": completed," in out
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM websurfing_task_queue WHERE status <> 'completed'"
        ).fetchone()
        workers = conn.execute("SELECT count(*) FROM websurf.worker").fetchone()
    assert left == (0,) and workers == (0,)


def test_ctrl_c_stops_the_demo_and_its_worker(database_url: str) -> None:
    demo = _demo(database_url, "--tasks", "0")
    assert demo.stdout is not None
    pid = None
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    for line in demo.stdout:  # read until the worker has started
        match = WORKER_LINE.search(line)
        if match:
            pid = int(match.group(1))
            break
        assert time.monotonic() < deadline
    assert pid is not None

    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=DEMO_TIMEOUT_S)

    assert demo.returncode == 130, err[-2000:]
    assert "worker exited with code 0" in out
    assert "interrupted; the worker was stopped" in err
    assert not _alive(pid)
