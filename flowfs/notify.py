"""The service manager's readiness protocol (sd_notify), without a dependency.

systemd (``Type=notify``) passes ``$NOTIFY_SOCKET``, a unix datagram socket:
a path, or ``@name`` in the abstract namespace. The daemon sends ``READY=1``
once the mount answers and ``STOPPING=1`` when it begins to unmount. Outside
systemd there is no socket and every call does nothing. Sending never raises:
a service manager that went away must not take the mount down with it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

ENV = "NOTIFY_SOCKET"


def socket_address(value: str) -> str | None:
    """The address to send to, or None for one we cannot use (e.g. vsock)."""
    if value.startswith("@"):
        return "\0" + value[1:]  # the abstract namespace
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends state lines to the service manager at ``address`` (None: nowhere)."""

    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_environment(cls, env: MutableMapping[str, str] | None = None) -> Notifier:
        """Take ``$NOTIFY_SOCKET`` out of the environment (children must not inherit it)."""
        env = os.environ if env is None else env
        value = env.pop(ENV, "")
        address = socket_address(value) if value else None
        if value and address is None:
            log.warning("ignoring NOTIFY_SOCKET=%s: only unix sockets are supported", value)
        return cls(address)

    def send(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False if nothing was delivered."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("cannot notify the service manager: %s", exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))
