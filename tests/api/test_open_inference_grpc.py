"""The Open Inference Protocol over gRPC, spoken by an unmodified ``tritonclient.grpc``: unary and
bidirectional-stream sequences exact against Keras, interleaved sequences on one stream and from
concurrent async clients, keys as metadata, the protocol's errors, health and metadata."""

from __future__ import annotations

import asyncio
import logging
import queue
import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from app.api.parsing import ChunkLimits
from harness.keys import auth
from harness.servers import serve_in_thread
from harness.waiting import free_port
from tests.support.reference import StatefulReference
from tests.support.repository import save_version
from tests.support.triton import refused_outputs

KEYS = {"alpha": "alpha-key-grpc", "beta": "beta-key-grpc"}
RNG = np.random.default_rng(17)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("grpc") / "models"
    model = save_version(repo, "speech", 1, seed=111)
    port = free_port()
    api_keys = ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items())
    with serve_in_thread(
        None,
        model_repository=str(repo),
        api_keys=api_keys,
        admin_keys="root-key-grpc",
        xla=False,
        grpc_port=port,
    ) as url:
        yield url, f"127.0.0.1:{port}", model


def metadata(tenant: str = "alpha") -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[tenant]}"}


def tensor(chunk: np.ndarray, module=triton):
    found = module.InferInput("inputs", [1, *chunk.shape], "FP32")
    found.set_data_from_numpy(chunk[None])
    return [found]


def test_each_grpc_call_gets_an_access_line_with_its_tenant_and_status(served, caplog):
    _, address, _ = served
    client = triton.InferenceServerClient(address)
    caplog.set_level(logging.INFO, logger="app.access")
    assert client.is_model_ready("speech", headers=metadata("beta"))
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("nope", headers=metadata("beta"))
    lines = [r for r in caplog.records if r.name == "app.access" and r.method == "GRPC"]
    found = {(r.path.rsplit("/", 1)[-1], r.status, r.tenant) for r in lines}
    assert {("ModelReady", 200, "beta"), ("ModelMetadata", 404, "beta")} <= found, found


def test_a_unary_sequence_equals_keras_and_its_session_is_the_same_over_v1(served):
    url, address, model = served
    client = triton.InferenceServerClient(address)
    reference = StatefulReference(model)
    for index, steps in enumerate((2, 3, 1)):
        chunk = RNG.uniform(-2, 2, (steps, 2)).astype(np.float32)
        answer = client.infer(
            "speech", tensor(chunk), sequence_id=42, sequence_start=index == 0, headers=metadata()
        )
        np.testing.assert_allclose(answer.as_numpy("outputs")[0], reference.feed(chunk), atol=1e-5)
    session_id = answer.get_response().parameters["session_id"].string_param
    state = httpx.get(f"{url}/v1/sessions/{session_id}/state", headers=auth(KEYS["alpha"])).json()
    assert (state["seq"], state["steps"]) == (3, 6)
    # The same sequence id over HTTP is the same sequence: it goes on from there.
    chunk = RNG.uniform(-2, 2, (1, 2)).astype(np.float32)
    body = {
        "inputs": [
            {
                "name": "inputs",
                "shape": [1, 1, 2],
                "datatype": "FP32",
                "data": chunk.ravel().tolist(),
            }
        ],
        "parameters": {"sequence_id": 42, "sequence_end": True},
    }
    answer = httpx.post(
        f"{url}/v2/models/speech/infer", json=body, headers=auth(KEYS["alpha"])
    ).json()
    np.testing.assert_allclose(
        answer["outputs"][0]["data"], reference.feed(chunk).ravel(), atol=1e-5
    )


def test_interleaved_sequences_on_one_bidirectional_stream_stay_exact_and_in_order(served):
    _, address, model = served
    client = triton.InferenceServerClient(address)
    answers: queue.Queue = queue.Queue()
    client.start_stream(
        callback=lambda result, error: answers.put((result, error)), headers=metadata()
    )
    count, steps = 4, 5
    chunks = RNG.uniform(-2, 2, (steps, count, 2, 2)).astype(np.float32)
    try:
        for step in range(steps):
            for index in range(count):
                client.async_stream_infer(
                    "speech",
                    tensor(chunks[step, index]),
                    sequence_id=f"stream-{index}",
                    sequence_start=step == 0,
                    sequence_end=step == steps - 1,
                    request_id=f"{index}:{step}",
                )
        got = [answers.get(timeout=30) for _ in range(steps * count)]
    finally:
        client.stop_stream()
    references = [StatefulReference(model) for _ in range(count)]
    for position, (result, error) in enumerate(got):
        assert error is None, error
        index, step = map(int, result.get_response().id.split(":"))
        assert (step, index) == divmod(position, count)  # answered in the order sent
        np.testing.assert_allclose(
            result.as_numpy("outputs")[0], references[index].feed(chunks[step, index]), atol=1e-5
        )


def test_concurrent_async_clients_with_their_own_sequences_stay_exact(served):
    _, address, model = served
    count, steps = 8, 4
    chunks = RNG.uniform(-2, 2, (count, steps, 3, 2)).astype(np.float32)

    async def one(index: int) -> list[np.ndarray]:
        client = triton_aio.InferenceServerClient(address)
        try:
            found = []
            for step in range(steps):
                answer = await client.infer(
                    "speech",
                    tensor(chunks[index, step], triton_aio),
                    sequence_id=9000 + index,
                    sequence_start=step == 0,
                    sequence_end=step == steps - 1,
                    headers=metadata(),
                )
                found.append(answer.as_numpy("outputs")[0])
            return found
        finally:
            await client.close()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(count)))

    for index, found in enumerate(asyncio.run(main())):
        reference = StatefulReference(model)
        for step, got in enumerate(found):
            np.testing.assert_allclose(got, reference.feed(chunks[index, step]), atol=1e-5)


def test_keys_tenants_and_bad_requests_get_the_protocols_errors_and_change_nothing(served):
    _, address, model = served
    client = triton.InferenceServerClient(address)
    reference = StatefulReference(model)
    chunk = RNG.uniform(-2, 2, (2, 2)).astype(np.float32)
    start = client.infer(
        "speech", tensor(chunk), sequence_id=7, sequence_start=True, headers=metadata()
    )
    np.testing.assert_allclose(start.as_numpy("outputs")[0], reference.feed(chunk), atol=1e-5)

    def refused(inputs, status: str, model_name: str = "speech", headers=None, **options):
        with pytest.raises(InferenceServerException) as caught:
            client.infer(
                model_name,
                inputs,
                sequence_id=7,
                headers=metadata() if headers is None else headers,
                **options,
            )
        assert caught.value.status() == status, caught.value

    wrong_type = triton.InferInput("inputs", [1, 2, 2], "FP64")  # not float32 values
    wrong_type.set_data_from_numpy(chunk[None].astype(np.float64) + 1e-12)
    refused([wrong_type], "StatusCode.INVALID_ARGUMENT")
    wrong_type = triton.InferInput("inputs", [1, 2, 2], "BYTES")
    wrong_type.set_data_from_numpy(np.array([[[b"1", b"2"], [b"3", b"4"]]], dtype=np.object_))
    refused([wrong_type], "StatusCode.INVALID_ARGUMENT")
    wrong_shape = triton.InferInput("inputs", [1, 2, 3], "FP32")
    wrong_shape.set_data_from_numpy(np.ones((1, 2, 3), np.float32))
    refused([wrong_shape], "StatusCode.INVALID_ARGUMENT")
    refused(tensor(chunk), "StatusCode.NOT_FOUND", model_name="nope")
    refused(tensor(chunk), "StatusCode.UNAUTHENTICATED", headers={})
    refused(
        tensor(chunk),
        "StatusCode.UNAUTHENTICATED",
        headers={"authorization": "Bearer wrong-key-123"},
    )
    with pytest.raises(InferenceServerException, match="not live"):  # beta's 7 is another sequence
        client.infer("speech", tensor(chunk), sequence_id=7, headers=metadata("beta"))
    again = RNG.uniform(-2, 2, (1, 2)).astype(np.float32)
    answer = client.infer(
        "speech", tensor(again), sequence_id=7, sequence_end=True, headers=metadata()
    )
    np.testing.assert_allclose(answer.as_numpy("outputs")[0], reference.feed(again), atol=1e-5)
    with pytest.raises(InferenceServerException, match="not live"):  # ended: gone
        client.infer("speech", tensor(again), sequence_id=7, headers=metadata())


def test_health_readiness_and_metadata(served):
    _, address, model = served
    client = triton.InferenceServerClient(address)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("speech", headers=metadata()) and client.is_model_ready(
        "speech", "1", headers=metadata()
    )
    assert not client.is_model_ready("nope", headers=metadata())
    for ask in (client.get_model_metadata, client.get_model_config):  # as Triton's examples test
        with pytest.raises(InferenceServerException) as caught:
            ask("nope", headers=metadata())
        assert caught.value.message().startswith("Request for unknown model"), caught.value
    named = model.layers[0].name, model.layers[-1].name  # as the model declares them
    config = client.get_model_config("speech", headers=metadata(), as_json=True)["config"]
    assert config["input"] == [{"name": named[0], "data_type": "TYPE_FP32", "dims": ["-1", "2"]}]
    assert config["sequence_batching"]["max_sequence_idle_microseconds"] == str(3600 * 10**6)
    assert config["max_batch_size"] == 1 and config["backend"] == "stateful_rnn"
    assert client.get_server_metadata(headers=metadata()).name == "stateful-rnn"
    found = client.get_model_metadata("speech", headers=metadata(), as_json=True)
    assert found["inputs"] == [{"name": named[0], "datatype": "FP32", "shape": ["-1", "-1", "2"]}]
    assert found["outputs"][0]["name"] == named[1]
    assert found["outputs"][0]["shape"] == ["-1", "-1", "4"] and found["versions"] == ["1"]


def test_the_docs_grpc_example_works_as_written():
    import re
    from pathlib import Path

    from app.model.builtin import build_seed_model
    from app.model.loader import load_model

    section = (Path(__file__).resolve().parents[2] / "docs" / "triton.md").read_text()
    code = re.findall(r"```python\n(.*?)```", section, re.S)[1]
    printed, port = [], free_port()
    with serve_in_thread(load_model("seed"), xla=False, grpc_port=port):
        exec(code.replace("127.0.0.1:8001", f"127.0.0.1:{port}"), {"print": printed.append})
    whole = StatefulReference(build_seed_model()).feed(
        np.arange(-4, 5, dtype=np.float32).reshape(9, 1)
    )
    np.testing.assert_allclose(np.asarray(printed[0]).reshape(-1), whole, atol=1e-5)


@pytest.mark.process
def test_with_api_workers_the_engine_process_serves_grpc():
    from app.model.builtin import build_seed_model
    from harness.servers import ServerProcess, running

    port = free_port()
    with running(
        [
            ServerProcess(
                "--model", "seed", "--workers", "2", "--grpc-port", str(port), "--xla", "false"
            )
        ]
    ) as (server,):
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        reference = StatefulReference(build_seed_model())
        for index, chunk in enumerate(
            np.split(np.arange(-4, 5, dtype=np.float32).reshape(9, 1), 3)
        ):
            answer = client.infer("seed", tensor(chunk), sequence_id=1, sequence_start=index == 0)
            np.testing.assert_allclose(
                answer.as_numpy("outputs")[0], reference.feed(chunk), atol=1e-5
            )
        # A worker's /v2 statistics are the engine process's.
        (stats,) = httpx.get(f"{server.url}/v2/models/seed/stats").json()["model_stats"]
        assert stats["inference_count"] == 3


def test_the_statistics_extension_over_grpc_is_the_http_document_for_admins_only(served):
    url, address, _ = served
    client = triton.InferenceServerClient(address)
    admin = {"authorization": "Bearer root-key-grpc"}
    (before,) = client.get_inference_statistics("speech", headers=admin, as_json=True)[
        "model_stats"
    ]
    chunk = RNG.uniform(-1, 1, (2, 2)).astype(np.float32)
    for index in range(2):
        client.infer(
            "speech",
            tensor(chunk),
            sequence_id=4242,
            sequence_start=index == 0,
            sequence_end=index == 1,
            headers=metadata(),
        )
    (after,) = client.get_inference_statistics("speech", "1", headers=admin, as_json=True)[
        "model_stats"
    ]
    # JSON of a protobuf message: 64-bit integers as strings, fields at zero left out.
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 2
    assert int(after["inference_stats"]["success"]["count"]) == int(after["inference_count"])
    over_http = httpx.get(f"{url}/v2/models/speech/stats", headers=admin).json()["model_stats"][0]
    assert over_http["inference_count"] == int(after["inference_count"])
    with pytest.raises(InferenceServerException, match="admin key"):
        client.get_inference_statistics("speech", headers=metadata())


def test_a_message_over_the_chunk_limit_is_refused_unparsed_and_raw_contents_match_inputs(served):
    # The attack: a 4 MiB ModelInfer of 1M fp32_contents cost ~173 ms of CPU to parse and refuse.
    _, address, _ = served
    limits = ChunkLimits.of(2, 512, 4 * 2**20)
    with grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", 16 * 2**20)]
    ) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def request(count: int, raws: int = 0) -> pb.ModelInferRequest:
            tensor = pb.ModelInferRequest.InferInputTensor(
                name="inputs", datatype="FP32", shape=[1, count // 2, 2]
            )
            if not raws:
                tensor.contents.fp32_contents.extend(np.full(count, 0.5, np.float32))
            return pb.ModelInferRequest(
                model_name="speech",
                inputs=[tensor],
                raw_input_contents=[np.full(count, 0.5, "<f4").tobytes()] * raws,
            )

        bomb = request(2**20)
        assert bomb.ByteSize() > limits.request_bytes
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(bomb, metadata=list(metadata().items()))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 1
        # The largest chunk allowed is under the bound, as JSON-free contents or raw bytes.
        for raws in (0, 1):
            answer = stub.ModelInfer(request(1024, raws), metadata=list(metadata().items()))
            assert list(answer.outputs[0].shape) == [1, 512, 4]
        # A second raw_input_contents entry belongs to no input: refused, not ignored.
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request(4, raws=2), metadata=list(metadata().items()))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents" in refused.value.details()


def test_a_stream_beyond_its_tenants_share_waits_its_turn_and_its_streams_are_capped(tmp_path):
    """A server of its own: shares of 2, so that one stream holds more requests than its share."""
    repo = tmp_path / "models"
    model = save_version(repo, "speech", 1, seed=113)
    port = free_port()
    with serve_in_thread(
        None,
        model_repository=str(repo),
        api_keys=f"alpha:{KEYS['alpha']}",
        xla=False,
        grpc_port=port,
        max_in_flight=8,
        max_in_flight_per_tenant=2,
        shed_delay=0.05,
    ):
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        answers: queue.Queue = queue.Queue()
        client.start_stream(
            callback=lambda result, error: answers.put((result, error)), headers=metadata()
        )
        chunks = RNG.uniform(-2, 2, (24, 2, 2)).astype(np.float32)
        others: list = []
        try:
            for index, chunk in enumerate(chunks):  # all sent at once: 12 times the share
                client.async_stream_infer(
                    "speech",
                    tensor(chunk),
                    sequence_id=4242,
                    sequence_start=index == 0,
                    parameters={"seq": index + 1},
                )
            got = [answers.get(timeout=30) for _ in chunks]
            # A refused request would have left a hole: every one waited its turn instead.
            reference = StatefulReference(model)
            for (result, error), chunk in zip(got, chunks):
                assert error is None, error
                np.testing.assert_allclose(
                    result.as_numpy("outputs")[0], reference.feed(chunk), atol=1e-5
                )
            # The tenant holds two streams at most (its share): a third is refused.
            others += [triton.InferenceServerClient(f"127.0.0.1:{port}") for _ in range(2)]
            refusals: queue.Queue = queue.Queue()
            for other in others:
                other.start_stream(
                    callback=lambda result, error: refusals.put(error), headers=metadata()
                )
                other.async_stream_infer("speech", tensor(chunks[0]))
            errors = [refusals.get(timeout=30) for _ in others]
            assert errors[0] is None and "streams of yours are open" in str(errors[1])
        finally:
            client.stop_stream()
            for other in others:
                other.stop_stream()


def test_model_control_is_for_admins_and_what_is_not_supported_says_so(served):
    _, address, _ = served
    client = triton.InferenceServerClient(address)
    found = client.get_model_repository_index(headers=metadata(), as_json=True)["models"]
    assert found == [{"name": "speech", "version": "1", "state": "READY"}]
    for act in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException, match="admin key") as caught:
            act("speech", headers=metadata())
        assert caught.value.status() == "StatusCode.PERMISSION_DENIED"
    admin = {"authorization": "Bearer root-key-grpc"}
    client.load_model("speech", headers=admin)
    with pytest.raises(InferenceServerException, match="failed to load 'wrong_model_name'"):
        client.load_model("wrong_model_name", headers=admin)
    for call, match in (
        (lambda: client.get_system_shared_memory_status(headers=metadata()), "shared memory"),
        (lambda: client.unregister_cuda_shared_memory(headers=metadata()), "CUDA shared memory"),
        (lambda: client.get_trace_settings(headers=metadata()), "trace settings"),
        (lambda: client.get_log_settings(headers=metadata()), "log settings"),
    ):
        with pytest.raises(InferenceServerException, match=match) as caught:
            call()
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
    chunk = RNG.uniform(-2, 2, (2, 2)).astype(np.float32)
    for output, match in refused_outputs(triton):
        with pytest.raises(InferenceServerException, match=match):
            client.infer("speech", tensor(chunk), outputs=[output], headers=metadata())


def test_each_datatype_is_read_from_its_own_contents_field(served):
    """gRPC clients that fill ``contents`` rather than raw bytes: each datatype has its field."""
    _, address, model = served
    values = np.array([[3, -1], [0, 2]], np.int64)
    expected = StatefulReference(model).feed(values.astype(np.float32))
    fields = {
        "INT32": "int_contents",
        "INT64": "int64_contents",
        "FP64": "fp64_contents",
        "FP32": "fp32_contents",
        "BOOL": "bool_contents",
    }
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for datatype, field in fields.items():
            given = (values != 0) if datatype == "BOOL" else values
            tensor = pb.ModelInferRequest.InferInputTensor(
                name="inputs", datatype=datatype, shape=[1, 2, 2]
            )
            getattr(tensor.contents, field).extend(given.reshape(-1).tolist())
            answer = stub.ModelInfer(
                pb.ModelInferRequest(model_name="speech", inputs=[tensor]),
                metadata=list(metadata().items()),
            )
            got = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(2, 4)
            want = (
                StatefulReference(model).feed(given.astype(np.float32))
                if datatype == "BOOL"
                else expected
            )
            np.testing.assert_allclose(got, want, atol=1e-5)
