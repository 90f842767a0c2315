"""A client-sent seq: last + 1 applies, last replays byte for byte, anything else is 409."""

from tests.support.contract import assert_problem


def test_duplicate_replays_and_gaps_conflict_without_moving_state(client):
    sid = client.post("/v1/sessions").json()["session_id"]
    first = client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0], "seq": 1})
    assert first.status_code == 200 and "x-replayed" not in first.headers
    state = client.get(f"/v1/sessions/{sid}/state").json()

    again = client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0], "seq": 1})
    assert again.status_code == 200 and again.headers["x-replayed"] == "true"
    assert again.content == first.content
    for seq in (0, 3, 17):
        conflict = assert_problem(
            client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [5.0], "seq": seq}), 409
        )
        assert conflict["expected_seq"] == 2
    assert client.get(f"/v1/sessions/{sid}/state").json() == state

    second = client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [3.0], "seq": 2})
    assert second.json()["seq"] == 2 and second.json()["steps"] == 3
    # Chunks without seq are numbered on.
    assert client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [3.0]}).json()["seq"] == 3


def test_seq_on_a_fresh_session_must_start_at_1(client):
    sid = client.post("/v1/sessions").json()["session_id"]
    assert (
        assert_problem(
            client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0], "seq": 0}), 409
        )["expected_seq"]
        == 1
    )
