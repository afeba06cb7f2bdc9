"""The benchmark's own certificate authority and nginx's certificate, made with ``openssl``.

Every contender trusts this CA explicitly (``SSL_CERT_FILE``, ``--cacert``, ``--ca-cert``...);
verification is never turned off, so the TLS work measured is the one a user's client does.
The keys stay in the work dir, readable by their owner only; a fresh pair is made per run
(milliseconds), so no certificate ever expires under a long-lived work dir.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = 7
_SERVER_EXTENSIONS = """\
subjectAltName = IP:127.0.0.1, DNS:localhost
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class Certificates:
    """The CA certificate to trust, and the server's certificate and key for nginx."""

    ca: Path
    cert: Path
    key: Path

    def client_env(self) -> dict[str, str]:
        """Environment variables that make clients trust the CA, and only it.

        ``SSL_CERT_FILE``: Python's ssl (httpx), OpenSSL, Go; ``CURL_CA_BUNDLE``: curl and
        htslib's libcurl reader. ``SSL_CERT_DIR`` is cleared so that the system's store
        (which may be set in the caller's environment) does not widen the trust.
        """
        return {"SSL_CERT_FILE": str(self.ca), "CURL_CA_BUNDLE": str(self.ca),
                "SSL_CERT_DIR": ""}


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.decode(errors='replace')}")


def make(directory: Path) -> Certificates:
    """A new CA (P-256) and a server certificate for 127.0.0.1 and localhost, signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text(_SERVER_EXTENSIONS)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", str(DAYS),
             "-subj", "/CN=flowfs bench CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", str(DAYS), "-extfile", str(ext))
    for secret in (ca_key, key):
        os.chmod(secret, 0o600)
    return Certificates(ca=ca, cert=cert, key=key)
