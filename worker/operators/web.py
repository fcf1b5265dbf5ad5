"""``web_title``: fetch the URL in the edited cell and write the page's <title>.

Design note
-----------
The worker runs inside the network it is deployed in, so a URL typed into a cell must
not become a way into that network (SSRF). The guard:

* Only ``http`` and ``https``; no credentials in the URL; no proxy (http.client never
  reads proxy variables).
* The host name is resolved once; every address it resolves to must be public
  (``ipaddress`` ``is_global``, not multicast; IPv4 inside IPv6 is unwrapped). Any
  internal address refuses the whole URL. The connection then goes to the address that
  was checked (a DNS answer that changes between check and connect cannot slip an
  internal address in), while the Host header and the TLS server name stay the host
  name, so certificates are still verified against it.
* Redirects are followed by hand, at most ``MAX_REDIRECTS``, each hop checked the same
  way. One deadline covers the whole fetch; at most ``MAX_BYTES`` are read.
* Internal addresses are allowed only when configured: ``WEBSURF_FETCH_ALLOW`` lists
  networks (``127.0.0.1/32,10.1.0.0/16``) that may be fetched, and
  ``WEBSURF_FETCH_ALLOW_PRIVATE=1`` allows every address (development only).

A refused or malformed URL fails the task at once (retrying cannot help); network
errors and 5xx answers are retried with the operator's backoff.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

from websurf.worker.registry import Context, PermanentError, Result, Task, operator

FETCH_TIMEOUT_S = 10.0
MAX_BYTES = 1024 * 1024  # read at most this much of a page
MAX_REDIRECTS = 5
READ_CHUNK_BYTES = 16 * 1024
TITLE_MAX_CHARS = 500
USER_AGENT = "websurf-web-title/0.1"
ALLOW_ENV = "WEBSURF_FETCH_ALLOW"
ALLOW_PRIVATE_ENV = "WEBSURF_FETCH_ALLOW_PRIVATE"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]


class FetchRefused(PermanentError):
    """The URL may not be fetched (scheme, credentials, internal address, too many hops)."""


class FetchFailed(Exception):
    """The fetch failed in a way that may work later (network error, 5xx)."""


@dataclass(frozen=True)
class FetchPolicy:
    """Which addresses may be fetched, and the limits of one fetch."""

    allow_networks: tuple[Network, ...] = ()
    allow_private: bool = False
    timeout_s: float = FETCH_TIMEOUT_S
    max_bytes: int = MAX_BYTES
    max_redirects: int = MAX_REDIRECTS

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FetchPolicy:
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
        return cls(tuple(networks), allow_private)

    def permits(self, address: Address) -> bool:
        if self.allow_private or any(address in net for net in self.allow_networks):
            return True
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


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, for TCP."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchFailed(f"cannot resolve {host}: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_address(host: str, port: int, policy: FetchPolicy, resolver: Resolver) -> str:
    """The address to connect to, after checking every address ``host`` resolves to."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    if not addresses:
        raise FetchFailed(f"{host} resolves to no address")
    for address in addresses:
        if not policy.permits(address):
            raise FetchRefused(
                f"refusing to fetch {host}: it resolves to {address}, an internal address"
                f" (private, loopback, link-local or reserved); set {ALLOW_ENV} to allow it"
            )
    return str(addresses[0])


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
    """The text of the first <title>, whitespace collapsed, or None."""
    try:
        text = body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    parser = _TitleParser()
    parser.feed(text)
    if not parser.parts:
        return None
    title = " ".join("".join(parser.parts).split())
    return title[:TITLE_MAX_CHARS] or None


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


def fetch(
    url: str,
    policy: FetchPolicy | None = None,
    *,
    deadline: float | None = None,
    resolver: Resolver = resolve,
) -> Page:
    """GET ``url`` under ``policy``, following checked redirects; at most max_bytes are read."""
    policy = policy or FetchPolicy.from_env()
    end = time.monotonic() + policy.timeout_s
    if deadline is not None:
        end = min(end, deadline)
    for _hop in range(policy.max_redirects + 1):
        status, headers, body, truncated = _get_once(url, policy, end, resolver)
        location = headers.get("location")
        if status in REDIRECT_STATUSES and location:
            url = urljoin(url, location)
            continue
        return Page(url, status, headers.get("content-type", ""), body, truncated)
    raise FetchRefused(f"more than {policy.max_redirects} redirects")


def _remaining(end: float) -> float:
    left = end - time.monotonic()
    if left <= 0:
        raise FetchFailed("the fetch ran out of time")
    return left


def _get_once(
    url: str, policy: FetchPolicy, end: float, resolver: Resolver
) -> tuple[int, dict[str, str], bytes, bool]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise FetchRefused(f"only http and https URLs are fetched, not {scheme or 'no scheme'!r}")
    if parts.username or parts.password:
        raise FetchRefused("URLs with credentials are not fetched")
    if not parts.hostname:
        raise FetchRefused(f"{url!r} names no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise FetchRefused(f"{url!r} has an invalid port") from None
    address = checked_address(parts.hostname, port, policy, resolver)

    def connect_checked(
        _where: tuple[str, int], timeout: float, source: tuple[str, int] | None = None
    ) -> socket.socket:
        return socket.create_connection((address, port), timeout, source)

    timeout = _remaining(end)
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    conn._create_connection = connect_checked  # type: ignore[attr-defined]  # pin the checked IP
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        conn.request(
            "GET",
            path,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "text/html",
                "Accept-Encoding": "identity",
            },
        )
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        chunks: list[bytes] = []
        size = 0
        truncated = False
        while size < policy.max_bytes:
            if conn.sock is not None:
                conn.sock.settimeout(_remaining(end))
            chunk = response.read(min(READ_CHUNK_BYTES, policy.max_bytes - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        else:
            truncated = bool(response.read(1))
    except (OSError, http.client.HTTPException) as exc:
        raise FetchFailed(f"fetching {parts.hostname}: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    status = response.status
    if 500 <= status < 600:
        raise FetchFailed(f"{url} answered {status}")
    if 400 <= status < 500:
        raise PermanentError(f"{url} answered {status}")
    return status, headers, b"".join(chunks), truncated


@operator("web_title", timeout_s=FETCH_TIMEOUT_S + 5.0)
def web_title(task: Task, context: Context) -> Result:
    value: Any = task.payload.get("url") or task.payload.get("input")
    url = "" if value is None else str(value).strip()
    if not url:
        return Result(output={"url": None, "title": None}, cell_content=None)
    if "://" not in url:
        url = "https://" + url
    page = fetch(url, FetchPolicy.from_env(), deadline=context.deadline - 1.0)
    title = page.title
    context.log.info(
        "page_fetched", status=page.status, bytes=len(page.body), has_title=bool(title)
    )
    return Result(
        output={"url": page.url, "status": page.status, "title": title},
        cell_content=title or "",
    )
