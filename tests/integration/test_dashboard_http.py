"""``websurf dashboard`` over plain HTTP (Starlette's TestClient, a real PostgreSQL).

What a person using the dashboard would notice: the pages show the queue, failures
grouped by their normalised error, tasks found by filters; stored text shows as text;
every action asks first, needs the page's CSRF token, is refused when read-only, and is
logged with who did it; credentials are asked for when configured; the live stream's
listener hears a failure the workers do not announce.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from websurf.cli.dashboard import dashboard_command
from websurf.worker.core import queue
from websurf.worker.core.limits import Limit, set_limit
from websurf.worker.core.model import Outcome, Status
from websurf.worker.core.schedules import Spec, add_schedule
from websurf.worker.dashboard.app import DashboardConfig, create_app
from websurf.worker.dashboard.live import Broadcaster
from websurf.worker.dashboard.security import Access

HOSTILE = "<script>alert('owned')</script>"
LISTENER_DEADLINE_S = 15.0
Client = Callable[..., TestClient]


@pytest.fixture
def client(database_url: str) -> Iterator[Client]:
    """A dashboard app on the test database, started (pool, listener) for the test."""
    started: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        app = create_app(DashboardConfig(database_url, **options))
        test_client = TestClient(app)
        test_client.__enter__()
        started.append(test_client)
        return test_client

    yield make
    for test_client in started:
        test_client.__exit__(None, None, None)


def failed_task(
    conn: psycopg.Connection[Any], task_type: str, error: str, payload: Any = None
) -> str:
    row = conn.execute(
        "INSERT INTO websurfing_task_queue"
        " (task_type, payload, status, attempts, max_attempts, error_message, failed_at,"
        "  started_at)"
        " VALUES (%s, %s, 'failed', 1, 1, %s, now(), now() - interval '2 seconds')"
        " RETURNING id",
        (task_type, json.dumps(payload or {}), error),
    ).fetchone()
    assert row is not None
    return str(row[0])


def status_of(conn: psycopg.Connection[Any], task_id: str) -> str:
    row = conn.execute(
        "SELECT status FROM websurfing_task_queue WHERE id = %s", (task_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has no action form"
    return found.group(1)


def act(web: TestClient, page: str, action: str, target: str, confirmed: bool = True) -> Any:
    form = {"csrf_token": csrf(page), "target": target, "back": "/"}
    if confirmed:
        form["confirmed"] = "yes"
    return web.post(f"/actions/{action}", data=form)


def test_every_page_answers_and_stored_text_shows_as_text(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    task_id = failed_task(conn, "web_title", f"ValueError: {HOSTILE}", {"note": HOSTILE})
    web = client()

    groups = web.get("/failures")
    group = re.search(r'href="(/failures/web_title/[0-9a-f]{16})"', groups.text)
    assert group, groups.text
    pages = [
        "/",
        "/failures",
        group.group(1),
        "/tasks?status=failed",
        f"/tasks/{task_id}",
        "/schedules",
    ]
    for path in pages:
        answer = web.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert "<script>alert" not in answer.text, path
    task_page = web.get(f"/tasks/{task_id}").text
    assert "&lt;script&gt;alert(" in task_page  # the payload and the error, escaped
    assert "ValueError: &lt;script&gt;" in task_page


def test_unknown_task_and_group_are_404(client: Client) -> None:
    web = client()

    assert web.get(f"/tasks/{uuid.uuid4()}").status_code == 404
    assert web.get("/tasks/not-a-uuid").status_code == 404
    assert web.get("/failures/web_title/not-a-fingerprint").status_code == 404
    empty = web.get("/failures/web_title/0123456789abcdef")
    assert empty.status_code == 200 and "No task of this group" in empty.text


def test_failures_to_one_site_are_one_group_and_retried_together(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    for n in range(30):
        failed_task(
            conn,
            "web_title",
            f"TimeoutError: https://slow.example/page/{n}?q={uuid.uuid4()} took {n + 10} s",
        )
    other = failed_task(conn, "web_title", "ValueError: no <title> in the page")
    web = client()

    groups = web.get("/failures").text
    rows = re.findall(r'href="/failures/web_title/([0-9a-f]{16})"', groups)
    assert len(rows) == 2, groups
    assert "https://slow.example/…" in groups
    biggest = f"{rows[0]}:web_title"
    group_page = web.get(f"/failures/web_title/{rows[0]}").text
    assert re.search(r'class="failed-count">30<', group_page), group_page

    asked = act(web, group_page, "retry-group", biggest, confirmed=False)
    assert asked.status_code == 200 and "Retry every failed task" in asked.text
    assert conn.execute(
        "SELECT count(*) FROM websurfing_task_queue WHERE status = 'pending'"
    ).fetchone() == (0,)  # asking is not doing

    with capture_logs() as logs:
        done = act(web, asked.text, "retry-group", biggest)
    assert done.status_code == 200 and "30 tasks retried" in done.text
    assert conn.execute(
        "SELECT count(*) FROM websurfing_task_queue WHERE status = 'pending'"
    ).fetchone() == (30,)
    assert status_of(conn, other) == "failed"
    [record] = [r for r in logs if r["event"] == "dashboard_action"]
    assert (record["who"], record["action"], record["target"]) == (
        "anonymous",
        "retry-group",
        biggest,
    )


def test_task_actions_retry_cancel_and_run_now(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    failed = failed_task(conn, "web_title", "boom")
    later = conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, scheduled_for)"
        " VALUES ('web_title', '{}', now() + interval '1 day') RETURNING id"
    ).fetchone()
    assert later is not None
    pending = str(later[0])
    web = client()
    page = web.get(f"/tasks/{pending}").text
    assert 'data-action="run-task-now"' in page and 'data-action="cancel-task"' in page

    assert act(web, page, "run-task-now", pending).status_code == 200
    due = conn.execute(
        "SELECT scheduled_for <= now() FROM websurfing_task_queue WHERE id = %s", (pending,)
    ).fetchone()
    assert due == (True,)
    assert act(web, page, "cancel-task", pending).status_code == 200
    assert status_of(conn, pending) == "cancelled"
    refused = act(web, page, "cancel-task", pending)
    assert refused.status_code == 409 and "only a pending or running task can be" in refused.text
    assert act(web, page, "retry-task", failed).status_code == 200
    assert status_of(conn, failed) == "pending"


def running_task(
    conn: psycopg.Connection[Any],
    task_type: str,
    *,
    limit_key: str | None = None,
    fairness_key: str | None = None,
) -> str:
    """A task a registered worker is running."""
    conn.execute(
        "INSERT INTO websurf.worker (id, hostname, pid, task_types)"
        " VALUES ('dash-host/1/test', 'dash-host', 1, %s) ON CONFLICT DO NOTHING",
        ([task_type],),
    )
    row = conn.execute(
        "INSERT INTO websurfing_task_queue"
        " (task_type, payload, status, attempts, worker_id, started_at, limit_key, fairness_key)"
        " VALUES (%s, '{}', 'processing', 1, 'dash-host/1/test', now(), %s, %s) RETURNING id",
        (task_type, limit_key, fairness_key),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_running_task_is_cancelled_through_its_worker(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    running = running_task(conn, "web_title")
    web = client()
    page = web.get(f"/tasks/{running}").text
    assert 'data-action="cancel-task"' in page and "cancel requested" not in page

    asked = act(web, page, "cancel-task", running, confirmed=False)
    done = act(web, page, "cancel-task", running)
    after = web.get(f"/tasks/{running}").text

    assert "its worker stops it" in asked.text
    assert done.status_code == 200 and "its worker stops it" in done.text
    requested = conn.execute(
        "SELECT status, cancel_requested_at IS NOT NULL FROM websurfing_task_queue WHERE id = %s",
        (running,),
    ).fetchone()
    assert requested == ("processing", True)  # the worker records it cancelled
    assert "cancel requested" in after and 'data-action="cancel-task"' not in after


def test_an_action_without_the_csrf_token_or_from_another_site_is_refused(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    task_id = failed_task(conn, "web_title", "boom")
    web = client()
    page = web.get(f"/tasks/{task_id}").text

    forged = web.post(
        "/actions/retry-task", data={"target": task_id, "confirmed": "yes", "csrf_token": "x"}
    )
    cross_site = web.post(
        "/actions/retry-task",
        data={"target": task_id, "confirmed": "yes", "csrf_token": csrf(page)},
        headers={"Origin": "https://evil.example"},
    )
    fresh = client()  # a browser that never loaded a page has no CSRF cookie
    no_cookie = fresh.post(
        "/actions/retry-task",
        data={"target": task_id, "confirmed": "yes", "csrf_token": csrf(page)},
    )

    assert [forged.status_code, cross_site.status_code, no_cookie.status_code] == [403] * 3
    assert status_of(conn, task_id) == "failed"


def test_read_only_shows_no_buttons_and_refuses_actions(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    task_id = failed_task(conn, "web_title", "boom")
    normal = client().get(f"/tasks/{task_id}").text
    web = client(read_only=True)

    page = web.get(f"/tasks/{task_id}").text
    answer = web.post(
        "/actions/retry-task",
        data={"target": task_id, "confirmed": "yes", "csrf_token": csrf(normal)},
    )

    assert "data-action" not in page and "read-only" in page
    assert answer.status_code == 403
    assert status_of(conn, task_id) == "failed"


def test_credentials_are_asked_for_and_name_who_acted(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    task_id = failed_task(conn, "web_title", "boom")
    web = client(access=Access(token="s3cret-token"))

    assert web.get("/").status_code == 401
    assert "Basic" in web.get("/").headers["www-authenticate"]
    assert web.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    basic = "Basic " + base64.b64encode(b"ada:s3cret-token").decode()
    page = web.get(f"/tasks/{task_id}", headers={"Authorization": basic}).text
    with capture_logs() as logs:
        act_headers = {"Authorization": basic}
        form = {"csrf_token": csrf(page), "target": task_id, "confirmed": "yes"}
        assert web.post("/actions/retry-task", data=form, headers=act_headers).status_code == 200
    assert [r["who"] for r in logs if r["event"] == "dashboard_action"] == ["ada"]
    assert not any("s3cret-token" in repr(r) for r in logs)


def test_a_reverse_proxy_names_who_acted(conn: psycopg.Connection[Any], client: Client) -> None:
    task_id = failed_task(conn, "web_title", "boom")
    web = client(access=Access(user_header="X-Forwarded-User"))
    proxied = {"X-Forwarded-User": "grace@example.com"}
    page = web.get(f"/tasks/{task_id}", headers=proxied).text

    with capture_logs() as logs:
        form = {"csrf_token": csrf(page), "target": task_id, "confirmed": "yes"}
        web.post("/actions/retry-task", data=form, headers=proxied)

    assert [r["who"] for r in logs if r["event"] == "dashboard_action"] == ["grace@example.com"]
    assert "grace@example.com" in page


def test_tasks_are_found_by_type_spreadsheet_and_error_text(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    sheet = str(uuid.uuid4())
    wanted = failed_task(conn, "web_title", "SSLError: bad certificate", {"spreadsheet_id": sheet})
    failed_task(conn, "web_title", "TimeoutError", {"spreadsheet_id": str(uuid.uuid4())})
    failed_task(conn, "uppercase", "SSLError: bad certificate", {"spreadsheet_id": sheet})
    web = client()

    by_all = web.get(
        "/tasks",
        params={
            "status": "failed",
            "task_type": "web_title",
            "spreadsheet_id": sheet,
            "error": "sslerror",
        },
    ).text
    by_error = web.get("/tasks", params={"status": "failed", "error": "bad cert"}).text
    bad = web.get("/tasks", params={"status": "sleeping"})

    assert re.findall(r'href="/tasks/([0-9a-f-]{36})"', by_all) == [wanted]
    assert len(re.findall(r'href="/tasks/([0-9a-f-]{36})"', by_error)) == 2
    assert bad.status_code == 400 and "unknown status" in bad.text


def test_tasks_are_found_by_tenant_and_show_their_keys(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, fairness_key, limit_key)"
        " SELECT 'web_title', '{}', 'tenant-' || (n % 3), 'host-' || n"
        " FROM generate_series(1, 9) AS n"
    )
    web = client()

    page = web.get("/tasks", params={"status": "pending", "fairness_key": "tenant-1"}).text
    found = re.findall(r'href="/tasks/([0-9a-f-]{36})"', page)
    first = web.get(f"/tasks/{found[0]}").text

    assert len(found) == 3 and 'value="tenant-1"' in page
    assert ">tenant-1<" in first and re.search(r">host-[147]<", first), first


def test_the_tenants_page_shows_backlogs_limits_and_pauses(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, fairness_key, limit_key)"
        " SELECT 'web_fetch', '{}', CASE WHEN n <= 5 THEN 'big-tenant' ELSE 'small-tenant' END,"
        "        'busy.example'"
        " FROM generate_series(1, 7) AS n"
    )
    running_task(conn, "web_fetch", limit_key="busy.example", fairness_key="big-tenant")
    set_limit(conn, "web_fetch", Limit(max_running=1, key="busy.example"))
    set_limit(conn, "web_title", Limit(rate=10, per_s=60.0))
    conn.execute(
        "UPDATE websurfing_task_limit SET paused_until = now() + interval '10 minutes',"
        " pause_reason = 'HTTP 429 <b>slow</b>' WHERE task_type = 'web_title'"
    )
    web = client()

    home = web.get("/").text
    page = web.get("/tenants").text

    assert '<a href="/tenants"' in home
    keys = re.findall(r'href="/tasks\?status=pending&amp;fairness_key=([^"]+)">', page)
    assert keys == ["big-tenant", "small-tenant"], page
    assert re.search(r">big-tenant</a></td><td class=\"n\">5<", page), page
    assert "2 keys have pending tasks" in page
    busy = re.search(r"<tr[^>]*>\s*<td>web_fetch</td><td>busy.example</td>.*?</tr>", page, re.S)
    assert busy and "at its cap of 1 running" in busy.group(0), page
    assert re.search(r'class="n">1</td><td class="n">7</td>', busy.group(0)), busy.group(0)
    assert "paused until" in page and "HTTP 429 &lt;b&gt;slow&lt;/b&gt;" in page


def test_overview_shows_depth_workers_and_what_needs_a_person(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    conn.execute(
        "INSERT INTO websurf.worker (id, hostname, pid, task_types)"
        " VALUES ('host-a/1/x', 'host-a', 101, '{web_title}')"
    )
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, status, worker_id, started_at)"
        " VALUES ('web_title', '{}', 'processing', 'host-a/1/x', now() - interval '2 hours')"
    )
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, priority)"
        " SELECT 'uppercsae', '{}', 7 FROM generate_series(1, 3)"
    )
    conn.execute(
        "INSERT INTO websurfing_task_queue (task_type, payload, attempts, max_attempts)"
        " VALUES ('web_title', '{}', 4, 6)"
    )
    failed_task(conn, "web_title", "boom")
    web = client()

    page = web.get("/").text

    assert "3 pending" in page and "no live worker handles this type" in page
    assert "running for 2.0 h on host-a/1/x" in page
    assert '1 pending <a href="/failures">web_title</a> tasks already ran 3 times' in page
    assert "host-a" in page and "<svg" in page
    fragment = web.get("/", headers={"HX-Request": "true"}).text
    assert fragment.lstrip().startswith('<div id="live"') and "<html" not in fragment


def test_the_listener_hears_a_failure_nobody_announces(database_url: str) -> None:
    """Workers do not NOTIFY a failure: the listener's probe must see it."""

    async def scenario() -> int:
        broadcaster = Broadcaster(database_url, probe_s=0.2)
        listening = asyncio.create_task(broadcaster.run())
        queue = broadcaster.subscribe()
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                # The listener may connect after this insert; insert until it reports.
                deadline = asyncio.get_running_loop().time() + LISTENER_DEADLINE_S
                while asyncio.get_running_loop().time() < deadline:
                    await conn.execute(
                        "INSERT INTO websurfing_task_queue"
                        " (task_type, payload, status, error_message, updated_at)"
                        " VALUES ('web_title', '{}', 'failed', 'boom', clock_timestamp())"
                    )
                    try:
                        return await asyncio.wait_for(queue.get(), 1.0)
                    except TimeoutError:
                        continue
            raise AssertionError("the listener never reported the failure")
        finally:
            listening.cancel()

    assert asyncio.run(scenario()) >= 1


def test_a_public_address_without_credentials_is_refused(database_url: str) -> None:
    answer = CliRunner().invoke(
        dashboard_command, ["--database-url", database_url, "--host", "0.0.0.0"]
    )
    half = CliRunner().invoke(
        dashboard_command,
        ["--database-url", database_url, "--host", "0.0.0.0"],
        env={"WEBSURF_DASHBOARD_USER": "ada"},
    )

    assert answer.exit_code == 2
    assert answer.output.strip().splitlines() == [
        "error: refusing to serve the dashboard on 0.0.0.0 without authentication:"
        " set WEBSURF_DASHBOARD_TOKEN (or WEBSURF_DASHBOARD_USER and"
        " WEBSURF_DASHBOARD_PASSWORD), or bind 127.0.0.1"
    ]
    assert half.exit_code == 2 and "set both" in half.output


def test_static_files_are_served_from_the_package(client: Client) -> None:
    web = client()

    script = web.get("/static/htmx.min.js")
    style = web.get("/static/dashboard.css")

    assert script.status_code == 200 and "htmx" in script.text
    assert style.status_code == 200 and "text/css" in style.headers["content-type"]
    assert web.get("/static/../app.py").status_code == 404


def test_an_unmigrated_database_is_named_before_serving(empty_database_url: str) -> None:
    answer = CliRunner().invoke(dashboard_command, ["--database-url", empty_database_url])

    assert answer.exit_code == 1
    assert "the database needs `websurf migrate` first" in answer.output


def test_pages_survive_a_database_restart(database_url: str, client: Client) -> None:
    """Connections the server dropped (a restart, a failover) are replaced, not shown as errors."""
    web = client()
    assert web.get("/").status_code == 200
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

    assert [web.get(path).status_code for path in ("/", "/failures", "/tasks")] == [200] * 3


def test_a_group_waiting_for_retries_is_cancelled_together(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    conn.execute(
        "INSERT INTO websurfing_task_queue"
        " (task_type, payload, attempts, error_message, scheduled_for)"
        " SELECT 'web_fetch', '{}', 1, 'HTTPError: 503 from https://busy.example/item?id=' || n,"
        "        now() + interval '5 minutes'"
        " FROM generate_series(1, 4) AS n"
    )
    web = client()
    groups = web.get("/failures").text
    [fingerprint] = re.findall(r'href="/failures/web_fetch/([0-9a-f]{16})"', groups)
    page = web.get(f"/failures/web_fetch/{fingerprint}").text
    assert 'data-action="cancel-group"' in page and 'data-action="retry-group"' not in page

    done = act(web, page, "cancel-group", f"{fingerprint}:web_fetch")

    assert done.status_code == 200 and "4 tasks cancelled" in done.text
    assert conn.execute(
        "SELECT count(*) FROM websurfing_task_queue WHERE status = 'cancelled'"
    ).fetchone() == (4,)


def test_schedules_are_paused_and_resumed(conn: psycopg.Connection[Any], client: Client) -> None:
    add_schedule(conn, Spec("nightly-titles", "web_title", cron="0 3 * * *"))
    web = client()
    page = web.get("/schedules").text
    assert "nightly-titles" in page and 'data-action="pause-schedule"' in page

    paused = act(web, page, "pause-schedule", "nightly-titles")
    shown = web.get("/schedules").text
    resumed = act(web, shown, "resume-schedule", "nightly-titles")
    unknown = act(web, shown, "pause-schedule", "no-such-schedule")

    assert paused.status_code == 200 and "paused" in paused.text
    assert ">paused<" in shown and 'data-action="resume-schedule"' in shown
    assert resumed.status_code == 200 and "resumed, next run" in resumed.text
    assert conn.execute(
        "SELECT paused FROM websurf.schedule WHERE name = 'nightly-titles'"
    ).fetchone() == (False,)
    assert unknown.status_code == 409 and "no schedule named" in unknown.text


def test_the_task_page_tells_its_story_and_why_it_waits(
    conn: psycopg.Connection[Any], client: Client
) -> None:
    task_id = queue.enqueue(conn, "noop", {"n": 1})
    [task] = queue.claim(conn, "host-a/7/worker", ["noop"], 1)
    later = datetime.now(UTC) + timedelta(minutes=5)
    queue.finish(
        conn,
        "host-a/7/worker",
        [Outcome(task, Status.PENDING, "noop", error=f"ValueError: {HOSTILE}", run_at=later)],
    )

    page = client().get(f"/tasks/{task_id}").text

    attempts = page[page.index('<table class="attempts">') : page.index("<h2>Audit rows</h2>")]
    assert "host-a/7/worker" in attempts and ">retried<" in attempts
    assert "ValueError: &lt;script&gt;" in attempts and "<script>alert" not in page
    assert 'data-reason="scheduled"' in page and "scheduled for later: due at" in page
