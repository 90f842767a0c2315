"""What one tenant's connections and messages can cost the others: no compression to amplify a
message, no message read or parsed past what the largest chunk may take, and under idle sockets,
header bombs, slowloris, oversized bodies (/v1 and /v2), WebSocket bombs, oversized gRPC messages
and a flood of gRPC streams another tenant's latency holds."""

import json
import statistics
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from app.api.parsing import ChunkLimits
from harness.keys import auth
from harness.metrics import metric
from harness.servers import ROOT, ServerProcess
from harness.waiting import free_port
from tests.support.attacks import close_code, deflate, drain, frame, handshake

pytestmark = pytest.mark.process  # a server process under attack from attacker processes

KEYS = {"attacker": "attacker-key-0001", "other": "other-key-00001"}
FEATURES, MAX_STEPS, MAX_BODY = 1, 512, 4 * 2**20  # the default model, the default limits
# The in-flight limits as a replica on 2 cores would have them (docs/security.md): the shares are
# what holds a tenant's flood back, over HTTP and gRPC alike.
SHARES = ("--max-in-flight", "64", "--max-in-flight-per-tenant", "16", "--max-queue", "256")
LIMITS = ChunkLimits.of(FEATURES, MAX_STEPS, MAX_BODY)


@pytest.fixture(scope="module")
def server():
    keys = ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items())
    server = ServerProcess(
        "--model",
        "default",
        "--api-keys",
        keys,
        "--header-timeout",
        "2",
        "--grpc-port",
        str(free_port()),
        *SHARES,
    ).start()
    try:
        server.wait_ready()
        for tenant in KEYS:
            httpx.post(
                f"{server.url}/v1/sessions", json={"session_id": tenant}, headers=auth(KEYS[tenant])
            )
        yield server
    finally:
        server.stop()


def raw_stream(server: ServerProcess, deflate_offered: bool = True):
    import socket

    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    head = handshake(sock, "/v1/sessions/attacker/stream", KEYS["attacker"], deflate_offered)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock, head


def test_compression_is_never_agreed_and_a_frame_marked_compressed_closes_the_stream(server):
    # The attack: with permessage-deflate on, a 4 MiB chunk document took 4 KB on the wire, and
    # 16 MiB of whitespace 16 KB; each cost the event loop hundreds of milliseconds to inflate and parse.
    sock, head = raw_stream(server)
    assert b"sec-websocket-extensions" not in head.lower()
    started = time.monotonic()
    sock.sendall(frame(deflate(b" " * 16 * 2**20), compressed=True))
    assert close_code(drain(sock)) == 1002  # a protocol error: nothing was inflated
    assert time.monotonic() - started < 1
    sock.close()


def test_a_message_over_the_limit_closes_unread_and_a_chunk_over_it_is_refused_before_parsing(
    server,
):
    sock, _ = raw_stream(server, deflate_offered=False)
    document = b'{"inputs": [' + b"0.5, " * (4 * 2**20 // 5) + b"0.5]}"  # 4 MiB
    started = time.monotonic()
    try:
        sock.sendall(frame(document))
    except OSError:
        pass
    assert close_code(drain(sock)) == 1009
    assert time.monotonic() - started < 2
    sock.close()

    # Over the chunk limit, under the message limit: an error, and the stream goes on.
    sock, _ = raw_stream(server, deflate_offered=False)
    too_long = b'{"inputs": [' + b"0.5, " * (LIMITS.json_bytes // 5) + b"0.5]}"
    assert LIMITS.json_bytes < len(too_long) < LIMITS.message_bytes
    sock.sendall(frame(too_long) + frame(json.dumps({"inputs": [0.5]}).encode()))
    sock.settimeout(10)
    replies = b""
    while replies.count(b"}") < 2:
        replies += sock.recv(65536)
    assert b'"status":413' in replies and b'"outputs"' in replies
    sock.close()

    # Over HTTP: refused from the declared length, before a byte of the body is read.
    with httpx.Client(base_url=server.url, headers=auth(KEYS["attacker"]), timeout=30) as http:
        big = b'{"inputs": [' + b"0.5, " * (4 * 2**20 // 5) + b"0.5]}"
        started = time.monotonic()
        answer = http.post(
            "/v1/sessions/attacker/chunks",
            content=big,
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 413 and time.monotonic() - started < 1

        def pieces():  # chunked: no declared length, so it is counted as it comes
            for _ in range(64):
                yield b" " * 65536

        answer = http.post(
            "/v1/sessions/attacker/chunks",
            content=pieces(),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 413


# Each attack as first seen, at a bounded pace: every one of its connections retries as soon as
# it is refused, up to ten times a second.
ATTACKS = {
    "1,000 idle connections": ("idle", 1000),
    "200 slowloris connections": ("slowloris", 200),
    "8 connections of 16 MiB header bombs": ("header-bombs", 8),
    "4 connections posting 4 MiB bodies": ("body-bombs", 4),
    "4 WebSockets sending 4-16 MiB messages, plain and marked compressed": ("ws-bombs", 4),
    "4 connections posting 4 MB /v2 infer bodies": ("v2-body-bombs", 4),
    "4 gRPC channels sending 4 MB ModelInfer messages": ("grpc-bombs", 4),
    "a gRPC stream of 16 requests in flight, the tenant's share": ("grpc-share", 16),
    "32 gRPC ModelStreamInfer streams of 64 requests in flight each": ("grpc-streams", 32),
}
# A flood is shed beyond its tenant's share, but what the share lets in is the tenant's to use: it
# is measured against the same tenant using its whole share, not against no load at all (as
# docs/security.md's flood over HTTP is). None: a load allowed, measured only as that baseline.
BASELINE = {
    "a gRPC stream of 16 requests in flight, the tenant's share": None,
    "32 gRPC ModelStreamInfer streams of 64 requests in flight each": (
        "a gRPC stream of 16 requests in flight, the tenant's share"
    ),
}


def probe(client: httpx.Client, count: int = 60) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = client.post("/v1/sessions/other/chunks", json={"inputs": [0.5] * 10})
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
    return statistics.median(times)


def measure(server: ServerProcess, other: httpx.Client, kind: str, count: int):
    """The other tenant's median latency alone, then under the attack ``kind``."""
    alone = probe(other)
    attacker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.attacks",
            kind,
            "--port",
            str(server.port),
            "--count",
            str(count),
            "--key",
            KEYS["attacker"],
            "--session",
            "attacker",
            "--grpc-port",
            server.args[server.args.index("--grpc-port") + 1],
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attacker.stdout.readline().strip() == "attacking"
        time.sleep(1.5)  # the attack in full swing
        under = probe(other)
    finally:
        attacker.kill()
        attacker.wait()
    time.sleep(2.5)  # what it left (idle sockets, lingering closes) is gone
    return alone, under


@pytest.mark.serial
def test_attacks_on_connections_and_messages_leave_another_tenants_latency(server):
    results = {}

    def held(name: str) -> bool:
        alone, under = results[name]
        if name not in BASELINE:
            return under < 2 * alone
        return BASELINE[name] is None or under < 2 * max(alone, results[BASELINE[name]][1])

    with httpx.Client(base_url=server.url, headers=auth(KEYS["other"]), timeout=30) as other:
        # Warm: a chunk length's first chunk has XLA compile its programs for every batch size in
        # the background, a few seconds of CPU that no attack should be measured against.
        warm_until = time.monotonic() + 6
        while time.monotonic() < warm_until:
            probe(other, 20)
        for name, (kind, count) in ATTACKS.items():
            results[name] = measure(server, other, kind, count)
        first = {name: f"{1000 * a:.1f} -> {1000 * u:.1f} ms" for name, (a, u) in results.items()}
        print(first)
        # Two cores, shared with the attacker and this test: a neighbour's burst can double one
        # median of 60 chunks (seen once in ten runs, on an attack that costs nothing otherwise).
        # An attack over the bound is measured once more, against the same bound.
        for name in [name for name in results if not held(name)]:
            results[name] = measure(server, other, *ATTACKS[name])
    report = {name: f"{1000 * a:.1f} -> {1000 * u:.1f} ms" for name, (a, u) in results.items()}
    print(report)
    # The gRPC streams beyond their tenant's share were refused (no other attack here opens
    # more than 16 of anything one tenant may have in progress).
    assert metric(server.url, 'srnn_shed_total{reason="share"}') > 0
    for name in results:
        assert held(name), (name, first, report)
    assert np.isfinite(list(results.values())).all()
