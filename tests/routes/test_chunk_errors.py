"""Every failure of the chunk call: its status, a problem document, and no state moved."""

import json

import pytest

from tests.support.contract import LIMITS, assert_problem

MAX_STEPS = LIMITS["max_chunk_steps"]
MAX_BODY = LIMITS["max_body_bytes"]

BAD_CHUNKS = {
    "not json": (b"{inputs: [1]", 400),
    "empty body": (b"", 400),
    "missing inputs": (b'{"input": [1.0]}', 422),
    "body is a list": (b"[1.0, 2.0]", 422),
    "inputs not a list": (b'{"inputs": 1.5}', 422),
    "ragged": (b'{"inputs": [[1.0], [2.0, 3.0]]}', 422),
    "wrong F": (b'{"inputs": [[1.0, 2.0]]}', 422),
    "too deep": (b'{"inputs": [[[1.0]]]}', 422),
    "string": (b'{"inputs": [1.0, "2.0"]}', 422),
    "nested string": (b'{"inputs": [[1.0], ["x"]]}', 422),
    "boolean": (b'{"inputs": [1.0, true]}', 422),
    "null": (b'{"inputs": [1.0, null]}', 422),
    "NaN": (b'{"inputs": [1.0, NaN]}', 422),
    "infinity": (b'{"inputs": [[Infinity]]}', 422),
    "overflows float32": (b'{"inputs": [1e39]}', 422),
    "T = 0": (b'{"inputs": []}', 422),
    "T too large": (json.dumps({"inputs": [0.5] * (MAX_STEPS + 1)}).encode(), 413),
    "body too large": (b'{"inputs": [1.0]' + b" " * MAX_BODY + b"}", 413),
    "nested too deep": (b'{"inputs": ' + b"[" * 3000 + b"]" * 3000 + b"}", 400),
    "deep with a boolean": (b'{"x": true, "inputs": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}", 422),
    "UTF-16 body": ('{"inputs": [1, true]}'.encode("utf-16"), 400),
    "object in a row": (b'{"inputs": [[{"a": 1}]]}', 422),
    "seq not an integer": (b'{"inputs": [1.0], "seq": "1"}', 422),
    "negative seq": (b'{"inputs": [1.0], "seq": -1}', 422),
}


@pytest.fixture()
def session(client):
    sid = client.post("/v1/sessions").json()["session_id"]
    client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [0.25, -1.0]})
    return sid


@pytest.mark.parametrize("case", sorted(BAD_CHUNKS))
def test_bad_chunk_gets_a_problem_and_moves_nothing(client, session, case):
    body, status = BAD_CHUNKS[case]
    before = client.get(f"/v1/sessions/{session}/state").json()
    answer = client.post(
        f"/v1/sessions/{session}/chunks", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(answer, status)
    assert client.get(f"/v1/sessions/{session}/state").json() == before


def test_unknown_session_is_404(client):
    assert_problem(client.post("/v1/sessions/nobody-here/chunks", json={"inputs": [1.0]}), 404)
    for call in (client.get, client.delete):
        assert_problem(call("/v1/sessions/nobody-here"), 404)
    assert_problem(client.get("/v1/sessions/nobody-here/state"), 404)
    assert_problem(client.post("/v1/sessions/nobody-here/reset"), 404)


def test_declared_oversized_body_is_refused_before_it_is_read(client, session):
    answer = client.post(
        f"/v1/sessions/{session}/chunks",
        content=b"x" * (MAX_BODY + 1),
        headers={"content-type": "application/json"},
    )
    assert_problem(answer, 413)


@pytest.mark.parametrize(
    "options, status",
    [
        ({"session_id": "has space"}, 422),
        ({"session_id": "x" * 129}, 422),
        ({"session_id": ""}, 422),
        ({"session_id": 5}, 422),
        ({"ttl_s": -1}, 422),
        ({"ttl_s": "10"}, 422),
        ({"ttl_s": True}, 422),
    ],
)
def test_bad_session_options_are_422(client, options, status):
    before = client.get("/v1/sessions").json()["active"]
    assert_problem(client.post("/v1/sessions", json=options), status)
    assert client.get("/v1/sessions").json()["active"] == before


def test_taken_id_is_409_and_unknown_route_is_a_problem_too(client):
    client.post("/v1/sessions", json={"session_id": "taken.id:1"})
    assert_problem(client.post("/v1/sessions", json={"session_id": "taken.id:1"}), 409)
    assert_problem(client.get("/v1/nothing-here"), 404)
    assert_problem(client.put("/v1/model"), 405)
    assert_problem(
        client.post("/v1/sessions", content=b"{nope", headers={"content-type": "application/json"}),
        400,
    )


@pytest.mark.parametrize(
    "body",
    [b'{"inputs": [1.0, NaN]}', b'{"inputs": [[Infinity]]}', b'{"inputs": [1.0, null]}'],
)
def test_nan_and_infinity_are_named_as_such_even_when_an_encoder_wrote_them_null(
    client, session, body
):
    # orjson and JavaScript's JSON.stringify write NaN and infinity as null.
    answer = client.post(
        f"/v1/sessions/{session}/chunks", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(answer, 422)
    assert "NaN" in answer.json()["detail"] and "infinity" in answer.json()["detail"]
