"""``web_title``'s fetching: the URL in the edited cell, the page's <title>.

Imported on the first fetch, not at worker start (aiohttp and yarl take about 80 ms to
import, which every worker process would pay before its first claim); the operator is
registered in ``web.py``.

Design note
-----------
The worker runs inside the network it is deployed in, so a URL typed into a cell must
not become a way into that network (SSRF). The guard:

* Only ``http`` and ``https``; no credentials in the URL; no proxy (``trust_env=False``:
  proxy variables and .netrc are never read); no cookies kept between fetches.
* Every address a host name resolves to must be public (``ipaddress`` ``is_global``, not
  multicast, not a NAT64 or IPv4-embedding prefix; IPv4 inside mapped, 6to4 and Teredo
  addresses is unwrapped and checked too). One internal address refuses the whole URL.
* Internal addresses are allowed only when configured: ``WEBSURF_FETCH_ALLOW`` lists
  networks (``127.0.0.1/32,10.1.0.0/16``) that may be fetched, and
  ``WEBSURF_FETCH_ALLOW_PRIVATE=1`` allows every address (development only).

The client is aiohttp (chosen over httpx: asyncio-native, its ``TCPConnector`` gives
connection reuse and a per-host limit, and it connects to exactly what its resolver
returns, so the check lives in one documented extension point instead of a custom
transport). Where the check sits, so that no address escapes it:

* The connector's resolver (:class:`_CheckedResolver`) is its only source of addresses:
  it looks the name up, checks every answer and returns only checked ones. The DNS
  cache is off, so every new connection is looked up and checked again (a cached or
  rebound answer cannot slip in), and happy eyeballs can only race checked addresses.
  TLS still verifies the certificate against the host name.
* aiohttp does not resolve IP literals; they are checked before the request, with the
  same test aiohttp uses to tell a literal from a name.
* Backstop: the connector's socket factory refuses to open a socket to any address the
  policy does not permit, whatever path produced it.
* A pooled connection is reused only by fetches under the same policy (one session per
  policy and lookup), so it always leads to an address that policy checked.
* Redirects are followed by hand, at most ``MAX_REDIRECTS``, each hop checked the same
  way; at most ``MAX_BYTES`` are read (no decompression).
* One deadline (``FETCH_TIMEOUT_S``, or the task's, whichever is sooner) bounds the
  whole fetch: lookups, connects, every hop, every byte. A server that drips bytes is
  cut off there.

Sharing: one session per event loop (per worker process), created lazily; the worker
awaits :func:`close_sessions` before its loop ends. DNS lookups run in threads of their
own, so they never queue behind plain handlers in the loop's default executor. At
most ``WEBSURF_FETCH_PER_HOST`` fetches talk to one host at once (the connector's
``limit_per_host`` is the same number, as a backstop). The host slot is taken here
rather than waited for inside aiohttp, whose pool wait cannot be told apart from a slow
connect. Waiting for a slot is not fetching: the fetch's timeout is paused while it
waits, and a task that would wait longer than ``HOST_SLOT_WAIT_S``, or past the point
where its own deadline leaves the fetch its whole timeout, snoozes (back to the queue,
no attempt spent) instead of timing out. Traded away: the session is one per policy,
so the rare fetch under another policy (tests) gets its own pool.

Parsing: the title is read with the standard library's HTMLParser, pure Python, which
takes about two seconds for a megabyte of ``<``. It runs in threads of its own (never
on the event loop, where it would stall every other task of the process) and stops
at the end of the first title.

A refused or malformed URL fails the task at once (retrying cannot help); network
errors and 5xx answers are retried with the operator's backoff.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from websurf.worker.app.operators.web import ALLOW_ENV, FETCH_TIMEOUT_S
from websurf.worker.core.limits import pause_delay
from websurf.worker.core.registry import (
    Context,
    PermanentError,
    Result,
    SlowDown,
    Snooze,
    Task,
)

MAX_BYTES = 1024 * 1024  # read at most this much of a page
MAX_REDIRECTS = 5
READ_CHUNK_BYTES = 16 * 1024
TITLE_MAX_CHARS = 500
PER_HOST_CONNECTIONS = 4  # fetches talking to one host at once, per process
HOST_SLOT_WAIT_S = 3.0  # wait this long for a host slot, then snooze the task
HOST_BUSY_SNOOZE_S = 5.0  # a snoozed task is due again after about this long
MAX_CONNECTIONS = 100  # open connections per process, all hosts together
KEEPALIVE_S = 15.0  # an idle pooled connection is closed after this long
LOOKUP_THREADS = 16  # DNS lookups (getaddrinfo) running at once, per process
PARSE_THREADS = 2  # title parses running at once, per process (CPU: they share the GIL)
PARSE_CHUNK_CHARS = 64 * 1024  # fed to the parser at a time, until the title ends
PARSE_MARGIN_S = 2.0  # of the task's deadline, left after the fetch for the parse
USER_AGENT = "websurf-web-title/0.1"
ALLOW_PRIVATE_ENV = "WEBSURF_FETCH_ALLOW_PRIVATE"
PER_HOST_ENV = "WEBSURF_FETCH_PER_HOST"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SLOW_DOWN_STATUSES = frozenset({429, 503})  # with Retry-After: pause the host's key
TOO_MANY_REQUESTS_PAUSE_S = 30.0  # a 429 without (a readable) Retry-After
REQUEST_HEADERS = {"User-Agent": USER_AGENT, "Accept": "text/html", "Accept-Encoding": "identity"}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Lookup = Callable[[str, int], Awaitable[list[str]]]  # host, port -> address strings

# IPv6 prefixes that carry an IPv4 address a translator forwards to, which Python
# 3.11's is_global passes: NAT64 (RFC 6052, RFC 8215), IPv4-compatible, IPv4-translated.
EMBEDDING_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")
)


class FetchRefused(PermanentError):
    """The URL may not be fetched (scheme, credentials, internal address, too many hops)."""


class FetchFailed(Exception):
    """The fetch failed in a way that may work later (network error, 5xx, timeout)."""


@dataclass(frozen=True)
class FetchPolicy:
    """Which addresses may be fetched, and the limits of one fetch."""

    allow_networks: tuple[Network, ...] = ()
    allow_private: bool = False
    timeout_s: float = FETCH_TIMEOUT_S
    max_bytes: int = MAX_BYTES
    max_redirects: int = MAX_REDIRECTS
    per_host: int = PER_HOST_CONNECTIONS
    slot_wait_s: float = HOST_SLOT_WAIT_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FetchPolicy:
        env = os.environ if environ is None else environ
        networks = []
        for item in env.get(ALLOW_ENV, "").replace(";", ",").split(","):
            if item.strip():
                try:
                    networks.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError:
                    raise PermanentError(
                        f"{ALLOW_ENV}: {item.strip()!r} is not a network"
                    ) from None
        allow_private = env.get(ALLOW_PRIVATE_ENV, "").strip().lower() in {"1", "true", "yes"}
        per_host = env.get(PER_HOST_ENV, "").strip() or str(PER_HOST_CONNECTIONS)
        if not per_host.isdigit() or int(per_host) < 1:
            raise PermanentError(f"{PER_HOST_ENV}: {per_host!r} is not a positive integer")
        return cls(tuple(networks), allow_private, per_host=int(per_host))

    def permits(self, address: Address) -> bool:
        if self.allow_private or any(address in net for net in self.allow_networks):
            return True
        if any(address in net for net in EMBEDDING_NETWORKS):
            return False
        for inner in _embedded_ipv4(address):
            if not self.permits(inner):
                return False
        return address.is_global and not address.is_multicast


def _embedded_ipv4(address: Address) -> Iterable[ipaddress.IPv4Address]:
    if isinstance(address, ipaddress.IPv6Address):
        for inner in (address.ipv4_mapped, address.sixtofour):
            if inner is not None:
                yield inner
        if address.teredo is not None:
            yield address.teredo[1]


def _parse_address(text: str) -> Address:
    return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)


async def system_lookup(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, for TCP.

    getaddrinfo blocks, so it runs in threads of its own: not the loop's default
    executor, where the worker's plain handlers may be holding every thread.
    """
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = await asyncio.get_running_loop().run_in_executor(_client().lookups, lookup)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchFailed(f"cannot resolve {host}: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_addresses(host: str, answers: Iterable[str], policy: FetchPolicy) -> list[Address]:
    """The addresses ``host`` resolved to, if the policy permits every one of them."""
    addresses = list(dict.fromkeys(_parse_address(a) for a in answers))
    if not addresses:
        raise FetchFailed(f"{host} resolves to no address")
    for address in addresses:
        if not policy.permits(address):
            raise FetchRefused(
                f"refusing to fetch {host}: it resolves to {address}, an internal address"
                f" (private, loopback, link-local, reserved or IPv4-embedding);"
                f" set {ALLOW_ENV} to allow it"
            )
    return addresses


class _CheckedResolver(AbstractResolver):
    """The connector's only source of addresses: every answer checked, all or none."""

    def __init__(self, policy: FetchPolicy, lookup: Lookup) -> None:
        self._policy = policy
        self._lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        addresses = check_addresses(host, await self._lookup(host, port), self._policy)
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


class _AddressRefused(PermissionError):
    """The socket factory's refusal (an OSError, so aiohttp reports it as a connect error)."""


def _open_socket(policy: FetchPolicy, addr_info: Any) -> socket.socket:
    family, kind, proto, _name, address = addr_info
    if not policy.permits(_parse_address(str(address[0]))):
        raise _AddressRefused(f"refusing to connect to {address[0]}, an internal address")
    return socket.socket(family, kind, proto)


class _HostSlots:
    """At most ``limit`` fetches talk to one host at once, first come first served."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}  # host -> slots, users

    @asynccontextmanager
    async def hold(self, host: str, limit: int, wait_s: float) -> AsyncIterator[None]:
        slots, users = self._slots.get(host) or (asyncio.Semaphore(limit), 0)
        self._slots[host] = (slots, users + 1)
        try:
            try:
                async with asyncio.timeout(wait_s):
                    await slots.acquire()
            except TimeoutError:
                delay = HOST_BUSY_SNOOZE_S * random.uniform(0.5, 1.5)
                raise Snooze(delay, f"{host} is busy ({limit} fetches in flight)") from None
            try:
                yield
            finally:
                slots.release()
        finally:
            users = self._slots[host][1] - 1
            if users:
                self._slots[host] = (slots, users)
            else:
                del self._slots[host]


class _Client:
    """One event loop's HTTP sessions (one per policy and lookup), host slots, DNS threads."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[FetchPolicy, Lookup], aiohttp.ClientSession] = {}
        self.host_slots = _HostSlots()
        self.lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="websurf-dns")
        self.parsers = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="websurf-parse")

    def session(self, policy: FetchPolicy, lookup: Lookup) -> aiohttp.ClientSession:
        found = self.sessions.get((policy, lookup))
        if found is None or found.closed:
            connector = aiohttp.TCPConnector(
                resolver=_CheckedResolver(policy, lookup),
                use_dns_cache=False,
                socket_factory=functools.partial(_open_socket, policy),
                limit=MAX_CONNECTIONS,
                limit_per_host=policy.per_host,
                keepalive_timeout=KEEPALIVE_S,
            )
            found = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=None, sock_read=None),
                headers=REQUEST_HEADERS,
            )
            self.sessions[(policy, lookup)] = found
        return found


_clients: dict[asyncio.AbstractEventLoop, _Client] = {}  # until close_sessions() on that loop


def _client() -> _Client:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = _Client()
    return client


async def close_sessions() -> None:
    """Close this event loop's HTTP sessions and their connections (at process shutdown)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await asyncio.gather(*(s.close() for s in client.sessions.values()))
        client.lookups.shutdown(wait=False, cancel_futures=True)
        client.parsers.shutdown(wait=False, cancel_futures=True)


class _TitleParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._in_title = False
        self.parts: list[str] = []
        self.done = False
        self.charset: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and not self.done:
            self._in_title = True
        elif tag == "meta" and self.charset is None:
            values = dict(attrs)
            if values.get("charset"):
                self.charset = values["charset"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.done = True

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.parts.append(data)


def page_title(body: bytes, charset: str | None) -> str | None:
    """The text of the first <title>, whitespace collapsed, or None.

    The charset is the Content-Type header's, else the page's <meta charset>, else UTF-8.
    """
    parser = _parse_title(body, charset or "utf-8")
    if charset is None and parser.charset and parser.charset.lower() not in {"utf-8", "utf8"}:
        parser = _parse_title(body, parser.charset)
    if not parser.parts:
        return None
    title = " ".join("".join(parser.parts).split())
    return title[:TITLE_MAX_CHARS] or None


def _parse_title(body: bytes, charset: str) -> _TitleParser:
    try:
        text = body.decode(charset, errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    parser = _TitleParser()
    for start in range(0, len(text), PARSE_CHUNK_CHARS):
        parser.feed(text[start : start + PARSE_CHUNK_CHARS])
        if parser.done:
            break
    return parser


@dataclass(frozen=True)
class Page:
    url: str
    status: int
    content_type: str
    body: bytes
    truncated: bool

    @property
    def title(self) -> str | None:
        if "html" not in self.content_type.lower():
            return None
        charset = None
        for part in self.content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset":
                charset = value.strip("\"' ")
        return page_title(self.body, charset)


async def fetch(
    url: str,
    policy: FetchPolicy | None = None,
    *,
    deadline: float | None = None,
    lookup: Lookup = system_lookup,
) -> Page:
    """GET ``url`` under ``policy``, following checked redirects; at most max_bytes are read.

    Raises FetchRefused (permanent), PermanentError (a 4xx answer), FetchFailed (worth
    retrying), Snooze (the host is busy with this process's other fetches) or SlowDown
    (the host answered 429, or 503 with Retry-After).
    """
    policy = policy or FetchPolicy.from_env()
    budget_s = policy.timeout_s
    if deadline is not None:
        budget_s = min(budget_s, deadline - time.monotonic())
    try:
        async with asyncio.timeout(budget_s) as scope:
            return await _follow(_checked_url(url, policy), policy, lookup, scope, deadline)
    except TimeoutError:
        raise FetchFailed(f"fetching {url}: timed out after {max(budget_s, 0):g}s") from None


async def _follow(
    url: URL,
    policy: FetchPolicy,
    lookup: Lookup,
    scope: asyncio.Timeout,
    deadline: float | None,
) -> Page:
    client = _client()
    session = client.session(policy, lookup)
    for _hop in range(policy.max_redirects + 1):
        assert url.raw_host is not None  # _checked_url refuses URLs without a host
        async with _host_slot(client, url.raw_host, policy, scope, deadline):
            page, location = await _get_once(session, url, policy)
        if location is None:
            return page
        try:
            url = _checked_url(url.join(URL(location)), policy)
        except ValueError:
            raise FetchRefused(f"{url} redirects to an invalid URL {location[:200]!r}") from None
    raise FetchRefused(f"more than {policy.max_redirects} redirects")


@asynccontextmanager
async def _host_slot(
    client: _Client, host: str, policy: FetchPolicy, scope: asyncio.Timeout, deadline: float | None
) -> AsyncIterator[None]:
    """Hold a slot of ``host``; the fetch's timeout (``scope``) stands still while waiting.

    The wait is bounded by the slot wait and, given the task's ``deadline``, by what the
    deadline leaves beyond the fetch's remaining time: past that, the task snoozes.
    """
    loop = asyncio.get_running_loop()
    when = scope.when()
    left = float("inf") if when is None else when - loop.time()  # the fetch's own time
    wait_s = policy.slot_wait_s
    if deadline is not None:
        wait_s = max(0.0, min(wait_s, deadline - time.monotonic() - left))
    if when is not None:
        scope.reschedule(loop.time() + left + wait_s)
    async with client.host_slots.hold(host, policy.per_host, wait_s):
        if when is not None:
            scope.reschedule(loop.time() + left)
        yield


def _checked_url(url: str | URL, policy: FetchPolicy) -> URL:
    """The URL, if its scheme, credentials, port and (literal) address may be fetched."""
    try:
        parsed = URL(url)
        scheme, host, _port = parsed.scheme.lower(), parsed.raw_host, parsed.port
    except ValueError as exc:
        raise FetchRefused(f"{str(url)[:200]!r} is not a valid URL: {exc}") from None
    if scheme not in {"http", "https"}:
        raise FetchRefused(f"only http and https URLs are fetched, not {scheme or 'no scheme'!r}")
    if parsed.user is not None or parsed.password is not None:
        raise FetchRefused("URLs with credentials are not fetched")
    if not host:
        raise FetchRefused(f"{str(url)[:200]!r} names no host")
    if ":" in host or host.replace(".", "").isdigit():  # what aiohttp connects to unresolved
        try:
            address = _parse_address(host)
        except ValueError:
            raise FetchRefused(f"{host!r} is not a canonical IP address") from None
        check_addresses(host, [str(address)], policy)
    return parsed


async def _get_once(
    session: aiohttp.ClientSession, url: URL, policy: FetchPolicy
) -> tuple[Page, str | None]:
    """One request: the page, and where it redirects to (None if it does not)."""
    try:
        async with session.get(url, allow_redirects=False) as response:
            status = response.status
            if status in SLOW_DOWN_STATUSES:
                _slow_down(url, status, response.headers.get("Retry-After"))
            if 500 <= status < 600:
                raise FetchFailed(f"{url} answered {status}")
            if 400 <= status < 500:
                raise PermanentError(f"{url} answered {status}")
            location = response.headers.get("Location")
            if status in REDIRECT_STATUSES and location:
                return Page(str(url), status, "", b"", False), location
            body, truncated = await _read_capped(response.content, policy.max_bytes)
            content_type = response.headers.get("Content-Type", "")
            return Page(str(url), status, content_type, body, truncated), None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, _AddressRefused):
            raise FetchRefused(str(exc.os_error)) from None
        raise FetchFailed(f"fetching {url.raw_host}: {exc}") from None
    except aiohttp.InvalidURL as exc:
        raise FetchRefused(f"{url} is not a valid URL: {exc}") from None
    except (OSError, aiohttp.ClientError) as exc:
        raise FetchFailed(f"fetching {url.raw_host}: {type(exc).__name__}: {exc}") from None


def _slow_down(url: URL, status: int, retry_after: str | None) -> None:
    """Raise SlowDown for a 429 (Retry-After or 30 s) or a 503 with Retry-After.

    The task's limit key (the URL's host, set at enqueue by migration 0026) then pauses
    on every worker until the host said to come back.
    """
    delay = pause_delay(retry_after, now=datetime.now(UTC))
    if delay is None and status == 429:
        delay = TOO_MANY_REQUESTS_PAUSE_S
    if delay is not None:
        raise SlowDown(delay, f"{url.raw_host} answered {status}, retry after {delay:g}s")


async def _read_capped(stream: aiohttp.StreamReader, max_bytes: int) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of the body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    while size < max_bytes:
        chunk = await stream.read(min(READ_CHUNK_BYTES, max_bytes - size))
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), bool(await stream.read(1))


async def web_title(task: Task, context: Context) -> Result:
    """The handler's body (registered, with a lazy import, in ``web.py``)."""
    value: Any = task.payload.get("url") or task.payload.get("input")
    url = "" if value is None else str(value).strip()
    if not url:
        return Result(output={"url": None, "title": None}, cell_content=None)
    if "://" not in url:
        url = "https://" + url
    page = await fetch(url, FetchPolicy.from_env(), deadline=context.deadline - PARSE_MARGIN_S)
    title = await asyncio.get_running_loop().run_in_executor(_client().parsers, lambda: page.title)
    context.log.info(
        "page_fetched", status=page.status, bytes=len(page.body), has_title=bool(title)
    )
    return Result(
        output={"url": page.url, "status": page.status, "title": title},
        cell_content=title or "",
    )
