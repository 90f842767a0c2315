"""The command line's failures, each against a real server (or none): one plain line on stderr, its
own exit code, no traceback, and nothing left behind on the server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.model.loader import load_model
from harness.keys import auth
from harness.servers import ROOT, serve_in_thread
from harness.waiting import free_port
from stateful_rnn_client import Client, ClientError, ConnectionFailed, failures

KEY, ADMIN = "tenant-key-commands", "admin-key-commands"


@pytest.fixture(scope="module")
def url():
    with serve_in_thread(
        load_model("seed"), api_keys=f"acme:{KEY}", admin_keys=ADMIN, capacity=3, max_chunk_steps=64
    ) as found:
        yield found


def client(*args: str, key: str | None = KEY, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SRNN_API_KEY"}
    if key is not None:
        env["SRNN_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "stateful_rnn_client", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sessions(url: str) -> list[str]:
    listed = httpx.get(f"{url}/v1/sessions", params={"limit": 100}, headers=auth(ADMIN)).json()
    return [s["session_id"] for s in listed["sessions"]]


def one_line(done: subprocess.CompletedProcess, code: int, pattern: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture
def rows(tmp_path) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text("x\n" + "\n".join(str(v) for v in np.linspace(-1, 1, 20)) + "\n")
    return path


def test_a_missing_file_is_code_3(url, tmp_path):
    one_line(
        client("stream", str(tmp_path / "nowhere.csv"), "--url", url),
        failures.NO_INPUT,
        r"^stateful-rnn-client: cannot read .*nowhere\.csv: No such file",
    )


def test_a_file_with_a_bad_value_or_no_rows_is_code_4(url, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x\n1.0\nseven\n")
    one_line(
        client("stream", str(bad), "--url", url),
        failures.BAD_INPUT,
        # Where an editor shows it: line 3 (the header is line 1).
        r"bad.csv is not a table of numbers: line 3, column 1: 'seven' is not a number",
    )
    empty = tmp_path / "empty.csv"
    empty.write_text("x\n")
    one_line(
        client("stream", str(empty), "--url", url), failures.BAD_INPUT, "empty.csv has no rows"
    )


def test_a_wrong_feature_count_is_code_4_before_any_session_is_made(url, tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text("1,2\n3,4\n")
    before = sessions(url)
    one_line(
        client("stream", str(wide), "--url", url),
        failures.BAD_INPUT,
        r"wide\.csv has 2 column\(s\); model seed takes 1 input feature",
    )
    assert sessions(url) == before


def test_no_key_or_a_wrong_key_is_code_5(url, rows):
    one_line(
        client("stream", str(rows), "--url", url, key=None),
        failures.AUTH,
        r"refused the key \(401\)",
    )
    one_line(
        client("stream", str(rows), "--url", url, "--api-key", "wrong"), failures.AUTH, r"\(401\)"
    )


def test_a_server_that_is_down_is_code_6_within_the_timeout(rows):
    started = time.monotonic()
    down = f"http://127.0.0.1:{free_port()}"
    done = client("stream", str(rows), "--url", down, "--timeout", "2")
    one_line(done, failures.UNREACHABLE, f"cannot reach the server at {down}: ")
    assert time.monotonic() - started < 10


def test_a_full_server_is_code_7_within_the_timeout(url, rows):
    taken = [
        httpx.post(f"{url}/v1/sessions", json={}, headers=auth(KEY)).json()["session_id"]
        for _ in range(3 - len(sessions(url)))
    ]
    try:
        started = time.monotonic()
        one_line(
            client("stream", str(rows), "--url", url, "--timeout", "2"),
            failures.BUSY,
            r"full or overloaded \(503\): all 3 session slots are in use",
        )
        assert time.monotonic() - started < 10
    finally:
        for session_id in taken:
            httpx.delete(f"{url}/v1/sessions/{session_id}", headers=auth(KEY))


def test_a_session_deleted_mid_stream_is_code_8(url, rows):
    session_id = "deleted-mid-stream"

    def delete_soon() -> None:
        for _ in range(100):
            time.sleep(0.05)
            if (
                httpx.delete(f"{url}/v1/sessions/{session_id}", headers=auth(KEY)).status_code
                == 204
            ):
                return

    deleter = threading.Thread(target=delete_soon)
    deleter.start()
    done = client(
        "stream", str(rows), "--url", url, "--session", session_id, "--chunk", "1", "--rate", "10"
    )
    deleter.join()
    assert done.returncode == failures.GONE, done.stderr
    assert (
        done.stderr.strip().splitlines()[-1].startswith("stateful-rnn-client: the session is gone")
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("transport", ["http", "ws"])
def test_a_failure_before_the_first_chunk_leaves_no_session_behind(url, tmp_path, transport):
    long = tmp_path / "long.csv"
    long.write_text("\n".join("0.5" for _ in range(100)) + "\n")
    before = sessions(url)
    done = client("stream", str(long), "--url", url, "--chunk", "100", "--transport", transport)
    assert done.returncode == failures.REFUSED, done.stderr
    assert re.search(
        r"refused the request \(4(13|22)\): the chunk has 100 time steps; the limit is 64",
        done.stderr,
    )
    assert sessions(url) == before


def test_debug_shows_the_traceback_and_the_key_comes_from_the_environment(url, rows, tmp_path):
    done = client("stream", str(tmp_path / "nowhere.csv"), "--url", url, "--debug")
    assert done.returncode == failures.NO_INPUT and "Traceback" in done.stderr
    out = tmp_path / "out.csv"
    done = client("stream", str(rows), "--url", url, "--out", str(out))  # SRNN_API_KEY only
    assert done.returncode == 0, done.stderr
    assert (
        np.loadtxt(out, delimiter=",", ndmin=2).shape[0] == 2
    )  # the seed model answers a chunk with its last step


@pytest.mark.process
def test_versions_print_and_the_server_command_runs_the_same_commands(tmp_path):
    from stateful_rnn_client import __version__

    shown = subprocess.run(
        [sys.executable, "-m", "stateful_rnn_client", "--version"], capture_output=True, text=True
    )
    assert shown.stdout.strip() == f"stateful-rnn-client {__version__}"
    shown = subprocess.run(
        [sys.executable, "-m", "app", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert re.fullmatch(r"stateful-rnn \d+\.\d+\.\d+", shown.stdout.strip())
    missing = subprocess.run(
        [sys.executable, "-m", "app", "stream", str(tmp_path / "nowhere.csv")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert missing.returncode == failures.NO_INPUT
    assert missing.stderr.startswith("stateful-rnn: cannot read")
    helped = subprocess.run(
        [sys.executable, "-m", "app", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert "``" not in helped.stdout and ":class:" not in helped.stdout


def test_the_client_readme_lists_every_exit_code():
    table = (ROOT / "client" / "README.md").read_text()
    listed = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}
    assert listed == set(failures.CODES.values())


def test_the_librarys_retries_are_logged_and_end_at_its_timeout(caplog):
    import asyncio
    import logging

    from stateful_rnn_client import AsyncClient

    down = f"http://127.0.0.1:{free_port()}"

    async def run() -> None:
        async with AsyncClient(down, timeout=1.5) as client:
            await client.models()

    caplog.set_level(logging.INFO, logger="stateful_rnn_client")
    started = time.monotonic()
    # The client's own error (a ClientError), naming the server; httpx's is its cause.
    with pytest.raises(ConnectionFailed, match=f"cannot reach the server at {down}: ") as failed:
        asyncio.run(run())
    assert time.monotonic() - started < 3
    assert isinstance(failed.value, ClientError) and failed.value.url == down
    assert isinstance(failed.value.__cause__, httpx.ConnectError)
    with Client(down, timeout=0.5, retries=1) as client, pytest.raises(ConnectionFailed):
        client.models()
    retries = [r.getMessage() for r in caplog.records if r.name == "stateful_rnn_client"]
    assert retries and all(re.match(r"GET /v1/models: .*; retry \d+ in \d", m) for m in retries), (
        retries
    )
