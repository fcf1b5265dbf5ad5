"""``websurf dashboard`` in a real browser: Debian's chromium, headless, driven by Playwright.

The main flow a person on call follows: a robot's task fails and the failure appears on
the open failures page by itself (live updates); they open its group, retry it, confirm,
and watch the task complete. And the tenants page shows a limit holding a tenant's tasks
back, and a running task cancelled from its page ends cancelled. The real ``websurf
dashboard`` and ``websurf worker`` run as subprocesses. Screenshots are kept as test
artefacts (WEBSURF_TEST_ARTIFACTS, else the test's temporary folder); the README's images
in docs/images are these screenshots.

Playwright never downloads a browser here: it drives /usr/bin/chromium (.ci/run installs
Debian's package); without it, or without Playwright, the test is skipped saying why.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.daemon import WEBSURF, Daemon, Daemons, clean_env, free_port, query

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE_DEADLINE_MS = 30_000  # for a change in the database to show on an open page
VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no {CHROMIUM} (Debian's chromium package) to drive"
)


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("WEBSURF_TEST_ARTIFACTS") or tmp_path) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def dashboard(daemons: Daemons, database_url: str) -> Iterator[tuple[str, Daemon]]:
    """The real ``websurf dashboard`` on a free loopback port: its address and process."""
    port = free_port()
    process = daemons.launch(
        [
            WEBSURF,
            "dashboard",
            "--database-url",
            database_url,
            "--port",
            str(port),
            "--log-format",
            "json",
        ],
        url=database_url,
        env=clean_env(),
    )
    address = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if not process.alive():
            raise AssertionError(f"the dashboard exited; {process.log_tail()}")
        try:
            with urllib.request.urlopen(address + "/static/dashboard.css", timeout=2):
                return True
        except OSError:
            return False

    process.wait_for(answers, "the dashboard to answer")
    yield address, process
    assert process.stop() == 0, process.log_tail()  # a clean stop on SIGTERM


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile each time
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_a_failure_appears_live_is_retried_from_its_group_and_completes(
    start_worker: Callable[..., Daemon],
    dashboard: tuple[str, Daemon],
    browser_page: Any,
    artefacts: Path,
    database_url: str,
) -> None:
    page = browser_page
    expect = sync_api.expect
    address, server = dashboard
    worker = start_worker(database_url)
    worker.wait_ready(1)
    worker.query(
        "INSERT INTO websurfing_task_queue (task_type, payload)"
        " SELECT 'test_sleep', jsonb_build_object('sleep_s', 0) FROM generate_series(1, 20)"
    )

    page.goto(address + "/failures")
    expect(page.locator("#live-state")).to_have_text("●", timeout=LIVE_DEADLINE_MS)
    expect(page.get_by_text("No failures.")).to_be_visible()
    worker.query(
        "INSERT INTO websurfing_task_queue (task_type, payload, max_attempts)"
        " SELECT 'test_flaky', jsonb_build_object('url', 'https://down.example/page/' || n), 1"
        " FROM generate_series(1, 3) AS n"
    )

    group = page.locator("a.group-link")  # appears without a reload: the live update
    expect(group).to_have_count(1, timeout=LIVE_DEADLINE_MS)
    expect(group).to_contain_text("could not reach https://down.example/…: connection refused")
    page.screenshot(path=artefacts / "failures.png", full_page=True)

    group.click()
    expect(page.locator(".failed-count")).to_have_text("3", timeout=LIVE_DEADLINE_MS)
    page.screenshot(path=artefacts / "failure-group.png", full_page=True)
    page.get_by_role("button", name="Retry all failed").click()
    expect(page.locator(".question")).to_contain_text("Retry every failed task")
    page.screenshot(path=artefacts / "confirm.png", full_page=True)
    page.get_by_role("button", name="Yes: Retry all failed").click()
    expect(page.locator(".outcome")).to_have_text("3 tasks retried")
    [logged] = server.events("dashboard_action")
    assert (logged["action"], logged["who"], logged["result"]) == (
        "retry-group",
        "anonymous",
        "3 tasks retried",
    )

    page.get_by_role("link", name="Back").click()
    expect(page.get_by_text("No task of this group is failed")).to_be_visible(
        timeout=LIVE_DEADLINE_MS
    )
    worker.wait_for(
        lambda: (
            worker.query(
                "SELECT count(*) FROM websurfing_task_queue"
                " WHERE task_type = 'test_flaky' AND status = 'completed'"
            )
            == [(3,)]
        ),
        "the retried tasks to complete",
    )
    task_id = worker.query(
        "SELECT id FROM websurfing_task_queue WHERE task_type = 'test_flaky' LIMIT 1"
    )[0][0]
    page.goto(f"{address}/tasks/{task_id}")
    expect(page.locator("dd.status")).to_have_text("completed")
    expect(page.locator("pre.error")).to_contain_text("connection refused")  # the last error
    page.screenshot(path=artefacts / "task.png", full_page=True)

    page.goto(address + "/")
    expect(page.locator("figure.chart")).to_have_count(5)
    expect(page.locator(".legend li", has_text="test_sleep").first).to_be_visible()
    page.screenshot(path=artefacts / "overview.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=artefacts / "overview-phone.png", full_page=True)

    for name in ("failures", "failure-group", "confirm", "task", "overview", "overview-phone"):
        assert (artefacts / f"{name}.png").stat().st_size > 0


def test_the_tenants_page_shows_a_limit_at_work_and_a_running_task_is_cancelled(
    start_worker: Callable[..., Daemon],
    dashboard: tuple[str, Daemon],
    browser_page: Any,
    artefacts: Path,
    database_url: str,
    tmp_path: Path,
) -> None:
    page = browser_page
    expect = sync_api.expect
    address, server = dashboard
    query(
        database_url,
        "INSERT INTO websurfing_task_limit (task_type, limit_key, max_running, source)"
        " VALUES ('test_async_gate', 'slow.example', 1, 'cli')",
    )
    worker = start_worker(database_url)
    worker.wait_ready(1)
    gate = tmp_path / "gate"  # opened only at the end: the tasks run until cancelled
    worker.query(
        "INSERT INTO websurfing_task_queue (task_type, payload, fairness_key, limit_key)"
        " SELECT 'test_async_gate', jsonb_build_object('gate', %s::text),"
        "        CASE WHEN n <= 3 THEN 'tenant-a' ELSE 'tenant-b' END, 'slow.example'"
        " FROM generate_series(1, 5) AS n",
        str(gate),
    )

    page.goto(address + "/tenants")
    held = page.locator("tr.throttled")
    expect(held).to_contain_text("at its cap of 1 running", timeout=LIVE_DEADLINE_MS)
    expect(page.get_by_role("link", name="tenant-a")).to_be_visible()
    page.screenshot(path=artefacts / "tenants.png", full_page=True)

    [(running,)] = worker.query("SELECT id FROM websurfing_task_queue WHERE status = 'processing'")
    page.goto(f"{address}/tasks/{running}")
    expect(page.locator("dd.status")).to_have_text("processing")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".question")).to_contain_text("its worker stops it")
    page.get_by_role("button", name="Yes: Cancel").click()
    expect(page.locator(".outcome")).to_contain_text("its worker stops it")
    page.get_by_role("link", name="Back").click()
    expect(page.locator("dd.status")).to_have_text("cancelled", timeout=LIVE_DEADLINE_MS)
    [logged] = server.events("dashboard_action")
    assert (logged["action"], logged["target"]) == ("cancel-task", str(running))
    gate.touch()
    worker.wait_for(
        lambda: (
            worker.query(
                "SELECT status, count(*) FROM websurfing_task_queue GROUP BY status ORDER BY 1"
            )
            == [("cancelled", 1), ("completed", 4)]
        ),
        "the other tasks to complete",
    )
