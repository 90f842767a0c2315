"""Triton's own example programs (triton-inference-server/client, ``src/python/examples``), run the
way they use tritonclient, against a repository holding a Keras model that does what their
``simple_sequence`` model does (:func:`tests.support.models.simple_sequence`): the sequence
examples over HTTP, gRPC and a gRPC stream, with integer and string ids, and the checks their
health, metadata and config programs make. docs/triton.md's table of the examples is kept true
here. One in-thread server for the module, of its own: the programs check the repository's index
and name their model, so it holds that model alone."""

from __future__ import annotations

import queue
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from harness.servers import free_port, serve_in_thread
from tests.support.models import simple_sequence
from tests.support.repository import publish

VALUES = [11, 7, 5, 3, 2, 0, 1]  # what the examples send after each sequence's first value


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("examples") / "models"
    publish(repo, "simple_sequence", 1, simple_sequence())
    port = free_port()
    with serve_in_thread(None, model_repository=str(repo), xla=False, grpc_port=port) as url:
        yield {
            httpclient: httpclient.InferenceServerClient(url.removeprefix("http://")),
            grpcclient: grpcclient.InferenceServerClient(f"127.0.0.1:{port}"),
        }


def request(module, value: int) -> tuple[list, list]:
    """The inputs and outputs the examples build for one value: INPUT [1, 1] INT32, OUTPUT."""
    data = np.full(shape=[1, 1], fill_value=value, dtype=np.int32)
    inputs = [module.InferInput("INPUT", data.shape, "INT32")]
    inputs[0].set_data_from_numpy(data)
    return inputs, [module.InferRequestedOutput("OUTPUT")]


def step(module, values: list[int], count: int, sequence_id) -> dict:
    """The arguments of the examples' call for a sequence's ``count``-th value (from 1)."""
    inputs, outputs = request(module, values[count - 1])
    return {
        "model_name": "simple_sequence",
        "inputs": inputs,
        "outputs": outputs,
        "sequence_id": sequence_id,
        "sequence_start": count == 1,
        "sequence_end": count == len(values),
    }


def sync_send(client, module, values: list[int], sequence_id) -> list:
    return [
        client.infer(**step(module, values, count, sequence_id)).as_numpy("OUTPUT")[0][0]
        for count in range(1, len(values) + 1)
    ]


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_the_sequence_sync_examples(served, module):
    """simple_http_sequence_sync_infer_client.py and simple_grpc_sequence_sync_infer_client.py:
    two integer ids and a UUID string id; the first value comes back plus 1, the rest as sent."""
    client = served[module]
    negated = [-v for v in VALUES]
    assert sync_send(client, module, [0, *VALUES], 1000) == [1, *VALUES]
    assert sync_send(client, module, [100, *negated], 1001) == [101, *negated]
    assert sync_send(client, module, [20, *negated], str(uuid.uuid4())) == [21, *negated]


def test_the_sequence_stream_example(served):
    """simple_grpc_sequence_stream_infer_client.py: three sequences (two integer ids, a UUID) sent
    one after another on one stream, each request with a request id ``{sequence}_{count}`` by which
    the answers, read from the callback, are told apart."""
    client = served[grpcclient]
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error or result))
    negated = [-v for v in VALUES]
    sequences = {1000: [0, *VALUES], 1001: [100, *negated], str(uuid.uuid4()): [20, *negated]}
    try:
        for sequence_id, values in sequences.items():
            for count in range(1, len(values) + 1):
                client.async_stream_infer(
                    **step(grpcclient, values, count, sequence_id),
                    request_id=f"{sequence_id}_{count}",
                )
        got = [answers.get(timeout=10) for _ in range(3 * (len(VALUES) + 1))]
    finally:
        client.stop_stream()
    assert not [g for g in got if isinstance(g, InferenceServerException)], got
    by_sequence: dict[str, list] = {}
    for answer in got:
        sequence_id = answer.get_response().id.rsplit("_", 1)[0]
        by_sequence.setdefault(sequence_id, []).append(answer.as_numpy("OUTPUT")[0][0])
    assert by_sequence == {
        str(key): [values[0] + 1, *values[1:]] for key, values in sequences.items()
    }


@pytest.mark.parametrize("module", [httpclient, grpcclient], ids=["http", "grpc"])
def test_the_health_metadata_and_config_checks(served, module):
    """What simple_*_health_metadata.py and the model-control programs check: live, ready, the
    model ready, its metadata and config by its tensors' names, and an unknown model's error
    worded as Triton's ("Request for unknown model")."""
    client = served[module]
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("simple_sequence")
    as_json = {"as_json": True} if module is grpcclient else {}
    metadata = client.get_model_metadata("simple_sequence", **as_json)
    assert metadata["inputs"][0]["name"] == "INPUT" and metadata["inputs"][0]["datatype"] == "INT32"
    assert metadata["outputs"][0]["name"] == "OUTPUT"
    config = client.get_model_config("simple_sequence", **as_json)
    config = config.get("config", config)
    assert config["name"] == "simple_sequence" and "sequence_batching" in config
    index = client.get_model_repository_index(**as_json)
    models = index if isinstance(index, list) else index["models"]
    assert [(m["name"], m["state"]) for m in models] == [("simple_sequence", "READY")]
    assert not client.is_model_ready("wrong_model_name")
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("wrong_model_name")
    assert caught.value.message().startswith("Request for unknown model")
