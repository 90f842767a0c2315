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
import contextlib
import logging
import time
from dataclasses import dataclass

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from app import metrics
from app.api import inference
from app.api.auth import Caller, KeyRing
from app.api.middleware import access, request_id
from app.api.parsing import ChunkLimits
from app.api.shares import Shares
from app.config import Settings
from app.errors import BadRequest, ServiceError, Unavailable
from app.sessions import Sessions

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
# Where a tensor's values are in ``InferTensorContents``, by datatype (FP16 has no field: raw only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
STREAM_IN_FLIGHT = 64  # requests of one stream under way before reading pauses
SERVICE = "/inference.GRPCInferenceService"  # as the access log names a call
HELD = (401, 429, 503)  # refusals held --shed-delay, as over HTTP
IDLE_MS = 30_000  # a connection with no call for this long is closed, as HTTP's keep-alive
STREAMS_PER_CONNECTION = 100  # HTTP/2's advised least (RFC 9113); calls beyond wait their turn


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        sessions: Sessions,
        keys: KeyRing,
        limits: ChunkLimits,
        shares: Shares,
        settings: Settings,
    ):
        self.sessions, self.keys, self.limits, self.shares = sessions, keys, limits, shares
        self.settings = settings

    def _caller(self, peer: Peer) -> Caller:
        return self.keys.identify(peer.key)

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=await self.sessions.unready() is None)

    async def ServerMetadata(self, request, context):
        await self._guard(context, self._caller, "ServerMetadata")
        return pb.ServerMetadataResponse(
            name="stateful-rnn", version="1", extensions=inference.EXTENSIONS
        )

    async def ModelReady(self, request, context):
        await self._guard(context, self._caller, "ModelReady")
        try:
            await self.sessions.model_spec(request.name, inference.version_of(request.version))
        except ServiceError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request, context):
        async def describe(peer: Peer):
            self._caller(peer)
            spec = await self.sessions.model_spec(
                request.name, inference.version_of(request.version)
            )
            (document,) = await self.sessions.models(request.name)
            served = [
                v["version"] for v in document["versions"] if v["state"] in ("ready", "retiring")
            ]
            return inference.metadata(spec, served)

        found = await self._guard(context, describe, "ModelMetadata")
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

    async def ModelConfig(self, request, context):
        async def read(peer: Peer):
            self._caller(peer)
            spec = await self.sessions.model_spec(
                request.name, inference.version_of(request.version)
            )
            return pb.ModelConfigResponse(
                config=inference.config(
                    spec,
                    session_ttl=self.settings.session_ttl,
                    keep_versions=self.settings.keep_versions,
                )
            )

        return await self._guard(context, read, "ModelConfig")

    async def RepositoryIndex(self, request, context):
        async def read(peer: Peer):
            self._caller(peer)
            found = inference.repository_index(await self.sessions.models(), request.ready)
            return pb.RepositoryIndexResponse(
                models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in found]
            )

        return await self._guard(context, read, "RepositoryIndex")

    async def RepositoryModelLoad(self, request, context):
        async def load(peer: Peer):
            self._caller(peer).require_admin("loading a model")
            inference.plain_load(request.model_name, dict(request.parameters))
            with inference.load_failure(request.model_name):
                await self.sessions.load_model(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._guard(context, load, "RepositoryModelLoad")

    async def RepositoryModelUnload(self, request, context):
        async def unload(peer: Peer):
            self._caller(peer).require_admin("unloading a model")
            await self.sessions.unload_model(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._guard(context, unload, "RepositoryModelUnload")

    async def SystemSharedMemoryStatus(self, request, context):
        await self._unsupported(context, "systemsharedmemory")

    SystemSharedMemoryRegister = SystemSharedMemoryUnregister = SystemSharedMemoryStatus

    async def CudaSharedMemoryStatus(self, request, context):
        await self._unsupported(context, "cudasharedmemory")

    CudaSharedMemoryRegister = CudaSharedMemoryUnregister = CudaSharedMemoryStatus

    async def TraceSetting(self, request, context):
        await self._unsupported(context, "trace")

    async def LogSettings(self, request, context):
        await self._unsupported(context, "logging")

    async def _unsupported(self, context, feature: str) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, inference.UNSUPPORTED[feature])

    async def ModelStatistics(self, request, context):
        async def read(peer: Peer):
            self._caller(peer).require_admin(inference.READING_STATISTICS)
            found = await self.sessions.model_stats(
                request.name or None, inference.version_of(request.version)
            )
            return json_format.ParseDict(inference.statistics(found), pb.ModelStatisticsResponse())

        return await self._guard(context, read, "ModelStatistics")

    async def ModelInfer(self, request, context):
        return await self._guard(context, lambda peer: self._infer(request, peer), "ModelInfer")

    async def ModelStreamInfer(self, request_iterator, context):
        peer = Peer.of(context)
        party = self.shares.party(peer.key)
        # The key is checked and the stream counted as it opens; its requests, as they come.
        await self._guard(
            context, lambda peer: self._open_stream(peer, party), "ModelStreamInfer", admit=False
        )
        answers: asyncio.Queue[asyncio.Future | None] = asyncio.Queue(STREAM_IN_FLIGHT)
        path = f"{SERVICE}/ModelStreamInfer"

        async def read() -> None:
            try:
                async for request in request_iterator:
                    # Beyond its tenant's share a stream waits, read no further, rather than have
                    # a request refused: that would leave a hole in its sequence.
                    await self.shares.room(party)
                    call = Call(self.shares, peer, path).run(self._infer, request, admitted=True)
                    await answers.put(asyncio.ensure_future(call))
            finally:
                with contextlib.suppress(asyncio.QueueFull):  # nobody reads: the stream ended
                    answers.put_nowait(None)

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
            self.shares.close_stream(party)
            while not answers.empty():  # answers nobody will read: their errors are not news
                if (task := answers.get_nowait()) is not None:
                    task.add_done_callback(_unheard)

    def _open_stream(self, peer: Peer, party: str | None) -> None:
        self._caller(peer)
        refusal = self.shares.open_stream(party)
        if refusal is not None:
            reason, detail = refusal
            metrics.SHED.labels(reason).inc()
            raise Unavailable(f"{detail}; retry shortly")

    async def _infer(self, request, peer: Peer):
        caller = self._caller(peer)
        name, version = request.model_name, inference.version_of(request.model_version)
        raws = list(request.raw_input_contents)
        if raws and len(raws) != len(request.inputs):
            raise BadRequest(
                f"{len(raws)} raw_input_contents for {len(request.inputs)} input(s): each "
                "belongs to one input, in order"
            )
        given = []
        for index, tensor in enumerate(request.inputs):
            found = {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "parameters": dict(tensor.parameters),
            }
            if not raws:  # FP16 has no contents field: its data come raw only
                found["data"] = list(
                    getattr(tensor.contents, CONTENTS.get(tensor.datatype, ""), ())
                )
            given.append((found, raws[index] if raws else None))
        parameters = {
            key: getattr(value, value.WhichOneof("parameter_choice"))
            for key, value in request.parameters.items()
            if value.WhichOneof("parameter_choice")
        }
        sequence = inference.Sequence.of(parameters)
        asked = [(output.name, dict(output.parameters)) for output in request.outputs]
        result, outputs = await inference.infer(
            self.sessions, caller, name, version, sequence, given, asked, self.limits.steps, "grpc"
        )
        response = pb.ModelInferResponse(
            model_name=name,
            model_version=str(result.version),
            id=request.id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name=output, datatype=inference.DATATYPE, shape=shape
                )
                for output, shape, _ in outputs
            ],
            raw_output_contents=[
                values.astype("<f4", copy=False).tobytes() for _, _, values in outputs
            ],
        )
        if sequence.sequence_id is not None:
            response.parameters["session_id"].string_param = result.session_id
            response.parameters["seq"].int64_param = result.seq
        return response

    async def _guard(self, context: grpc.aio.ServicerContext, call, method: str, admit=True):
        """``call(peer)``'s answer, admitted as an HTTP request is (the caller's share of the
        requests in progress) and logged; or the call aborted with the status its error maps to.
        ``admit`` False: a stream's opening, whose requests are each admitted as they come."""
        peer = Peer.of(context)
        try:
            if admit:  # refusals held by the call
                return await Call(self.shares, peer, f"{SERVICE}/{method}").run(call)
            try:
                return call(peer)
            except ServiceError as exc:
                if exc.status in HELD:
                    await self.shares.hold()
                raise
        except ServiceError as exc:
            await context.abort(CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.detail)


@dataclass(frozen=True)
class Peer:
    """What a call's context says of its caller, read once while the call is alive: a stream's
    requests are answered by tasks that may outlive it, and grpcio's context must not be touched
    after its call has ended (it crashed the server: a segmentation fault)."""

    key: str | None
    address: str | None  # ``127.0.0.1:5000``, the way the HTTP lines show clients
    request_id: bytes | None

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext) -> Peer:
        metadata = dict(context.invocation_metadata() or ())
        scheme, _, key = metadata.get("authorization", "").partition(" ")
        given = metadata.get("x-request-id")
        return cls(
            (key.strip() or None) if scheme.lower() == "bearer" else None,
            context.peer().partition(":")[2] or None,
            given.encode("ascii", "replace") if isinstance(given, str) else None,
        )


class Call:
    """One gRPC request (a unary call, or one request of a stream) as the shares and the access log
    see it: a unary call refused while its party holds its share (503, held ``--shed-delay`` as
    over HTTP), counted while it runs, and logged once answered."""

    def __init__(self, shares: Shares, peer: Peer, path: str):
        self.shares, self.peer, self.path = shares, peer, path

    async def run(self, call, *args, admitted: bool = False):
        """``call(*args, peer)``'s answer; ``admitted``: counted as started already (a stream's
        request, by :meth:`Shares.room`)."""
        rid = request_id(self.peer.request_id)
        started, status = time.perf_counter(), 500
        party = self.shares.party(self.peer.key)
        try:
            if not admitted:
                refusal = self.shares.refusal(party)
                if refusal is not None:
                    reason, detail = refusal
                    metrics.SHED.labels(reason).inc()
                    raise Unavailable(f"{detail}; retry shortly")
                self.shares.enter(party)
            try:
                found = call(*args, self.peer)
                result = await found if asyncio.iscoroutine(found) else found
            finally:
                self.shares.leave(party)
            status = 200
            return result
        except ServiceError as exc:
            status = exc.status
            if status in HELD:  # as over HTTP: a flood retrying at once comes back no sooner
                await self.shares.hold()
            raise
        except asyncio.CancelledError:
            status = None
            raise
        finally:
            access("GRPC", self.path, status, started, self.peer.address, party, rid, kind="GRPC")


class GrpcServer:
    """grpcio's server, held to the limits HTTP has: a message no larger than the largest chunk
    (refused by grpcio from its length, before it is parsed), at most ``connections`` open, a
    connection that has not finished its HTTP/2 opening within ``--header-timeout`` closed, one
    idle for 30 s closed, dead peers found by keepalive pings."""

    def __init__(
        self,
        sessions: Sessions,
        keys: KeyRing,
        limits: ChunkLimits,
        shares: Shares,
        settings: Settings,
        connections: int,
    ):
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limits.request_bytes),
                ("grpc.max_send_message_length", settings.max_body_bytes),
                ("grpc.max_allowed_incoming_connections", connections),
                ("grpc.server_handshake_timeout_ms", int(1000 * settings.header_timeout)),
                ("grpc.max_connection_idle_ms", IDLE_MS),
                ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
                ("grpc.keepalive_time_ms", int(1000 * settings.ws_ping_interval)),
                ("grpc.keepalive_timeout_ms", int(1000 * settings.ws_ping_timeout)),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            Servicer(sessions, keys, limits, shares, settings), self.server
        )
        self.address = f"{settings.host}:{settings.grpc_port}"

    async def start(self) -> None:
        self.server.add_insecure_port(self.address)
        await self.server.start()
        log.info("gRPC (Open Inference Protocol) on %s", self.address)

    async def stop(self) -> None:
        await self.server.stop(grace=5)


def _unheard(task: asyncio.Future) -> None:
    """Take a finished answer's error, which nobody will read (its stream ended), so that asyncio
    does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
