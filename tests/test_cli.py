"""The command line: flags, SRNN_* environment variables, and the built-in default model."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton

from app.model.builtin import DEFAULT_MODEL_FILE
from app.model.loader import load_keras_file
from harness.servers import ROOT, ServerProcess, running, serve_process
from harness.waiting import free_port

pytestmark = pytest.mark.process  # the command line, as its own process


def test_flags_override_environment_and_environment_overrides_defaults():
    env = {"SRNN_CAPACITY": "7", "SRNN_MAX_CHUNK_STEPS": "33"}
    with serve_process("--max-chunk-steps", "44", env=env) as url:
        model = httpx.get(f"{url}/v1/model").json()
        assert (model["capacity"], model["max_chunk_steps"]) == (7, 44)
        # Without --model, the trained default forecaster is served: one value in, one per step out.
        assert model["name"] == "default" and model["input_features"] == 1
        assert model["output"] == {"per_step": True, "size": 1}
        assert model["backend"] == "memory"
        docs = httpx.get(f"{url}/openapi.json").json()
        assert {
            "/v1/sessions",
            "/v1/sessions/{session_id}/chunks",
            "/v1/sessions/{session_id}/state",
            "/v1/model",
            "/healthz",
            "/readyz",
            "/metrics",
        } <= set(docs["paths"])
        assert httpx.get(f"{url}/docs").status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_console_script_and_bad_configuration():
    script = Path(sys.executable).with_name("stateful-rnn")  # installed beside this interpreter
    command = [str(script)] if script.exists() else [sys.executable, "-m", "app"]
    done = subprocess.run([*command, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--max-batch" in done.stdout and "SRNN_MAX_BATCH" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--capacity", "zero"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "capacity" in bad.stderr


def test_training_script_reproduces_the_committed_default_model(tmp_path):
    # The same architecture, and the same weights to float32 rounding: training is deterministic on
    # one machine, but how a CPU and its thread count split the sums moves the last bits (seen here:
    # 2 threads and 10 give other fingerprints, every weight within 8.3e-7 of the committed file's).
    out = tmp_path / "default.keras"
    subprocess.run(
        [sys.executable, "scripts/train_default_model.py", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    fresh, committed = load_keras_file(out), load_keras_file(DEFAULT_MODEL_FILE)
    assert json.loads(fresh.to_json()) == json.loads(committed.to_json())
    for a, b in zip(fresh.weights, committed.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5, err_msg=a.path)


def test_start_up_is_quiet_and_every_json_log_line_is_json(tmp_path):
    log = tmp_path / "server.log"
    with log.open("w") as output:
        server = ServerProcess(
            "--model",
            "seed",
            "--log-format",
            "json",
            "--api-keys",
            "acme:acme-key-logs",
            "--grpc-port",
            str(grpc_port := free_port()),
            env={"SRNN_MODLE": "seed"},
            output=output,
            log_level="info",
        )
        with running([server]):
            answered = httpx.get(
                f"{server.url}/v1/model",
                headers={"X-Request-ID": "trace-1", "Authorization": "Bearer acme-key-logs"},
            )
            made_up = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "two words"})
            grpc = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            grpc.get_model_metadata(
                "seed",
                headers={"x-request-id": "trace-grpc", "authorization": "Bearer acme-key-logs"},
            )
    assert answered.headers["x-request-id"] == "trace-1"
    assert re.fullmatch(r"[0-9a-f]{16}", made_up.headers["x-request-id"])
    lines = [
        json.loads(line) for line in log.read_text().splitlines() if line.strip()
    ]  # each one JSON
    messages = [line["message"] for line in lines]
    assert "SRNN_MODLE is not a setting and is ignored; the nearest is SRNN_MODEL" in messages
    access = next(line for line in lines if line.get("request_id") == "trace-1")
    assert access["tenant"] == "acme" and access["status"] == 200 and access["latency_ms"] > 0
    assert access["client"].startswith("127.0.0.1:")
    rpc = next(line for line in lines if line.get("request_id") == "trace-grpc")  # gRPC's too
    assert rpc["method"] == "GRPC" and rpc["path"].endswith("/ModelMetadata")
    assert (
        rpc["tenant"] == "acme" and rpc["status"] == 200 and rpc["client"].startswith("127.0.0.1:")
    )
    assert not [
        m for m in messages if re.search(r"cuda|absl|oneDNN|^[IWE]0000", m)
    ]  # TensorFlow's noise


def test_bad_settings_and_keys_are_reported_in_a_line_each_before_tensorflow_loads():
    probe = (
        "import sys; from app.cli import main; code = main(['serve', '--api-keys', 'no-colon-here']); "
        "print(code, 'tensorflow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "cannot start" in done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--capacity", "zero"],
        cwd=ROOT,
        env={**os.environ, "SRNN_LOG_LEVEL": "loud"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "stateful-rnn: bad setting --capacity (SRNN_CAPACITY): Input should be a valid integer, unable to parse "
        "string as an integer (got 'zero')",
        "stateful-rnn: bad setting --log-level (SRNN_LOG_LEVEL): Input should be 'debug', 'info', 'warning' or "
        "'error' (got 'loud')",
    ]
