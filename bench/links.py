"""The links a benchmark profile emulates between a user and Flow: TLS or not, delay, rate.

Users reach Flow over HTTPS across the internet, where every request waits for a round
trip and one connection moves only so many bytes a second. nginx emulates that on loopback
for the files *and* for the API (``bench.nginx`` renders it): each request waits ``delay_s``
before nginx answers it (the echo module's ``echo_sleep``) and each reply is sent at no more
than ``rate_mib_s`` (``limit_rate``). The cap is per reply, as a long-distance TCP
connection's own window limits it; parallel connections each get the cap, and no total cap
on the link is emulated (on loopback, the two cores are the total cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Link:
    """One emulated network path, by name."""

    name: str
    tls: bool
    delay_s: float = 0.0  # added before nginx answers each request
    rate_mib_s: int = 0  # per reply; 0: no cap
    description: str = ""

    @property
    def emulated(self) -> bool:
        """Whether requests go through the delay-and-cap locations (the echo module)."""
        return self.delay_s > 0 or self.rate_mib_s > 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def api_via_nginx(self) -> bool:
        """The API behind nginx (TLS, delay); only the old plain profile talks to it directly."""
        return self.tls or self.emulated

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


LINKS = {link.name: link for link in (
    Link("http-loopback", tls=False,
         description="plain HTTP on loopback, API straight to the server: the setup of the "
                     "numbers before HTTPS became the default"),
    Link("loopback", tls=True, description="HTTPS on loopback, no delay, no cap"),
    Link("wan10", tls=True, delay_s=0.010, rate_mib_s=100,
         description="HTTPS, 10 ms per request, 100 MiB/s per reply"),
    Link("wan50", tls=True, delay_s=0.050, rate_mib_s=50,
         description="HTTPS, 50 ms per request, 50 MiB/s per reply"),
    Link("wan100", tls=True, delay_s=0.100, rate_mib_s=25,
         description="HTTPS, 100 ms per request, 25 MiB/s per reply"),
)}
DEFAULT = ("loopback", "wan50")


def select(names: Sequence[str] | None) -> list[Link]:
    """The links named (each at most once, in the order given); ``all``: every one."""
    if not names:
        names = DEFAULT
    wanted: list[str] = []
    for part in names:
        for name in (n.strip() for n in part.split(",")):
            if name == "all":
                wanted += list(LINKS)
            elif name:
                wanted.append(name)
    unknown = [n for n in wanted if n not in LINKS]
    if unknown:
        raise ValueError(f"unknown profiles {unknown}; choose among {[*LINKS, 'all']}")
    return [LINKS[n] for n in dict.fromkeys(wanted)]
