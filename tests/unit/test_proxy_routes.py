"""Which proxy a URL goes through: the same answer for the lean path and for httpx."""

from __future__ import annotations

import httpx
import pytest

from flowfs.proxy import proxy_for, tunnels

NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_no_proxy_variables_mean_straight_to_the_server(env: pytest.MonkeyPatch) -> None:
    assert proxy_for("https://files.flow.bio/downloads/1/x") is None
    assert tunnels("https://files.flow.bio/") and tunnels("http://127.0.0.1:8000/")


def test_each_scheme_has_its_proxy_and_no_proxy_exempts_hosts(
        env: pytest.MonkeyPatch) -> None:
    env.setenv("https_proxy", "http://user:pw@proxy.lab:3128")
    env.setenv("HTTP_PROXY", "proxy.lab:8080")  # without a scheme, as many sites write it
    env.setenv("NO_PROXY", "localhost,.internal.org")
    assert proxy_for("https://files.flow.bio/x") == httpx.URL("http://user:pw@proxy.lab:3128")
    assert proxy_for("http://files.flow.bio/x") == httpx.URL("http://proxy.lab:8080")
    assert proxy_for("https://flow.internal.org/x") is None
    assert proxy_for("http://localhost:8000/x") is None
    assert tunnels("https://files.flow.bio/x")  # CONNECT, then our own TLS
    assert not tunnels("http://files.flow.bio/x")  # absolute-URI requests: httpx's
    env.setenv("NO_PROXY", "*")
    assert proxy_for("https://files.flow.bio/x") is None


def test_all_proxy_covers_what_has_no_proxy_of_its_own(env: pytest.MonkeyPatch) -> None:
    env.setenv("ALL_PROXY", "http://proxy.lab:3128")
    assert proxy_for("https://files.flow.bio/x") == httpx.URL("http://proxy.lab:3128")
