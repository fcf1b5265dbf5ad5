"""``websurf worker`` as a real daemon in a subprocess: it serves, drains, recovers, refuses.

Tasks are inserted by plain SQL, as the web app does. The daemon's JSON logs go to a
file the tests read; every wait polls the database, the log or a marker file with a
deadline (``support.waiting.wait_for``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from support.daemon import Daemon, query
from support.rows import column_of_cells, robot_column

from websurf.sql.migrate import migrate, shipped_migrations
from websurf.worker.daemon.supervisor import EXIT_CHILD_KILLED

Start = Callable[..., Daemon]  # conftest's start_worker(database_url, *options)


def _insert_task(url: str, task_type: str, payload: dict[str, Any], **columns: Any) -> str:
    names = ", ".join(["task_type", "payload", *columns])
    marks = ", ".join(["%s"] * (2 + len(columns)))
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f"INSERT INTO websurfing_task_queue ({names}) VALUES ({marks}) RETURNING id",  # noqa: S608
            (task_type, json.dumps(payload), *columns.values()),
        ).fetchone()
    assert row is not None
    return str(row[0])


def _status(daemon: Any, task_id: str) -> tuple[str, int, str | None]:
    [row] = daemon.query(
        "SELECT status, attempts, error_message FROM websurfing_task_queue WHERE id = %s", task_id
    )
    return row[0], row[1], row[2]


def _completed(daemon: Any) -> int:
    [row] = daemon.query("SELECT count(*) FROM websurfing_task_queue WHERE status = 'completed'")
    return int(row[0])


def _processing(daemon: Any) -> int:
    [row] = daemon.query("SELECT count(*) FROM websurfing_task_queue WHERE status = 'processing'")
    return int(row[0])


def _started(marker: Path, attempt: int = 1) -> Callable[[], bool]:
    return lambda: marker.with_name(f"{marker.name}.{attempt}").exists()


# -- serving ------------------------------------------------------------------------------


def test_tasks_inserted_by_sql_get_done_and_audited(database_url: str, start_worker: Start) -> None:
    robots = robot_column(database_url, "noop", 30)
    cells = [r["cell_id"] for r in robots]
    daemon = start_worker(database_url, concurrency=2)
    daemon.wait_ready(2)
    # One INSERT per task, as the web app's edits do ...
    singles = [
        _insert_task(database_url, "noop", {**r, "cell_content": f"hi {i}"})
        for i, r in enumerate(robots[:10])
    ]
    # ... and one multi-row INSERT.
    bulk = daemon.query(
        "INSERT INTO websurfing_task_queue (task_type, payload)"
        " SELECT 'noop', p || jsonb_build_object('cell_content', 'hi ' || n)"
        " FROM unnest(%s::jsonb[]) WITH ORDINALITY AS t(p, n) RETURNING id",
        [Jsonb(r) for r in robots[10:]],
    )
    ids = singles + [str(r[0]) for r in bulk]

    daemon.wait_for(
        lambda: _completed(daemon) == len(ids),
        "every task to complete",
    )

    contents = dict(daemon.query("SELECT id::text, content FROM websurfing_cell"))
    assert [contents[c] for c in cells[:10]] == [f"hi {i}" for i in range(10)]
    assert [contents[c] for c in cells[10:]] == [f"hi {n}" for n in range(1, 21)]
    audit = daemon.query(
        "SELECT task_id::text, cell_id::text, operator_type, success"
        " FROM websurfing_robot_input_event"
    )
    assert sorted(audit) == sorted(
        (t, str(p), "noop", True)
        for t, p in daemon.query("SELECT id::text, payload->>'cell_id' FROM websurfing_task_queue")
    )  # exactly one success row per task, for its cell
    assert _processing(daemon) == 0
    # Every log line about a task names the task, its type, the attempt and the worker.
    done = daemon.events("task_completed")
    assert {e["task_id"] for e in done} == set(ids)
    assert all({"task_type", "attempt", "worker_id"} <= e.keys() for e in done)

    daemon.send(signal.SIGTERM)
    assert daemon.wait() == 0
    assert daemon.workers() == []  # each process deregistered itself


def test_many_tasks_across_processes_each_run_once(database_url: str, start_worker: Start) -> None:
    daemon = start_worker(database_url, concurrency=2)
    daemon.wait_ready(2)
    total = 3000
    daemon.query(
        "INSERT INTO websurfing_task_queue (task_type, payload)"
        " SELECT 'noop', jsonb_build_object('n', n) FROM generate_series(1, %s) AS n",
        total,
    )

    daemon.wait_for(
        lambda: _completed(daemon) == total,
        "every task to complete",
        60,
    )

    rows = daemon.query(
        "SELECT attempts, count(*), count(DISTINCT worker_id) FROM websurfing_task_queue"
        " GROUP BY attempts"
    )
    assert [r[:2] for r in rows] == [(1, total)]  # claimed once each: none ran twice
    assert rows[0][2] == 2  # both processes served
    daemon.send(signal.SIGTERM)
    assert daemon.wait() == 0
    # The processes share stderr: every line must still be one whole JSON record.
    assert daemon.error_lines() == []
    done = [e["task_id"] for e in daemon.events("task_completed")]
    assert len(done) == len(set(done)) == total


def test_a_delayed_task_runs_when_due_without_waiting_for_a_poll(
    database_url: str, start_worker: Start
) -> None:
    daemon = start_worker(database_url, "--poll-interval", "60")
    daemon.wait_ready(1)
    [(task_id, due)] = daemon.query(
        "INSERT INTO websurfing_task_queue (task_type, payload, scheduled_for)"
        " VALUES ('noop', '{}', now() + make_interval(secs => 1.5)) RETURNING id, scheduled_for"
    )

    daemon.wait_for(lambda: _status(daemon, task_id)[0] == "completed", "the delayed task", 15)

    [(started_at,)] = daemon.query(
        "SELECT started_at FROM websurfing_task_queue WHERE id = %s", task_id
    )
    assert started_at >= due
    assert (started_at - due).total_seconds() < 5  # woke for it, not after a 60 s poll


def test_a_task_queued_for_later_before_the_worker_listens_runs_when_due(
    database_url: str, start_worker: Start
) -> None:
    """Its notification went to no one (a worker registers before it LISTENs, and this one
    was not running at all): the worker times it from the queue when it starts serving."""
    [(task_id, due)] = query(
        database_url,
        "INSERT INTO websurfing_task_queue (task_type, payload, scheduled_for)"
        " VALUES ('noop', '{}', now() + make_interval(secs => 3)) RETURNING id, scheduled_for",
    )
    daemon = start_worker(database_url, "--poll-interval", "60")
    daemon.wait_ready(1)

    daemon.wait_for(lambda: _status(daemon, task_id)[0] == "completed", "the delayed task", 15)

    [(started_at,)] = daemon.query(
        "SELECT started_at FROM websurfing_task_queue WHERE id = %s", task_id
    )
    assert started_at >= due
    assert (started_at - due).total_seconds() < 2  # timed from the queue, not a 60 s poll


# -- stopping -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_stop_signal_mid_task_lets_it_finish(
    database_url: str, start_worker: Start, tmp_path: Path, how: str
) -> None:
    daemon = start_worker(database_url, "--shutdown-timeout", "15")
    daemon.wait_ready(1)
    marker = tmp_path / "started"
    task_id = _insert_task(
        database_url, "test_sleep", {"sleep_s": 1.0, "started_file": str(marker)}
    )
    daemon.wait_for(_started(marker), "the handler to start")

    stopped_at = time.monotonic()
    if how == "sigterm":
        daemon.send(signal.SIGTERM)
    else:  # a terminal's Ctrl-C reaches the whole process group
        os.killpg(daemon.pid, signal.SIGINT)
    code = daemon.wait(timeout=15)

    assert code == 0, daemon.log()[-3000:]
    assert time.monotonic() - stopped_at < 10
    assert _status(daemon, task_id) == ("completed", 1, None)
    assert _processing(daemon) == 0
    assert daemon.workers() == []
    assert [e["signal"] for e in daemon.events("stop_requested")] == [
        "SIGTERM" if how == "sigterm" else "SIGINT"
    ]


def test_task_running_past_the_shutdown_timeout_is_handed_back(
    database_url: str, start_worker: Start, tmp_path: Path
) -> None:
    daemon = start_worker(database_url, "--shutdown-timeout", "0.5")
    daemon.wait_ready(1)
    marker = tmp_path / "started"
    task_id = _insert_task(
        database_url, "test_sleep", {"sleep_s": 120, "started_file": str(marker)}
    )
    daemon.wait_for(_started(marker), "the handler to start")

    daemon.send(signal.SIGTERM)
    code = daemon.wait(timeout=10)

    assert code == 0, daemon.log()[-3000:]
    assert _status(daemon, task_id) == ("pending", 0, None)  # the attempt is not counted
    assert _processing(daemon) == 0
    assert [e["task_id"] for e in daemon.events("task_interrupted")] == [task_id]


def test_a_second_signal_hurries_the_shutdown(
    database_url: str, start_worker: Start, tmp_path: Path
) -> None:
    daemon = start_worker(database_url, "--shutdown-timeout", "120")
    daemon.wait_ready(1)
    marker = tmp_path / "started"
    task_id = _insert_task(
        database_url, "test_sleep", {"sleep_s": 120, "started_file": str(marker)}
    )
    daemon.wait_for(_started(marker), "the handler to start")

    daemon.send(signal.SIGTERM)
    daemon.wait_for(lambda: daemon.events("stop_requested"), "the first signal to be seen")
    assert daemon.alive()  # still draining: it would wait up to 120 s
    daemon.send(signal.SIGTERM)
    code = daemon.wait(timeout=10)

    assert code == 0, daemon.log()[-3000:]
    assert _status(daemon, task_id) == ("pending", 0, None)
    assert _processing(daemon) == 0
    assert [e.get("hurry") for e in daemon.events("stop_requested")] == [False, True]


def test_a_stop_with_a_handler_blocking_the_event_loop_hands_every_task_back_and_fails(
    database_url: str, start_worker: Start, tmp_path: Path
) -> None:
    """The blocked process cannot drain: it is killed, its tasks are handed back (only
    the blocking attempt is charged), and the exit code says a process was killed."""
    daemon = start_worker(database_url, "--shutdown-timeout", "1")
    daemon.wait_ready(1)
    gate, started = tmp_path / "gate", tmp_path / "blocking"
    waiting = [
        _insert_task(database_url, "test_async_gate", {"gate": str(gate)}) for _ in range(12)
    ]
    daemon.wait_for(lambda: _processing(daemon) == 12, "the waiting tasks to start")
    blocker = _insert_task(
        database_url, "test_loop_blocker", {"gate": str(gate), "started_file": str(started)}
    )
    daemon.wait_for(started.exists, "the handler to block the event loop")

    daemon.send(signal.SIGTERM)
    code = daemon.wait(timeout=30)

    assert code == EXIT_CHILD_KILLED, daemon.log()[-3000:]
    assert _processing(daemon) == 0
    assert {_status(daemon, t) for t in waiting} == {("pending", 0, None)}
    status, attempts, error = _status(daemon, blocker)
    assert (status, attempts) == ("pending", 1)
    assert error is not None and "died" in error
    assert daemon.workers() == []


def test_a_child_killed_while_stopping_has_its_tasks_handed_back_and_the_exit_says_so(
    database_url: str, start_worker: Start, tmp_path: Path
) -> None:
    """The supervisor's own last step: it never touches the database, a short-lived
    process it starts hands the dead child's tasks back."""
    daemon = start_worker(database_url, "--shutdown-timeout", "60")
    [(_, child)] = daemon.wait_ready(1)
    gate = tmp_path / "gate"
    waiting = [_insert_task(database_url, "test_async_gate", {"gate": str(gate)}) for _ in range(4)]
    daemon.wait_for(lambda: _processing(daemon) == 4, "the tasks to start")
    daemon.send(signal.SIGTERM)
    daemon.wait_for(lambda: daemon.events("stop_requested"), "the stop to begin")

    os.kill(child, signal.SIGKILL)  # while it waits for its tasks to finish
    code = daemon.wait(timeout=30)

    assert code == EXIT_CHILD_KILLED, daemon.log()[-3000:]
    assert {_status(daemon, t) for t in waiting} == {("pending", 0, None)}
    assert daemon.workers() == []


@pytest.mark.slow
def test_a_handler_blocking_the_event_loop_gets_its_process_recycled(
    database_url: str, start_worker: Start, tmp_path: Path
) -> None:
    """Only the blocking attempt is charged; the others go back and run on."""
    daemon = start_worker(database_url)
    [(first_id, _)] = daemon.wait_ready(1)
    gate, started = tmp_path / "gate", tmp_path / "blocking"
    waiting = [_insert_task(database_url, "test_async_gate", {"gate": str(gate)}) for _ in range(5)]
    daemon.wait_for(lambda: _processing(daemon) == 5, "the waiting tasks to start")
    payload = {"gate": str(gate), "started_file": str(started), "block_attempts": 1}
    blocker = _insert_task(database_url, "test_loop_blocker", payload)

    daemon.wait_for(lambda: daemon.events("event_loop_stalled"), "the stall to be noticed")
    [stalled] = daemon.events("event_loop_stalled")
    assert stalled["task_ids"] == [blocker]
    daemon.wait_for(
        lambda: [w for w, _ in daemon.workers() if w != first_id], "a fresh process to register"
    )
    gate.touch()
    daemon.wait_for(lambda: _completed(daemon) == 6, "every task to complete")

    assert {_status(daemon, t) for t in waiting} == {("completed", 1, None)}
    status, attempts, error = _status(daemon, blocker)
    assert (status, attempts) == ("completed", 2)
    assert error is not None and "event loop was blocked" in error
    assert [e["how"] for e in daemon.events("child_exited")] == ["exit code 76"]
    assert daemon.alive()


# -- crashes --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_child_is_replaced_and_its_task_recovered(
    database_url: str, start_worker: Start, tmp_path: Path
) -> None:
    [cell] = column_of_cells(database_url, 1)
    daemon = start_worker(database_url, concurrency=2)
    before = dict(daemon.wait_ready(2))
    marker = tmp_path / "started"
    task_id = _insert_task(
        database_url,
        "test_sleep",
        {"sleep_s": 120, "sleep_attempts": 1, "started_file": str(marker), "cell_id": cell},
    )
    daemon.wait_for(_started(marker), "the handler to start")
    [(holder,)] = daemon.query("SELECT worker_id FROM websurfing_task_queue WHERE id = %s", task_id)
    victim = before[holder]

    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = dict(daemon.workers())
        return len(now) == 2 and holder not in now and victim not in now.values()

    daemon.wait_for(replaced, "a replacement process to register")
    # The dead process's task is recovered at once (not after the heartbeat timeout)
    # and runs again; its attempt was counted at claim, so this is attempt 2.
    daemon.wait_for(lambda: _status(daemon, task_id)[0] == "completed", "the task to rerun", 20)
    _, attempts, error = _status(daemon, task_id)
    assert attempts == 2
    assert error is not None and holder in error  # says which worker lost it
    audit = daemon.query(
        "SELECT success, error_message IS NOT NULL FROM websurfing_robot_input_event"
        " WHERE task_id = %s ORDER BY created_at",
        task_id,
    )
    assert audit == [(False, True), (True, False)]  # the lost attempt left a trace
    exits = daemon.events("child_exited")
    assert [e["child_worker_id"] for e in exits] == [holder]
    assert "SIGKILL" in exits[0]["how"] or "signal 9" in exits[0]["how"]
    # The daemon keeps serving.
    after = _insert_task(database_url, "noop", {})
    daemon.wait_for(lambda: _status(daemon, after)[0] == "completed", "a new task to run")
    assert daemon.alive()


def _slot_worker(daemon: Daemon, slot: int, dead: set[str]) -> tuple[str, int] | None:
    """(worker id, pid) of the live process registered for ``slot``, if any."""
    return next(
        ((w, p) for w, p in daemon.workers() if w.split("/")[-2] == str(slot) and w not in dead),
        None,
    )


@pytest.mark.slow
def test_a_killed_childs_tasks_go_back_uncharged_however_long_its_restart_waits(
    database_url: str, start_worker: Start, tmp_path: Path
) -> None:
    """Kills in a row grow the slot's restart backoff past --stale-after: the other
    process's reaper used to take the dead child's tasks first and charge them."""
    daemon = start_worker(
        database_url,
        *("--tasks-per-process", "3", "--heartbeat-interval", "1", "--stale-after", "3"),
        *("--reaper-interval", "0.5"),
        concurrency=2,
    )
    daemon.wait_ready(2)
    dead: set[str] = set()

    def slot_0_process() -> tuple[str, int] | None:
        return _slot_worker(daemon, 0, dead)

    for _ in range(3):  # quick deaths in a row: the backoff grows to 4 s
        victim, pid = daemon.wait_for(slot_0_process, "slot 0 to have a new process")
        os.kill(pid, signal.SIGKILL)
        dead.add(victim)
        daemon.wait_for(
            lambda: len(daemon.events("child_exited")) == len(dead), "the supervisor to see it"
        )
    gate = tmp_path / "gate"
    ids = [_insert_task(database_url, "test_async_gate", {"gate": str(gate)}) for _ in range(9)]

    def slot_0_holds_tasks() -> tuple[str, int, list[str]] | None:
        current = slot_0_process()
        if current is None:
            return None
        held = daemon.query(
            "SELECT id FROM websurfing_task_queue WHERE worker_id = %s AND status = 'processing'",
            current[0],
        )
        return (*current, [str(r[0]) for r in held]) if len(held) == 3 else None

    holder, pid, held = daemon.wait_for(slot_0_holds_tasks, "slot 0's process to hold 3 tasks")
    os.kill(pid, signal.SIGKILL)
    daemon.wait_for(lambda: len(daemon.events("child_exited")) == 4, "the supervisor to see it")
    assert daemon.events("child_exited")[-1]["restart_in_s"] >= 4  # longer than --stale-after

    def still_held() -> int:
        [(count,)] = daemon.query(
            "SELECT count(*) FROM websurfing_task_queue"
            " WHERE worker_id = %s AND status = 'processing'",
            holder,
        )
        return int(count)

    daemon.wait_for(lambda: still_held() == 0, "the dead child's tasks to be taken back")
    # Handed back uncharged (and maybe claimed again since), not charged by the
    # stale-heartbeat path.
    assert {_status(daemon, t) for t in held} <= {("pending", 0, None), ("processing", 1, None)}
    gate.touch()
    daemon.wait_for(lambda: _completed(daemon) == len(ids), "every task to complete")
    assert {_status(daemon, t) for t in ids} == {("completed", 1, None)}


def test_children_stop_when_the_supervisor_is_killed(
    database_url: str, start_worker: Start, tmp_path: Path
) -> None:
    daemon = start_worker(database_url, "--shutdown-timeout", "15", concurrency=2)
    daemon.wait_ready(2)
    marker = tmp_path / "started"
    task_id = _insert_task(
        database_url, "test_sleep", {"sleep_s": 1.0, "started_file": str(marker)}
    )
    daemon.wait_for(_started(marker), "the handler to start")

    daemon.send(signal.SIGKILL)
    daemon.wait()

    # The orphaned children notice, drain as on SIGTERM, and deregister.
    daemon.wait_for(lambda: daemon.workers() == [], "the children to stop", 20)
    assert _status(daemon, task_id) == ("completed", 1, None)
    assert _processing(daemon) == 0


# -- refusing to start ------------------------------------------------------------------------


def test_unknown_operator_module_stops_at_once(database_url: str, start_worker: Start) -> None:
    started = time.monotonic()
    daemon = start_worker(database_url, "--operators", "no.such.module")

    code = daemon.wait(timeout=15)

    assert code not in (0, None)
    assert time.monotonic() - started < 10
    [line] = daemon.error_lines()
    assert line.startswith("error: ") and "'no.such.module'" in line
    assert daemon.events("child_started") == []  # refused before any process started
    assert daemon.workers() == []


def test_schema_behind_stops_with_a_hint_and_no_crash_loop(
    empty_database_url: str, start_worker: Start
) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        migrate(conn, shipped=shipped_migrations()[:3])
    daemon = start_worker(empty_database_url, concurrency=2)

    code = daemon.wait(timeout=20)

    assert code not in (0, None)
    [line] = daemon.error_lines()
    assert line.startswith("error: ") and "`websurf migrate`" in line
    assert len(daemon.events("child_started")) <= 2  # each process started once at most


def test_unreachable_database_gives_up_with_one_line_and_no_password(
    start_worker: Start,
) -> None:
    url = "postgresql://postgres:hunter2@127.0.0.1:1/x"
    daemon = start_worker(url, "--boot-timeout", "1")

    code = daemon.wait(timeout=20)

    assert code not in (0, None)
    [line] = daemon.error_lines()
    assert line.startswith("error: ") and "127.0.0.1:1" in line
    assert "hunter2" not in daemon.log()
    assert len(daemon.events("child_started")) == 1  # not restarted in a loop


# -- PID 1 --------------------------------------------------------------------------------------


def _can_unshare_pid() -> bool:
    tool = shutil.which("unshare")
    if tool is None or os.geteuid() != 0:
        return False
    done = subprocess.run(
        [tool, "--pid", "--fork", "true"], capture_output=True, timeout=10, check=False
    )
    return done.returncode == 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children") as f:
            found.extend(int(p) for p in f.read().split())
    return found


@pytest.mark.skipif(not _can_unshare_pid(), reason="needs root and unshare --pid")
def test_works_as_pid_1(database_url: str, start_worker: Start, tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    assert unshare is not None
    daemon = start_worker(database_url, concurrency=2, prefix=(unshare, "--pid", "--fork"))
    daemon.wait_ready(2)
    assert {pid for _, pid in daemon.workers()} <= {2, 3, 4, 5}  # children of PID 1
    task_id = _insert_task(database_url, "noop", {})
    daemon.wait_for(lambda: _status(daemon, task_id)[0] == "completed", "a task to run")

    [init] = _children(daemon.pid)  # the daemon, PID 1 inside its namespace
    os.kill(init, signal.SIGTERM)

    assert daemon.wait(timeout=15) == 0
    assert daemon.workers() == []


def test_a_stop_signal_while_waiting_for_the_database_stops_at_once(
    start_worker: Start,
) -> None:
    daemon = start_worker("postgresql://postgres@127.0.0.1:1/x", "--boot-timeout", "6")
    daemon.wait_for(lambda: daemon.events("database_retry"), "the first connection attempt")

    stopped_at = time.monotonic()
    daemon.send(signal.SIGTERM)
    daemon.wait(timeout=15)

    assert time.monotonic() - stopped_at < 3
