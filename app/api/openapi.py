"""The OpenAPI document, made fit for client generators, and the API docs pages served offline.

FastAPI writes the document from the routes; a few things it cannot know are set here, on the
generated document, once:

- **Security**: keys are bearer tokens (``securitySchemes.bearer``); every operation takes one
  except those its route declares open (``openapi_extra=NO_KEY``: the probes, the scrape).
- **Operation ids**: the route function's name (``push_chunk``), not FastAPI's path-derived
  ``push_chunk_v1_sessions__session_id__chunks_post``; a function serving several paths gets the
  names of the path parameters after it (``model_metadata_by_name_version``).
- **Errors**: /v1 errors are ``application/problem+json`` with the ``Problem`` schema (FastAPI
  puts a route's response models under ``application/json``), including the 422s FastAPI would
  document with its own ``HTTPValidationError``, which this API never sends.
- **Session ids**: their pattern and length, on every ``session_id`` path parameter.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from files shipped in the
``fastapi-offline`` package, so they render with no network (the service runs in closed networks).
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from app.sessions.names import SESSION_ID, anchored

PATH_PART = re.compile(r"{(\w+)}")
PROBLEM = {"$ref": "#/components/schemas/Problem"}
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


# The operations' groups, in the order the docs pages show them.
TAGS = [
    {
        "name": "sessions",
        "description": "Create, read, list, reset and delete sessions: one state row each.",
    },
    {
        "name": "chunks",
        "description": "The hot path: a chunk of time steps continues a session's sequence.",
    },
    {
        "name": "state",
        "description": "A session's state and its last outputs, read and written as Keras shows them.",
    },
    {
        "name": "models",
        "description": "The models served, their versions, loading and retiring them (admin).",
    },
    {"name": "operations", "description": "Health, readiness, metrics and the console's figures."},
    {
        "name": "open inference protocol",
        "description": "KServe's v2 protocol with Triton's sequence, repository and statistics "
        "extensions: what Triton's clients speak (gRPC on --grpc-port).",
    },
]


def create(**options: Any) -> FastAPI:
    """The FastAPI application, its docs pages served from package files."""
    app = FastAPIOffline(generate_unique_id_function=lambda route: route.name, **options)
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    return app


def document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        with warnings.catch_warnings():  # "Duplicate Operation ID": told apart next
            warnings.simplefilter("ignore", UserWarning)
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=TAGS,
            )
        _security(schema)
        _nested_models(schema)
        _path_parameters(schema)
        _operation_ids(schema)
        _problems(schema)
        _session_ids(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _operations(schema: dict[str, Any]):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def _security(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A tenant's or an admin's API key (none in open dev mode)",
        }
    }
    for _, _, operation in _operations(schema):
        operation.setdefault("security", [{"bearer": []}])  # [] where the route says NO_KEY


def _nested_models(schema: dict[str, Any]) -> None:
    """The models nested in a body a route documents by hand (``schemas.json_body``), moved from
    its ``$defs`` to the components, where its refs point."""
    components = schema["components"].setdefault("schemas", {})
    for _, _, operation in _operations(schema):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            for name, model in media.get("schema", {}).pop("$defs", {}).items():
                components.setdefault(name, model)


def _path_parameters(schema: dict[str, Any]) -> None:
    """Every ``{part}`` of a path declared as a parameter (a route that reads its path parts by
    hand, for speed, declares none)."""
    for path, _, operation in _operations(schema):
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        for parameter in operation.get("parameters", []):
            # A part optional in the function (one function, several paths) is required in its path.
            options = parameter["schema"].pop("anyOf", None) if parameter["in"] == "path" else None
            if options:
                parameter["schema"].update(next(o for o in options if o.get("type") != "null"))
                parameter["schema"].pop("default", None)
                parameter["required"] = True
        for name in PATH_PART.findall(path):
            if name not in declared:
                operation.setdefault("parameters", []).append(
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                )


def _operation_ids(schema: dict[str, Any]) -> None:
    """Each operation is named for its function (``_head`` added for HEAD); a function serving
    several paths gets the names of the path parts its other paths lack."""
    by_name: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for path, method, operation in _operations(schema):
        if method == "head":  # the probes answer HEAD too, by the same function
            operation["operationId"] += "_head"
        by_name[operation["operationId"]].append((path, operation))
    for name, found in by_name.items():
        if len(found) == 1:
            continue
        shared = set.intersection(*(set(PATH_PART.findall(path)) for path, _ in found))
        for path, operation in found:
            extra = [part for part in PATH_PART.findall(path) if part not in shared]
            operation["operationId"] = name + ("_by_" + "_and_".join(extra) if extra else "")


def _problems(schema: dict[str, Any]) -> None:
    """Every error outside /v2 as problem+json (/v2 keeps the Open Inference Protocol's
    ``{"error"}`` documents, declared on its routes, and answers no 422: its invalid requests are
    400)."""
    validation = {f"#/components/schemas/{name}" for name in FASTAPI_VALIDATION}
    for path, _, operation in _operations(schema):
        responses = operation.get("responses", {})
        for status, response in list(responses.items()):
            content = response.get("content", {})
            fastapi_422 = (
                content.get("application/json", {}).get("schema", {}).get("$ref") in validation
            )
            if path.startswith("/v2"):
                if fastapi_422:
                    del responses[status]
                continue
            if status[0] not in "45":
                continue
            if fastapi_422:
                response["description"] = "The request's path, query or body is not valid"
            response["content"] = {"application/problem+json": {"schema": PROBLEM}}
    schemas = schema.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION:
        schemas.pop(name, None)


def _session_ids(schema: dict[str, Any]) -> None:
    for _, _, operation in _operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["name"] == "session_id":
                parameter["schema"].update(pattern=anchored(SESSION_ID), minLength=1, maxLength=128)
