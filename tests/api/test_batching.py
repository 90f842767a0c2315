"""Batched equals alone: many sessions pushing chunks of different lengths at once, over HTTP."""

import asyncio
import re

import httpx
import keras
import numpy as np
import pytest

from app.model.step import StreamingModel
from harness.servers import serve_in_thread
from tests.support.reference import StatefulReference, state_rows

SESSIONS = 64


@pytest.fixture(scope="module")
def lstm_stack():
    keras.utils.set_random_seed(7)
    return keras.Sequential(
        [
            keras.Input(shape=(None, 3)),
            keras.layers.LSTM(8, return_sequences=True, name="lstm"),
            keras.layers.GRU(6, return_sequences=True, name="gru"),
            keras.layers.Dense(2, name="head"),
        ]
    )


def batch_sizes(metrics_text: str) -> tuple[float, float]:
    count = float(re.search(r"^srnn_batch_size_count (\S+)", metrics_text, re.M).group(1))
    total = float(re.search(r"^srnn_batch_size_sum (\S+)", metrics_text, re.M).group(1))
    return count, total


@pytest.mark.slow
def test_64_concurrent_sessions_each_get_what_they_get_alone(lstm_stack):
    rng = np.random.default_rng(11)
    sequences = [
        rng.normal(size=(int(rng.integers(5, 40)), 3)).astype(np.float32) for _ in range(SESSIONS)
    ]
    cuts = [
        np.sort(rng.choice(np.arange(1, len(s)), size=min(4, len(s) - 1), replace=False))
        for s in sequences
    ]

    async def stream(client, index):
        sid = f"batch-{index}"
        await client.post("/v1/sessions", json={"session_id": sid})
        outputs = []
        for chunk in np.split(sequences[index], cuts[index]):
            answer = await client.post(
                f"/v1/sessions/{sid}/chunks", json={"inputs": chunk.tolist()}
            )
            assert answer.status_code == 200, answer.text
            outputs.append(np.array(answer.json()["outputs"], np.float32))
        state = (await client.get(f"/v1/sessions/{sid}/state")).json()
        return outputs, state

    async def run_all(url):
        limits = httpx.Limits(max_connections=SESSIONS)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            before = batch_sizes((await client.get("/metrics")).text)
            results = await asyncio.gather(*(stream(client, i) for i in range(SESSIONS)))
            after = batch_sizes((await client.get("/metrics")).text)
            return results, before, after

    with serve_in_thread(StreamingModel(lstm_stack, "lstm-stack"), max_batch=64) as url:
        results, before, after = asyncio.run(run_all(url))

    calls, chunks = after[0] - before[0], after[1] - before[1]
    assert chunks == sum(len(c) + 1 for c in cuts)
    assert calls < chunks, "no two sessions ever shared a model call"
    for index, (outputs, state) in enumerate(results):
        alone = StatefulReference(lstm_stack)
        for got, chunk in zip(outputs, np.split(sequences[index], cuts[index])):
            np.testing.assert_allclose(got, alone.feed(chunk), atol=1e-5)
        for got, want in zip(state_rows(state), alone.states()):
            np.testing.assert_allclose(got, want, atol=1e-5)
