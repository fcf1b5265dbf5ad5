"""The Python samples of the docs run: the pages include them from docs/snippets/python/,
so what a reader copies is what these tests ran.

The operator, limit and schedule modules are loaded by a real ``websurf worker``
(``--operators``), never imported here: registering them in this process would add
operators to the registry every other test shares.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from support.daemon import Daemons, query
from support.waiting import wait_for

from websurf.worker.app import sheets

SNIPPETS = Path(__file__).resolve().parents[2] / "docs" / "snippets" / "python"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_snippet_{name}", SNIPPETS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pending(url: str, task_type: str) -> list[tuple[Any, ...]]:
    return query(
        url,
        "SELECT unique_key, payload FROM websurfing_task_queue"
        " WHERE task_type = %s AND status = 'pending' ORDER BY unique_key",
        task_type,
    )


def test_the_enqueue_sample_queues_its_tasks_in_one_transaction(
    database_url: str, make_cell: Callable[[], str]
) -> None:
    samples = _module("enqueue_samples")
    cell_id = make_cell()

    samples.enqueue_from_python(database_url, cell_id)

    [(_, title_payload)] = _pending(database_url, "web_title")
    assert title_payload == {"cell_id": cell_id, "url": "https://example.com"}
    assert len(_pending(database_url, "noop")) == 10_000


def test_the_unique_key_sample_keeps_one_pending_task_per_key_with_the_latest_payload(
    conn: psycopg.Connection[Any], database_url: str, make_cell: Callable[[], str]
) -> None:
    samples = _module("enqueue_samples")
    cell_id = make_cell()

    samples.enqueue_with_keys(conn, cell_id, "https://example.com/a")
    samples.enqueue_with_keys(conn, cell_id, "https://example.com/b")

    [(key, payload)] = _pending(database_url, "web_title")
    assert (key, payload["input"]) == (f"cell:{cell_id}", "https://example.com/b")
    noop = _pending(database_url, "noop")
    assert [k for k, _ in noop] == [f"n:{i}" for i in range(10)]
    assert [p["n"] for _, p in noop] == [90 + i for i in range(10)]  # the latest of each key


def test_the_operator_limit_and_schedule_samples_work_in_a_real_worker(
    conn: psycopg.Connection[Any], database_url: str, daemons: Daemons
) -> None:
    owner = sheets.ensure_user(conn, "docs@example.test")
    sheet = sheets.create_spreadsheet(conn, owner, "docs", columns=2, rows=2)
    source, robot = sheets.list_columns(conn, sheet.id)
    sheets.set_column_operator(
        conn, robot.id, "shout", source_column_id=source.id, allow_unknown_type=True
    )
    daemon = daemons.worker(
        database_url,
        concurrency=1,
        operators=["myrobots", "limited_robots", "scheduled_robots"],
        pythonpath=[SNIPPETS],
    )
    daemon.wait_ready(1)

    # myrobots.py: a robot column run by `shout` writes the upper-case text ...
    sheets.edit_cell(conn, sheet.id, source.id, 1, "hello docs", user_id=owner)
    wait_for(
        lambda: (
            (cell := sheets.get_cell(conn, sheet.id, robot.id, 1)) is not None
            and cell.content == "HELLO DOCS"
        ),
        "the shout robot to write its cell",
    )
    # ... fails at once, without retrying, when there is nothing to shout; and `lookup`
    # (async, reading through its pooled connection) completes.
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload)"
        " VALUES ('shout', '{}'), ('lookup', '{}')"
    )

    def both_finished() -> list[tuple[Any, ...]] | None:
        rows = query(
            database_url,
            "SELECT task_type, status, attempts, error_message FROM ("
            " SELECT * FROM websurfing_task_queue WHERE payload = '{}'"
            " AND status IN ('failed', 'completed')) AS t ORDER BY task_type",
        )
        return rows if len(rows) == 2 else None

    lookup, shout = wait_for(both_finished, "the lookup and shout tasks to finish")
    assert lookup[:2] == ("lookup", "completed")
    assert shout[:3] == ("shout", "failed", 1)
    assert "nothing to shout" in shout[3]

    # limited_robots.py: the limits in code are stored for every worker to obey ...
    limits = query(
        database_url,
        "SELECT task_type, limit_key, max_running, rate, period_s, burst, source"
        " FROM websurfing_task_limit WHERE task_type <> 'polite_api'"
        " ORDER BY task_type, limit_key",
    )
    assert limits == [
        ("search_api", "", None, 60, 60.0, 5, "code"),
        ("search_api", "free-tier", None, 10, 60.0, None, "code"),
        ("slow_llm", "", 5, None, None, None, "code"),
    ]
    # ... and a SlowDown pauses the operator's key on every worker, spending no attempt.
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload) VALUES ('polite_api', '{}')"
    )
    wait_for(
        lambda: query(
            database_url,
            "SELECT 1 FROM websurfing_task_limit WHERE task_type = 'polite_api'"
            " AND paused_until > now() + interval '20 seconds'",
        ),
        "SlowDown to pause polite_api",
    )
    [(status, attempts)] = query(
        database_url,
        "SELECT status, attempts FROM websurfing_task_queue WHERE task_type = 'polite_api'",
    )
    assert (status, attempts) == ("pending", 0)

    # scheduled_robots.py: both schedules are in the database, as declared.
    def stored_schedules() -> list[tuple[Any, ...]] | None:
        rows = query(
            database_url,
            "SELECT name, cron, extract(epoch FROM every), time_zone, payload, catch_up"
            " FROM websurf.schedule ORDER BY name",
        )
        return rows if len(rows) == 2 else None

    schedules = wait_for(stored_schedules, "the worker to store the code's schedules")
    assert schedules == [
        ("cleanup", None, 21600, "UTC", {}, "skip"),
        ("prices.refresh", "*/15 * * * *", None, "Europe/Paris", {"market": "EU"}, "once"),
    ]
    assert daemon.stop() == 0
    assert daemon.error_lines() == []
