"""The web_title operator: titles from a local HTTP server, and the guard that refuses
internal addresses (directly, through a redirect, or through a DNS name).

Every refusal happens before a connection is attempted: a test that expects one also
makes any outgoing connection fail the test, and every test here can connect to
127.0.0.1 only, so even a broken guard never sends a packet to another address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import uuid4

import pytest
import structlog

from websurf.worker.operators import web
from websurf.worker.operators.web import FetchFailed, FetchPolicy, FetchRefused, fetch
from websurf.worker.registry import Context, PermanentError, Result, Task

LOOPBACK = FetchPolicy(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
BIG_BYTES = 2 * 1024 * 1024


@dataclass
class Site:
    base: str
    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append((self.path, self.headers.get("Host", "")))
            if self.path == "/page":
                self._send(200, b"<html><head><title>\n Caf&eacute; &amp; <b>tea</b>\n</title>")
            elif self.path == "/hop":
                self._redirect("/page")
            elif self.path == "/to-internal":
                self._redirect("http://10.20.30.40/admin")
            elif self.path == "/to-metadata":
                self._redirect("http://169.254.169.254/latest/meta-data/")
            elif self.path == "/loop":
                self._redirect("/loop")
            elif self.path == "/big":
                self._send(200, b"<html>" + b" " * BIG_BYTES + b"<title>too far</title>")
            elif self.path == "/plain":
                self._send(200, b"<title>not html</title>", "text/plain")
            elif self.path == "/broken":
                self._send(503, b"busy")
            else:
                self._send(404, b"<title>Not found</title>")

        def _redirect(self, location: str) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(self, status: int, body: bytes, kind: str = "text/html") -> None:
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)  # the client may stop reading at its size cap

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def site() -> Iterator[Site]:
    """A local HTTP server on 127.0.0.1 with pages, redirects and an oversized page."""
    found = Site("", 0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(found))
    found.port = server.server_address[1]
    found.base = f"http://127.0.0.1:{found.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield found
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the guard decides, this test module connects to 127.0.0.1 only."""
    connect = socket.create_connection

    def loopback(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if address[0] != "127.0.0.1":
            raise AssertionError(f"the guard let a connection to {address} through")
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(web.socket, "create_connection", loopback)


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail the test if the fetch opens any connection (the guard must refuse first)."""
    attempts: list[Any] = []

    def refuse(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        raise AssertionError(f"the guard let a connection to {address} through")

    monkeypatch.setattr(web.socket, "create_connection", refuse)
    return attempts


def _context() -> Context:
    return Context(log=structlog.get_logger("test"), deadline=time.monotonic() + 30, worker_id="t")


def _task(payload: dict[str, Any]) -> Task:
    return Task(uuid4(), "web_title", {"cell_id": str(uuid4()), **payload}, 1, 3)


def test_the_title_of_an_allowed_page_is_written_to_the_cell(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(web.ALLOW_ENV, "127.0.0.1/32")

    result = web.web_title(_task({"input": f" {site.base}/hop "}), _context())

    assert isinstance(result, Result)
    assert result.cell_content == "Café & tea"
    assert result.output == {"url": f"{site.base}/page", "status": 200, "title": "Café & tea"}
    assert [path for path, _ in site.requests] == ["/hop", "/page"]


def test_loopback_is_refused_unless_allowed(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(web.ALLOW_ENV, raising=False)
    monkeypatch.delenv(web.ALLOW_PRIVATE_ENV, raising=False)

    with pytest.raises(FetchRefused, match=r"127\.0\.0\.1, an internal address"):
        web.web_title(_task({"input": f"{site.base}/page"}), _context())

    assert site.requests == []
    monkeypatch.setenv(web.ALLOW_PRIVATE_ENV, "1")
    assert fetch(f"{site.base}/page").title == "Café & tea"


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
    ],
)
def test_internal_addresses_are_refused_before_any_connection(
    url: str, no_connections: list[Any]
) -> None:
    with pytest.raises(FetchRefused, match="internal address"):
        fetch(url, FetchPolicy())

    assert no_connections == []


def test_a_redirect_to_an_internal_address_is_refused(site: Site) -> None:
    for path in ("/to-internal", "/to-metadata"):
        with pytest.raises(FetchRefused, match="internal address"):
            fetch(site.base + path, LOOPBACK)

    assert [path for path, _ in site.requests] == ["/to-internal", "/to-metadata"]


def test_a_name_that_resolves_to_an_internal_address_is_refused(no_connections: list[Any]) -> None:
    with pytest.raises(FetchRefused, match="refusing to fetch localhost: it resolves to"):
        fetch("http://localhost/", FetchPolicy())
    with pytest.raises(FetchRefused, match=r"resolves to 10\.9\.8\.7"):
        fetch("http://intranet.example/", FetchPolicy(), resolver=lambda h, p: ["10.9.8.7"])
    with pytest.raises(
        FetchRefused, match=r"resolves to 192\.168\.0\.9"
    ):  # one bad answer is enough
        fetch(
            "http://mixed.example/",
            FetchPolicy(),
            resolver=lambda h, p: ["93.184.216.34", "192.168.0.9"],
        )

    assert no_connections == []


def test_the_connection_goes_to_the_address_that_was_checked(site: Site) -> None:
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])  # a second lookup would be rebound

    page = fetch(
        f"http://pinned.example:{site.port}/page", LOOPBACK, resolver=lambda h, p: next(answers)
    )

    assert page.title == "Café & tea"
    assert site.requests == [("/page", f"pinned.example:{site.port}")]


def test_redirects_are_limited(site: Site) -> None:
    with pytest.raises(FetchRefused, match="more than 5 redirects"):
        fetch(site.base + "/loop", LOOPBACK)

    assert len(site.requests) == 6


def test_at_most_max_bytes_are_read(site: Site) -> None:
    page = fetch(site.base + "/big", LOOPBACK)

    assert len(page.body) == web.MAX_BYTES and page.truncated
    assert page.title is None


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the connection in the backlog, never answers
        policy = FetchPolicy(allow_networks=LOOPBACK.allow_networks, timeout_s=0.5)
        started = time.monotonic()

        with pytest.raises(FetchFailed, match="timed out"):
            fetch(f"http://127.0.0.1:{silent.getsockname()[1]}/", policy)

        assert time.monotonic() - started < 5


def test_other_schemes_credentials_and_client_errors_fail_for_good(
    site: Site, no_connections: list[Any]
) -> None:
    for url, reason in [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/", "only http and https"),
        ("http://user:secret@example.com/", "credentials"),
    ]:
        with pytest.raises(FetchRefused, match=reason):
            fetch(url, FetchPolicy())
    assert no_connections == []


def test_status_and_content_type_decide_what_is_written(site: Site) -> None:
    with pytest.raises(PermanentError, match="answered 404"):
        fetch(site.base + "/missing", LOOPBACK)
    with pytest.raises(FetchFailed, match="answered 503"):
        fetch(site.base + "/broken", LOOPBACK)
    assert fetch(site.base + "/plain", LOOPBACK).title is None


def test_an_empty_cell_clears_the_title_without_fetching(no_connections: list[Any]) -> None:
    result = web.web_title(_task({"input": "   "}), _context())

    assert isinstance(result, Result) and result.cell_content is None
    assert no_connections == []
