"""Attacks on a server's connections and messages, each run as its own process so that its CPU
and the GIL are not the measuring test's (``python -m tests.support.attacks KIND --port P``).

Raw sockets throughout: the attacks are about bytes on the wire that well-behaved client libraries
refuse to send (unfinished headers, frames claiming compression nobody agreed on). Each keeps at
its attack until it is killed, at a bounded pace, reconnecting when the server closes on it.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import socket
import struct
import threading
import time
import zlib

import numpy as np

ATTACKS = {}
MILLION = 1_000_000  # numbers in the Open Inference Protocol's bombs, as first seen


def attack(function):
    ATTACKS[function.__name__.replace("_", "-")] = function
    return function


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def drain(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """All the server sends until it closes the connection (or goes quiet for ``timeout``)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except OSError:
        pass
    return received


def forever(target, *args) -> None:
    """Run ``target(*args)`` again and again in a thread of its own (the attacks' threads)."""

    def loop():
        while True:
            try:
                target(*args)
            except OSError:
                time.sleep(0.05)

    threading.Thread(target=loop, daemon=True).start()


@attack
def idle(port: int, count: int, key: str, session: str, **_) -> None:
    """``count`` connections that send nothing; reopened when closed."""

    def hold():
        with connect(port) as sock:
            drain(sock, timeout=60)

    for _ in range(count):
        forever(hold)


@attack
def slowloris(port: int, count: int, key: str, session: str, **_) -> None:
    """``count`` connections, each sending one more header line every half second."""

    def dribble():
        with connect(port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while True:
                time.sleep(0.5)
                sock.sendall(b"X-Slow: 1\r\n")

    for _ in range(count):
        forever(dribble)


@attack
def header_bombs(port: int, count: int, key: str, session: str, **_) -> None:
    """``count`` connections, each sending up to 16 MiB of headers that never end (64 KiB lines),
    at most ten a second each."""

    def bomb():
        started = time.monotonic()
        with connect(port) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                for i in range(256):
                    sock.sendall(b"X-%d: " % i + b"a" * 65536 + b"\r\n")
            except OSError:
                pass
            drain(sock)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))

    for _ in range(count):
        forever(bomb)


@attack
def body_bombs(port: int, count: int, key: str, session: str, **_) -> None:
    """``count`` connections, each posting chunk documents just under the default body limit
    (4 MiB) over and over, at most ten a second each."""
    body = document(4 * 2**20 - 1024)
    head = (
        f"POST /v1/sessions/{session}/chunks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    _post_forever(port, count, head + body)


@attack
def v2_body_bombs(port: int, count: int, key: str, session: str, **_) -> None:
    """``count`` connections, each posting Open Inference Protocol requests of 4 MB (a million
    numbers as JSON ``data``: under the default 4 MiB body limit) over and over, at most ten a
    second each."""
    numbers = b"0.5," * (MILLION - 1) + b"0.5"
    body = (
        b'{"inputs":[{"name":"inputs","shape":[1,%d,1],"datatype":"FP32","data":[' % MILLION
        + numbers
        + b"]}]}"
    )
    head = (
        f"POST /v2/models/default/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    _post_forever(port, count, head + body)


def _post_forever(port: int, count: int, request: bytes) -> None:
    def bomb():
        with connect(port) as sock:
            while True:
                started = time.monotonic()
                sock.sendall(request)
                answer = sock.recv(65536)
                if not answer or b"connection: close" in answer.lower():
                    return
                time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))

    for _ in range(count):
        forever(bomb)


@attack
def grpc_bombs(port: int, count: int, key: str, session: str, grpc_port: int = 0) -> None:
    """``count`` threads, each sending 4 MB ModelInfer requests (a million ``fp32_contents``:
    under the default 4 MiB message limit) over and over, at most ten a second each."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    tensor = pb.ModelInferRequest.InferInputTensor(
        name="inputs", datatype="FP32", shape=[1, MILLION, 1]
    )
    tensor.contents.fp32_contents.extend(np.full(MILLION, 0.5, np.float32))
    request = pb.ModelInferRequest(model_name="default", inputs=[tensor])
    metadata = [("authorization", f"Bearer {key}")]

    def bomb():
        options = [("grpc.max_send_message_length", 16 * 2**20)]
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
            infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            while True:
                started = time.monotonic()
                try:
                    infer(request, metadata=metadata, timeout=10)
                except grpc.RpcError:
                    pass
                time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))

    for _ in range(count):
        forever(bomb)


@attack
def grpc_streams(port: int, count: int, key: str, session: str, grpc_port: int = 0) -> None:
    """``count`` ModelStreamInfer streams, each keeping 64 requests in flight (one step, no
    sequence: a fresh state each), sending the next as soon as one is answered, refused or not;
    streams refused at their opening are not opened again."""
    _streams(grpc_port, key, count, 64)


@attack
def grpc_share(port: int, count: int, key: str, session: str, grpc_port: int = 0) -> None:
    """One ModelStreamInfer stream keeping ``count`` requests in flight: a tenant using its whole
    share and no more (the baseline a flood beyond the share is measured against)."""
    _streams(grpc_port, key, 1, count)


def _streams(grpc_port: int, key: str, streams: int, in_flight: int) -> None:
    import asyncio

    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    tensor = pb.ModelInferRequest.InferInputTensor(name="inputs", datatype="FP32", shape=[1, 1, 1])
    tensor.contents.fp32_contents.append(0.5)
    request = pb.ModelInferRequest(model_name="default", inputs=[tensor])
    metadata = (("authorization", f"Bearer {key}"),)

    async def stream(stub) -> None:
        slots = asyncio.Semaphore(in_flight)

        async def requests():
            while True:
                await slots.acquire()
                yield request

        call = stub.ModelStreamInfer(requests(), metadata=metadata)
        async for _ in call:
            slots.release()

    async def main() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while True:
                await asyncio.gather(
                    *(stream(stub) for _ in range(streams)), return_exceptions=True
                )
                await asyncio.sleep(0.1)

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()


@attack
def ws_bombs(port: int, count: int, key: str, session: str, **_) -> None:
    """``count`` WebSockets, each sending a 4 MiB chunk document or 16 MiB of whitespace, plainly
    or deflated in a frame marked compressed (4 KB and 16 KB on the wire: the attack as first
    seen), at most ten messages a second, reconnecting whenever the server closes the stream."""
    whitespace = b" " * (16 * 2**20 - 1024)
    payloads = [
        (document(4 * 2**20), False),
        (whitespace, False),
        (deflate(document(4 * 2**20)), True),
        (deflate(whitespace), True),
    ]
    frames = [frame(payload, compressed=compressed) for payload, compressed in payloads]

    def bomb():
        with connect(port) as sock:
            handshake(sock, f"/v1/sessions/{session}/stream", key)
            sock.setblocking(False)
            for turn in itertools.count():
                started = time.monotonic()
                sock.setblocking(True)
                sock.sendall(frames[turn % len(frames)])  # raises once the server has closed
                sock.setblocking(False)
                try:
                    while sock.recv(65536):  # the replies, read as they come
                        pass
                except BlockingIOError:
                    pass
                time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))

    for _ in range(count):
        forever(bomb)


def document(size: int) -> bytes:
    """A chunk document of about ``size`` bytes: one long row of numbers."""
    return b'{"inputs": [' + b"0.5, " * (size // 5 - 4) + b"0.5]}"


def deflate(data: bytes) -> bytes:
    """permessage-deflate's form: raw DEFLATE, without the final empty block's tail."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def handshake(
    sock: socket.socket, path: str, key: str | None, deflate_offered: bool = True
) -> bytes:
    """A WebSocket opening handshake, offering compression; the server's answer head."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate_offered:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    if key:
        lines.append(f"Authorization: Bearer {key}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        piece = sock.recv(4096)
        if not piece:
            break
        head += piece
    return head


def frame(payload: bytes, opcode: int = 1, compressed: bool = False) -> bytes:
    """One masked client frame (a fresh mask key each, as RFC 6455 asks)."""
    first = 0x80 | (0x40 if compressed else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 2**16:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    mask = os.urandom(4)
    data = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), size)
    return header + mask + data.tobytes()


def close_code(received: bytes) -> int | None:
    """The code of the first close frame in what a server sent after its handshake answer."""
    data = received.split(b"\r\n\r\n", 1)[-1]
    while len(data) >= 2:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if size == 126:
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        if opcode == 8:
            return struct.unpack("!H", data[offset : offset + 2])[0] if size >= 2 else 1005
        data = data[offset + size :]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(ATTACKS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--key", default="")
    parser.add_argument("--session", default="target", help="a session of the key's tenant")
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args()
    ATTACKS[args.kind](args.port, args.count, args.key, args.session, grpc_port=args.grpc_port)
    print("attacking", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
