"""The AsyncAPI document describes what the WebSocket really sends: each kind of reply of a real
server, validated against its message's schema in the document served at /asyncapi.json."""

import asyncio
import json

import httpx
import jsonschema
import numpy as np
import pytest
import websockets

from app.model.loader import load_model
from harness.servers import serve_in_thread


@pytest.fixture(scope="module")
def url():
    with serve_in_thread(load_model("seed")) as url:
        yield url


def validator(document: dict, name: str) -> jsonschema.Draft202012Validator:
    payload = document["components"]["messages"][name]["payload"]
    return jsonschema.Draft202012Validator({**payload, "components": document["components"]})


def test_every_reply_the_stream_sends_is_the_message_the_document_describes(url):
    document = httpx.get(f"{url}/asyncapi.json").json()
    assert document["asyncapi"].startswith("3.")
    assert document["channels"]["stream"]["address"] == "/v1/sessions/{session_id}/stream"
    sid = httpx.post(f"{url}/v1/sessions").json()["session_id"]
    sent = {"chunk": {"inputs": [0.5, 1.0], "seq": 1}, "command": {"op": "state"}}

    async def run() -> tuple[dict, bytes]:
        replies = {}
        async with websockets.connect(f"ws{url[4:]}/v1/sessions/{sid}/stream") as ws:
            for name, message in (
                ("chunkAnswer", sent["chunk"]),
                ("stateAnswer", sent["command"]),
                ("resetAnswer", {"op": "reset"}),
                ("error", {"inputs": [1.0], "seq": 7}),
            ):
                await ws.send(json.dumps(message))
                replies[name] = json.loads(await ws.recv())
            await ws.send(np.array([0.25], "<f4").tobytes())
            binary = await ws.recv()
        return replies, binary

    replies, binary = asyncio.run(run())
    for name, message in sent.items():
        validator(document, name).validate(message)
    for name, reply in replies.items():
        validator(document, name).validate(reply)
    assert replies["error"]["status"] == 409 and replies["error"]["expected_seq"] == 2
    assert not validator(document, "chunkAnswer").is_valid(
        replies["error"]
    )  # the schemas tell them apart
    assert isinstance(binary, bytes) and len(binary) == 4 * 5  # the seed model: 5 float32 outputs
    assert "/asyncapi.json" in httpx.get(f"{url}/openapi.json").json()["info"]["description"]
