"""The seed notebook, end to end over HTTP: in process (tests/routes) and against real server processes."""

import numpy as np

from app.model.builtin import build_seed_model
from tests.support.reference import StatefulReference, state_rows

SEQUENCES = {
    "small": [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0],
    "large": [-40.0, -30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0, 40.0],
}


def test_chunked_equals_whole_equals_keras_stateful(client):
    model = build_seed_model()
    for name, sequence in SEQUENCES.items():
        whole_ref, chunked_ref = StatefulReference(model), StatefulReference(model)
        whole_outputs = whole_ref.feed(np.array(sequence)[:, None])
        chunked = client.post("/v1/sessions", json={"session_id": f"nb-{name}-chunked"}).json()
        whole = client.post("/v1/sessions", json={"session_id": f"nb-{name}-whole"}).json()

        for seq, start in enumerate((0, 3, 6), start=1):
            chunk = sequence[start : start + 3]
            answer = client.post(
                f"/v1/sessions/{chunked['session_id']}/chunks", json={"inputs": chunk}
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["seq"], body["steps"]) == (seq, start + 3)
            expected = chunked_ref.feed(np.array(chunk)[:, None])
            np.testing.assert_allclose(body["outputs"], expected, atol=1e-5)
        answer = client.post(
            f"/v1/sessions/{whole['session_id']}/chunks", json={"inputs": sequence}
        )
        np.testing.assert_allclose(answer.json()["outputs"], whole_outputs, atol=1e-5)
        np.testing.assert_allclose(
            body["outputs"], whole_outputs, atol=1e-5
        )  # the notebook's claim

        chunked_state = client.get(f"/v1/sessions/{chunked['session_id']}/state").json()
        whole_state = client.get(f"/v1/sessions/{whole['session_id']}/state").json()
        assert (
            chunked_state["layers"][0]["name"] == "rnn"
            and chunked_state["layers"][0]["kind"] == "GRU"
        )
        for got_chunked, got_whole, want in zip(
            state_rows(chunked_state), state_rows(whole_state), whole_ref.states()
        ):
            np.testing.assert_allclose(got_chunked, want, atol=1e-5)
            np.testing.assert_allclose(got_whole, want, atol=1e-5)
        assert (whole_state["seq"], whole_state["steps"]) == (1, 9)


def test_reset_zeroes_the_state_like_reset_states(client):
    sid = client.post("/v1/sessions").json()["session_id"]
    client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [[1.0], [2.0]]})
    reset = client.post(f"/v1/sessions/{sid}/reset")
    assert reset.status_code == 200
    assert (reset.json()["seq"], reset.json()["steps"]) == (1, 0)
    state = client.get(f"/v1/sessions/{sid}/state").json()
    assert all(not any(s) for s in state_rows(state))
    # ...and the next chunk starts from zeros, as a fresh Keras sequence would.
    reference = StatefulReference(build_seed_model())
    after = client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [0.5, -0.5]}).json()
    np.testing.assert_allclose(
        after["outputs"], reference.feed(np.array([[0.5], [-0.5]])), atol=1e-5
    )
    assert after["seq"] == 2
