"""The web_title operator: titles from a local HTTP server, the guard that refuses
internal addresses (directly, through a redirect, or through a DNS name), the limits
of one fetch (time, size, hops), and the shared client (connection reuse, per-host limit).

Every refusal happens before a connection is attempted: a test that expects one also
makes any outgoing connection fail the test, and every test here can connect to
127.0.0.1 only (the event loop's connect itself is watched, beneath aiohttp and the
guard), so even a broken guard never sends a packet to another address.

The handler is awaited directly with a real Context; each test runs its own event loop
and closes that loop's HTTP sessions at the end, as the worker does at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import shutil
import ssl
import subprocess
import threading
import time
from asyncio import selector_events
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import pytest
import structlog
from support.waiting import wait_for

from websurf.worker.app.operators import web, web_fetch
from websurf.worker.app.operators.web import FetchFailed, FetchPolicy, FetchRefused, fetch
from websurf.worker.core.registry import (
    Context,
    PermanentError,
    Result,
    SlowDown,
    Snooze,
    Task,
    registry,
)

LOOPBACK = FetchPolicy(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
BIG_BYTES = 2 * 1024 * 1024
DRIP_BYTES = 60  # a dripping server would take a minute to send its page
SLOW_PAGE_S = 0.1  # /gated takes this long to answer
SERVER_WAIT_S = 10.0  # a held request is let go after this long, whatever the test does
ANGLES = b"<" * web_fetch.MAX_BYTES  # about two seconds of HTML parsing
T = TypeVar("T")


@dataclass
class Site:
    base: str = ""
    port: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)
    connections: int = 0  # accepted TCP connections
    in_flight: int = 0
    most_in_flight: int = 0
    gate: int = 1  # /gated answers once this many requests have been in flight together
    changed: threading.Condition = field(default_factory=threading.Condition)
    release: threading.Event = field(default_factory=threading.Event)  # lets /held answer
    stop: threading.Event = field(default_factory=threading.Event)  # ends the drips


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so the client can reuse connections

        def do_GET(self) -> None:
            with site.changed:
                site.requests.append((self.path, self.headers.get("Host", "")))
                site.in_flight += 1
                site.most_in_flight = max(site.most_in_flight, site.in_flight)
                site.changed.notify_all()
            try:
                self._answer()
            finally:
                with site.changed:
                    site.in_flight -= 1

        def _answer(self) -> None:
            if self.path == "/page":
                self._send(200, b"<html><head><title>\n Caf&eacute; &amp; <b>tea</b>\n</title>")
            elif self.path == "/latin1":
                self._send(200, "<title>Crème brûlée</title>".encode("latin-1"), "iso-8859-1")
            elif self.path == "/meta-charset":
                body = '<meta charset="windows-1252"><title>“Quotes”</title>'
                self._send(200, body.encode("windows-1252"), None)
            elif self.path == "/hop":
                self._redirect("/page")
            elif self.path == "/to-internal":
                self._redirect("http://10.20.30.40/admin")
            elif self.path == "/to-metadata":
                self._redirect("http://169.254.169.254/latest/meta-data/")
            elif self.path == "/to-nat64":
                self._redirect("http://[64:ff9b::a9fe:a9fe]/latest/meta-data/")
            elif self.path == "/loop":
                self._redirect("/loop")
            elif self.path == "/big":
                self._send(200, b"<html>" + b" " * BIG_BYTES + b"<title>too far</title>")
            elif self.path == "/angles":  # slow to parse: a megabyte of tag openings
                self._send(200, ANGLES)
            elif self.path == "/plain":
                self._send(200, b"<title>not html</title>", "utf-8", "text/plain")
            elif self.path == "/broken":
                self._send(503, b"busy")
            elif self.path == "/busy-for-a-minute":
                self._send(503, b"busy", extra={"Retry-After": "60"})
            elif self.path == "/too-many":
                self._send(429, b"slow down")
            elif self.path == "/close":
                self.close_connection = True
                self._send(200, b"<title>Closing</title>", extra={"Connection": "close"})
            elif self.path == "/gated":
                with site.changed:
                    site.changed.wait_for(lambda: site.most_in_flight >= site.gate, SERVER_WAIT_S)
                time.sleep(SLOW_PAGE_S)  # a slow page: time for any request over the limit to show
                self._send(200, b"<title>Gated</title>")
            elif self.path == "/held":
                site.release.wait(SERVER_WAIT_S)
                self._send(200, b"<title>Held</title>")
            elif self.path == "/drip-body":
                self._drip(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                    + f"Content-Length: {DRIP_BYTES}\r\n\r\n".encode(),
                    b"x" * DRIP_BYTES,
                )
            elif self.path == "/drip-head":
                self._drip(b"", b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * DRIP_BYTES)
            else:
                self._send(404, b"<title>Not found</title>")

        def _drip(self, head: bytes, slowly: bytes) -> None:
            """Send ``head`` at once, then one byte of ``slowly`` a second."""
            self.close_connection = True
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(head)
                for byte in slowly:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if site.stop.wait(1.0):
                        return

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(
            self,
            status: int,
            body: bytes,
            charset: str | None = "utf-8",
            kind: str = "text/html",
            extra: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset={charset}" if charset else kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)  # the client may stop reading at its size cap

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, site: Site) -> None:
        super().__init__(("127.0.0.1", 0), _handler(site))
        self.site = site

    def get_request(self) -> Any:
        request = super().get_request()
        with self.site.changed:
            self.site.connections += 1
        return request


@pytest.fixture
def site() -> Iterator[Site]:
    """A local HTTP/1.1 server on 127.0.0.1 that counts connections and requests."""
    found = Site()
    server = _CountingServer(found)
    found.port = server.server_address[1]
    found.base = f"http://127.0.0.1:{found.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.stop.set()
    found.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the guard decides, this test module connects to 127.0.0.1 only."""
    connect = selector_events.BaseSelectorEventLoop.sock_connect

    async def loopback(loop: Any, sock: Any, address: Any) -> None:
        if address[0] != "127.0.0.1":
            raise AssertionError(f"the guard let a connection to {address} through")
        await connect(loop, sock, address)

    monkeypatch.setattr(selector_events.BaseSelectorEventLoop, "sock_connect", loopback)


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail the test if the fetch opens any connection (the guard must refuse first)."""
    attempts: list[Any] = []

    async def refuse(loop: Any, sock: Any, address: Any) -> None:
        attempts.append(address)
        raise AssertionError(f"the guard let a connection to {address} through")

    monkeypatch.setattr(selector_events.BaseSelectorEventLoop, "sock_connect", refuse)
    return attempts


def run(work: Awaitable[T]) -> T:
    """Await ``work`` on a fresh event loop, closing its HTTP sessions as the worker does."""

    async def main() -> T:
        try:
            return await work
        finally:
            await web.close_sessions()

    return asyncio.run(main())


def answers(*addresses: str) -> web.Lookup:
    """A DNS lookup that answers ``addresses`` for every name."""

    async def lookup(host: str, port: int) -> list[str]:
        return list(addresses)

    return lookup


def _context() -> Context:
    return Context(log=structlog.get_logger("test"), deadline=time.monotonic() + 30, worker_id="t")


def _task(payload: dict[str, Any]) -> Task:
    return Task(uuid4(), "web_title", {"cell_id": str(uuid4()), **payload}, 1, 3)


def test_the_title_of_an_allowed_page_is_written_to_the_cell(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(web.ALLOW_ENV, "127.0.0.1/32")

    result = run(web.web_title(_task({"input": f" {site.base}/hop "}), _context()))

    assert isinstance(result, Result)
    assert result.cell_content == "Café & tea"
    assert result.output == {"url": f"{site.base}/page", "status": 200, "title": "Café & tea"}
    assert [path for path, _ in site.requests] == ["/hop", "/page"]


def test_web_title_is_an_async_operator() -> None:
    operator = registry.get("web_title")
    assert operator is not None and operator.is_async


def test_loopback_is_refused_unless_allowed(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(web.ALLOW_ENV, raising=False)
    monkeypatch.delenv(web.ALLOW_PRIVATE_ENV, raising=False)

    with pytest.raises(FetchRefused, match=r"127\.0\.0\.1, an internal address"):
        run(web.web_title(_task({"input": f"{site.base}/page"}), _context()))

    assert site.requests == []
    monkeypatch.setenv(web.ALLOW_PRIVATE_ENV, "1")
    assert run(fetch(f"{site.base}/page")).title == "Café & tea"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://224.0.0.1/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://[64:ff9b:1::a00:1]/",
        "http://[::a00:1]/",  # IPv4-compatible 10.0.0.1
        "http://[::ffff:0:a00:1]/",  # IPv4-translated 10.0.0.1
        "http://[2002:a00:1::1]/",  # 6to4 of 10.0.0.1
    ],
)
def test_internal_addresses_are_refused_before_any_connection(
    url: str, no_connections: list[Any]
) -> None:
    with pytest.raises(FetchRefused, match="internal address"):
        run(fetch(url, FetchPolicy()))

    assert no_connections == []


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.1", "017700000001"])
def test_legacy_numeric_hosts_are_refused(host: str, no_connections: list[Any]) -> None:
    with pytest.raises(FetchRefused):
        run(fetch(f"http://{host}/", FetchPolicy(), lookup=answers("127.0.0.1")))

    assert no_connections == []


def test_a_redirect_to_an_internal_address_is_refused(site: Site) -> None:
    for path in ("/to-internal", "/to-metadata", "/to-nat64"):
        with pytest.raises(FetchRefused, match="internal address"):
            run(fetch(site.base + path, LOOPBACK))

    assert [path for path, _ in site.requests] == ["/to-internal", "/to-metadata", "/to-nat64"]


def test_a_name_that_resolves_to_an_internal_address_is_refused(no_connections: list[Any]) -> None:
    with pytest.raises(FetchRefused, match="refusing to fetch localhost: it resolves to"):
        run(fetch("http://localhost/", FetchPolicy()))
    with pytest.raises(FetchRefused, match=r"resolves to 10\.9\.8\.7"):
        run(fetch("http://intranet.example/", FetchPolicy(), lookup=answers("10.9.8.7")))
    with pytest.raises(FetchRefused, match=r"resolves to 192\.168\.0\.9"):  # one is enough
        run(
            fetch(
                "http://mixed.example/",
                FetchPolicy(),
                lookup=answers("93.184.216.34", "192.168.0.9"),
            )
        )
    with pytest.raises(FetchRefused, match=r"resolves to 64:ff9b::a00:1"):
        run(fetch("http://nat64.example/", FetchPolicy(), lookup=answers("64:ff9b::a00:1")))

    assert no_connections == []


def test_the_connection_goes_to_the_address_that_was_checked(site: Site) -> None:
    replies = iter([["127.0.0.1"], ["10.0.0.1"]])  # a second lookup would be rebound

    async def rebinding(host: str, port: int) -> list[str]:
        return next(replies)

    page = run(fetch(f"http://pinned.example:{site.port}/page", LOOPBACK, lookup=rebinding))

    assert page.title == "Café & tea"
    assert site.requests == [("/page", f"pinned.example:{site.port}")]


def test_a_rebound_name_is_checked_again_on_the_next_connection(site: Site) -> None:
    """No DNS cache: once the server closes the connection, the next one is looked up anew."""
    replies = iter([["127.0.0.1"], ["10.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(replies)

    async def twice() -> str | None:
        first = await fetch(f"http://rebind.example:{site.port}/close", LOOPBACK, lookup=rebinding)
        with pytest.raises(FetchRefused, match=r"resolves to 10\.0\.0\.1"):
            await fetch(f"http://rebind.example:{site.port}/page", LOOPBACK, lookup=rebinding)
        return first.title

    assert run(twice()) == "Closing"
    assert [path for path, _ in site.requests] == ["/close"]


def test_the_socket_factory_refuses_what_slips_past_the_resolver(
    site: Site, monkeypatch: pytest.MonkeyPatch, no_connections: list[Any]
) -> None:
    """A backstop: even with the DNS check broken, no socket opens to a refused address."""
    monkeypatch.setattr(  # where the fetching code looks it up (web.py re-exports it)
        web_fetch,
        "check_addresses",
        lambda host, found, policy: [web._parse_address(a) for a in found],
    )

    with pytest.raises(FetchRefused, match=r"refusing to connect to 10\.0\.0\.1"):
        run(fetch("http://broken-guard.example/", FetchPolicy(), lookup=answers("10.0.0.1")))

    assert no_connections == []


def test_redirects_are_limited(site: Site) -> None:
    with pytest.raises(FetchRefused, match="more than 5 redirects"):
        run(fetch(site.base + "/loop", LOOPBACK))

    assert len(site.requests) == 6


def test_at_most_max_bytes_are_read(site: Site) -> None:
    page = run(fetch(site.base + "/big", LOOPBACK))

    assert len(page.body) == web.MAX_BYTES and page.truncated
    assert page.title is None


def test_a_server_that_never_answers_times_out() -> None:
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the connection in the backlog, never answers
        policy = FetchPolicy(allow_networks=LOOPBACK.allow_networks, timeout_s=0.5)
        started = time.monotonic()

        with pytest.raises(FetchFailed, match="timed out"):
            run(fetch(f"http://127.0.0.1:{silent.getsockname()[1]}/", policy))

        assert time.monotonic() - started < 5


@pytest.mark.parametrize("path", ["/drip-body", "/drip-head"])
def test_a_server_that_drips_is_cut_off_at_the_fetch_timeout(site: Site, path: str) -> None:
    """Each byte comes within a second, so only a limit on the whole fetch stops it."""
    policy = FetchPolicy(allow_networks=LOOPBACK.allow_networks, timeout_s=2.5)
    started = time.monotonic()

    with pytest.raises(FetchFailed, match=r"timed out after 2\.5s"):
        run(fetch(site.base + path, policy))

    assert time.monotonic() - started < DRIP_BYTES / 2  # far from the minute the drip takes


def test_the_task_deadline_bounds_the_fetch_too(site: Site) -> None:
    with pytest.raises(FetchFailed, match="timed out"):
        run(fetch(site.base + "/drip-body", LOOPBACK, deadline=time.monotonic() + 1.0))


def test_other_schemes_credentials_and_bad_urls_fail_for_good(no_connections: list[Any]) -> None:
    for url, reason in [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/", "only http and https"),
        ("http://user:secret@example.com/", "credentials"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http:///path-only", "names no host"),
    ]:
        with pytest.raises(FetchRefused, match=reason):
            run(fetch(url, FetchPolicy()))
    assert no_connections == []


def test_status_and_content_type_decide_what_is_written(site: Site) -> None:
    with pytest.raises(PermanentError, match="answered 404"):
        run(fetch(site.base + "/missing", LOOPBACK))
    with pytest.raises(FetchFailed, match="answered 503"):
        run(fetch(site.base + "/broken", LOOPBACK))
    assert run(fetch(site.base + "/plain", LOOPBACK)).title is None


def test_429_and_503_with_retry_after_ask_every_worker_to_slow_down(site: Site) -> None:
    with pytest.raises(SlowDown, match="answered 503, retry after 60s") as asked:
        run(fetch(site.base + "/busy-for-a-minute", LOOPBACK))
    assert asked.value.retry_after == 60.0
    with pytest.raises(SlowDown, match="answered 429") as asked:
        run(fetch(site.base + "/too-many", LOOPBACK))
    assert asked.value.retry_after == 30.0  # no Retry-After: a default pause


def test_the_charset_comes_from_the_header_or_the_page(site: Site) -> None:
    assert run(fetch(site.base + "/latin1", LOOPBACK)).title == "Crème brûlée"
    assert run(fetch(site.base + "/meta-charset", LOOPBACK)).title == "“Quotes”"


def test_an_empty_cell_clears_the_title_without_fetching(no_connections: list[Any]) -> None:
    result = run(web.web_title(_task({"input": "   "}), _context()))

    assert isinstance(result, Result) and result.cell_content is None
    assert result.output == {"url": None, "title": None}
    assert no_connections == []


def test_fetches_to_one_host_reuse_one_connection(site: Site) -> None:
    async def three() -> list[str | None]:
        return [(await fetch(site.base + p, LOOPBACK)).title for p in ("/page", "/hop", "/page")]

    assert run(three()) == ["Café & tea"] * 3
    assert len(site.requests) == 4
    assert site.connections == 1


def test_concurrent_fetches_to_one_host_stay_within_the_per_host_limit(site: Site) -> None:
    site.gate = 3  # the server answers once three requests have been in flight together
    policy = FetchPolicy(allow_networks=LOOPBACK.allow_networks, per_host=3)

    async def many() -> list[Any]:
        return await asyncio.gather(*(fetch(site.base + "/gated", policy) for _ in range(12)))

    pages = run(many())

    assert [page.title for page in pages] == ["Gated"] * 12
    assert site.most_in_flight == 3
    assert site.connections <= 3


def test_a_task_that_waits_too_long_for_a_host_slot_snoozes(site: Site) -> None:
    policy = FetchPolicy(allow_networks=LOOPBACK.allow_networks, per_host=1, slot_wait_s=0.2)

    async def crowded() -> str | None:
        first = asyncio.create_task(fetch(site.base + "/held", policy))
        await asyncio.to_thread(wait_for, lambda: site.requests, "the held request", 5.0)
        with pytest.raises(Snooze) as snoozed:
            await fetch(site.base + "/page", policy)
        assert snoozed.value.delay_s > 0
        site.release.set()
        return (await first).title

    assert run(crowded()) == "Held"
    assert [path for path, _ in site.requests] == ["/held"]  # the snoozed fetch sent nothing


def test_waiting_for_a_host_slot_does_not_spend_the_fetch_timeout(site: Site) -> None:
    policy = FetchPolicy(
        allow_networks=LOOPBACK.allow_networks, per_host=1, slot_wait_s=10, timeout_s=1.0
    )
    patient = dataclasses.replace(policy, timeout_s=SERVER_WAIT_S)  # for the held request

    async def queued() -> list[str | None]:
        first = asyncio.create_task(fetch(site.base + "/held", patient))
        await asyncio.to_thread(wait_for, lambda: site.requests, "the held request", 5.0)
        second = asyncio.create_task(fetch(site.base + "/page", policy))
        # The host stays busy for longer than the second fetch's whole timeout: it waits
        # for the slot, and only the fetch itself is timed.
        await asyncio.sleep(policy.timeout_s * 1.5)
        site.release.set()
        return [(await first).title, (await second).title]

    assert run(queued()) == ["Held", "Café & tea"]


def test_a_slot_wait_that_would_pass_the_task_deadline_snoozes_instead(site: Site) -> None:
    """Timing out would spend an attempt; a snooze does not."""
    policy = FetchPolicy(
        allow_networks=LOOPBACK.allow_networks, per_host=1, slot_wait_s=10, timeout_s=1.0
    )
    patient = dataclasses.replace(policy, timeout_s=SERVER_WAIT_S)  # for the held request

    async def crowded() -> str | None:
        first = asyncio.create_task(fetch(site.base + "/held", patient))
        await asyncio.to_thread(wait_for, lambda: site.requests, "the held request", 5.0)
        # 1.5 s to the task's deadline, 1 s of it for the fetch: 0.5 s to wait for a slot.
        with pytest.raises(Snooze):
            await fetch(site.base + "/page", policy, deadline=time.monotonic() + 1.5)
        site.release.set()
        return (await first).title

    assert run(crowded()) == "Held"


def test_a_page_slow_to_parse_does_not_stall_the_other_tasks(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The title is parsed off the event loop: other tasks of the process keep running."""
    monkeypatch.setenv(web.ALLOW_ENV, "127.0.0.1/32")
    started = time.perf_counter()
    assert web_fetch.page_title(ANGLES, None) is None
    parse_s = time.perf_counter() - started  # what one parse costs here, on any thread

    async def title_while_ticking() -> tuple[Result, float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def tick() -> None:  # another task of the process: a quick step each 10 ms
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        try:
            result = await web.web_title(_task({"url": f"{site.base}/angles"}), _context())
        finally:
            done.set()
            await ticker
        return result, max(gaps)

    result, longest_gap = run(title_while_ticking())

    assert result.cell_content == ""  # no title on that page
    assert longest_gap < parse_s / 3, (longest_gap, parse_s)


def test_the_per_host_limit_is_configured_in_the_environment(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(web.ALLOW_ENV, "127.0.0.1/32")
    monkeypatch.setenv(web.PER_HOST_ENV, "2")
    site.gate = 2

    async def many() -> list[Any]:
        tasks = [web.web_title(_task({"url": f"{site.base}/gated"}), _context()) for _ in range(6)]
        return await asyncio.gather(*tasks)

    results = run(many())

    assert [r.cell_content for r in results] == ["Gated"] * 6
    assert site.most_in_flight == 2


def test_dns_lookups_do_not_wait_for_the_loops_default_executor() -> None:
    """Plain handlers may hold every thread of the default executor; lookups go on."""
    busy = threading.Event()

    async def lookup_while_busy() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        blocked = loop.run_in_executor(None, busy.wait, SERVER_WAIT_S)
        try:
            return await asyncio.wait_for(web.system_lookup("localhost", 80), SERVER_WAIT_S / 2)
        finally:
            busy.set()
            await blocked

    assert "127.0.0.1" in run(lookup_while_busy())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    """A server whose certificate nobody vouches for is not talked to (no title, retried)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    site = Site()
    server = _CountingServer(site)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/page"
        with pytest.raises(FetchFailed, match="certificate verify failed"):
            run(fetch(url, LOOPBACK))
    finally:
        server.shutdown()
        server.server_close()

    assert site.requests == []
