"""nginx in front of everything a contender reaches: the files, and the API of a reference server.

One nginx per profile, on a free loopback port: TLS with the bench's own certificate (plain
HTTP for the old ``http-loopback`` profile), and on an emulated link each request first waits
in a location that does ``echo_sleep`` (the echo module, ``libnginx-mod-http-echo``), then
``echo_exec``\\ s a named location that serves the file (Range and HEAD as usual) or proxies
the API, with ``limit_rate`` capping the reply. The files are nginx's own static files; the
reference server only maintains the ``downloads/<id>/<filename>`` symlinks they are named by.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.links import Link
from bench.procs import DEADLINE, BenchError, Child, Workspace, free_port, port_open, wait_for
from bench.tls import Certificates

ECHO_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules",
                    "/usr/lib64/nginx/modules", "/etc/nginx/modules")

_CONF = """\
daemon off;
master_process on;
worker_processes 2;
{load_module}
{user}
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    log_format files '$request_method $uri $status $body_bytes_sent';
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {home}/tmp/body;
    proxy_temp_path {home}/tmp/proxy;
    fastcgi_temp_path {home}/tmp/fastcgi;
    uwsgi_temp_path {home}/tmp/uwsgi;
    scgi_temp_path {home}/tmp/scgi;
{upstream}
    server {{
        listen 127.0.0.1:{port}{ssl};
{tls}
{locations}
    }}
}}
"""
_TLS = """\
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:bench_tls:10m;
"""
_UPSTREAM = """\
    upstream flow_api {{
        server {hostport};
        keepalive 32;
    }}
"""
_FILES = """\
            root {export};
            autoindex on;
            disable_symlinks off;
            access_log {home}/files.log files;
"""
_API = """\
            proxy_pass http://flow_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
"""


@dataclass(frozen=True)
class Endpoints:
    """Where a contender finds the files and the API, as it would name them.

    ``files_log``: nginx's log of the file requests it answered, one line each (method,
    path, status, bytes): what a contender asked of the "server", counted by the server.
    """

    files: str
    api: str
    files_log: Path | None = None

    def file_requests(self) -> int:
        """How many file requests nginx has logged so far (0 before the first).

        nginx logs a request once it has sent the reply: a client may see the reply a
        moment before the line is written (``settled_file_requests`` waits for it).
        """
        if self.files_log is None or not self.files_log.exists():
            return 0
        with open(self.files_log, "rb") as fh:
            return sum(1 for _ in fh)

    def settled_file_requests(self, quiet: float = 0.5) -> int:
        """``file_requests()`` once it has not changed for ``quiet`` seconds."""
        count, since = self.file_requests(), time.monotonic()
        while time.monotonic() - since < quiet:
            time.sleep(0.05)
            now = self.file_requests()
            if now != count:
                count, since = now, time.monotonic()
        return count


def nginx_binary() -> str:
    """nginx, which lives in sbin: not on every user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin") or "nginx"


def echo_module() -> Path | None:
    """The echo module's shared object, where Debian and others install it; None if absent."""
    for directory in ECHO_MODULE_DIRS:
        path = Path(directory) / "ngx_http_echo_module.so"
        if path.exists():
            return path
    return None


def _user() -> str:
    # As root, nginx would run its workers as nobody, who may not read the work dir.
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"


def _location(prefix: str, name: str, body: str, link: Link) -> str:
    """A location serving ``body``: directly, or after the link's delay and under its cap."""
    if not link.emulated:
        return f"        location {prefix} {{\n{body}        }}\n"
    cap = f"            limit_rate {link.rate_mib_s * 1024 * 1024};\n" if link.rate_mib_s else ""
    # echo_sleep is a timer, not a blocked worker; echo_exec then redirects internally to
    # the named location, where the static or proxy handler answers as it would directly.
    return (f"        location {prefix} {{\n            echo_sleep {link.delay_s:.3f};\n"
            f"            echo_exec @{name};\n        }}\n"
            f"        location @{name} {{\n{body}{cap}        }}\n")


def render(home: Path, port: int, link: Link, *, export: Path | None = None,
           api_hostport: str = "", certs: Certificates | None = None) -> str:
    """nginx.conf for one profile: files from ``export`` and/or the API at ``api_hostport``."""
    load = ""
    if link.emulated:
        module = echo_module()
        if module is None:
            raise BenchError(f"profile {link.name} needs nginx's echo module: "
                             "apt-get install libnginx-mod-http-echo")
        load = f"load_module {module};"
    if link.tls and certs is None:
        raise BenchError(f"profile {link.name} needs certificates")
    locations = ""
    if export is not None:
        locations += _location("/downloads/", "files", _FILES.format(export=export, home=home),
                               link)
    if api_hostport:
        locations += _location("/api/", "api", _API, link)
    return _CONF.format(
        load_module=load, user=_user(), home=home, port=port,
        ssl=" ssl" if link.tls else "",
        tls=_TLS.format(cert=certs.cert, key=certs.key) if link.tls and certs else "",
        upstream=_UPSTREAM.format(hostport=api_hostport) if api_hostport else "",
        locations=locations.rstrip("\n"))


@contextlib.contextmanager
def gateway(ws: Workspace, name: str, link: Link, *, export: Path | None = None,
            api: str = "", certs: Certificates | None = None) -> Iterator[Endpoints]:
    """nginx for ``link`` in front of ``export`` and/or the API at ``api``; yields the URLs.

    Without TLS and delay (``http-loopback``) the API stays the server's own URL, as in
    the numbers measured before nginx fronted the API.
    """
    via_nginx = bool(api) and link.api_via_nginx
    home = ws.dir("nginx", name)
    ws.dir("nginx", name, "tmp")
    port = free_port()
    conf = home / "nginx.conf"
    conf.write_text(render(home, port, link, export=export,
                           api_hostport=urlsplit(api).netloc if via_nginx else "", certs=certs))
    argv = [nginx_binary(), "-c", str(conf), "-p", str(home), "-e", str(home / "error.log")]
    child = Child(f"nginx-{name}", argv, ws.log(f"nginx-{name}"), pidfile=ws.pidfile).start()
    try:
        wait_for(lambda: child.check_alive() and port_open(port), DEADLINE, f"nginx ({name})")
        base = f"{link.scheme}://127.0.0.1:{port}"
        yield Endpoints(files=base, api=f"{base}{urlsplit(api).path}" if via_nginx else api,
                        files_log=home / "files.log" if export is not None else None)
    finally:
        child.stop()
