"""Where ``websurf dashboard`` may listen: loopback only, unless credentials are set."""

from __future__ import annotations

import pytest

from websurf.worker.dashboard.security import Access
from websurf.worker.dashboard.server import BindRefused, access_from, check_bind


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_credentials(host: str) -> None:
    check_bind(host, Access())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "dashboard.example.com"])
def test_any_other_address_needs_credentials(host: str) -> None:
    with pytest.raises(BindRefused, match="without authentication"):
        check_bind(host, Access())
    with pytest.raises(BindRefused):  # a trusted user header is no authentication
        check_bind(host, Access(user_header="X-Forwarded-User"))
    check_bind(host, Access(token="t"))
    check_bind(host, Access(user="ada", password="p"))


def test_credentials_come_from_the_environment() -> None:
    assert access_from({"WEBSURF_DASHBOARD_TOKEN": "t"}) == Access(token="t")
    assert access_from({"WEBSURF_DASHBOARD_TOKEN": ""}) == Access()  # empty is unset
    assert access_from(
        {"WEBSURF_DASHBOARD_USER": "ada", "WEBSURF_DASHBOARD_PASSWORD": "p"}
    ) == Access(user="ada", password="p")
    with pytest.raises(BindRefused, match="set both"):
        access_from({"WEBSURF_DASHBOARD_PASSWORD": "p"})
