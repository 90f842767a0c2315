"""The Open Inference Protocol over HTTP, spoken by an unmodified ``tritonclient.http``: sequences with
integer and string ids, start and end flags, binary and JSON tensors, exact against Keras; concurrent
async sequences; the protocol's errors, which change nothing; tenants kept apart."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from app.api.parsing import ChunkLimits
from harness.keys import auth
from harness.servers import serve_in_thread
from tests.support.models import triton_named, two_inputs
from tests.support.reference import StatefulReference
from tests.support.repository import publish, save_version
from tests.support.triton import refused_outputs

KEYS = {"alpha": "alpha-key-triton", "beta": "beta-key-triton"}
ADMIN = auth("root-key-triton")
RNG = np.random.default_rng(16)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton") / "models"
    models = {
        "speech": save_version(repo, "speech", 1, seed=101),
        "desk": save_version(
            repo, "desk", 1, seed=102, features=1, layers=(("LSTM", 3, False),), per_step=False
        ),
        "ticker": publish(repo, "ticker", 1, triton_named(103)),  # INPUT (INT32) -> OUTPUT
        "pair": publish(repo, "pair", 1, two_inputs(104)),  # features, gate -> level, alarm
    }
    api_keys = ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items())
    with serve_in_thread(
        None, model_repository=str(repo), api_keys=api_keys, admin_keys="root-key-triton", xla=False
    ) as url:
        yield url, models


def client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"))


def headers(tenant: str = "alpha") -> dict[str, str]:
    return auth(KEYS[tenant])


def request(chunk: np.ndarray, binary: bool = True) -> list:
    tensor = triton.InferInput("inputs", [1, *chunk.shape], "FP32")
    tensor.set_data_from_numpy(chunk[None], binary_data=binary)
    return [tensor]


def numbered(http, sequence_id, chunk, seq: int, start: bool = False) -> np.ndarray:
    """A chunk carrying our ``seq`` parameter (exactly-once)."""
    answer = http.infer(
        "speech",
        request(chunk),
        sequence_id=sequence_id,
        sequence_start=start,
        parameters={"seq": seq},
        headers=headers(),
    )
    return answer.as_numpy("outputs")[0]


def infer(
    http,
    chunk,
    sequence_id,
    *,
    start=False,
    end=False,
    binary_in=True,
    binary_out=True,
    model="speech",
    tenant="alpha",
):
    outputs = [triton.InferRequestedOutput("outputs", binary_data=binary_out)]
    answer = http.infer(
        model,
        request(chunk, binary_in),
        outputs=outputs,
        sequence_id=sequence_id,
        sequence_start=start,
        sequence_end=end,
        headers=headers(tenant),
    )
    return answer.as_numpy("outputs")[0], answer.get_response()


@pytest.mark.parametrize("sequence_id", [1000, "call-7/üñí"], ids=["integer id", "string id"])
def test_a_sequence_over_http_binary_and_json_equals_keras(served, sequence_id):
    url, models = served
    http = client(url)
    reference = StatefulReference(models["speech"])
    chunks = [RNG.uniform(-2, 2, (steps, 2)).astype(np.float32) for steps in (3, 1, 4, 2)]
    modes = [(True, True), (False, False), (True, False), (False, True)]  # inputs, outputs binary
    for index, (chunk, (binary_in, binary_out)) in enumerate(zip(chunks, modes)):
        got, response = infer(
            http,
            chunk,
            sequence_id,
            start=index == 0,
            end=index == len(chunks) - 1,
            binary_in=binary_in,
            binary_out=binary_out,
        )
        np.testing.assert_allclose(got, reference.feed(chunk), atol=1e-5)
        assert response["parameters"]["seq"] == index + 1
    # Ended: the id is gone, and a chunk without sequence_start is refused.
    with pytest.raises(InferenceServerException, match="not live"):
        infer(http, chunks[0], sequence_id)
    assert (
        httpx.get(
            f"{url}/v1/sessions/{response['parameters']['session_id']}", headers=headers()
        ).status_code
        == 404
    )


def test_sequence_start_on_a_live_sequence_resets_it_and_state_is_readable_over_v1(served):
    url, models = served
    http = client(url)
    first = RNG.uniform(-2, 2, (3, 2)).astype(np.float32)
    infer(http, first, 2000, start=True)
    infer(http, first, 2000)
    again = RNG.uniform(-2, 2, (2, 2)).astype(np.float32)
    got, response = infer(http, again, 2000, start=True)
    np.testing.assert_allclose(got, StatefulReference(models["speech"]).feed(again), atol=1e-5)
    state = httpx.get(
        f"{url}/v1/sessions/{response['parameters']['session_id']}/state", headers=headers()
    ).json()
    assert state["steps"] == 2 and state["model"]["name"] == "speech"


def test_a_chunk_naming_another_model_than_its_sequences_is_409_and_changes_nothing(served):
    url, models = served
    http = client(url)
    reference = StatefulReference(models["speech"])
    chunk = RNG.uniform(-2, 2, (2, 2)).astype(np.float32)
    got, _ = infer(http, chunk, 2500, start=True)
    np.testing.assert_allclose(got, reference.feed(chunk), atol=1e-5)
    for start in (False, True):  # desk takes one feature: the chunk itself is fine for desk
        with pytest.raises(
            InferenceServerException, match="runs model speech, not desk"
        ) as refused:
            infer(http, chunk[:, :1], 2500, start=start, model="desk")
        assert refused.value.status() == "409"
    got, response = infer(http, chunk, 2500, end=True)
    np.testing.assert_allclose(got, reference.feed(chunk), atol=1e-5)
    assert response["parameters"]["seq"] == 2


def test_no_sequence_id_runs_on_a_fresh_state_and_keeps_nothing(served):
    url, models = served
    http = client(url)
    chunk = RNG.uniform(-2, 2, (4, 1)).astype(np.float32)
    for _ in range(2):
        got, response = infer(http, chunk, 0, model="desk")
        np.testing.assert_allclose(got, StatefulReference(models["desk"]).feed(chunk), atol=1e-5)
        assert "parameters" not in response


def test_two_tenants_with_the_same_sequence_id_get_two_sequences(served):
    url, models = served
    http = client(url)
    references = {tenant: StatefulReference(models["speech"]) for tenant in KEYS}
    for step in range(3):
        for tenant in KEYS:
            chunk = RNG.uniform(-2, 2, (2, 2)).astype(np.float32)
            got, _ = infer(http, chunk, 77, start=step == 0, tenant=tenant)
            np.testing.assert_allclose(got, references[tenant].feed(chunk), atol=1e-5)


def test_interleaved_sequences_from_concurrent_async_clients_stay_exact(served):
    url, models = served
    count, steps = 12, 6
    chunks = RNG.uniform(-2, 2, (count, steps, 2, 2)).astype(np.float32)

    async def one(index: int) -> list[np.ndarray]:
        http = triton_aio.InferenceServerClient(url.removeprefix("http://"))
        try:
            answers = []
            for step in range(steps):
                tensor = triton_aio.InferInput("inputs", [1, 2, 2], "FP32")
                tensor.set_data_from_numpy(chunks[index, step][None])
                answer = await http.infer(
                    "speech",
                    [tensor],
                    sequence_id=5000 + index,
                    sequence_start=step == 0,
                    sequence_end=step == steps - 1,
                    headers=headers(),
                )
                answers.append(answer.as_numpy("outputs")[0])
            return answers
        finally:
            await http.close()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(count)))

    for index, answers in enumerate(asyncio.run(main())):
        reference = StatefulReference(models["speech"])
        for step, got in enumerate(answers):
            np.testing.assert_allclose(got, reference.feed(chunks[index, step]), atol=1e-5)


def test_bad_requests_get_the_protocols_error_and_change_nothing(served):
    url, models = served
    http = client(url)
    reference = StatefulReference(models["speech"])
    chunk = RNG.uniform(-2, 2, (2, 2)).astype(np.float32)
    np.testing.assert_allclose(
        infer(http, chunk, 3000, start=True)[0], reference.feed(chunk), atol=1e-5
    )

    def refused(inputs, model="speech", status=400):
        with pytest.raises(InferenceServerException) as caught:
            http.infer(model, inputs, sequence_id=3000, headers=headers())
        assert caught.value.status() == str(status), caught.value

    wrong_type = triton.InferInput("inputs", [1, 2, 2], "FP64")  # not float32 values
    wrong_type.set_data_from_numpy(chunk[None].astype(np.float64) + 1e-12)
    refused([wrong_type])
    wrong_type = triton.InferInput("inputs", [1, 2, 2], "BYTES")
    wrong_type.set_data_from_numpy(np.array([[[b"1", b"2"], [b"3", b"4"]]], dtype=np.object_))
    refused([wrong_type])
    wrong_shape = triton.InferInput("inputs", [1, 2, 3], "FP32")
    wrong_shape.set_data_from_numpy(np.ones((1, 2, 3), np.float32))
    refused([wrong_shape])
    wrong_name = triton.InferInput("INPUT0", [1, 2, 2], "FP32")
    wrong_name.set_data_from_numpy(chunk[None])
    refused([wrong_name])
    refused(request(chunk), model="nope", status=404)
    # A binary body cut short: the header says more than the body holds.
    header = (
        b'{"inputs":[{"name":"inputs","shape":[1,2,2],"datatype":"FP32","parameters":{"binary_data_size":16}}],'
        b'"parameters":{"sequence_id":3000}}'
    )
    for body, length in (
        (header + chunk.tobytes()[:8], str(len(header))),
        (header, str(len(header) + 40)),
        (header, "²".encode("latin-1")),
    ):  # digits to str.isdigit, not to int
        answer = httpx.post(
            f"{url}/v2/models/speech/infer",
            content=body,
            headers={**headers(), "Inference-Header-Content-Length": length},
        )
        assert answer.status_code == 400 and set(answer.json()) == {"error"}, answer.text
    no_data = {"name": "inputs", "shape": [1, 1, 1], "datatype": "FP32"}  # NumPy's one NaN
    answer = httpx.post(
        f"{url}/v2/models/desk/infer",
        json={"inputs": [no_data], "parameters": {"sequence_id": 3000}},
        headers=headers(),
    )
    assert answer.status_code == 400 and "has no data" in answer.json()["error"], answer.text
    # Another tenant's sequence 3000 is another sequence: not live.
    with pytest.raises(InferenceServerException, match="not live"):
        infer(http, chunk, 3000, tenant="beta")
    # None of it changed the sequence.
    again = RNG.uniform(-2, 2, (1, 2)).astype(np.float32)
    np.testing.assert_allclose(
        infer(http, again, 3000, end=True)[0], reference.feed(again), atol=1e-5
    )


def test_health_readiness_and_metadata(served):
    url, models = served
    http = client(url)
    speech = models["speech"]
    named = speech.layers[0].name, speech.layers[-1].name  # as the model declares them
    assert http.is_server_live() and http.is_server_ready(headers=headers())
    assert http.is_model_ready("speech", headers=headers()) and http.is_model_ready(
        "desk", "1", headers=headers()
    )
    assert not http.is_model_ready("nope", headers=headers())
    assert http.get_server_metadata(headers=headers())["name"] == "stateful-rnn"
    metadata = http.get_model_metadata("speech", headers=headers())
    assert metadata["inputs"] == [{"name": named[0], "datatype": "FP32", "shape": [-1, -1, 2]}]
    assert metadata["outputs"] == [{"name": named[1], "datatype": "FP32", "shape": [-1, -1, 4]}]
    assert http.get_model_metadata("desk", "1", headers=headers())["outputs"][0]["shape"] == [-1, 3]
    answer = httpx.get(f"{url}/v2/models/speech")
    assert answer.status_code == 401 and set(answer.json()) == {"error"}
    config = http.get_model_config("speech", headers=headers())
    assert (config["name"], config["max_batch_size"]) == ("speech", 1)
    assert config["input"] == [{"name": named[0], "data_type": "TYPE_FP32", "dims": ["-1", "2"]}]
    assert config["output"] == [{"name": named[1], "data_type": "TYPE_FP32", "dims": ["-1", "4"]}]
    assert config["sequence_batching"]["max_sequence_idle_microseconds"] == str(3600 * 10**6)
    assert config["version_policy"] == {"latest": {"num_versions": 2}}
    desk = http.get_model_config("desk", "1", headers=headers())
    assert desk["output"][0]["dims"] == ["3"] and desk["parameters"]["version"] == {
        "string_value": "1"
    }
    for ask in (http.get_model_metadata, http.get_model_config, http.infer):
        with pytest.raises(InferenceServerException) as caught:  # as Triton's examples test
            ask(
                "nope",
                *([request(np.ones((1, 2), np.float32))] if ask == http.infer else []),
                headers=headers(),
            )
        assert caught.value.message().startswith("Request for unknown model"), caught.value


def test_the_docs_tritonclient_example_works_as_written():
    import re
    from pathlib import Path

    from app.model.builtin import build_seed_model
    from app.model.loader import load_model

    section = (Path(__file__).resolve().parents[2] / "docs" / "triton.md").read_text()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    printed = []
    with serve_in_thread(load_model("seed"), xla=False) as url:
        exec(code.replace("127.0.0.1:8000", url.removeprefix("http://")), {"print": printed.append})
    whole = StatefulReference(build_seed_model()).feed(
        np.arange(-4, 5, dtype=np.float32).reshape(9, 1)
    )
    np.testing.assert_allclose(np.asarray(printed[0]).reshape(-1), whole, atol=1e-5)


def test_the_seq_parameter_gives_exactly_once_replays(served):
    url, models = served
    http = client(url)
    reference = StatefulReference(models["speech"])
    chunks = [RNG.uniform(-2, 2, (2, 2)).astype(np.float32) for _ in range(2)]

    def send(chunk, seq, start=False):
        return numbered(http, "exactly-once", chunk, seq, start)

    first = send(chunks[0], 1, start=True)
    np.testing.assert_allclose(first, reference.feed(chunks[0]), atol=1e-5)
    np.testing.assert_array_equal(
        send(chunks[0], 1), first
    )  # a retry: the stored answer, applied once
    with pytest.raises(InferenceServerException) as caught:
        send(chunks[1], 3)
    assert caught.value.status() == "409" and "next must be 2" in str(caught.value)
    np.testing.assert_allclose(send(chunks[1], 2), reference.feed(chunks[1]), atol=1e-5)


def test_a_retried_start_with_seq_is_answered_by_its_replay_and_resets_nothing(served):
    url, models = served
    http = client(url)
    reference = StatefulReference(models["speech"])
    chunks = [RNG.uniform(-2, 2, (2, 2)).astype(np.float32) for _ in range(2)]

    def send(chunk, seq, start=False):
        return numbered(http, "retried-start", chunk, seq, start)

    first = send(chunks[0], 1, start=True)
    np.testing.assert_array_equal(
        send(chunks[0], 1, start=True), first
    )  # its answer lost, sent again
    reference.feed(chunks[0])
    np.testing.assert_allclose(
        send(chunks[1], 2), reference.feed(chunks[1]), atol=1e-5
    )  # not reset
    restarted = send(chunks[0], 3, start=True)  # a new start, numbered on: resets
    np.testing.assert_allclose(
        restarted, StatefulReference(models["speech"]).feed(chunks[0]), atol=1e-5
    )


def test_the_statistics_extension_counts_each_versions_chunks_and_calls_for_admins_only(served):
    url, _ = served
    http = client(url)
    (before,) = http.get_inference_statistics("desk", headers=ADMIN)["model_stats"]
    started_ms = int(time.time() * 1000)
    chunk = RNG.uniform(-1, 1, (3, 1)).astype(np.float32)
    for index in range(3):
        infer(http, chunk, "counted", start=index == 0, end=index == 2, model="desk")
    (after,) = http.get_inference_statistics("desk", "1", headers=ADMIN)["model_stats"]
    assert (after["name"], after["version"]) == ("desk", "1")
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] - before["execution_count"] == 3  # one sequence: a chunk a call
    assert after["last_inference"] >= started_ms
    figures = after["inference_stats"]
    assert figures["success"]["count"] == figures["queue"]["count"] == after["inference_count"]
    assert figures["success"]["ns"] > figures["queue"]["ns"] > 0
    assert figures["compute_infer"]["ns"] > 0
    calls = {entry["batch_size"]: entry["compute_infer"]["count"] for entry in after["batch_stats"]}
    assert sum(calls.values()) == after["execution_count"] and calls[1] >= 3
    everything = http.get_inference_statistics(headers=ADMIN)["model_stats"]
    assert [(entry["name"], entry["version"]) for entry in everything] == [
        ("desk", "1"),
        ("pair", "1"),
        ("speech", "1"),
        ("ticker", "1"),
    ]
    with pytest.raises(InferenceServerException, match="admin key"):
        http.get_inference_statistics("desk", headers=headers())
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope'"):
        http.get_inference_statistics("nope", headers=ADMIN)
    with pytest.raises(InferenceServerException, match="'desk' version 7 is not found"):
        http.get_inference_statistics("desk", "7", headers=ADMIN)


def test_a_refused_request_with_sequence_end_ends_nothing(served):
    # The attack: a refused request that said sequence_end still deleted the sequence.
    url, models = served
    http = client(url)
    reference = StatefulReference(models["speech"])
    chunk = RNG.uniform(-2, 2, (2, 2)).astype(np.float32)
    got = numbered(http, 5000, chunk, seq=1, start=True)
    np.testing.assert_allclose(got, reference.feed(chunk), atol=1e-5)

    def refused(status: str, **options) -> None:
        with pytest.raises(InferenceServerException) as caught:
            http.infer(sequence_id=5000, sequence_end=True, headers=headers(), **options)
        assert caught.value.status() == status, caught.value

    refused("409", model_name="speech", inputs=request(chunk), parameters={"seq": 5})
    refused("409", model_name="desk", inputs=request(chunk[:, :1]))
    # Refused at admission in line, as these are, or by the model call: the end waits for the chunk.
    again = RNG.uniform(-2, 2, (1, 2)).astype(np.float32)
    np.testing.assert_allclose(numbered(http, 5000, again, seq=2), reference.feed(again), atol=1e-5)


def test_sequence_sessions_are_in_a_namespace_a_plain_create_cannot_name(served):
    # The attack: creating the session a tenant's sequence maps to told whether it was live (409 vs
    # 201), and the owner's next sequence_start then deleted the squatter's session.
    url, models = served
    http = client(url)
    _, response = infer(http, RNG.uniform(-2, 2, (1, 2)).astype(np.float32), 5100, start=True)
    taken = response["parameters"]["session_id"]
    for name in (taken, taken.replace("5100", "5101")):
        answer = httpx.post(
            f"{url}/v1/sessions", json={"session_id": name}, headers=headers("beta")
        )
        assert answer.status_code == 422 and "sequences" in answer.json()["detail"], answer.text


def test_v2_bodies_are_bounded_by_the_chunk_limit_before_parsing_and_must_be_json_or_binary(served):
    # The attack: /v2 read and parsed 4 MB JSON bodies (1M numbers) where /v1 refused them unread.
    url, _ = served
    limits = ChunkLimits.of(2, 512, 4 * 2**20)  # speech: 2 features, the default limits
    numbers = b"0.5," * (4 * 2**20 // 4 - 1) + b"0.5"
    bomb = (
        b'{"inputs":[{"name":"inputs","shape":[1,1048576,2],"datatype":"FP32","data":['
        + numbers
        + b"]}]}"
    )
    assert len(bomb) > limits.request_bytes
    with httpx.Client(base_url=url, headers=headers(), timeout=30) as http:
        started = time.monotonic()
        answer = http.post(
            "/v2/models/speech/infer", content=bomb, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 413 and set(answer.json()) == {"error"}, answer.text
        assert time.monotonic() - started < 1

        def pieces():  # no declared length: counted as it comes
            for _ in range(64):
                yield b" " * 65536

        answer = http.post("/v2/models/speech/infer", content=pieces())
        assert answer.status_code == 413, answer.text
        # What a web page may send without asking first (a form, text) is refused, as on /v1.
        body = {
            "inputs": [{"name": "inputs", "shape": [1, 1, 2], "datatype": "FP32", "data": [1, 2]}]
        }
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            answer = http.post(
                "/v2/models/speech/infer",
                content=json.dumps(body),
                headers={"Content-Type": kind},
            )
            assert answer.status_code == 415, (kind, answer.text)
        for kind in ("application/json", "application/octet-stream", None):
            answer = http.post(
                "/v2/models/speech/infer",
                content=json.dumps(body),
                headers={"Content-Type": kind} if kind else {},
            )
            assert answer.status_code == 200, (kind, answer.text)


def test_a_retried_final_request_is_answered_as_it_was_and_ends_nothing_more(served):
    # The hole: retrying the final request of a sequence (its seq, sequence_end) got 400 "not
    # live", where any other retried chunk gets the answer it was given.
    url, models = served
    http = client(url)
    reference = StatefulReference(models["speech"])
    chunks = [RNG.uniform(-2, 2, (2, 2)).astype(np.float32) for _ in range(2)]
    numbered(http, 5200, chunks[0], seq=1, start=True)
    expected = reference.feed(np.concatenate(chunks))[-2:]

    def final(tenant: str = "alpha", seq: int = 2):
        return http.infer(
            "speech",
            request(chunks[1]),
            sequence_id=5200,
            sequence_end=True,
            parameters={"seq": seq},
            headers=headers(tenant),
        )

    first = final()
    for answer in (first, final()):  # the retry: the same outputs, nothing applied
        np.testing.assert_allclose(answer.as_numpy("outputs")[0], expected, atol=1e-5)
        assert answer.get_response()["parameters"]["seq"] == 2
    for refused in (lambda: final(seq=3), lambda: final(tenant="beta")):
        with pytest.raises(InferenceServerException, match="not live"):
            refused()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_are_inflated_within_the_same_limit(served, algorithm):
    """tritonclient's request compression (Content-Encoding), exact; a small body that would inflate
    past the limit is 413, decided while inflating; an unknown or broken encoding is refused."""
    import gzip
    import zlib

    url, models = served
    http = client(url)
    reference = StatefulReference(models["speech"])
    for index, steps in enumerate((3, 2)):
        chunk = RNG.uniform(-2, 2, (steps, 2)).astype(np.float32)
        answer = http.infer(
            "speech",
            request(chunk, binary=index == 0),
            sequence_id=f"compressed-{algorithm}",
            sequence_start=index == 0,
            headers=headers(),
            request_compression_algorithm=algorithm,
        )
        np.testing.assert_allclose(answer.as_numpy("outputs")[0], reference.feed(chunk), atol=1e-5)
    compress = gzip.compress if algorithm == "gzip" else zlib.compress
    limit = 4 * 2**20  # --max-body-bytes: no request's bound is over it
    bomb = compress(b"{" + b" " * (limit + 1) + b"}")
    assert len(bomb) < limit // 1000
    with httpx.Client(base_url=url, headers=headers(), timeout=30) as plain:

        def post(body: bytes, encoding: str) -> httpx.Response:
            return plain.post(
                "/v2/models/speech/infer",
                content=body,
                headers={"Content-Type": "application/json", "Content-Encoding": encoding},
            )

        answer = post(bomb, algorithm)
        assert answer.status_code == 413 and set(answer.json()) == {"error"}, answer.text
        body = {
            "inputs": [{"name": "inputs", "shape": [1, 1, 2], "datatype": "FP32", "data": [1, 2]}]
        }
        packed = compress(json.dumps(body).encode())
        assert post(packed, algorithm).status_code == 200
        assert post(packed[:-6], algorithm).status_code == 400  # cut short
        assert post(b"not compressed at all", algorithm).status_code == 400
        assert post(packed + b"more", algorithm).status_code == 400
        answer = post(packed, "br")
        assert answer.status_code == 415 and "Content-Encoding" in answer.json()["error"]
        created = plain.post(
            "/v1/sessions",
            content=compress(b'{"model": "speech"}'),
            headers={"Content-Type": "application/json", "Content-Encoding": algorithm},
        )
        assert created.status_code == 201, created.text  # /v1 reads the same bodies


def test_model_control_is_for_admins_and_what_is_not_supported_says_so(served):
    url, models = served
    http = client(url)
    index = http.get_model_repository_index(headers=headers())
    assert [(m["name"], m["version"], m["state"]) for m in index] == [
        ("desk", "1", "READY"),
        ("pair", "1", "READY"),
        ("speech", "1", "READY"),
        ("ticker", "1", "READY"),
    ]
    for act in (http.load_model, http.unload_model):
        with pytest.raises(InferenceServerException, match="admin key"):
            act("speech", headers=headers())
    http.load_model("speech", headers=ADMIN)  # nothing new in the repository: nothing changes
    assert http.is_model_ready("speech", headers=headers())
    with pytest.raises(InferenceServerException, match="failed to load 'wrong_model_name'"):
        http.load_model("wrong_model_name", headers=ADMIN)
    with pytest.raises(InferenceServerException, match="failed to load 'speech'"):
        http.load_model("speech", config='{"max_batch_size": 16}', headers=ADMIN)
    for call, match in (
        (lambda: http.register_system_shared_memory("r", "/r", 64, headers=headers()), "shared"),
        (lambda: http.get_system_shared_memory_status(headers=headers()), "shared memory"),
        (lambda: http.get_cuda_shared_memory_status(headers=headers()), "CUDA shared memory"),
        (lambda: http.get_trace_settings(headers=headers()), "trace settings"),
        (lambda: http.get_log_settings(headers=headers()), "log settings"),
    ):
        with pytest.raises(InferenceServerException, match=match):
            call()
    chunk = RNG.uniform(-2, 2, (2, 2)).astype(np.float32)
    for output, match in refused_outputs(triton):
        with pytest.raises(InferenceServerException, match=match):
            http.infer("speech", request(chunk), outputs=[output], headers=headers())


def test_tensors_go_by_the_models_names_and_other_datatypes_are_taken_when_exact(served):
    """Triton's programs name tensors as the model does (``INPUT``/``OUTPUT``) and send its dtype
    (INT32); the generic names still answer, and any numeric datatype is cast to the float32 the
    model computes in when that is exact, refused (changing nothing) when it is not."""
    url, models = served
    http = client(url)
    metadata = http.get_model_metadata("ticker", headers=headers())
    assert metadata["inputs"] == [{"name": "INPUT", "datatype": "INT32", "shape": [-1, -1, 1]}]
    assert metadata["outputs"] == [{"name": "OUTPUT", "datatype": "FP32", "shape": [-1, -1, 1]}]
    config = http.get_model_config("ticker", headers=headers())
    assert config["input"] == [{"name": "INPUT", "data_type": "TYPE_INT32", "dims": ["-1", "1"]}]
    reference = StatefulReference(models["ticker"])

    def send(name, datatype, values, binary=True, start=False):
        tensor = triton.InferInput(name, [1, *values.shape], datatype)
        tensor.set_data_from_numpy(values[None], binary_data=binary)
        return http.infer(
            "ticker", [tensor], sequence_id="ticks", sequence_start=start, headers=headers()
        )

    for index, chunk in enumerate(np.split(np.arange(-3, 6, dtype=np.int32).reshape(9, 1), 3)):
        answer = send("INPUT", "INT32", chunk, binary=index != 1, start=index == 0)
        expected = reference.feed(chunk.astype(np.float32))
        np.testing.assert_allclose(answer.as_numpy("OUTPUT")[0], expected, atol=1e-5)
        assert answer.as_numpy("outputs") is None  # answered by the model's name
    for datatype, values in (
        ("INT64", np.array([[7], [-2]], np.int64)),
        ("UINT8", np.array([[200]], np.uint8)),
        ("FP64", np.array([[0.5], [2**-20]], np.float64)),
        ("FP16", np.array([[1.5]], np.float16)),
        ("BOOL", np.array([[True], [False]])),
        ("FP32", np.array([[0.25]], np.float32)),
    ):
        for binary in (True, False):
            if datatype == "FP16" and not binary:
                continue  # tritonclient sends FP16 binary only
            answer = send("inputs", datatype, values, binary)  # the generic names
            expected = reference.feed(values.astype(np.float32))
            np.testing.assert_allclose(answer.as_numpy("outputs")[0], expected, atol=1e-5)
    for datatype, values in (
        ("INT32", np.array([[2**24 + 1]], np.int32)),
        ("INT64", np.array([[-(2**40)]], np.int64)),
        ("FP64", np.array([[0.1]], np.float64)),
    ):
        with pytest.raises(InferenceServerException, match="not float32 values"):
            send("INPUT", datatype, values)
    with pytest.raises(
        InferenceServerException, match="takes 1 input\\(s\\), 'INPUT'.*got 'INPUT0'"
    ):
        send("INPUT0", "INT32", np.array([[1]], np.int32))
    for bad in ('"data": [1.5]', '"data": [true]'):  # INT32 must be integers; BOOL only bools
        answer = httpx.post(
            f"{url}/v2/models/ticker/infer",
            content='{"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "INT32", '
            + bad
            + '}], "parameters": {"sequence_id": "ticks"}}',
            headers={**headers(), "Content-Type": "application/json"},
        )
        assert answer.status_code == 400 and "INT32 values" in answer.json()["error"], answer.text
    chunk = np.array([[4]], np.int32)  # none of it changed the sequence
    np.testing.assert_allclose(
        send("INPUT", "INT32", chunk).as_numpy("OUTPUT")[0],
        reference.feed(chunk.astype(np.float32)),
        atol=1e-5,
    )


def test_a_stateless_batch_is_b_independent_sequences_and_a_shape_is_never_guessed(served):
    url, models = served
    http = client(url)
    batch = RNG.uniform(-2, 2, (3, 4, 2)).astype(np.float32)
    for binary in (True, False):
        tensor = triton.InferInput("inputs", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        answer = http.infer("speech", [tensor], headers=headers())
        got = answer.as_numpy("outputs")
        assert got.shape == (3, 4, 4) and "parameters" not in answer.get_response()
        for row, sequence in zip(got, batch):  # each from a zero state, alone
            np.testing.assert_allclose(
                row, StatefulReference(models["speech"]).feed(sequence), atol=1e-5
            )
    last_step = http.infer(  # a last-step model: [B, size]
        "desk", [_tensor(batch[:, :, :1])], headers=headers()
    ).as_numpy("outputs")
    assert last_step.shape == (3, 3)
    np.testing.assert_allclose(
        last_step[2], StatefulReference(models["desk"]).feed(batch[2, :, :1]), atol=1e-5
    )
    for inputs, options, match in (
        (batch[0], {}, "without a sequence_id send"),  # [T, F] or [B, F]: not guessed
        (batch, {"sequence_id": 5, "sequence_start": True}, "carries its one chunk"),
        (RNG.uniform(-2, 2, (2, 300, 2)).astype(np.float32), {}, "the limit is 512"),
    ):
        with pytest.raises(InferenceServerException, match=match):
            http.infer("speech", [_tensor(inputs)], headers=headers(), **options)


def _tensor(values: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("inputs", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return tensor


def test_a_model_of_two_inputs_and_two_outputs_streams_exactly_over_v2_and_v1(served):
    """A feature tensor and a gate in, two outputs out, each by its name; /v1 takes the inputs'
    features side by side and gives the outputs so (the model's order)."""
    url, models = served
    http = client(url)
    metadata = http.get_model_metadata("pair", headers=headers())
    assert [(t["name"], t["shape"]) for t in metadata["inputs"]] == [
        ("features", [-1, -1, 3]),
        ("gate", [-1, -1, 1]),
    ]
    assert [(t["name"], t["shape"]) for t in metadata["outputs"]] == [
        ("level", [-1, -1, 2]),
        ("alarm", [-1, -1, 1]),
    ]
    config = http.get_model_config("pair", headers=headers())
    assert [t["dims"] for t in config["input"]] == [["-1", "3"], ["-1", "1"]]
    reference = StatefulReference(models["pair"])

    def tensors(chunk: np.ndarray, binary: bool) -> list:
        found = []
        for name, part in (("gate", chunk[:, 3:]), ("features", chunk[:, :3])):  # any order
            tensor = triton.InferInput(name, [1, *part.shape], "FP32")
            tensor.set_data_from_numpy(part[None], binary_data=binary)
            found.append(tensor)
        return found

    for index, steps in enumerate((3, 2)):
        chunk = RNG.uniform(-2, 2, (steps, 4)).astype(np.float32)
        asked = [triton.InferRequestedOutput("alarm")] if index else None
        answer = http.infer(
            "pair",
            tensors(chunk, binary=index == 0),
            outputs=asked,
            sequence_id="pair-1",
            sequence_start=index == 0,
            headers=headers(),
        )
        expected = reference.feed(chunk)
        np.testing.assert_allclose(answer.as_numpy("alarm")[0], expected[:, 2:], atol=1e-5)
        if index == 0:
            np.testing.assert_allclose(answer.as_numpy("level")[0], expected[:, :2], atol=1e-5)
        else:
            assert answer.as_numpy("level") is None  # only what was asked
    session = answer.get_response()["parameters"]["session_id"]
    chunk = RNG.uniform(-2, 2, (2, 4)).astype(np.float32)
    pushed = httpx.post(
        f"{url}/v1/sessions/{session}/chunks", json={"inputs": chunk.tolist()}, headers=headers()
    )
    assert pushed.status_code == 200, pushed.text
    np.testing.assert_allclose(pushed.json()["outputs"], reference.feed(chunk), atol=1e-5)
    for given, match in (
        (tensors(chunk, True)[:1], "takes 2 input"),  # the features missing
        ([_tensor(chunk[None])], "takes 2 input"),  # generic names: for one input only
    ):
        with pytest.raises(InferenceServerException, match=match):
            http.infer("pair", given, sequence_id="pair-1", headers=headers())
    runtimes = httpx.get(f"{url}/v1/models/pair", headers=headers()).json()["versions"]
    assert runtimes[0]["runtime"] == "onnx"  # the export splits and joins them too
