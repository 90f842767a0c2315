"""What the route-contract tests share: the seed server's small limits (so that they can be hit),
and what every error answer of /v1 must look like."""

from __future__ import annotations

LIMITS = {"max_chunk_steps": 64, "max_body_bytes": 8192}
LIMIT_FLAGS = tuple(
    part for name, value in LIMITS.items() for part in (f"--{name.replace('_', '-')}", str(value))
)


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail"}
    assert body["status"] == status and body["detail"]
    return body
