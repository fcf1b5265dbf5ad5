"""``websurf demo`` (what ``make run`` shows) runs the real worker and stops it cleanly."""

from __future__ import annotations

import os
import re
import signal

import psycopg
from support.daemon import WEBSURF, Daemon, Daemons, clean_env

DEMO_TIMEOUT_S = 120.0
WORKER_LINE = re.compile(r"worker ready \(pid (\d+)")


def _demo(daemons: Daemons, database_url: str, *args: str) -> Daemon:
    env = clean_env(WEBSURF_DATABASE_URL=database_url, WEBSURF_LOG_FORMAT="json")
    return daemons.launch([WEBSURF, "demo", *args], url=database_url, env=env)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_demo_fills_robot_columns_and_prints_the_audit_trail(
    database_url: str, daemons: Daemons
) -> None:
    demo = _demo(daemons, database_url, "--tasks", "50")
    code = demo.wait(DEMO_TIMEOUT_S)
    out = demo.output()

    assert code == 0, demo.log()[-2000:]
    assert "ROBOTS FILL THE CELLS" in out  # the uppercase robot
    assert "Robots that fill in spreadsheets" in out  # the web_title robot, on 127.0.0.1
    assert "worker exited with code 0" in out
    trail = out.split("audit trail (newest first):")[1]
    assert "person demo@websurf.invalid" in trail and "robot  uppercase" in trail
    assert "transformer session" in out and ": completed," in out
    assert "websurf dashboard, then open http://127.0.0.1:8750/" in out
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM websurfing_task_queue WHERE status <> 'completed'"
        ).fetchone()
        workers = conn.execute("SELECT count(*) FROM websurf.worker").fetchone()
    assert left == (0,) and workers == (0,)


def test_ctrl_c_stops_the_demo_and_its_worker(database_url: str, daemons: Daemons) -> None:
    demo = _demo(daemons, database_url, "--tasks", "0")
    started = demo.wait_for(
        lambda: WORKER_LINE.search(demo.output()), "the worker to start", DEMO_TIMEOUT_S
    )
    pid = int(started.group(1))

    demo.send(signal.SIGINT)
    code = demo.wait(DEMO_TIMEOUT_S)

    assert code == 130, demo.log()[-2000:]
    assert "worker exited with code 0" in demo.output()
    assert "interrupted; the worker was stopped" in demo.log()
    assert not _alive(pid)
