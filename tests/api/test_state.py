"""GET and PUT state: a session's state can be read, moved into another session, and refused when bad."""

import pytest

from tests.api.test_chunk_errors import assert_problem


def test_put_state_forks_a_session(client):
    source = client.post("/v1/sessions").json()["session_id"]
    client.post(f"/v1/sessions/{source}/chunks", json={"inputs": [0.3, -2.0, 1.5]})
    document = client.get(f"/v1/sessions/{source}/state").json()
    fork = client.post("/v1/sessions").json()["session_id"]
    put = client.put(f"/v1/sessions/{fork}/state", json=document)
    assert put.status_code == 200 and put.json()["session_id"] == fork
    assert client.get(f"/v1/sessions/{fork}/state").json()["layers"] == document["layers"]
    a = client.post(f"/v1/sessions/{source}/chunks", json={"inputs": [0.7, 0.1]}).json()
    b = client.post(f"/v1/sessions/{fork}/chunks", json={"inputs": [0.7, 0.1]}).json()
    assert a["outputs"] == b["outputs"]


@pytest.mark.parametrize(
    "change, status",
    [
        (lambda d: d["layers"][0].update(name="other"), 422),
        (lambda d: d["layers"][0].update(states=[[0.0] * 4]), 422),
        (lambda d: d["layers"][0].update(states=[[0.0] * 5, [0.0] * 5]), 422),
        (lambda d: d["layers"][0]["states"][0].__setitem__(0, "x"), 422),
        (lambda d: d["layers"][0]["states"][0].__setitem__(0, True), 422),
        (lambda d: d.update(layers=[]), 422),
        (lambda d: d.pop("layers"), 422),
        (lambda d: d["model"].update(fingerprint="sha256:" + "0" * 64), 409),
    ],
)
def test_bad_state_documents_are_refused_and_change_nothing(client, change, status):
    sid = client.post("/v1/sessions").json()["session_id"]
    client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0]})
    before = client.get(f"/v1/sessions/{sid}/state").json()
    document = client.get(f"/v1/sessions/{sid}/state").json()
    change(document)
    assert_problem(client.put(f"/v1/sessions/{sid}/state", json=document), status)
    assert client.get(f"/v1/sessions/{sid}/state").json() == before


def test_non_finite_state_is_refused(client):
    sid = client.post("/v1/sessions").json()["session_id"]
    document = client.get(f"/v1/sessions/{sid}/state").json()
    body = client.get(f"/v1/sessions/{sid}/state").text.replace("0.0", "NaN", 1)
    assert "NaN" in body
    answer = client.put(f"/v1/sessions/{sid}/state", content=body,
                        headers={"content-type": "application/json"})
    assert_problem(answer, 422)
    assert client.get(f"/v1/sessions/{sid}/state").json() == document
