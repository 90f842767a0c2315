"""The WebSocket stream: the core property through the socket, binary and JSON; mixed with HTTP;
bad messages answered without closing; unknown sessions closed with 4404."""

import asyncio
import json
import time
import uuid

import httpx
import keras
import numpy as np
import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st

from app.model.loader import load_model
from app.model.step import StreamingModel
from harness.servers import serve_in_thread
from tests.support.models import architectures, chunked_sequences, split
from tests.support.reference import StatefulReference, assert_streamed_like_keras


def ws(url: str, session_id: str) -> str:
    return url.replace("http://", "ws://") + f"/v1/sessions/{session_id}/stream"


@settings(max_examples=8)
@given(architecture=architectures, data=st.data(), binary=st.booleans())
def test_random_models_over_websocket_equal_keras_stateful(architecture, data, binary):
    model = architecture.build()
    streams = data.draw(st.lists(chunked_sequences(architecture.features), min_size=1, max_size=3))

    async def stream(url, sequence, cuts, per_step, size):
        sid = httpx.post(f"{url}/v1/sessions").json()["session_id"]
        answers = []
        async with websockets.connect(ws(url, sid)) as socket:
            for seq, chunk in enumerate(split(sequence, cuts), start=1):
                if binary:
                    await socket.send(chunk.astype("<f4").tobytes())
                    values = np.frombuffer(await socket.recv(), "<f4")
                    answers.append(values.reshape(-1, size) if per_step else values)
                else:
                    await socket.send(json.dumps({"inputs": chunk.tolist(), "seq": seq}))
                    answers.append(np.array(json.loads(await socket.recv())["outputs"], np.float32))
            await socket.send(json.dumps({"op": "state"}))
            return answers, json.loads(await socket.recv())

    streaming = StreamingModel(model, "random")
    with serve_in_thread(streaming, max_chunk_steps=16) as url:
        spec = streaming.spec

        async def all_streams():
            return await asyncio.gather(
                *(stream(url, *s, spec.per_step, spec.output_size) for s in streams)
            )

        results = asyncio.run(all_streams())
    for (sequence, cuts), (answers, state) in zip(streams, results):
        assert_streamed_like_keras(model, sequence, split(sequence, cuts), answers, state)


def test_http_and_websocket_sessions_batched_together_each_get_what_they_get_alone():
    keras.utils.set_random_seed(9)
    model = keras.Sequential(
        [
            keras.Input(shape=(None, 2)),
            keras.layers.GRU(6, return_sequences=True),
            keras.layers.LSTM(4, return_sequences=True),
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(2)
    sequences = [
        rng.normal(size=(int(rng.integers(4, 30)), 2)).astype(np.float32) for _ in range(48)
    ]
    cuts = [
        np.sort(rng.choice(np.arange(1, len(s)), size=min(3, len(s) - 1), replace=False))
        for s in sequences
    ]

    async def over_http(client, i):
        sid = (await client.post("/v1/sessions")).json()["session_id"]
        outs = []
        for chunk in np.split(sequences[i], cuts[i]):
            outs.append(
                (
                    await client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": chunk.tolist()})
                ).json()["outputs"]
            )
        return outs

    async def over_ws(client, url, i):
        sid = (await client.post("/v1/sessions")).json()["session_id"]
        outs = []
        async with websockets.connect(ws(url, sid)) as socket:
            for chunk in np.split(sequences[i], cuts[i]):
                await socket.send(chunk.astype("<f4").tobytes())
                outs.append(np.frombuffer(await socket.recv(), "<f4").reshape(-1, 3))
        return outs

    async def run(url):
        async with httpx.AsyncClient(
            base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)
        ) as client:
            return await asyncio.gather(
                *(
                    over_http(client, i) if i % 2 else over_ws(client, url, i)
                    for i in range(len(sequences))
                )
            )

    with serve_in_thread(StreamingModel(model, "mixed")) as url:
        results = asyncio.run(run(url))
    for i, outputs in enumerate(results):
        alone = StatefulReference(model)
        for got, chunk in zip(outputs, np.split(sequences[i], cuts[i])):
            np.testing.assert_allclose(np.asarray(got, np.float32), alone.feed(chunk), atol=1e-5)


@pytest.fixture(scope="module")
def seed_server():
    with serve_in_thread(load_model("seed"), max_chunk_steps=16, max_body_bytes=2048) as url:
        yield url


BAD_MESSAGES = {
    "wrong byte count": (b"\x00\x00\x80", 422),
    "empty binary": (b"", 422),
    "NaN": (np.array([1.0, np.nan], "<f4").tobytes(), 422),
    "infinity": (np.array([np.inf], "<f4").tobytes(), 422),
    "too many steps": (np.zeros(17, "<f4").tobytes(), 413),
    "garbage text": ("this is not json", 400),
    "empty text": ("", 400),
    "unknown op": (json.dumps({"op": "explode"}), 422),
    "missing inputs": (json.dumps({"seq": 1}), 422),
    "ragged": (json.dumps({"inputs": [[1.0], [1.0, 2.0]]}), 422),
    "bad seq": (json.dumps({"inputs": [1.0], "seq": 99}), 409),
    "oversized text": (
        json.dumps({"inputs": [0.5] * 600}),
        413,
    ),  # over the byte limit (2048), under twice it
}


@pytest.mark.parametrize("case", sorted(BAD_MESSAGES))
def test_bad_message_gets_an_error_and_the_connection_keeps_working(seed_server, case):
    message, status = BAD_MESSAGES[case]
    sid = httpx.post(f"{seed_server}/v1/sessions").json()["session_id"]

    async def run():
        async with websockets.connect(ws(seed_server, sid)) as socket:
            await socket.send(np.array([0.5, -1.0], "<f4").tobytes())
            await socket.recv()
            before = httpx.get(f"{seed_server}/v1/sessions/{sid}/state").json()
            await socket.send(message)
            error = json.loads(await socket.recv())
            assert error["op"] == "error" and error["status"] == status and error["detail"]
            assert httpx.get(f"{seed_server}/v1/sessions/{sid}/state").json() == before
            await socket.send(json.dumps({"inputs": [0.25], "seq": before["seq"] + 1}))
            assert json.loads(await socket.recv())["seq"] == before["seq"] + 1

    asyncio.run(run())


def test_replies_come_in_message_order_even_when_pipelined(seed_server):
    sid = httpx.post(f"{seed_server}/v1/sessions").json()["session_id"]

    async def run():
        async with websockets.connect(ws(seed_server, sid)) as socket:
            for seq in range(1, 41):
                message = "garbage" if seq % 10 == 0 else json.dumps({"inputs": [seq / 10]})
                await socket.send(message)
            replies = [json.loads(await socket.recv()) for _ in range(40)]
        return replies

    replies = asyncio.run(run())
    applied = [r["seq"] for r in replies if r.get("op") != "error"]
    assert applied == list(range(1, 37))
    assert [i for i, r in enumerate(replies) if r.get("op") == "error"] == [9, 19, 29, 39]


def test_binary_json_and_commands_pipelined_apply_in_message_order(seed_server):
    """Binary chunks are queued as they are read, the others through a task each: neither may
    overtake a message sent before it."""
    sid = httpx.post(f"{seed_server}/v1/sessions").json()["session_id"]
    frame = np.array([0.5, -0.5], "<f4").tobytes()
    script = [
        frame,
        json.dumps({"op": "reset"}),
        frame,
        frame,
        json.dumps({"op": "state"}),
        json.dumps({"inputs": [0.1, 0.2, 0.3]}),
        frame,
        json.dumps({"op": "state"}),
        json.dumps({"op": "reset"}),
        json.dumps({"op": "state"}),
        frame,
    ]

    async def run():
        async with websockets.connect(ws(seed_server, sid)) as socket:
            for message in script * 10:  # all sent before any reply is read
                await socket.send(message)
            return [await socket.recv() for _ in range(len(script) * 10)]

    replies = asyncio.run(run())
    steps = [json.loads(r).get("steps") for r in replies if isinstance(r, str)]
    states = [json.loads(r) for r in replies if isinstance(r, str) and "layers" in json.loads(r)]
    assert [s["steps"] for s in states] == [4, 9, 0] * 10, steps
    assert all(
        isinstance(r, bytes) for i, r in enumerate(replies) if script[i % len(script)] is frame
    )


@pytest.mark.parametrize("name", ["nobody", "é" * 100])
def test_unknown_session_is_closed_with_4404(seed_server, name):
    async def run():
        async with websockets.connect(ws(seed_server, f"{name}-{uuid.uuid4().hex}")) as socket:
            await socket.recv()

    with pytest.raises(websockets.ConnectionClosed) as closed:
        asyncio.run(run())
    assert closed.value.rcvd.code == 4404


def test_commands_over_the_stream(seed_server):
    sid = httpx.post(f"{seed_server}/v1/sessions").json()["session_id"]

    async def run():
        async with websockets.connect(ws(seed_server, sid)) as socket:
            await socket.send(np.array([1.0, 2.0], "<f4").tobytes())
            await socket.recv()
            await socket.send(json.dumps({"op": "reset"}))
            reset = json.loads(await socket.recv())
            await socket.send(json.dumps({"op": "state"}))
            return reset, json.loads(await socket.recv())

    reset, state = asyncio.run(run())
    assert (
        reset["op"] == "reset" and reset["session"]["steps"] == 0 and reset["session"]["seq"] == 1
    )
    assert state["layers"][0]["states"] == [[0.0] * 5]


def test_a_fragmented_message_is_one_chunk_and_fragments_over_the_limit_close_the_stream(
    seed_server,
):
    """The stream reassembles a message sent in fragments (picows hands over frames, not
    messages); fragments that add up past the message limit close it with 1009, unread."""
    first, second = (httpx.post(f"{seed_server}/v1/sessions").json()["session_id"] for _ in "ab")
    chunk = np.array([0.5, -1.0, 0.25, 2.0], "<f4")

    async def run():
        async with websockets.connect(ws(seed_server, first)) as socket:
            await socket.send(chunk.tobytes())
            whole = await socket.recv()
        async with websockets.connect(ws(seed_server, second)) as socket:
            await socket.send([chunk[:1].tobytes(), chunk[1:3].tobytes(), chunk[3:].tobytes()])
            parts = await socket.recv()
            await socket.send(['{"inputs": ', "[0.5]", "}"])
            text = json.loads(await socket.recv())
            await socket.send([b"\x00" * 4096] * 4)  # 16 KiB: over twice the body limit (2048)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket.recv()
        return whole, parts, text, closed.value.rcvd.code

    whole, parts, text, code = asyncio.run(run())
    assert whole == parts and text["seq"] == 2 and code == 1009


@pytest.mark.slow
def test_a_client_that_never_reads_its_answers_is_no_longer_read():
    """Answers the peer leaves unread fill the socket, then the server's write buffer; the server
    then stops reading that stream (else a client that only sends would grow the server's memory
    without end). Big answers (64 steps x 256 outputs, 64 KiB) fill the buffers in a moment: the
    chunks applied stop growing, however long the client goes on sending."""
    import socket

    from tests.support.attacks import frame, handshake

    keras.utils.set_random_seed(9)
    inputs = keras.Input(shape=(None, 1))
    wide = keras.layers.Dense(256)(keras.layers.GRU(2, return_sequences=True)(inputs))
    with serve_in_thread(
        StreamingModel(keras.Model(inputs, wide), "wide"), max_chunk_steps=64
    ) as url:
        sid = httpx.post(f"{url}/v1/sessions").json()["session_id"]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        assert handshake(sock, f"/v1/sessions/{sid}/stream", None, False).startswith(
            b"HTTP/1.1 101"
        )
        sock.setblocking(False)
        message = frame(np.zeros(64, "<f4").tobytes(), opcode=2)
        applied = []
        for _ in range(2):
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    sock.send(message)
                except BlockingIOError:
                    time.sleep(0.01)
            applied.append(httpx.get(f"{url}/v1/sessions/{sid}").json()["seq"])
        sock.close()
    assert 0 < applied[0] == applied[1], applied
