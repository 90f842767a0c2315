"""Load generators, each run as its own process so its CPU use can be reported beside the server's.

HTTP load comes from wrk (Debian: ``apt-get install wrk``), a compiled load generator, driven by a Lua
script: a Python client would starve the server of CPU on a small machine. WebSocket load comes from
``bench.wsclient`` (no compiled WebSocket load generator is packaged by Debian): a minimal client that
sends pre-built frames and reads replies without a WebSocket library, cheap enough to leave the
server most of the machine; its CPU use is reported too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.wrk import result_of
from harness.wrk import script as wrk_script

# Creates sessions (server-made ids) until each thread has its share of COUNT answers.
CREATE_LUA = r"""
function setup(thread) table.insert(threads, thread) end
function init(args)
  wrk.method = "POST"
  share, answered, refused = math.ceil(COUNT / THREADS), 0, 0
end
function response(status, headers, body)
  answered = answered + 1
  if status ~= 201 then refused = refused + 1 end
  if answered >= share then wrk.thread:stop() end
end
function done(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "refused": %d}\n',
    summary.requests, summary.duration, total("refused")))
end
"""


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        sys.exit(
            "the benchmark needs wrk: apt-get install wrk (Debian, Ubuntu) or brew install wrk"
        )


ROOT = Path(__file__).resolve().parents[1]

# Thread j of THREADS sends to sessions PREFIX<j*m> .. PREFIX<j*m+m-1> in turn (m = SESSIONS/THREADS),
# so with one connection per session each session has one chunk in flight. With RATE > 0, each thread
# hands its connections send times RATE/THREADS a second apart (an open loop, like wrk2) and counts the
# sends that could not leave on time because every connection was busy.
LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } srnn_timespec;
int clock_gettime(int clk_id, srnn_timespec *tp);
]]
local clock = ffi.new("srnn_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local made = 0
function setup(thread)
  thread:set("first", made * math.floor(SESSIONS / THREADS))
  made = made + 1
  table.insert(threads, thread)
end

local turn, late, next_at, interval = 0, 0, nil, nil
function init(args)
  count = math.floor(SESSIONS / THREADS)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = BODY
  if RATE > 0 then interval = 1000 * THREADS / RATE end
end

function request()
  local sid = PREFIX .. (first + turn % count)
  turn = turn + 1
  if PER_SESSION_BODY then  -- the session is named in the body (the Open Inference Protocol)
    return wrk.format(nil, PATH, nil, string.format(BODY, sid))
  end
  return wrk.format(nil, string.format(PATH, sid))
end

if RATE > 0 then
  function delay()
    local now = now_ms()
    if next_at == nil then next_at = now end
    local at = next_at
    next_at = next_at + interval
    if at < now - 1 then late = late + 1 end
    return math.max(0, math.floor(at - now))
  end
end

function done(summary, latency, requests)
  local behind = total("late")
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "failed": %d, "non_2xx": %d, "late": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status, behind,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


@dataclass
class Run:
    """One measured load run: what the client saw, and the CPU both sides used."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    failed: int = 0
    late: int = 0
    client_cpu: float = 0.0  # cores busy on average over the run
    server_cpu: float = 0.0
    server_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


class Measured:
    """The server's CPU time and resident memory across one load run: its process and its child
    processes (the API workers, with --workers)."""

    def __init__(self, server_pid: int):
        self.process = psutil.Process(server_pid)

    def _tree(self) -> list[psutil.Process]:
        return [self.process, *self.process.children(recursive=True)]

    def _cpu_times(self) -> dict[int, float]:
        times = {}
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                times[process.pid] = sum(process.cpu_times()[:2])
        return times

    def __enter__(self) -> Measured:
        self._cpu = self._cpu_times()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        after = self._cpu_times()
        self.cpu = sum(t - self._cpu.get(pid, 0.0) for pid, t in after.items()) / wall
        self.rss_mb = 0.0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                self.rss_mb += process.memory_info().rss / 2**20


def run_child(command: list[str]) -> tuple[str, float]:
    """Run ``command``; its standard output and the cores it kept busy on average."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read()
    if child.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({child.returncode}):\n{text}")
    return text, (usage.ru_utime + usage.ru_stime) / wall


def wrk(
    url: str,
    server_pid: int,
    *,
    body: bytes,
    sessions: int,
    prefix: str,
    seconds: float,
    rate: float = 0,
    threads: int = 2,
    path: str = "/v1/sessions/%s/chunks",
    per_session_body: bool = False,
) -> Run:
    """Chunks to ``sessions`` sessions (``prefix`` + number), one connection each: as fast as the
    answers come back (closed loop), or at ``rate`` chunks/s overall (open loop). The session's name
    goes in ``path`` (``%s``), or with ``per_session_body`` in ``body`` (``%s``) sent to ``path``."""
    threads = max(1, min(threads, sessions))
    sessions -= sessions % threads
    constants = {
        "SESSIONS": sessions,
        "THREADS": threads,
        "RATE": rate,
        "PATH": json.dumps(path),
        "PER_SESSION_BODY": "true" if per_session_body else "false",
        "PREFIX": json.dumps(prefix),
        "BODY": json.dumps(body.decode()),
    }
    with wrk_script(constants, LUA) as lua:
        command = [
            "wrk",
            f"-t{threads}",
            f"-c{sessions}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            url,
        ]
        with Measured(server_pid) as server:
            text, client_cpu = run_child(command)
    found = result_of(text)
    return Run(
        requests=found["requests"] - found["non_2xx"],
        seconds=found["duration_us"] / 1e6,
        p50_ms=found["p50_us"] / 1e3,
        p90_ms=found["p90_us"] / 1e3,
        p99_ms=found["p99_us"] / 1e3,
        failed=found["failed"] + found["non_2xx"],
        late=found["late"],
        client_cpu=client_cpu,
        server_cpu=server.cpu,
        server_rss_mb=server.rss_mb,
    )


def websocket(
    url: str, server_pid: int, *, frame: bytes, sessions: int, prefix: str, seconds: float
) -> Run:
    """Binary frames over one WebSocket per session, each sent when the last is answered."""
    return _python_client(
        server_pid,
        [
            "bench.wsclient",
            "--url",
            url,
            "--prefix",
            prefix,
            "--sessions",
            str(sessions),
            "--seconds",
            str(seconds),
            "--frame",
            frame.hex(),
        ],
    )


def grpc_streams(
    address: str,
    server_pid: int,
    *,
    model: str,
    frame: bytes,
    features: int,
    sessions: int,
    prefix: str,
    seconds: float,
) -> Run:
    """One ``ModelStreamInfer`` stream per sequence, each request sent when the last is answered."""
    return _python_client(
        server_pid,
        [
            "bench.grpcclient",
            "--address",
            address,
            "--model",
            model,
            "--prefix",
            prefix,
            "--sessions",
            str(sessions),
            "--seconds",
            str(seconds),
            "--frame",
            frame.hex(),
            "--features",
            str(features),
        ],
    )


def _python_client(server_pid: int, module_and_args: list[str]) -> Run:
    """A load client of ours (``python -m MODULE ARGS``) that prints a RESULT line, measured."""
    with Measured(server_pid) as server:
        text, client_cpu = run_child([sys.executable, "-m", *module_and_args])
    found = result_of(text)
    return Run(
        requests=found["requests"],
        seconds=found["seconds"],
        p50_ms=found["p50_ms"],
        p90_ms=found["p90_ms"],
        p99_ms=found["p99_ms"],
        failed=found["failed"],
        client_cpu=client_cpu,
        server_cpu=server.cpu,
        server_rss_mb=server.rss_mb,
    )


def create_sessions(url: str, count: int, threads: int = 2, connections: int = 32) -> dict:
    """``count`` sessions with server-made ids, as fast as the server makes them (memory backend). The
    time is taken when the server holds them all: wrk itself always runs out its duration."""
    import httpx

    with (
        wrk_script({"COUNT": count, "THREADS": threads}, CREATE_LUA) as lua,
        tempfile.TemporaryFile("w+") as out,
    ):
        started = time.perf_counter()
        child = subprocess.Popen(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                "-d600s",
                "-s",
                str(lua),
                f"{url}/v1/sessions",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        held = 0
        while held < count and child.poll() is None:
            time.sleep(0.2)
            held = int(
                float(re.search(r"^srnn_sessions (\S+)", httpx.get(f"{url}/metrics").text, re.M)[1])
            )
        seconds = time.perf_counter() - started
        child.send_signal(signal.SIGINT)
        _, _, usage = os.wait4(child.pid, 0)
        out.seek(0)
        text = out.read()
    return {
        **result_of(text),
        "held": held,
        "seconds": seconds,
        "client_cpu": (usage.ru_utime + usage.ru_stime) / seconds,
    }
