"""Models and versions on one server (memory backend): several served at once, each session exact on
its own version; a new version rolled out beside the old; retiring with drain, reset and carry; a
corrupt file that changes nothing that serves."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import time
import weakref
import zipfile

import httpx
import numpy as np
import pytest

from app.model.loader import load_version
from app.model.repository import Repository
from app.store.memory import MemoryStore
from harness.keys import auth
from harness.servers import serve_in_thread
from tests.support.reference import StatefulReference, state_rows
from tests.support.repository import save_version
from tests.support.stores import start_engine

FAST = {"repository_poll_s": 0.2, "xla": False}
RNG = np.random.default_rng(15)


def chunk(steps: int, features: int) -> np.ndarray:
    return RNG.uniform(-2, 2, (steps, features)).astype(np.float32)


def push(http: httpx.Client, sid: str, inputs: np.ndarray) -> np.ndarray:
    answer = http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": inputs.tolist()})
    assert answer.status_code == 200, answer.text
    return np.asarray(answer.json()["outputs"], np.float32)


def create(http: httpx.Client, **options) -> dict:
    answer = http.post("/v1/sessions", json=options)
    assert answer.status_code == 201, answer.text
    return answer.json()


def version_state(http: httpx.Client, name: str, version: int) -> str | None:
    document = http.get(f"/v1/models/{name}").json()
    return next((v["state"] for v in document["versions"] if v["version"] == version), None)


def wait_for_state(
    http: httpx.Client, name: str, version: int, state: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while (found := version_state(http, name, version)) != state:
        assert time.monotonic() < deadline, f"{name} version {version} is {found}, not {state}"
        time.sleep(0.1)


def test_two_models_and_two_versions_of_one_are_served_at_once_each_exact(tmp_path):
    repo = tmp_path / "models"
    speech = {
        1: save_version(repo, "speech", 1, seed=1),
        2: save_version(repo, "speech", 2, seed=2),
    }
    desk = save_version(
        repo, "desk", 1, seed=3, features=1, layers=(("LSTM", 3, False),), per_step=False
    )
    with (
        serve_in_thread(None, model_repository=str(repo), **FAST) as url,
        httpx.Client(base_url=url) as http,
    ):
        newest = create(http, model="speech")
        pinned = create(http, model="speech", version=1)
        asset = create(http, model="desk")
        assert newest["model"] == {"name": "speech", "version": 2}
        assert pinned["model"] == {"name": "speech", "version": 1}
        assert asset["model"] == {"name": "desk", "version": 1}
        # Several models: a session must name one.
        assert http.post("/v1/sessions", json={}).status_code == 422
        assert http.post("/v1/sessions", json={"model": "nope"}).status_code == 404
        assert http.post("/v1/sessions", json={"model": "speech", "version": 7}).status_code == 404
        sessions = [(newest, speech[2], 2), (pinned, speech[1], 2), (asset, desk, 1)]
        references = [StatefulReference(model) for _, model, _ in sessions]
        for steps in (3, 1, 5, 2):  # the three in turn: they may share a model call, never a state
            for (info, _, features), reference in zip(sessions, references):
                inputs = chunk(steps, features)
                np.testing.assert_allclose(
                    push(http, info["session_id"], inputs), reference.feed(inputs), atol=1e-5
                )
        for (info, _, _), reference in zip(sessions, references):
            state = http.get(f"/v1/sessions/{info['session_id']}/state").json()
            assert state["model"]["version"] == info["model"]["version"]
            for got, want in zip(state_rows(state), reference.states(), strict=True):
                np.testing.assert_allclose(got, want, atol=1e-5)
        # A chunk with the other model's feature count is refused, and changes nothing.
        wrong = http.post(
            f"/v1/sessions/{asset['session_id']}/chunks", json={"inputs": [[1.0, 2.0]]}
        )
        assert wrong.status_code == 422 and "rows of 1 feature" in wrong.json()["detail"]
        listing = http.get("/v1/models").json()["models"]
        assert [m["name"] for m in listing] == ["desk", "speech"]
        speech_doc = listing[1]
        assert speech_doc["default_version"] == 2
        assert [(v["version"], v["state"], v["live_sessions"]) for v in speech_doc["versions"]] == [
            (2, "ready", 1),
            (1, "ready", 1),
        ]
        assert speech_doc["versions"][0]["recurrent_layers"][0]["units"] == 4
        # Each version says what computes it: ONNX Runtime for these plain GRUs (auto's choice).
        runtime = "tensorflow" if os.environ.get("SRNN_RUNTIME") == "tensorflow" else "onnx"
        assert {v["runtime"] for m in listing for v in m["versions"]} == {runtime}
        assert http.get("/v1/models/nope").status_code == 404


def test_a_new_version_rolls_out_beside_live_streams_then_each_retirement_mode(tmp_path):
    repo = tmp_path / "models"
    v1 = save_version(repo, "speech", 1, seed=11)
    with (
        serve_in_thread(None, model_repository=str(repo), keep_versions=3, **FAST) as url,
        httpx.Client(base_url=url) as http,
    ):
        old = [create(http)["session_id"] for _ in range(3)]
        references = {sid: StatefulReference(v1) for sid in old}
        for sid in old:
            inputs = chunk(4, 2)
            np.testing.assert_allclose(
                push(http, sid, inputs), references[sid].feed(inputs), atol=1e-5
            )
        v2 = save_version(repo, "speech", 2, seed=12)  # same layout, other weights
        wait_for_state(http, "speech", 2, "ready")
        new = create(http)
        assert new["model"]["version"] == 2
        reference_new = StatefulReference(v2)
        for sid in old:  # the old streams go on, exactly, on version 1
            inputs = chunk(2, 2)
            np.testing.assert_allclose(
                push(http, sid, inputs), references[sid].feed(inputs), atol=1e-5
            )
        inputs = chunk(3, 2)
        np.testing.assert_allclose(
            push(http, new["session_id"], inputs), reference_new.feed(inputs), atol=1e-5
        )

        # carry: version 1's sessions move to version 2 with their state.
        carried = http.post("/v1/models/speech/versions/1/retire", json={"mode": "carry"})
        assert carried.status_code == 200, carried.text
        assert carried.json()["moved"] == 3 and carried.json()["moved_to"] == 2
        for sid in old:
            assert http.get(f"/v1/sessions/{sid}").json()["model"] == {
                "name": "speech",
                "version": 2,
            }
            moved = StatefulReference(v2)
            moved.set_states(references[sid].states())
            references[sid] = moved
            inputs = chunk(2, 2)
            np.testing.assert_allclose(push(http, sid, inputs), moved.feed(inputs), atol=1e-5)
        wait_for_state(http, "speech", 1, "retired")
        assert http.post("/v1/sessions", json={"model": "speech", "version": 1}).status_code == 409

        # reset: to version 3, zeroed; its state has another layout (outputs the same), so carry is refused.
        v3 = save_version(repo, "speech", 3, seed=13, layers=(("GRU", 5, True),), head=4)
        wait_for_state(http, "speech", 3, "ready")
        refused = http.post("/v1/models/speech/versions/2/retire", json={"mode": "carry"})
        assert refused.status_code == 409 and "state layout" in refused.json()["detail"]
        assert version_state(http, "speech", 2) == "ready"  # refused: nothing changed
        reset = http.post("/v1/models/speech/versions/2/retire", json={"mode": "reset"})
        assert reset.status_code == 200 and reset.json()["moved"] == 4
        for sid in [*old, new["session_id"]]:
            info = http.get(f"/v1/sessions/{sid}").json()
            assert info["model"]["version"] == 3 and info["steps"] == 0
            reference = StatefulReference(v3)
            inputs = chunk(3, 2)
            np.testing.assert_allclose(push(http, sid, inputs), reference.feed(inputs), atol=1e-5)
        wait_for_state(http, "speech", 2, "retired")

        # drain: version 3's sessions stay on it until they end; then it is unloaded.
        save_version(repo, "speech", 4, seed=14, layers=(("GRU", 5, True),), head=4)
        wait_for_state(http, "speech", 4, "ready")
        drained = http.post("/v1/models/speech/versions/3/retire", json={"mode": "drain"})
        assert drained.json() | {"live_sessions": 4} == {
            "name": "speech",
            "version": 3,
            "mode": "drain",
            "moved": 0,
            "moved_to": None,
            "state": "retiring",
            "live_sessions": 4,
        }
        assert create(http)["model"]["version"] == 4
        for sid in old:
            assert push(http, sid, chunk(1, 2)).shape == (1, 4)
            assert http.get(f"/v1/sessions/{sid}").json()["model"]["version"] == 3
        for sid in [*old, new["session_id"]]:
            assert http.delete(f"/v1/sessions/{sid}").status_code == 204
        wait_for_state(http, "speech", 3, "retired")
        metrics = http.get("/metrics").text
        assert 'srnn_model_chunks_total{model="speech",version="3"}' in metrics
        assert 'srnn_model_version_state{model="speech",state="retired",version="3"} 1.0' in metrics
        # An info series exists while its version is served, and is 1 while it does.
        info = [line for line in metrics.splitlines() if line.startswith("srnn_build_info{")]
        assert any('model="speech"' in line and 'version="4"' in line for line in info), info
        assert not any('model="speech"' in line and 'version="3"' in line for line in info), info
        assert all(line.endswith(" 1.0") for line in info), info


def test_bad_requests_to_retire_change_nothing(tmp_path):
    repo = tmp_path / "models"
    save_version(repo, "speech", 1, seed=21)
    with (
        serve_in_thread(None, model_repository=str(repo), **FAST) as url,
        httpx.Client(base_url=url) as http,
    ):
        sid = create(http)["session_id"]
        for body, status in (
            ({"mode": "sideways"}, 422),
            ({}, 422),
            ({"mode": "carry"}, 409),
            ({"mode": "reset"}, 409),
        ):
            answer = http.post("/v1/models/speech/versions/1/retire", json=body)
            assert answer.status_code == status, answer.text
        assert (
            http.post("/v1/models/speech/versions/9/retire", json={"mode": "drain"}).status_code
            == 404
        )
        assert version_state(http, "speech", 1) == "ready"
        push(http, sid, chunk(2, 2))


def test_a_corrupt_or_unstreamable_file_in_the_repository_changes_nothing_that_serves(
    tmp_path, caplog
):
    import keras

    repo = tmp_path / "models"
    v1 = save_version(repo, "speech", 1, seed=31)
    with (
        serve_in_thread(
            None, model_repository=str(repo), max_model_bytes=16 * 2**20, **FAST
        ) as url,
        httpx.Client(base_url=url) as http,
    ):
        sid = create(http)["session_id"]
        reference = StatefulReference(v1)
        (repo / "speech" / "2").mkdir()
        (repo / "speech" / "2" / "model.keras").write_bytes(b"PK\x03\x04 not a zip at all")
        wait_for_state(http, "speech", 2, "failed")
        inputs = keras.Input(shape=(None, 2))
        bidirectional = keras.Model(inputs, keras.layers.Bidirectional(keras.layers.GRU(3))(inputs))
        (repo / "speech" / "3").mkdir()
        bidirectional.save(repo / "speech" / "3" / "model.keras")
        wait_for_state(http, "speech", 3, "failed")
        # An archive that inflates far past its size (the attack: 2 MiB to 2 GiB raised RSS by
        # 4 GB for 26 s): refused from its declared sizes, before anything is unpacked.
        bomb = tmp_path / "bomb.keras"  # made aside and moved in, as a deploy would
        shutil.copy(repo / "speech" / "1" / "model.keras", bomb)
        with zipfile.ZipFile(bomb, "a") as archive:
            archive.writestr("model.weights.h5.pad", bytes(32 * 2**20), zipfile.ZIP_DEFLATED)
        assert bomb.stat().st_size < 2**20
        (repo / "speech" / "4").mkdir()
        bomb.rename(repo / "speech" / "4" / "model.keras")
        wait_for_state(http, "speech", 4, "failed")
        document = http.get("/v1/models/speech").json()
        versions = {v["version"]: v for v in document["versions"]}
        assert "is not a Keras 3 .keras archive" in versions[2]["error"]
        assert versions[3]["error"] and versions[1]["state"] == "ready"
        assert "unpacks to" in versions[4]["error"]
        # Files are named by their place in the repository, never by the server's paths.
        assert "'speech/2/model.keras'" in versions[2]["error"]
        assert str(tmp_path) not in json.dumps(document)
        shutil.rmtree(repo / "speech" / "4")  # so that version 2 is among the newest kept again
        assert http.get("/v1/models/speech").json()["default_version"] == 1
        assert create(http)["model"]["version"] == 1
        for _ in range(3):
            inputs = chunk(2, 2)
            np.testing.assert_allclose(push(http, sid, inputs), reference.feed(inputs), atol=1e-5)
        assert http.get("/readyz").status_code == 200
        # Fixed in place: tried again, and served.
        v2 = save_version(tmp_path / "fixed", "speech", 2, seed=32)
        shutil.copy(
            tmp_path / "fixed" / "speech" / "2" / "model.keras",
            repo / "speech" / "2" / "model.keras",
        )
        wait_for_state(http, "speech", 2, "ready")
        assert create(http)["model"]["version"] == 2
        assert v2 is not None


def test_an_unloaded_version_frees_its_model(tmp_path):
    repo = tmp_path / "models"
    save_version(repo, "speech", 1, seed=41)
    save_version(repo, "speech", 2, seed=42)
    source = Repository(root=repo).scan()["speech"]

    async def main():
        first, second = load_version(source[1]), load_version(source[2])
        engine, versions = await start_engine(first, MemoryStore(8))
        versions._serve(versions._entry("speech", 2), second)
        versions.sources = {"speech": source}
        gone = weakref.ref(first)
        await versions.retire("speech", 1, "drain")
        del first
        await engine.stop()
        return versions, gone

    versions, gone = asyncio.run(main())
    gc.collect()
    assert versions.entries["speech/1"].state == "retired" and gone() is None


def test_sessions_of_several_versions_survive_a_restart_from_a_snapshot(tmp_path):
    repo = tmp_path / "models"
    v1 = save_version(repo, "speech", 1, seed=51)
    snapshot = tmp_path / "sessions.npz"
    options = dict(model_repository=str(repo), snapshot=str(snapshot), **FAST)
    with serve_in_thread(None, **options) as url, httpx.Client(base_url=url) as http:
        old = create(http)["session_id"]
        reference_old = StatefulReference(v1)
        inputs = chunk(3, 2)
        np.testing.assert_allclose(push(http, old, inputs), reference_old.feed(inputs), atol=1e-5)
        v2 = save_version(repo, "speech", 2, seed=52, layers=(("LSTM", 2, False),))
        wait_for_state(http, "speech", 2, "ready")
        new = create(http)["session_id"]
        reference_new = StatefulReference(v2)
        inputs = chunk(2, 2)
        np.testing.assert_allclose(push(http, new, inputs), reference_new.feed(inputs), atol=1e-5)
    save_version(
        repo, "speech", 3, seed=53
    )  # version 1 is now beyond --keep-versions, and has a session
    with serve_in_thread(None, **options) as url, httpx.Client(base_url=url) as http:
        for sid, reference in ((old, reference_old), (new, reference_new)):
            inputs = chunk(2, 2)
            np.testing.assert_allclose(push(http, sid, inputs), reference.feed(inputs), atol=1e-5)
        assert create(http)["model"]["version"] == 3


def test_tenants_see_the_models_but_not_the_session_counts_and_cannot_retire(tmp_path):
    repo = tmp_path / "models"
    save_version(repo, "speech", 1, seed=61)
    keys = {"api_keys": "alpha:alpha-key-versions", "admin_keys": "admin-key-versions"}
    with (
        serve_in_thread(None, model_repository=str(repo), **keys, **FAST) as url,
        httpx.Client(base_url=url) as http,
    ):
        tenant, admin = auth("alpha-key-versions"), auth("admin-key-versions")
        assert http.post("/v1/sessions", json={}, headers=tenant).status_code == 201
        (seen,) = http.get("/v1/models/speech", headers=tenant).json()["versions"]
        assert seen["state"] == "ready" and seen["live_sessions"] is None
        assert (
            http.get("/v1/models/speech", headers=admin).json()["versions"][0]["live_sessions"] == 1
        )
        assert http.get("/v1/models").status_code == 401
        for path, body in (
            ("/v1/models/speech/load", None),
            ("/v1/models/speech/versions/1/retire", {"mode": "drain"}),
        ):
            assert http.post(path, json=body, headers=tenant).status_code == 403
        http.headers.update(admin)
        assert version_state(http, "speech", 1) == "ready"  # refused: nothing retired


def test_a_v2_sequence_finishes_on_its_version_while_a_newer_one_with_other_inputs_serves_new_ones(
    tmp_path,
):
    """A rollout on the Open Inference Protocol, HTTP and gRPC alike: a sequence started on version 1
    goes on there (checked against its inputs, answered as version 1) once version 2, which takes
    other inputs, is the newest; new sequences get version 2. Its own server: it changes the
    repository."""
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http
    from tritonclient.utils import InferenceServerException

    from harness.servers import free_port

    def tensor(module, inputs: np.ndarray):
        found = module.InferInput("inputs", [1, *inputs.shape], "FP32")
        found.set_data_from_numpy(inputs[None])
        return [found]

    def version_of(module, answer) -> str:
        found = answer.get_response(**({"as_json": True} if module is triton_grpc else {}))
        return found["model_version"]

    repo = tmp_path / "models"
    v1 = save_version(repo, "ticks", 1, seed=21, features=1)
    port = free_port()
    with serve_in_thread(
        None, model_repository=str(repo), keep_versions=3, grpc_port=port, **FAST
    ) as url:
        clients = {
            triton_http: triton_http.InferenceServerClient(url.removeprefix("http://")),
            triton_grpc: triton_grpc.InferenceServerClient(f"127.0.0.1:{port}"),
        }
        old = {module: StatefulReference(v1) for module in clients}
        for number, (module, client) in enumerate(clients.items(), start=1):
            inputs = chunk(3, 1)
            answer = client.infer(
                "ticks", tensor(module, inputs), sequence_id=number, sequence_start=True
            )
            np.testing.assert_allclose(
                answer.as_numpy("outputs")[0], old[module].feed(inputs), atol=1e-5
            )
        v2 = save_version(repo, "ticks", 2, seed=22, features=3)
        with httpx.Client(base_url=url) as http:
            wait_for_state(http, "ticks", 2, "ready")
        for number, (module, client) in enumerate(clients.items(), start=1):
            for end in (False, True):
                inputs = chunk(2, 1)
                answer = client.infer(
                    "ticks", tensor(module, inputs), sequence_id=number, sequence_end=end
                )
                np.testing.assert_allclose(
                    answer.as_numpy("outputs")[0], old[module].feed(inputs), atol=1e-5
                )
                assert version_of(module, answer) == "1"
            inputs = chunk(2, 3)
            answer = client.infer(
                "ticks", tensor(module, inputs), sequence_id=10 + number, sequence_start=True
            )
            np.testing.assert_allclose(
                answer.as_numpy("outputs")[0], StatefulReference(v2).feed(inputs), atol=1e-5
            )
            assert version_of(module, answer) == "2"
        # The repository extension: the index, a load, an unload that lets a running one finish.
        web, rpc = clients[triton_http], clients[triton_grpc]
        index = web.get_model_repository_index()
        assert [(m["name"], m["version"], m["state"]) for m in index] == [
            ("ticks", "1", "READY"),
            ("ticks", "2", "READY"),
        ]
        v3 = save_version(repo, "ticks", 3, seed=23, features=3)
        rpc.load_model("ticks")  # answered once loaded
        found = rpc.get_model_repository_index(as_json=True)["models"]
        assert {"name": "ticks", "version": "3", "state": "READY"} in found
        running, inputs = StatefulReference(v3), chunk(2, 3)
        answer = web.infer(
            "ticks", tensor(triton_http, inputs), sequence_id=30, sequence_start=True
        )
        np.testing.assert_allclose(answer.as_numpy("outputs")[0], running.feed(inputs), atol=1e-5)
        web.unload_model("ticks")
        assert not web.is_model_ready("ticks") and not rpc.is_model_ready("ticks")
        inputs = chunk(3, 3)
        answer = web.infer("ticks", tensor(triton_http, inputs), sequence_id=30, sequence_end=True)
        np.testing.assert_allclose(answer.as_numpy("outputs")[0], running.feed(inputs), atol=1e-5)
        with pytest.raises(InferenceServerException, match="retired"):
            rpc.infer("ticks", tensor(triton_grpc, inputs), sequence_id=31, sequence_start=True)
        assert all(m["state"] != "READY" for m in web.get_model_repository_index())
