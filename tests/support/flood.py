"""Floods for tests and benchmarks: wrk in a closed loop, and a request that never finishes.

wrk (Debian: ``apt-get install wrk``) sends chunks to a tenant's sessions ``flood-0`` ..
``flood-<n-1>`` over many connections, each sending again the moment it is answered, 503 or not,
as a client that ignores Retry-After does. Its Lua script ends with a ``RESULT {json}`` line after
wrk's own report.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from deploy.waiting import wait_for
from tests.support.keys import auth
from tests.support.metrics import metric

FLOOD_LUA = r"""
local threads = {}
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
  local shed = 0
  for _, thread in ipairs(threads) do shed = shed + thread:get("shed") end
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "shed": %d}\n',
    summary.requests, summary.duration, summary.errors.status, shed))
end
"""


def create_flood_sessions(url: str, sessions: int, key: str | None = None) -> None:
    for i in range(sessions):
        httpx.post(f"{url}/v1/sessions", json={"session_id": f"flood-{i}"}, headers=auth(key))


@contextmanager
def flooding(url: str, *, sessions: int, connections: int, seconds: float,
             key: str | None = None) -> Iterator[subprocess.Popen]:
    """wrk flooding ``url`` for ``seconds`` (started when the block begins; its report, with the
    ``RESULT`` line, is the process's standard output)."""
    constants = f"KEY = {json.dumps(key or '')}\nSESSIONS = {sessions}\n"
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "flood.lua"
        script.write_text(constants + FLOOD_LUA)
        process = subprocess.Popen(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s", "-s", str(script), url],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def result_of(report: str) -> dict:
    for line in report.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"no result in the load generator's output:\n{report}")


@contextmanager
def stalled(url: str, key: str | None = None, sid: str = "s") -> Iterator[socket.socket]:
    """A chunk request whose body stops after a few bytes: it holds its slot until the body times
    out or the socket closes. Returns once the server counts it in flight."""
    before = metric(url, "srnn_requests_in_flight")
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        header = "".join(f"{name}: {value}\r\n" for name, value in auth(key).items())
        sock.sendall(f"POST /v1/sessions/{sid}/chunks HTTP/1.1\r\nHost: x\r\n{header}"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inp".encode())
        wait_for(lambda: metric(url, "srnn_requests_in_flight") > before, "the stalled request", 20,
                 errors=(), every_s=0.02)
        yield sock
