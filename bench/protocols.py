"""The four ways in, against one server in one run: /v1 HTTP, our WebSocket, the Open Inference
Protocol over HTTP (/v2, JSON tensors) and over gRPC (one ``ModelStreamInfer`` stream per sequence).

``python -m bench.protocols`` serves the frames scenario's model (GRU 64, F=16, T=1) with
``--grpc-port``, makes one session or sequence per stream for each protocol, and runs closed-loop
rounds of each in turn (so the machine's noise falls on all alike). It prints each round's chunks/s
with the server's and the load generator's CPU (they share the cores), writes
bench/results/protocols.{json,md}, and reports each protocol's median against /v1 HTTP's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import httpx
import numpy as np

from bench import load
from bench.run import chunk_body, create_sessions
from bench.scenarios import FRAMES, write_model
from harness.servers import ServerProcess, running
from harness.waiting import free_port

RESULTS = Path(__file__).with_name("results")
PROTOCOLS = ("v1 HTTP", "WebSocket", "v2 HTTP", "gRPC stream")


def v2_body(frame: bytes, start: bool = False) -> str:
    """A /v2 infer body for sequence ``%s`` (wrk fills it in), the chunk as JSON data."""
    data = np.frombuffer(frame, "<f4").round(4).tolist()
    parameters = {"sequence_id": "SID", "sequence_start": start}
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "inputs",
                    "datatype": "FP32",
                    "shape": [1, FRAMES.steps, FRAMES.features],
                    "data": data,
                }
            ],
            "parameters": parameters,
        }
    )
    return body.replace('"SID"', '"%s"')


def start_sequences(url: str, name: str, prefix: str, count: int, frame: bytes) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(count):
            client.post(
                f"/v2/models/{name}/infer",
                content=v2_body(frame, start=True) % f"{prefix}{i}",
                headers={"Content-Type": "application/json"},
            ).raise_for_status()


def one_round(
    protocol: str, server: ServerProcess, grpc: str, name: str, seconds: float
) -> load.Run:
    body, frame = chunk_body(FRAMES)
    pid, sessions = server.process.pid, FRAMES.sessions
    if protocol == "v1 HTTP":
        return load.wrk(server.url, pid, body=body, sessions=sessions, prefix="h", seconds=seconds)
    if protocol == "WebSocket":
        return load.websocket(
            server.url, pid, frame=frame, sessions=sessions, prefix="w", seconds=seconds
        )
    if protocol == "v2 HTTP":
        return load.wrk(
            server.url,
            pid,
            body=v2_body(frame).encode(),
            sessions=sessions,
            prefix="v",
            seconds=seconds,
            path=f"/v2/models/{name}/infer",
            per_session_body=True,
        )
    return load.grpc_streams(
        grpc,
        pid,
        model=name,
        frame=frame,
        features=FRAMES.features,
        sessions=sessions,
        prefix="g",
        seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    load.require_wrk()
    with tempfile.TemporaryDirectory() as folder:
        model = write_model(FRAMES, Path(folder))
        port = free_port()
        server = ServerProcess("--model", str(model), "--grpc-port", str(port))
        grpc = f"127.0.0.1:{port}"
        rounds: dict[str, list[load.Run]] = {p: [] for p in PROTOCOLS}
        with running([server], timeout=180):
            body, frame = chunk_body(FRAMES)
            for prefix in ("h", "w"):
                create_sessions(server.url, prefix, FRAMES.sessions, body)
            start_sequences(server.url, model.stem, "v", FRAMES.sessions, frame)
            start_sequences(server.url, model.stem, "g", FRAMES.sessions, frame)
            for protocol in PROTOCOLS:  # a short warm-up of each: XLA programs, connections
                one_round(protocol, server, grpc, model.stem, 1.0)
            for number in range(args.rounds):
                for protocol in PROTOCOLS:
                    run = one_round(protocol, server, grpc, model.stem, args.seconds)
                    assert not run.failed, f"{protocol}: {run.failed} failed"
                    rounds[protocol].append(run)
                    print(
                        f"round {number + 1} {protocol}: {run.rate:,.0f} chunks/s (server {run.server_cpu:.2f}, "
                        f"client {run.client_cpu:.2f} cores, p99 {run.p99_ms:.1f} ms)",
                        flush=True,
                    )
    report(
        rounds,
        f"{FRAMES.what.replace(' WebSocket streams', ' streams')} per protocol, one server, {args.rounds} rounds",
    )


def report(rounds: dict[str, list[load.Run]], scenario: str) -> None:
    base = statistics.median(r.rate for r in rounds["v1 HTTP"])
    table = {}
    for protocol, runs in rounds.items():
        rate = statistics.median(r.rate for r in runs)
        table[protocol] = {
            "chunks_per_s": rate,
            "of_v1_http": rate / base,
            "server_cpu": statistics.median(r.server_cpu for r in runs),
            "client_cpu": statistics.median(r.client_cpu for r in runs),
            "p99_ms": statistics.median(r.p99_ms for r in runs),
            "rounds": [r.rate for r in runs],
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "protocols.json").write_text(
        json.dumps({"scenario": scenario, "protocols": table}, indent=2) + "\n"
    )
    lines = [
        "| protocol | chunks/s (median) | of /v1 HTTP | server CPU | load generator CPU | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for protocol, row in table.items():
        lines.append(
            f"| {protocol} | {row['chunks_per_s']:,.0f} | {row['of_v1_http']:.2f} | {row['server_cpu']:.2f} "
            f"| {row['client_cpu']:.2f} | {row['p99_ms']:.1f} |"
        )
    (RESULTS / "protocols.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
