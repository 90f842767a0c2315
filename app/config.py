"""All configuration in one place.

Every field is a command-line flag of ``stateful-rnn serve`` (``max_batch`` -> ``--max-batch``) and an
environment variable (``SRNN_MAX_BATCH``). Precedence: flag, then environment, then the default here.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "SRNN_"
# Read by others, not by the server: the client's key (stateful_rnn_client's commands), and the
# test suite's own variables.
NOT_SETTINGS = frozenset({"SRNN_API_KEY"})
TEST_PREFIX = "SRNN_TEST_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    model: str = Field(
        "default",
        description="Path to a Keras .keras file, or a built-in model: 'default' or 'seed' (a "
        "repository of one model, version 1; see --model-repository).",
    )
    model_repository: Path | None = Field(
        None,
        description="A model repository, DIR/<name>/<version>/model.keras (versions: positive integers), "
        "served instead of --model: several models at once, and new versions as they appear.",
    )
    keep_versions: int = Field(
        2,
        ge=1,
        description="Versions of each model served: the newest this many, and any with live sessions.",
    )
    repository_poll_s: float = Field(
        5.0,
        ge=0,
        description="Seconds between reads of the model repository for new versions; 0: never.",
    )
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port to bind (0: any free port).")
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port for the Open Inference Protocol over gRPC (Triton's GRPCInferenceService; 8001 is "
        "Triton's); off unless given.",
    )
    workers: int = Field(
        0,
        ge=0,
        description="API worker processes serving HTTP and WebSockets, beside the engine process that "
        "owns the sessions and runs the model; 0: one process does all.",
    )
    capacity: int = Field(
        1024, ge=1, description="State slots: how many sessions are held at once."
    )
    model_threads: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2),
        ge=1,
        description="Threads TensorFlow runs the model's kernels on (default: half the cores, at least "
        "one); see --runtime-threads for ONNX Runtime.",
    )
    max_model_bytes: int = Field(
        2**30,
        ge=1,
        description="Largest a model file's contents may be once unpacked, in bytes (a .keras file "
        "is a zip archive: a small one can inflate to gigabytes); a larger one is refused unread.",
    )
    runtime: Literal["auto", "onnx", "tensorflow"] = Field(
        "auto",
        description="What computes the model: 'onnx' (ONNX Runtime, on a graph written from the model's "
        "layers and checked against TensorFlow at load; a model it cannot express is refused), "
        "'tensorflow', or 'auto': ONNX Runtime where the export is possible and agrees within 1e-5, "
        "TensorFlow otherwise. GET /v1/models shows each version's.",
    )
    runtime_threads: int = Field(
        1,
        ge=1,
        description="Threads ONNX Runtime runs one model call on (one is fastest for the small batches "
        "of live streams, and leaves the other cores to the event loop).",
    )
    xla: bool = Field(
        True,
        description="TensorFlow runtime: run the model compiled by XLA, a program per batch-size and "
        "chunk-length bucket, compiled in the background the first time a bucket is needed (the "
        "plain graph meanwhile); false: always the plain graph.",
    )
    backend: Literal["memory", "redis"] = Field(
        "memory",
        description="Where session state lives: 'memory' (this process) or 'redis' (shared by replicas).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis to use with --backend redis; redis+cluster://host:port for a Redis Cluster.",
    )
    redis_prefix: str = Field(
        "srnn",
        pattern=r"^[A-Za-z0-9._:-]{1,64}$",
        description="Prefix of every Redis key this service writes.",
    )
    snapshot: Path | None = Field(
        None,
        description="Memory backend: file to load sessions from at start and save them to "
        "periodically and at shutdown.",
    )
    snapshot_interval: float = Field(30.0, gt=0, description="Seconds between snapshots.")
    session_ttl: float = Field(
        3600.0,
        ge=0,
        description="Seconds an idle session lives unless it asks for its own ttl_s; 0: forever.",
    )
    max_chunk_steps: int = Field(512, ge=1, description="Most time steps one chunk may carry.")
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    max_batch: int = Field(256, ge=1, description="Most chunks run together in one model call.")
    max_batch_delay_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Milliseconds a chunk may wait for others to join its model call when the batch is "
        "not full (fewer, bigger calls for that much more latency); 0: a call starts as soon as the "
        "model is free (and --batch-interval-ms allows).",
    )
    batch_interval_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="Least milliseconds between the starts of two model calls: under load each call "
        "takes all that came meanwhile (fewer, bigger calls: at 1,000 live streams 53 instead of 73 "
        "µs of CPU a chunk), while a chunk that finds the engine idle that long goes at once, and no "
        "call waits when every session seen in the last second or two already has work waiting or "
        "running (closed-loop clients, which send again only once answered). 0: calls back to back.",
    )
    max_queue: int = Field(
        4096,
        ge=1,
        description="Most chunks waiting for the model; beyond it requests are shed with 503.",
    )
    max_session_queue: int = Field(
        32, ge=1, description="Most chunks of one session waiting at once; beyond it 503."
    )
    api_keys: str = Field(
        "",
        description="Tenant keys as TENANT:KEY,... (none: open dev mode, for 127.0.0.1 only).",
    )
    api_keys_file: Path | None = Field(
        None, description="A file of TENANT:KEY lines (# comments), read with --api-keys."
    )
    admin_keys: str = Field(
        "", description="Admin keys as KEY,...: every session, and the listing."
    )
    max_sessions_per_tenant: int = Field(
        0, ge=0, description="Most live sessions one tenant may hold (429 beyond); 0: no limit."
    )
    max_in_flight: int = Field(
        2048,
        ge=1,
        description="Most requests in progress at once, HTTP and gRPC together; beyond it 503.",
    )
    max_in_flight_per_tenant: int | None = Field(
        None,
        ge=1,
        description="Most requests (HTTP and gRPC) of one tenant in progress at once (default: a "
        "quarter of --max-in-flight, and never more than it); beyond it 503, while other tenants are "
        "still let in (a gRPC stream's request waits its turn instead), and as many gRPC streams "
        "open. Requests without a known key hold one share together; the admins hold one beyond "
        "--max-in-flight. No tenants, no shares: not in open mode.",
    )
    shed_delay: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Seconds a 401, 429 or 503 answer is held before it is sent, its slot already free, "
        "so that a flood retrying at once costs little; 0: at once.",
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="Most connections open at once, WebSockets included; one beyond is answered 503 "
        "and closed (default: 4096, and never more than the open-file limit allows, less 128). The "
        "gRPC port has as many of its own (a process serving both splits the open-file budget).",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=4096,
        description="Largest request line and headers of one request, in bytes (431 beyond).",
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a request's headers may take to arrive, from its first byte or from the "
        "connection opening (408 and closed beyond).",
    )
    http: Literal["auto", "httptools", "h11"] = Field(
        "auto",
        description="HTTP/1.1 parser: httptools (fast, when installed) or h11; auto: httptools if installed.",
    )
    ws_max_in_flight: int = Field(
        16,
        ge=1,
        description="WebSocket: most messages of one connection in flight before reading pauses.",
    )
    ws_ping_interval: float = Field(
        20.0,
        gt=0,
        description="WebSocket: seconds a connection may be idle before it is pinged, to notice dead peers.",
    )
    ws_ping_timeout: float = Field(20.0, gt=0, description="WebSocket: seconds to wait for a pong.")
    allowed_origins: str = Field(
        "",
        description="Web origins (scheme://host[:port], comma-separated; * for any) whose pages may call "
        "the API (with CORS) and open streams, besides the server's own host (the console). A request "
        "a browser sends from any other page is refused with 403.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Server log level."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as JSON objects (one per line)."
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",") if o.strip()):
            parts = urlsplit(origin)
            if origin != "*" and not (
                parts.scheme in ("http", "https")
                and parts.netloc
                and parts.path in ("", "/")
                and not parts.query
            ):
                raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], or *")
        return value

    @property
    def allowed_origin_list(self) -> list[str]:
        return [
            origin.strip().rstrip("/")
            for origin in self.allowed_origins.split(",")
            if origin.strip()
        ]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A line for each ``SRNN_*`` variable that names no setting (a typo, or a setting since
    removed), with the nearest setting's name: a mistyped setting would otherwise be ignored."""
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    found = []
    for variable in sorted(environ):
        if (
            variable.startswith(PREFIX)
            and variable not in known
            and variable not in NOT_SETTINGS
            and not variable.startswith(TEST_PREFIX)
        ):
            near = difflib.get_close_matches(variable, known, n=1, cutoff=0.8)
            found.append(
                f"{variable} is not a setting and is ignored"
                + (f"; the nearest is {near[0]}" if near else "")
            )
    return found


def describe_errors(error: ValidationError) -> list[str]:
    """A line for each bad setting: its flag, its variable, and what is wrong with it."""
    lines = []
    for problem in error.errors():
        name = str(problem["loc"][0]) if problem["loc"] else ""
        where = f"--{name.replace('_', '-')} ({PREFIX}{name.upper()})" if name else "the settings"
        lines.append(f"{where}: {problem['msg']} (got {problem.get('input')!r})")
    return lines
