"""The OpenAPI document is one a client generator can use: bearer security, readable and unique
operation ids, problem+json errors with their schema, no FastAPI leftovers, session id patterns."""

import re

import pytest

OPEN = {"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"}


@pytest.fixture(scope="module")
def document(client):
    return client.get("/openapi.json").json()


def operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_keys_are_bearer_tokens_on_every_operation_but_the_probes(document):
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, method, operation in operations(document):
        want = [] if path in OPEN else [{"bearer": []}]
        assert operation["security"] == want, (method, path)


def test_the_probes_and_the_scrape_answer_head_with_no_body(client, document):
    for path in ("/healthz", "/readyz", "/metrics"):
        answer = client.head(path)
        assert answer.status_code == 200 and answer.content == b"", path
        assert "head" in document["paths"][path], path


def test_operation_ids_are_the_functions_names_unique(document):
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", i) and len(i) <= 40 for i in ids), ids
    assert {
        "create_session",
        "push_chunk",
        "get_state",
        "put_state",
        "reset_session",
        "delete_session",
        "infer",
        "infer_by_version",
        "model_statistics_by_name_and_version",
    } <= set(ids)


def test_errors_are_problem_json_with_the_problem_schema(document):
    assert "HTTPValidationError" not in str(document)
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    seen = 0
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            if status[0] in "45" and not path.startswith("/v2"):
                assert response["content"] == problem, (method, path, status)
                seen += 1
    assert seen > 40
    assert set(document["components"]["schemas"]["Problem"]["required"]) == {
        "type",
        "title",
        "status",
        "detail",
    }


def test_session_ids_carry_their_pattern_and_length(document):
    found = [
        p
        for _, _, op in operations(document)
        for p in op.get("parameters", [])
        if p["name"] == "session_id"
    ]
    assert len(found) >= 7
    for parameter in found:
        assert parameter["schema"]["pattern"] == "^[A-Za-z0-9._:-]{1,128}$"
        assert (parameter["schema"]["minLength"], parameter["schema"]["maxLength"]) == (1, 128)


def test_the_chunk_routes_are_matched_first(document):
    # A request is matched against the routes in their order (about 1.5 µs a candidate in this
    # FastAPI), and the document lists them in that order: /v1's and /v2's chunks come first.
    assert list(document["paths"])[:3] == [
        "/v1/sessions/{session_id}/chunks",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ]


@pytest.fixture(scope="module")
def keyed():
    """The app with keys: what the document says of keys is what the server does."""
    from starlette.testclient import TestClient

    from app.config import Settings
    from app.main import create_app
    from harness.waiting import wait_for

    settings = Settings(model="seed", xla=False, api_keys="t:tenant-key-openapi")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, "the warm-up", 60, errors=())
        yield client


def test_the_document_says_which_operations_take_a_key_as_the_server_does(keyed):
    document = keyed.get("/openapi.json").json()
    open_, keyed_reads = [], []
    for path, method, operation in operations(document):
        if operation["security"] == []:
            open_.append(path)
        elif method == "get" and "{" not in path:
            keyed_reads.append(path)
    assert set(open_) == OPEN
    for path in open_:
        assert keyed.get(path).status_code == 200, path
    assert len(keyed_reads) >= 5
    for path in keyed_reads:
        assert keyed.get(path).status_code == 401, path


def test_each_operation_documents_its_own_errors_and_a_200_schema(document):
    v2 = {(m, p): op for p, m, op in operations(document) if p.startswith("/v2")}
    errors = {key: {s for s in op["responses"] if s[0] in "45"} for key, op in v2.items()}
    assert errors[("get", "/v2/health/live")] == set()  # no key, nothing to refuse
    assert errors[("get", "/v2/health/ready")] == {"503"}
    assert {"403", "413"} <= errors[("post", "/v2/models/{name}/infer")]
    assert "403" in errors[("get", "/v2/models/stats")]
    assert "403" not in errors[("get", "/v2/models/{name}")]
    for path, method, operation in operations(document):
        ok = operation["responses"].get("200") or {}
        for media, content in ok.get("content", {}).items():
            assert content["schema"] != {}, (method, path, media)


def test_every_tag_has_a_description(document):
    described = {tag["name"]: tag.get("description") for tag in document["tags"]}
    used = {tag for _, _, operation in operations(document) for tag in operation["tags"]}
    assert used <= set(described) and all(described.values()), (used, described)
