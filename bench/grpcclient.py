"""A gRPC load client: one bidirectional ``ModelStreamInfer`` stream per sequence, closed loop.

Each stream sends one pre-built ``ModelInferRequest`` (the chunk's float32 bytes in
``raw_input_contents``) and sends it again when its answer comes. grpcio's asyncio client with the
protocol's generated modules (as tritonclient ships them): what a Triton user's own client costs,
minus tritonclient's own Python per request.

    python -m bench.grpcclient --address 127.0.0.1:8001 --model frames --prefix bench- \
        --sessions 64 --seconds 5 --frame <hex of T x F float32> --features F
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bench.wsclient import result


def request(model: str, sequence_id: str, frame: bytes, features: int) -> pb.ModelInferRequest:
    steps = len(frame) // (4 * features)
    found = pb.ModelInferRequest(
        model_name=model,
        raw_input_contents=[frame],
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="inputs", datatype="FP32", shape=[1, steps, features]
            )
        ],
    )
    found.parameters["sequence_id"].string_param = sequence_id
    return found


async def stream(
    stub, message: pb.ModelInferRequest, deadline: float, latencies: list[float]
) -> int:
    failed = 0
    calls = stub.ModelStreamInfer()
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        await calls.write(message)
        answer = await calls.read()
        failed += bool(answer.error_message)
        latencies.append(time.perf_counter() - sent)
    await calls.done_writing()
    return failed


async def run(args) -> dict:
    frame = bytes.fromhex(args.frame)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(args.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        messages = [
            request(args.model, f"{args.prefix}{i}", frame, args.features)
            for i in range(args.sessions)
        ]
        started = time.perf_counter()
        failures = await asyncio.gather(
            *(stream(stub, m, started + args.seconds, latencies) for m in messages)
        )
        elapsed = time.perf_counter() - started
    return result(latencies, sum(failures), elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--address", "--model", "--prefix", "--frame"):
        parser.add_argument(name, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--features", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    print("RESULT " + json.dumps(asyncio.run(run(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
