"""Lists, details, pagination and the permission matrix of the catalog API."""

from __future__ import annotations

import hashlib

import pytest

USERS = ["alice", "bob", "carol", None]
ALICE_EXTRA = [str(1000 + i) for i in range(22)]

# Who may see each object: owner, sharing (project sharing covers its contents,
# sample sharing covers its data), or everybody when it is public.
VISIBLE = {
    ("projects", "1"): {"alice", "bob"},
    ("projects", "2"): {"alice", "bob", "carol", None},
    ("projects", "3"): {"carol"},
    ("samples", "10"): {"alice", "bob"},
    ("samples", "12"): {"alice", "bob", "carol", None},
    ("samples", "13"): {"carol"},
    ("samples", "14"): {"bob", "carol"},
    ("executions", "20"): {"alice", "bob"},
    ("executions", "21"): {"carol"},
    ("data", "100"): {"alice", "bob"},
    ("data", "110"): {"alice", "bob"},
    ("data", "120"): {"alice", "bob", "carol", None},
    ("data", "130"): {"carol"},
    ("data", "142"): {"bob"},
    ("data", "143"): {"bob", "carol"},
    ("data", "150"): {"alice", "bob", "carol", None},
}

# List path -> ids each user gets (None: anonymous; "401"/"404": refused).
LISTS = {
    "/projects/owned": {"alice": ["1", *ALICE_EXTRA], "bob": ["2"], "carol": ["3"], None: 401},
    "/projects/shared": {"alice": [], "bob": ["1"], "carol": [], None: 401},
    "/samples/owned": {"alice": ["10", "11"], "bob": ["12", "14"], "carol": ["13"], None: 401},
    "/samples/shared": {"alice": [], "bob": ["10", "11"], "carol": ["14"], None: 401},
    "/data/owned": {
        "alice": ["100", "101", "102", "103", "104", "110", "111", "140", "141", "160"],
        "bob": ["120", "142", "143", "150"], "carol": ["130", "131"], None: 401},
    "/executions/owned": {"alice": ["20"], "bob": [], "carol": ["21"], None: 401},
    "/projects/1/samples": {"alice": ["10", "11"], "bob": ["10", "11"], "carol": 404, None: 404},
    "/projects/2/samples": {"alice": ["12"], "bob": ["12"], "carol": ["12"], None: ["12"]},
    "/projects/1/executions": {"alice": ["20"], "bob": ["20"], "carol": 404, None: 404},
    "/projects/3/executions": {"alice": 404, "bob": 404, "carol": ["21"], None: 404},
    "/samples/10/data": {"alice": ["100", "101", "102", "103"],
                         "bob": ["100", "101", "102", "103"], "carol": 404, None: 404},
    "/samples/14/data": {"alice": 404, "bob": ["143"], "carol": ["143"], None: 404},
    "/samples/10/executions": {"alice": [], "bob": [], "carol": 404, None: 404},
    "/executions/20/data": {"alice": ["110", "111"], "bob": ["110", "111"], "carol": 404,
                            None: 404},
}


def _items_key(path: str) -> str:
    """``/projects/owned`` -> projects, ``/samples/10/data`` -> data."""
    parts = path.strip("/").split("/")
    return parts[0] if parts[-1] in ("owned", "shared") else parts[-1]


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("kind,ident", sorted(VISIBLE))
def test_details_follow_the_permission_matrix(server, http, tokens, kind, ident, user):
    reply = http.get(f"{server.api}/{kind}/{ident}", headers=tokens[user])
    if user in VISIBLE[(kind, ident)]:
        assert reply.status_code == 200
        assert reply.json()["id"] == ident
    else:
        assert reply.status_code == 404
        assert reply.json()["code"] == "NOT_FOUND"


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("path", sorted(LISTS))
def test_lists_follow_the_permission_matrix(server, http, tokens, path, user):
    expected = LISTS[path][user]
    reply = http.get(f"{server.api}{path}", params={"count": 100}, headers=tokens[user])
    if isinstance(expected, int):
        assert reply.status_code == expected
        assert reply.json()["status"] == expected
        return
    assert reply.status_code == 200
    body = reply.json()
    key = _items_key(path)
    assert body["count"] == len(expected) and body["page"] == 1
    assert [item["id"] for item in body[key]] == expected


def test_unknown_objects_are_404(server, http, tokens):
    for path in ("/projects/999", "/samples/999", "/executions/999", "/data/999",
                 "/projects/999/samples", "/samples/abc/data"):
        reply = http.get(f"{server.api}{path}", headers=tokens["alice"])
        assert reply.status_code == 404, path


def test_detail_objects_have_exactly_the_documented_fields(server, http, tokens, catalog):
    get = lambda path: http.get(f"{server.api}{path}", headers=tokens["alice"]).json()  # noqa: E731
    assert set(get("/projects/1")) == {"id", "name", "description", "created", "private",
                                       "owner"}
    assert set(get("/samples/10")) == {"id", "name", "created", "private", "project", "owner"}
    execution = get("/executions/20")
    assert set(execution) == {"id", "identifier", "pipeline_name", "pipeline_version",
                              "status", "created", "started", "finished", "sample",
                              "project", "owner"}
    assert execution["created"] == 1704164645  # "2024-01-02T03:04:05Z" in the catalog
    data = get("/data/100")
    assert set(data) == {"id", "filename", "filetype", "size", "created", "private",
                         "is_directory", "sample", "project", "execution", "owner", "md5"}
    content = catalog.content("100")
    assert data == {
        "id": "100", "filename": "liver_1_R1.fastq.gz", "filetype": "fastq.gz",
        "size": len(content), "created": int(catalog.files["100"].stat().st_mtime),
        "private": True, "is_directory": False, "sample": {"id": "10", "name": "liver_1"},
        "project": {"id": "1", "name": "Liver RNA-seq"}, "execution": None,
        "owner": {"username": "alice", "name": "Alice A."},
        "md5": hashlib.md5(content).hexdigest(),
    }
    sparse = get("/data/160")
    assert sparse["md5"] == catalog.record("160")["md5"] and sparse["size"] == 512 * 2**20


def test_execution_data_items_carry_their_output_path(server, http, tokens):
    body = http.get(f"{server.api}/executions/20/data", headers=tokens["bob"]).json()
    assert {(d["id"], d["path"]) for d in body["data"]} == {
        ("110", "multiqc/multiqc_report.html"), ("111", "results/counts/all.gene_counts.tsv")}
    assert body["data"][0]["execution"]["identifier"] == "brave_turing"


def test_pagination_pages_in_id_order(server, http, tokens):
    url = f"{server.api}/projects/owned"
    seen = []
    for page in range(1, 6):
        body = http.get(url, params={"page": page, "count": 5}, headers=tokens["alice"]).json()
        assert body["count"] == 23 and body["page"] == page
        seen += [p["id"] for p in body["projects"]]
    assert seen == ["1", *ALICE_EXTRA]
    default = http.get(url, headers=tokens["alice"]).json()
    assert len(default["projects"]) == 20
    beyond = http.get(url, params={"page": 9}, headers=tokens["alice"]).json()
    assert beyond == {"count": 23, "page": 9, "projects": []}


@pytest.mark.parametrize("params,error", [
    ({"count": 101}, "Cannot request more than 100 items"),
    ({"count": 0}, None),
    ({"count": "x"}, None),
    ({"page": 0}, None),
    ({"page": "-1"}, None),
    ({"page": "1.5"}, None),
])
def test_bad_pagination_is_400(server, http, tokens, params, error):
    reply = http.get(f"{server.api}/projects/owned", params=params, headers=tokens["alice"])
    assert reply.status_code == 400
    assert reply.json()["code"] == "BAD_REQUEST"
    if error is not None:
        assert reply.json()["error"] == error


def test_count_100_is_allowed(server, http, tokens):
    reply = http.get(f"{server.api}/data/owned", params={"count": 100}, headers=tokens["alice"])
    assert reply.status_code == 200


def test_unknown_route_and_method_answer_json(server, http, tokens):
    missing = http.get(f"{server.api}/nothing/here", headers=tokens["alice"])
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    wrong = http.delete(f"{server.api}/me", headers=tokens["alice"])
    assert wrong.status_code == 405 and wrong.json()["status"] == 405
