"""web_title's address policy: which addresses may be fetched, and its configuration."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from websurf.worker.app.operators import web
from websurf.worker.app.operators.web import FetchPolicy
from websurf.worker.core.registry import PermanentError

STRICT = FetchPolicy()


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("64:ff9b::808:808", "NAT64 well-known prefix (64:ff9b::/96), even of a public IPv4"),
        ("64:ff9b::a9fe:a9fe", "NAT64 of the cloud metadata address"),
        ("64:ff9b:1::a00:1", "NAT64 local-use prefix (64:ff9b:1::/48)"),
        ("64:ff9b:1:ffff::1", "anywhere in 64:ff9b:1::/48"),
        ("::a00:1", "IPv4-compatible (::/96) 10.0.0.1"),
        ("::808:808", "IPv4-compatible (::/96), even of a public IPv4"),
        ("::ffff:0:a00:1", "IPv4-translated (::ffff:0:0:0/96) 10.0.0.1"),
        ("::ffff:0:808:808", "IPv4-translated, even of a public IPv4"),
        ("::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("2002:a00:1::1", "6to4 of 10.0.0.1"),
        ("2002:a9fe:a9fe::", "6to4 of 169.254.169.254"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo whose client is 10.0.0.1"),
    ],
)
def test_ipv6_addresses_that_carry_an_ipv4_address_are_refused(address: str, why: str) -> None:
    assert not STRICT.permits(ipaddress.ip_address(address)), why


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700::6810:84e5", "2002:808:808::1"]
)
def test_public_addresses_are_permitted(address: str) -> None:
    assert STRICT.permits(ipaddress.ip_address(address))


def test_an_allowed_network_wins_over_the_embedding_rule() -> None:
    allowed = FetchPolicy(allow_networks=(ipaddress.ip_network("64:ff9b::/96"),))

    assert allowed.permits(ipaddress.ip_address("64:ff9b::808:808"))
    assert not allowed.permits(ipaddress.ip_address("64:ff9b:1::808:808"))
    assert FetchPolicy(allow_private=True).permits(ipaddress.ip_address("::a00:1"))


def test_the_policy_is_read_from_the_environment() -> None:
    policy = FetchPolicy.from_env(
        {web.ALLOW_ENV: "127.0.0.1/32; 10.1.0.0/16", web.PER_HOST_ENV: "7"}
    )

    assert policy.allow_networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.1.0.0/16"),
    )
    assert policy.per_host == 7 and not policy.allow_private
    assert FetchPolicy.from_env({}).per_host == web.PER_HOST_CONNECTIONS
    assert FetchPolicy.from_env({web.ALLOW_PRIVATE_ENV: "yes"}).allow_private


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({web.ALLOW_ENV: "intranet"}, "WEBSURF_FETCH_ALLOW: 'intranet' is not a network"),
        ({web.PER_HOST_ENV: "0"}, "WEBSURF_FETCH_PER_HOST: '0' is not a positive integer"),
        ({web.PER_HOST_ENV: "four"}, "WEBSURF_FETCH_PER_HOST: 'four' is not a positive integer"),
    ],
)
def test_a_bad_setting_is_one_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(PermanentError) as raised:
        FetchPolicy.from_env(environ)

    assert str(raised.value) == message


def test_the_socket_factory_opens_only_permitted_addresses() -> None:
    refused = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::a00:1", 80, 0, 0))
    with pytest.raises(PermissionError, match=r"refusing to connect to 64:ff9b::a00:1"):
        web._open_socket(STRICT, refused)

    with web._open_socket(STRICT, (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80))):
        pass  # created, never connected


def test_the_title_is_decoded_with_the_right_charset() -> None:
    latin1 = "<title>Crème</title>".encode("latin-1")

    assert web.page_title(latin1, "iso-8859-1") == "Crème"
    assert web.page_title(b'<meta charset="latin-1">' + latin1, None) == "Crème"
    assert web.page_title(latin1, "no-such-charset") == "Cr\ufffdme"
    assert web.page_title(b"<title>  a \n b </title><title>second</title>", None) == "a b"
    assert web.page_title(b"<p>no title</p>", None) is None
