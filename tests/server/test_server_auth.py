"""Logins, refresh cookies, bearer tokens and API keys, including the official client."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest
from flowbio.v2 import Client, ClientConfig, UsernamePasswordCredentials
from flowbio.v2.auth import TokenCredentials
from flowbio.v2.exceptions import AuthenticationError, BadRequestError

CAROL_API_KEY = "carol-static-api-key"


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_login_answers_token_user_and_httponly_refresh_cookie(server, http):
    reply = http.post(f"{server.api}/login", json={"username": "alice", "password": "alice-pw"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["user"] == {"id": "1", "username": "alice", "name": "Alice A."}
    claims = _claims(body["token"])
    assert claims["sub"] == "alice" and claims["exp"] > time.time()
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith("flow_refresh_token=")
    assert "httponly" in cookie.lower() and "Path=/" in cookie


@pytest.mark.parametrize("body", [
    {"username": "alice", "password": "wrong"},
    {"username": "nobody", "password": "alice-pw"},
    {"username": "alice"},
    {"password": "alice-pw"},
    {"username": 1, "password": ["x"]},
])
def test_bad_credentials_are_400(server, http, body):
    reply = http.post(f"{server.api}/login", json=body)
    assert reply.status_code == 400
    assert reply.json()["error"] == "Invalid credentials"
    assert "set-cookie" not in reply.headers


def test_login_body_must_be_json_object_and_bounded(server, http):
    assert http.post(f"{server.api}/login", content=b"not json").status_code == 400
    assert http.post(f"{server.api}/login", json=["alice"]).status_code == 400
    big = http.post(f"{server.api}/login", content=b"{" + b" " * (2**20 + 10) + b"}",
                    headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert big.json()["status"] == 413


def test_refresh_cookie_gives_a_new_working_token(server):
    with httpx.Client(timeout=30) as client:
        login = client.post(f"{server.api}/login",
                            json={"username": "bob", "password": "bob-pw"})
        assert login.status_code == 200
        reply = client.get(f"{server.api}/token")
        assert reply.status_code == 200
        token = reply.json()["token"]
        assert reply.json()["user"]["username"] == "bob"
        me = client.get(f"{server.api}/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["username"] == "bob"


def test_refresh_without_cookie_is_400(server, http):
    reply = http.get(f"{server.api}/token")
    assert reply.status_code == 400
    assert reply.json()["error"] == "No refresh token supplied"


@pytest.mark.parametrize("kind", ["garbage", "access-token", "tampered"])
def test_refresh_with_bad_cookie_is_400(server, http, log_in, kind):
    access = log_in(http, server.api, "alice")
    if kind == "garbage":
        cookie = "not-a-token"
    elif kind == "access-token":
        cookie = access  # an access token is not a refresh token
    else:
        head, _, sig = access.split(".")
        cookie = f"{head}.{_b64({'sub': 'alice', 'typ': 'refresh', 'exp': 2**40})}.{sig}"
    reply = http.get(f"{server.api}/token", headers={"Cookie": f"flow_refresh_token={cookie}"})
    assert reply.status_code == 400
    assert reply.json()["error"] == "Refresh token not valid"


def test_me_needs_a_token(server, http, tokens):
    anonymous = http.get(f"{server.api}/me")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"error": "Authentication required", "code": "UNAUTHENTICATED",
                                "status": 401}
    me = http.get(f"{server.api}/me", headers=tokens["carol"])
    assert me.json() == {"id": "3", "username": "carol", "name": "Carol C."}


def _forged(kind: str, valid: str) -> str:
    exp = int(time.time()) + 600
    if kind == "alg-none":
        claims = {"sub": "alice", "typ": "access", "exp": exp}
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    if kind == "tampered":
        head, _, sig = valid.split(".")
        return f"{head}.{_b64({'sub': 'carol', 'typ': 'access', 'exp': exp})}.{sig}"
    if kind == "other-secret":
        return jwt.encode({"sub": "alice", "typ": "access", "exp": exp}, b"k" * 32, "HS256")
    if kind == "no-exp":
        return jwt.encode({"sub": "alice", "typ": "access"}, b"k" * 32, "HS256")
    if kind == "truncated":
        return valid[:-5]
    return "garbage"


@pytest.mark.parametrize("kind", ["alg-none", "tampered", "other-secret", "no-exp",
                                  "truncated", "garbage"])
def test_forged_tokens_are_401_on_api_and_files(server, http, log_in, kind):
    token = _forged(kind, log_in(http, server.api, "bob"))
    headers = {"Authorization": f"Bearer {token}"}
    me = http.get(f"{server.api}/me", headers=headers)
    assert me.status_code == 401
    assert me.json()["code"] == "UNAUTHENTICATED"
    # A bad token is refused even where anonymous access would be allowed.
    public = http.get(f"{server.files}/downloads/150/public.txt", headers=headers)
    assert public.status_code == 401


@pytest.mark.parametrize("header", ["Basic YWxpY2U6YWxpY2UtcHc=", "Bearer", "Bearer  x y", "token"])
def test_malformed_authorization_is_401(server, http, header):
    assert http.get(f"{server.api}/me", headers={"Authorization": header}).status_code == 401


def test_static_api_key_authenticates_on_api_and_files(server, http, catalog):
    headers = {"Authorization": f"Bearer {CAROL_API_KEY}"}
    assert http.get(f"{server.api}/me", headers=headers).json()["username"] == "carol"
    reply = http.get(f"{server.files}/downloads/130/carol.fastq.gz", headers=headers)
    assert reply.status_code == 200
    assert reply.content == catalog.content("130")
    wrong = {"Authorization": f"Bearer {CAROL_API_KEY}x"}
    assert http.get(f"{server.api}/me", headers=wrong).status_code == 401


@pytest.fixture
def flow_client():
    """``flow_client(api)``: the official client; its connections closed at teardown."""
    made = []

    def make(api: str) -> Client:
        made.append(Client(base_url=api, config=ClientConfig(show_progress=False)))
        return made[-1]

    yield make
    for client in made:
        client._transport._client.close()


def test_official_client_logs_in_and_pages_through_owned_projects(server, flow_client):
    client = flow_client(server.api)
    mark = len(server.log_lines())  # the server is shared: only this test's requests count
    client.log_in(UsernamePasswordCredentials(username="alice", password="alice-pw"))
    projects = client.samples.get_owned_projects()
    assert len(projects) == 23
    listed = list(projects)
    ids = [p.id for p in listed]
    assert ids == sorted(ids, key=int) and len(set(ids)) == 23
    assert listed[0].name == "Liver RNA-seq" and listed[0].description == "livers"
    assert json.loads(client.get_raw("/me"))["username"] == "alice"
    pages = [dict(httpx.QueryParams(line["query"]))["page"] for line in server.log_lines()[mark:]
             if line["path"] == "/api/projects/owned" and line["user"] == "alice"]
    assert sorted(pages) == ["1", "2"]


def test_official_client_reports_bad_login(server, flow_client):
    client = flow_client(server.api)
    with pytest.raises(BadRequestError):
        client.log_in(UsernamePasswordCredentials(username="alice", password="nope"))


def test_official_client_refreshes_after_the_access_token_expires(server_factory, http, poll,
                                                                  flow_client):
    srv = server_factory("--token-ttl", "1")
    client = flow_client(srv.api)
    client.log_in(UsernamePasswordCredentials(username="bob", password="bob-pw"))
    assert json.loads(client.get_raw("/me"))["username"] == "bob"
    first = next(line for line in srv.log_lines() if line["path"] == "/api/login")
    assert first["status"] == 200
    token = _claims_of_client(client)

    def expired() -> bool:
        reply = http.get(f"{srv.api}/me", headers={"Authorization": f"Bearer {token}"})
        return reply.status_code == 401 and reply.json()["error"] == "Token expired"

    poll(expired, 10, "the access token to expire")
    assert json.loads(client.get_raw("/me"))["username"] == "bob"
    assert [p.name for p in client.samples.get_owned_projects()] == ["Public atlas"]
    refreshes = [line for line in srv.log_lines() if line["path"] == "/api/token"]
    assert refreshes and all(line["status"] == 200 for line in refreshes)


def _claims_of_client(client: Client) -> str:
    header = client._transport._client.headers["Authorization"]
    return str(header.split(" ", 1)[1])


def test_api_key_client_gets_401_without_refresh(server, flow_client):
    client = flow_client(server.api)
    client.log_in(TokenCredentials(token="not-a-key"))
    with pytest.raises(AuthenticationError):
        client.get_raw("/me")


def test_tokens_and_refresh_cookies_survive_a_restart(server_factory, http, tmp_path):
    state = tmp_path / "kept-state"
    first = server_factory(state_dir=state)
    with httpx.Client(timeout=30) as client:
        login = client.post(f"{first.api}/login", json={"username": "alice",
                                                         "password": "alice-pw"})
        token = login.json()["token"]
        cookie = client.cookies["flow_refresh_token"]
    assert first.stop() == 0
    assert oct((state / "jwt-secret").stat().st_mode & 0o777) == "0o600"
    second = server_factory(state_dir=state)
    me = http.get(f"{second.api}/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["username"] == "alice"
    refreshed = http.get(f"{second.api}/token", headers={"Cookie": f"flow_refresh_token={cookie}"})
    assert refreshed.status_code == 200


def test_passwords_and_tokens_never_reach_logs(server, http, log_in):
    token = log_in(http, server.api, "alice")
    http.get(f"{server.api}/me", headers={"Authorization": f"Bearer {token}"})
    logged = server.access_log.read_text() + server.stderr() + server.stdout_path.read_text()
    assert "alice-pw" not in logged and token not in logged and CAROL_API_KEY not in logged
