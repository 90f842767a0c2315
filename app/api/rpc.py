"""The Open Inference Protocol over gRPC: Triton's ``inference.GRPCInferenceService`` on ``--grpc-port``.

grpcio's asyncio server, in the process whose event loop runs the session service (the one process,
or the engine process with API workers), with the service modules ``tritonclient`` ships, generated
from the protocol's published ``.proto`` files. What a request means is :mod:`app.api.inference`'s,
as over HTTP; keys come as metadata (``authorization: Bearer KEY``), for the same tenants and rules.

``ModelStreamInfer`` reads requests while earlier ones run: each becomes a task, and tasks start in
the order they were made, each placing its chunk in its session's line before its first suspension
(the session service is in this process), so requests of one sequence apply in the order they
came; answers go back in that order too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from app.api import inference
from app.api.auth import Caller, KeyRing
from app.api.parsing import ChunkLimits
from app.errors import BadRequest, Forbidden, ServiceError

log = logging.getLogger(__name__)

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
STREAM_IN_FLIGHT = 64  # requests of one stream under way before reading pauses


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, sessions: Any, keys: KeyRing, limits: ChunkLimits):
        self.sessions, self.keys, self.limits = sessions, keys, limits

    def _caller(self, context: grpc.aio.ServicerContext) -> Caller:
        scheme, _, key = (
            dict(context.invocation_metadata() or ()).get("authorization", "").partition(" ")
        )
        return self.keys.identify(key.strip() or None if scheme.lower() == "bearer" else None)

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=await self.sessions.unready() is None)

    async def ServerMetadata(self, request, context):
        await self._guard(context, lambda: self._caller(context))
        return pb.ServerMetadataResponse(
            name="stateful-rnn", version="1", extensions=inference.EXTENSIONS
        )

    async def ModelReady(self, request, context):
        await self._guard(context, lambda: self._caller(context))
        try:
            await self.sessions.model_spec(request.name, inference.version_of(request.version))
        except ServiceError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request, context):
        async def describe():
            self._caller(context)
            spec = await self.sessions.model_spec(
                request.name, inference.version_of(request.version)
            )
            (document,) = await self.sessions.models(request.name)
            served = [
                v["version"] for v in document["versions"] if v["state"] in ("ready", "retiring")
            ]
            return inference.metadata(spec, served)

        found = await self._guard(context, describe)
        tensors = [
            [pb.ModelMetadataResponse.TensorMetadata(**t) for t in found[kind]]
            for kind in ("inputs", "outputs")
        ]
        return pb.ModelMetadataResponse(
            name=found["name"],
            versions=found["versions"],
            platform=found["platform"],
            inputs=tensors[0],
            outputs=tensors[1],
        )

    async def ModelStatistics(self, request, context):
        async def read():
            if not self._caller(context).admin:
                raise Forbidden(
                    "the statistics take an admin key: they count every tenant's requests"
                )
            found = await self.sessions.model_stats(
                request.name or None, inference.version_of(request.version)
            )
            return json_format.ParseDict(inference.statistics(found), pb.ModelStatisticsResponse())

        return await self._guard(context, read)

    async def ModelInfer(self, request, context):
        caller = await self._guard(context, lambda: self._caller(context))
        return await self._guard(context, lambda: self._infer(request, caller))

    async def ModelStreamInfer(self, request_iterator, context):
        caller = await self._guard(context, lambda: self._caller(context))
        answers: asyncio.Queue[asyncio.Task | None] = asyncio.Queue(STREAM_IN_FLIGHT)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await answers.put(asyncio.ensure_future(self._infer(request, caller)))
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (task := await answers.get()) is not None:
                try:
                    yield pb.ModelStreamInferResponse(infer_response=await task)
                except ServiceError as exc:  # this request's; the stream goes on
                    yield pb.ModelStreamInferResponse(error_message=exc.detail)
                except Exception:
                    log.exception("a gRPC stream request failed")
                    yield pb.ModelStreamInferResponse(
                        error_message="the server failed to handle this request"
                    )
        finally:
            reader.cancel()

    async def _infer(self, request, caller: Caller):
        name, version = request.model_name, inference.version_of(request.model_version)
        spec = await self.sessions.model_spec(name, version)
        if len(request.inputs) != 1:
            raise BadRequest(f"model {name} takes exactly one input, {inference.INPUT!r}")
        given = request.inputs[0]
        tensor = {"name": given.name, "datatype": given.datatype, "shape": list(given.shape)}
        raw = None
        if request.raw_input_contents:
            raw = request.raw_input_contents[0]
        else:
            tensor["data"] = list(given.contents.fp32_contents)
        array, rank = inference.input_array(tensor, raw, spec, self.limits.steps)
        parameters = {
            key: getattr(value, value.WhichOneof("parameter_choice"))
            for key, value in request.parameters.items()
            if value.WhichOneof("parameter_choice")
        }
        sequence = inference.Sequence.of(parameters)
        result = await inference.run(self.sessions, caller, name, version, array, sequence, "grpc")
        outputs = result.outputs
        response = pb.ModelInferResponse(
            model_name=name,
            model_version=str(spec.version),
            id=request.id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name=inference.OUTPUT,
                    datatype=inference.DATATYPE,
                    shape=inference.output_shape(outputs, rank),
                )
            ],
            raw_output_contents=[outputs.astype("<f4", copy=False).tobytes()],
        )
        if sequence.sequence_id is not None:
            response.parameters["session_id"].string_param = result.session_id
            response.parameters["seq"].int64_param = result.seq
        return response

    async def _guard(self, context: grpc.aio.ServicerContext, call):
        """``call``'s answer, or the call aborted with the status its error maps to."""
        try:
            found = call()
            return await found if asyncio.iscoroutine(found) else found
        except ServiceError as exc:
            await context.abort(CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.detail)


class GrpcServer:
    def __init__(
        self,
        sessions: Any,
        keys: KeyRing,
        limits: ChunkLimits,
        host: str,
        port: int,
        max_bytes: int,
    ):
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            Servicer(sessions, keys, limits), self.server
        )
        self.address = f"{host}:{port}"

    async def start(self) -> None:
        self.server.add_insecure_port(self.address)
        await self.server.start()
        log.info("gRPC (Open Inference Protocol) on %s", self.address)

    async def stop(self) -> None:
        await self.server.stop(grace=5)
