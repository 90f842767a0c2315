"""The Python client and the stream command, against real servers."""

import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from app.model.builtin import DEFAULT_MODEL_FILE, build_seed_model
from app.model.loader import load_keras_file, load_model
from harness.servers import ROOT, ServerProcess, serve_in_thread
from stateful_rnn_client import Client, SeqConflict, SessionGone
from tests.support.reference import StatefulReference, state_rows

pytestmark = pytest.mark.process  # a server process killed and restarted


@pytest.fixture(scope="module")
def seed_url():
    with serve_in_thread(load_model("seed")) as url:
        yield url


def test_push_stream_reset_state_delete(seed_url):
    reference = StatefulReference(build_seed_model())
    data = np.random.default_rng(1).uniform(-3, 3, (12, 1)).astype(np.float32)
    with Client(seed_url) as client:
        session = client.create_session()
        np.testing.assert_allclose(session.push(data[:3]), reference.feed(data[:3]), atol=1e-5)
        np.testing.assert_allclose(session.push(data[3:5, 0]), reference.feed(data[3:5]), atol=1e-5)
        with session.stream() as stream:
            np.testing.assert_allclose(stream.send(data[5:9]), reference.feed(data[5:9]), atol=1e-5)
        with session.stream(binary=True) as stream:
            np.testing.assert_allclose(stream.send(data[9:]), reference.feed(data[9:]), atol=1e-5)
        assert session.seq == 4
        np.testing.assert_allclose(state_rows(session.state())[0], reference.states()[0], atol=1e-5)
        assert session.reset()["steps"] == 0
        again = client.session(session.id)
        assert again.seq == 4
        session.delete()
        with pytest.raises(SessionGone):
            session.push(data[:1])


def test_a_chunk_with_nan_is_refused_before_it_is_sent(seed_url):
    with Client(seed_url) as client:
        session = client.create_session()
        for bad in (np.nan, np.inf):
            with pytest.raises(ValueError, match="NaN or infinity"):
                session.push(np.array([[0.5], [bad]]))
        assert client.session(session.id).seq == 0  # nothing reached the server


def test_a_second_writer_is_reported_as_a_seq_conflict(seed_url):
    with Client(seed_url) as client:
        mine = client.create_session()
        theirs = client.session(mine.id)
        theirs.push(np.array([1.0]))
        with pytest.raises(SeqConflict) as conflict:
            mine.push(np.array([2.0]))
        assert conflict.value.expected_seq == 2


def test_the_client_survives_the_server_being_killed_and_restarted_mid_stream(
    redis_url, redis_prefix
):
    args = (
        "--model",
        "seed",
        "--backend",
        "redis",
        "--redis-url",
        redis_url,
        "--redis-prefix",
        redis_prefix,
    )
    server = ServerProcess(*args).start().wait_ready()
    data = np.random.default_rng(2).uniform(-3, 3, (120, 1)).astype(np.float32)
    outputs = {}

    def stream(transport):
        with Client(server.url, retries=40, max_backoff=1.0) as client:
            session = client.create_session()
            outputs[transport] = [session.id]
            if transport == "ws":
                with session.stream() as socket:
                    for chunk in np.split(data, 60):
                        outputs[transport].append(socket.send(chunk))
                        time.sleep(0.02)
            else:
                for chunk in np.split(data, 60):
                    outputs[transport].append(session.push(chunk))
                    time.sleep(0.02)

    threads = [threading.Thread(target=stream, args=(t,)) for t in ("ws", "http")]
    for thread in threads:
        thread.start()
    time.sleep(0.6)
    server.kill()  # kill -9, mid-stream
    server = ServerProcess(*args, port=server.port).start()
    for thread in threads:
        thread.join(120)
    try:
        for transport, (sid, *answers) in outputs.items():
            assert len(answers) == 60, transport
            reference = StatefulReference(build_seed_model())
            for got, chunk in zip(answers, np.split(data, 60)):
                np.testing.assert_allclose(got, reference.feed(chunk), atol=1e-5)
            state = httpx.get(f"{server.url}/v1/sessions/{sid}/state").json()
            assert (state["seq"], state["steps"]) == (60, 120)
            np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)
    finally:
        server.stop()


@pytest.mark.parametrize("transport", ["ws", "http"])
def test_the_stream_command_writes_what_keras_predicts_for_the_whole_file(transport, tmp_path):
    series = np.cumsum(np.random.default_rng(3).normal(0, 0.05, 157)).astype(np.float32)
    source = tmp_path / "ticks.csv"
    source.write_text("price\n" + "\n".join(f"{v:.6f}" for v in series) + "\n")
    out = tmp_path / "forecast.csv"
    with serve_in_thread(load_model("default")) as url:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "app",
                "stream",
                str(source),
                "--url",
                url,
                "--chunk",
                "16",
                "--transport",
                transport,
                "--out",
                str(out),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    written = np.loadtxt(out, delimiter=",", ndmin=2)
    rows = np.loadtxt(source, delimiter=",", skiprows=1, ndmin=2).astype(np.float32)
    whole = load_keras_file(DEFAULT_MODEL_FILE).predict(rows[None], verbose=0)[0]
    assert written.shape == (157, 1)
    np.testing.assert_allclose(written, whole, atol=1e-5)


def test_demo_prints_equal_states(seed_url):
    done = subprocess.run(
        [sys.executable, "-m", "app", "demo", "--url", seed_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "equal within 1e-5" in done.stdout


def test_a_cancelled_send_is_settled_by_the_next_and_applied_once(seed_url):
    import asyncio

    from stateful_rnn_client import AsyncClient

    async def run():
        async with AsyncClient(seed_url) as client:
            session = await client.create_session()
            async with session.stream() as stream:
                first = asyncio.ensure_future(stream.send(np.array([1.0])))
                await asyncio.sleep(0.0005)
                first.cancel()
                try:
                    await first
                except asyncio.CancelledError:
                    pass
                second = await stream.send(np.array([2.0]))
            return second, await session.state()

    second, state = asyncio.run(run())
    reference = StatefulReference(build_seed_model())
    reference.feed(np.array([[1.0]]))  # the cancelled chunk, applied exactly once
    np.testing.assert_allclose(second, reference.feed(np.array([[2.0]])), atol=1e-5)
    assert (state["seq"], state["steps"]) == (2, 2)


def test_odd_arrays_and_files_are_read_right(seed_url, tmp_path):
    with Client(seed_url) as client:
        session = client.create_session()
        wide = np.arange(6, dtype=np.float32).reshape(3, 2)
        reference = StatefulReference(build_seed_model())
        np.testing.assert_allclose(
            session.push(wide[:, :1]), reference.feed(wide[:, :1]), atol=1e-5
        )
        client.close()
        client.close()  # twice is fine
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeff0.5\n0.25\n".encode())
    empty = tmp_path / "empty.csv"
    empty.write_text("value\n")
    from stateful_rnn_client.commands import read_rows
    from stateful_rnn_client.failures import Failure

    assert read_rows(bom).tolist() == [[0.5], [0.25]]
    with pytest.raises(Failure, match="has no rows"):
        read_rows(empty)
