"""Which proxy a URL goes through: ``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``.

One answer for every request of a mount, so the lean receive (``transport``, ``tls``)
and httpx route a URL the same way: the environment as Python's ``urllib`` reads it
(lower- and upper-case names; ``NO_PROXY`` host names, domains and ``*``), which is
also how curl and rclone read it.
"""

from __future__ import annotations

import urllib.request

import httpx


def proxy_for(url: str | httpx.URL) -> httpx.URL | None:
    """The proxy for ``url``, or None to go straight to the server."""
    parsed = httpx.URL(url)
    proxies = urllib.request.getproxies_environment()
    chosen = proxies.get(parsed.scheme) or proxies.get("all")
    if not chosen:
        return None
    host = parsed.host if parsed.port is None else f"{parsed.host}:{parsed.port}"
    if urllib.request.proxy_bypass_environment(host, proxies):  # type: ignore[attr-defined]
        return None
    return httpx.URL(chosen if "://" in chosen else f"http://{chosen}")


def tunnels(url: str | httpx.URL) -> bool:
    """Whether the lean path can reach ``url``: directly, or HTTPS through a CONNECT tunnel.

    Plain HTTP through a proxy (absolute-URI requests) and anything through an HTTPS
    proxy (TLS inside TLS) are left to httpx.
    """
    parsed = httpx.URL(url)
    proxy = proxy_for(parsed)
    return proxy is None or (parsed.scheme == "https" and proxy.scheme == "http")
