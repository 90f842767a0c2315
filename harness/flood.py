"""Floods for tests and benchmarks: wrk in a closed loop, and a request that never finishes.

wrk (Debian: ``apt-get install wrk``) sends chunks to a tenant's sessions ``flood-0`` ..
``flood-<n-1>`` over many connections, each sending again the moment it is answered, 503 or not,
as a client that ignores Retry-After does (its script: :mod:`harness.wrk`).
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from harness import wrk
from harness.keys import auth
from harness.metrics import metric
from harness.waiting import wait_for

FLOOD_LUA = r"""
function setup(thread) table.insert(threads, thread) end
function init(args)
  shed = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if KEY ~= "" then wrk.headers["Authorization"] = "Bearer " .. KEY end
  wrk.body = '{"inputs": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}'
end
function request()
  return wrk.format(nil, "/v1/sessions/flood-" .. math.random(0, SESSIONS - 1) .. "/chunks")
end
function response(status, headers, body)
  if status == 503 then shed = shed + 1 end
end
function done(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "shed": %d}\n',
    summary.requests, summary.duration, summary.errors.status, total("shed")))
end
"""


def create_flood_sessions(url: str, sessions: int, key: str | None = None) -> None:
    for i in range(sessions):
        httpx.post(f"{url}/v1/sessions", json={"session_id": f"flood-{i}"}, headers=auth(key))


@contextmanager
def flooding(
    url: str, *, sessions: int, connections: int, seconds: float, key: str | None = None
) -> Iterator[subprocess.Popen]:
    """wrk flooding ``url`` for ``seconds`` (started when the block begins; its report, with the
    ``RESULT`` line, is the process's standard output)."""
    with wrk.script({"KEY": json.dumps(key or ""), "SESSIONS": sessions}, FLOOD_LUA) as lua:
        process = subprocess.Popen(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds:.0f}s",
                "--timeout",
                "10s",
                "-s",
                str(lua),
                url,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


@contextmanager
def stalled(url: str, key: str | None = None, sid: str = "s") -> Iterator[socket.socket]:
    """A chunk request whose body stops after a few bytes: it holds its slot until the body times
    out or the socket closes. Returns once the server counts it in flight."""
    before = metric(url, "srnn_requests_in_flight")
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        header = "".join(f"{name}: {value}\r\n" for name, value in auth(key).items())
        sock.sendall(
            f"POST /v1/sessions/{sid}/chunks HTTP/1.1\r\nHost: x\r\n{header}"
            'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"inp'.encode()
        )
        wait_for(
            lambda: metric(url, "srnn_requests_in_flight") > before,
            "the stalled request",
            20,
            errors=(),
            every_s=0.02,
        )
        yield sock
