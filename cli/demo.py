"""``websurf demo``: a spreadsheet whose robot columns fill in while you watch (``make run``).

It creates a demo user and spreadsheet, configures robot columns (uppercase, word
count, and the page title of a URL served by a tiny HTTP server of its own on
127.0.0.1, which the worker is explicitly allowed to fetch), starts ``websurf worker``
as a subprocess against the same database, edits cells as the demo user, adds a few
hundred no-op tasks, prints progress until everything ran, then prints the sheet, its
audit trail and a transformer session that asked the user a question. The worker is
stopped with SIGTERM at the end, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click
import psycopg

from websurf.cli.dashboard import DEFAULT_HOST, DEFAULT_PORT, dashboard_url
from websurf.cli.options import Runtime, open_db, option, pass_runtime, sigterm_as_interrupt
from websurf.cli.render import CommandError, echo, echo_lines
from websurf.cli.render.sheets import render_audit, render_sheet
from websurf.sql import QUERIES
from websurf.sql.migrate import pending_migrations
from websurf.worker.app import sheets, transformers
from websurf.worker.app.operators.web import ALLOW_ENV
from websurf.worker.core import queue
from websurf.worker.core.queue import NewTask
from websurf.worker.core.registry import load_operators

DEMO_EMAIL = "demo@websurf.invalid"
DEMO_NAME = "Demo User"
NOOP_TASKS = 300
WORKER_START_TIMEOUT_S = 60.0
FINISH_TIMEOUT_S = 120.0
WORKER_STOP_TIMEOUT_S = 40.0
PROGRESS_INTERVAL_S = 0.5
EXIT_INTERRUPTED = 130
PAGES = {
    "/postgres": "PostgreSQL: the queue, the audit trail and the notifications",
    "/robots": "Robots that fill in spreadsheets",
}
EDITS = [
    ("Text", 1, "robots fill the cells"),
    ("Text", 2, "one commit per edit: content, audit row and tasks"),
    ("Text", 3, "postgres is the queue"),
    ("URL", 1, "/postgres"),
    ("URL", 2, "/robots"),
]


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        title = PAGES.get(self.path)
        body = (
            f"<html><head><title>{title}</title></head><body>demo</body></html>"
            if title
            else "<html><head><title>Not found</title></head></html>"
        ).encode()
        self.send_response(200 if title else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _page_server() -> Iterator[str]:
    """A local HTTP server with the demo's pages; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, name="demo-pages", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _worker(url: str, concurrency: int) -> Iterator[subprocess.Popen[bytes]]:
    """``websurf worker`` in a subprocess; the database URL goes through the environment."""
    env = {
        **os.environ,
        "WEBSURF_DATABASE_URL": url,
        ALLOW_ENV: "127.0.0.1/32",  # the demo's own page server, nothing else internal
        "WEBSURF_LOG_LEVEL": os.environ.get("WEBSURF_DEMO_WORKER_LOG_LEVEL", "warning"),
    }
    command = [
        sys.executable,
        "-c",
        "from websurf.cli.main import main; main()",
        "worker",
        "--concurrency",
        str(concurrency),
        "--poll-interval",
        "0.5",
    ]
    # Its own session: Ctrl-C reaches the demo only, which then stops the worker once.
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            echo("stopping the worker (SIGTERM)...")
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        echo(f"worker exited with code {process.returncode}")


def _wait_for(
    what: str, check: Callable[[], bool], timeout_s: float, worker: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if worker.poll() is not None:
            raise CommandError(f"the worker exited (code {worker.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise CommandError(f"gave up after {timeout_s:g}s waiting for {what}")
        time.sleep(PROGRESS_INTERVAL_S / 5)


def _counts(conn: psycopg.Connection[Any], since: datetime) -> dict[str, int]:
    rows = conn.execute(QUERIES["task_counts_since"], {"since": since})
    return {status: tasks for status, tasks in rows}


def run_demo(conn: psycopg.Connection[Any], url: str, *, tasks: int, concurrency: int) -> None:
    """The demo itself, on a connection to the database at url (which its worker is given);
    the click command only sets up and maps errors."""
    load_operators(())
    pending = pending_migrations(conn)
    if pending:
        raise CommandError(f"the database needs `websurf migrate` first ({pending[0].name})")
    started_at = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    user = sheets.ensure_user(conn, DEMO_EMAIL, DEMO_NAME)
    sheet = sheets.create_spreadsheet(
        conn, user, f"Demo {started_at:%Y-%m-%d %H:%M:%S}", columns=0, rows=3
    )
    for title in ("Text", "UPPERCASE", "Words", "URL", "Page title"):
        sheets.add_column(conn, sheet.id, title)
    column = {c.title: c for c in sheets.list_columns(conn, sheet.id)}
    for target, operator, source in (
        ("UPPERCASE", "uppercase", "Text"),
        ("Words", "word_count", "Text"),
        ("Page title", "web_title", "URL"),
    ):
        sheets.set_column_operator(
            conn, column[target].id, operator, source_column_id=column[source].id
        )
        echo(f"robot column {target!r} <- {operator}({source})")
    echo(f"spreadsheet {sheet.name!r} ({sheet.id}) owned by {DEMO_EMAIL}")

    with _page_server() as base, _worker(url, concurrency) as worker:
        _wait_for(
            "the worker to register",
            lambda: (conn.execute(QUERIES["live_workers"]).fetchone() or (0,))[0] > 0,
            WORKER_START_TIMEOUT_S,
            worker,
        )
        echo(f"worker ready (pid {worker.pid}, {concurrency} processes)")
        for title, row, content in EDITS:
            value = base + content if title == "URL" else content
            t0 = time.perf_counter()
            sheets.edit_cell(conn, sheet.id, column[title].id, row, value, user_id=user)
            ms = (time.perf_counter() - t0) * 1000
            echo(f"edit {title}{row} = {value!r} as {DEMO_EMAIL} ({ms:.1f} ms: audit + tasks)")
        queue.enqueue_many(conn, [NewTask("noop", {"demo": n}) for n in range(tasks)])
        echo(f"enqueued {tasks} noop tasks in one statement")
        session = transformers.start_session(
            conn, "word_stats", {"text": "the robots read the cells the people write"}
        )
        echo(f"transformer session {session.id} (word_stats) started")

        def progressed() -> bool:
            counts = _counts(conn, started_at)
            done = counts.get("completed", 0) + counts.get("failed", 0)
            total = sum(counts.values())
            echo(
                f"tasks: {done}/{total} done ({counts.get('completed', 0)} completed,"
                f" {counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending,"
                f" {counts.get('processing', 0)} processing)"
            )
            state = transformers.get_session(conn, session.id)
            if state.state == "waiting":
                echo(f"session asks {state.user_input_prompt!r}; the demo user answers 'the'")
                transformers.resume_session(conn, session.id, "the")
                return False
            return done == total and state.state in ("completed", "failed", "cancelled")

        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while not progressed():
            if worker.poll() is not None:
                raise CommandError(f"the worker exited early (code {worker.returncode})")
            if time.monotonic() > deadline:
                raise CommandError(f"tasks still unfinished after {FINISH_TIMEOUT_S:g}s")
            time.sleep(PROGRESS_INTERVAL_S)

    echo()
    echo_lines(render_sheet(sheets.read_sheet(conn, sheet.id)))
    echo()
    echo("audit trail (newest first):")
    for line in render_audit(sheets.audit_trail(conn, sheet.id, 30)):
        echo("  " + line)
    done = transformers.get_session(conn, session.id)
    echo()
    echo(f"transformer session {done.id}: {done.state}, step_data {done.step_data}")
    echo()
    echo(
        "see the queue, its failures and its workers in a browser:"
        f" .venv/bin/websurf dashboard, then open {dashboard_url(DEFAULT_HOST, DEFAULT_PORT)}"
    )


@click.command("demo")
@pass_runtime
@option("--tasks", type=click.IntRange(0, 100_000), default=NOOP_TASKS, help="Noop tasks to add.")
@option("--concurrency", type=click.IntRange(1, 16), default=2, help="Worker processes.")
def demo_command(rt: Runtime, tasks: int, concurrency: int) -> None:
    """Show websurf at work: robot columns filling in, tasks completing, the audit trail."""
    with sigterm_as_interrupt():
        try:
            with open_db(rt) as conn:
                run_demo(conn, rt.database().url, tasks=tasks, concurrency=concurrency)
        except KeyboardInterrupt:
            raise CommandError("interrupted; the worker was stopped", EXIT_INTERRUPTED) from None
