"""The daemon's log: redaction of secrets, other libraries kept quiet, private rotated files."""

from __future__ import annotations

import io
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from flowfs.logs import (
    BACKUPS,
    REDACTED,
    LogLevels,
    Redactor,
    format_levels,
    parse_levels,
    setup,
)

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInR5cCI6InJlZnJlc2gifQ"
       ".RSB5z0m5bYVX9ftSbAL9vUWfV3bvB8idbdn1di_O_lg")

# What httpcore logged at DEBUG for the login reply before: a working refresh token.
HTTPCORE_LOGIN_REPLY = (
    "receive_response_headers.complete return_value=(b'HTTP/1.1', 200, b'OK', [(b'date', "
    "b'Sun, 06 Dec 2026 00:04:56 GMT'), (b'content-type', b'application/json'), "
    f"(b'set-cookie', b'flow_refresh_token={JWT}; HttpOnly; Max-Age=604800; Path=/')])"
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("flowfs").level,
             logging.getLogger("httpcore").level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("flowfs").setLevel(saved[2])
    logging.getLogger("httpcore").setLevel(saved[3])


def test_httpcores_header_dump_loses_the_refresh_cookie() -> None:
    out = Redactor().redact(HTTPCORE_LOGIN_REPLY)
    assert "set-cookie" in out and JWT not in out
    assert JWT.split(".")[2] not in out and "b'OK'" in out  # the rest stays readable


# A token or cookie value: RFC 7235's token68 alphabet, as bearer tokens and JWTs use.
token = st.from_regex(r"[A-Za-z0-9._~+/-]{8,60}=*", fullmatch=True)
password = st.text(st.characters(min_codepoint=32, max_codepoint=126,
                                 blacklist_characters="'\"\\"), min_size=8, max_size=40)
CARRIERS = (
    "Authorization: Bearer {}",
    "headers={{'Authorization': 'Bearer {}'}}",
    "[(b'authorization', b'Bearer {}')]",
    "[(b'cookie', b'flow_refresh_token={}')]",
    "Cookie: flow_refresh_token={}; other=1",
    "set-cookie: flow_refresh_token={}; HttpOnly",
    "GET /token?refresh_token={}&x=1",
    "{{\"token\": \"{}\", \"user\": \"alice\"}}",
    "json={{'username': 'alice', 'password': '{}'}}",
    "https://alice:{}@proxy.example:3128",
)


@given(secret=token)
def test_a_token_in_any_usual_carrier_is_redacted(secret: str) -> None:
    redactor = Redactor()
    for carrier in CARRIERS:
        text = carrier.format(secret)
        assert secret not in redactor.redact(text), text


@given(secret=password, before=st.text(max_size=30), after=st.text(max_size=30))
def test_a_known_secret_is_redacted_wherever_it_appears(secret: str, before: str,
                                                        after: str) -> None:
    assume(secret not in REDACTED)  # else the marker itself would "contain" it
    redactor = Redactor()
    redactor.add_secrets([secret, None, ""])
    assert secret not in redactor.redact(before + secret + after)


def test_jwts_are_redacted_even_without_a_name() -> None:
    out = Redactor().redact(f"refreshed: {JWT} (for alice)")
    assert JWT not in out and "(for alice)" in out


def test_ordinary_lines_are_left_alone() -> None:
    line = "read samples/liver_1/reads.fq.gz (data id 42) at 0+131072 failed: ReadTimeout"
    assert Redactor().redact(line) == line


def logged(levels: LogLevels, *records: tuple[str, int, str]) -> str:
    stream = io.StringIO()
    setup(levels, stream=stream)
    for name, level, message in records:
        logging.getLogger(name).log(level, message)
    return stream.getvalue()


def test_debug_is_ours_alone_other_libraries_log_warnings_only() -> None:
    out = logged(parse_levels("debug"),
                 ("flowfs.ops", logging.DEBUG, "lookup ours"),
                 ("httpcore.http11", logging.DEBUG, HTTPCORE_LOGIN_REPLY),
                 ("httpx", logging.INFO, "HTTP Request: GET /api/me"),
                 ("pyfuse3", logging.DEBUG, "pyfuse3 internals"),
                 ("httpx", logging.WARNING, "a warning of theirs"))
    assert "lookup ours" in out and "a warning of theirs" in out
    assert "receive_response_headers" not in out and "HTTP Request" not in out
    assert "pyfuse3 internals" not in out


def test_a_library_that_sets_its_own_level_is_still_kept_quiet() -> None:
    stream = io.StringIO()
    setup(parse_levels("debug"), stream=stream)
    logging.getLogger("httpcore").setLevel(logging.DEBUG)
    logging.getLogger("httpcore.http11").debug("%s", HTTPCORE_LOGIN_REPLY)
    assert stream.getvalue() == ""


def test_asked_for_by_name_a_library_logs_but_redacted() -> None:
    out = logged(parse_levels("warning,httpcore=debug"),
                 ("httpcore.http11", logging.DEBUG, HTTPCORE_LOGIN_REPLY),
                 ("flowfs.ops", logging.DEBUG, "lookup ours"))
    assert "receive_response_headers" in out and JWT not in out
    assert "lookup ours" not in out


def test_tracebacks_are_redacted_too() -> None:
    stream = io.StringIO()
    setup(parse_levels("warning"), stream=stream)
    try:
        raise RuntimeError(f"Authorization: Bearer {JWT}")
    except RuntimeError:
        logging.getLogger("flowfs.x").exception("failed")
    out = stream.getvalue()
    assert "RuntimeError" in out and JWT not in out


@pytest.mark.parametrize("spec, expected", [
    ("debug", "debug"), ("INFO", "info"), ("", "warning"),
    ("debug,httpx=info", "debug,httpx=info"), ("fuse=debug,error", "error,fuse=debug"),
    ("flowfs=info", "info"),
])
def test_level_specs(spec: str, expected: str) -> None:
    assert format_levels(parse_levels(spec)) == expected


def test_fuse_debug_only_when_named() -> None:
    assert not parse_levels("debug").fuse_debug
    assert parse_levels("info,fuse=debug").fuse_debug


@pytest.mark.parametrize("spec", ["loud", "httpx=verbose", "a b=debug"])
def test_a_bad_level_spec_says_which_part(spec: str) -> None:
    with pytest.raises(ValueError, match="level|logger name"):
        parse_levels(spec)


def test_the_log_file_is_private_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "mount.log"
    setup(parse_levels("debug"), path=path, max_bytes=64 * 1024)
    log = logging.getLogger("flowfs.test")
    for i in range(20_000):  # about 1.5 MB of records
        log.debug("record %06d of a long-running mount", i)
    logging.getLogger().handlers[0].flush()
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["mount.log"] + [f"mount.log.{i}"
                                                      for i in range(1, BACKUPS + 1)]
    assert sum(f.stat().st_size for f in files) <= (BACKUPS + 1) * 64 * 1024
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert "record 019999" in path.read_text()
