"""The core property through a real server: random models, sequences, chunkings and concurrency,
every output and final state equal to Keras ``stateful=True`` fed the same chunks."""

import asyncio
import uuid

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.model.step import StreamingModel
from harness.servers import serve_in_thread
from tests.support.models import architectures, chunked_sequences, split
from tests.support.reference import assert_streamed_like_keras


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["memory", "redis"])
@settings(max_examples=8)
@given(architecture=architectures, data=st.data())
def test_random_models_over_http_equal_keras_stateful(
    backend, redis_url, redis_prefix, architecture, data
):
    check_random_model_over_http(
        architecture, data, backend=backend, redis_url=redis_url, redis_prefix=redis_prefix
    )


def check_random_model_over_http(architecture, data, **options) -> None:
    """The property's body, for any backend options (tests/deploy runs it on a Redis Cluster)."""
    model = architecture.build()
    streams = data.draw(st.lists(chunked_sequences(architecture.features), min_size=1, max_size=4))
    flat = architecture.features == 1 and data.draw(st.booleans())

    async def stream(client, index, sequence, cuts):
        sid = f"prop-{uuid.uuid4().hex}"
        assert (await client.post("/v1/sessions", json={"session_id": sid})).status_code == 201
        answers = []
        for chunk in split(sequence, cuts):
            inputs = chunk[:, 0].tolist() if flat else chunk.tolist()
            answer = await client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": inputs})
            assert answer.status_code == 200, answer.text
            answers.append(np.array(answer.json()["outputs"], np.float32))
        return answers, (await client.get(f"/v1/sessions/{sid}/state")).json()

    async def run_all(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(stream(client, i, *s) for i, s in enumerate(streams)))

    with serve_in_thread(StreamingModel(model, "random"), max_chunk_steps=16, **options) as url:
        results = asyncio.run(run_all(url))

    for (sequence, cuts), (answers, state) in zip(streams, results):
        assert_streamed_like_keras(model, sequence, split(sequence, cuts), answers, state)
