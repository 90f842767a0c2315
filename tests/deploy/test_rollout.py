"""A rollout under live traffic, three replicas on Redis: new versions appear in the shared
repository while sessions stream through every replica, and each retirement mode is used in turn.
Every chunk is answered exactly as Keras answers it on the version its session ran at that moment;
none is lost or applied twice."""

from __future__ import annotations

import asyncio
import shutil
import time

import httpx
import numpy as np
import pytest

from harness.servers import ServerProcess, running
from tests.support.reference import StatefulReference, state_rows
from tests.support.repository import save_version

pytestmark = pytest.mark.deploy  # nginx, Redis Cluster, replicas or the deploy files

OLD, NEW = 8, 4


def test_versions_roll_out_and_retire_under_load_on_three_replicas(
    tmp_path, redis_url, redis_prefix
):
    stage, repo = tmp_path / "stage", tmp_path / "models"
    repo.mkdir()
    models = {
        1: save_version(stage, "speech", 1, seed=61),
        2: save_version(stage, "speech", 2, seed=62),  # same layout: carry
        3: save_version(stage, "speech", 3, seed=63, layers=(("GRU", 5, True),), head=4),  # reset
        4: save_version(stage, "speech", 4, seed=64, layers=(("GRU", 5, True),), head=4),
    }  # drain

    def publish(version: int) -> None:
        (repo / "speech").mkdir(exist_ok=True)
        shutil.move(str(stage / "speech" / str(version)), str(repo / "speech" / str(version)))

    publish(1)
    replicas = [
        ServerProcess(
            "--backend",
            "redis",
            "--redis-url",
            redis_url,
            "--redis-prefix",
            redis_prefix,
            "--model-repository",
            str(repo),
            "--repository-poll-s",
            "0.3",
            "--xla",
            "false",
        )
        for _ in range(3)
    ]
    tally = {"chunks": 0, "retries": 0}
    reasons: dict[str, int] = {}
    rng = np.random.default_rng(6)

    async def all_report(http, version: int, state: str) -> None:
        deadline = time.monotonic() + 90
        while True:
            found = []
            for replica in replicas:
                document = (await http.get(f"{replica.url}/v1/models/speech")).json()
                found.append(
                    next(
                        (v["state"] for v in document["versions"] if v["version"] == version), None
                    )
                )
            if all(f == state for f in found):
                return
            assert time.monotonic() < deadline, f"version {version}: {found}, not all {state}"
            await asyncio.sleep(0.1)

    async def stream(http, sid: str, index: int, stop: asyncio.Event, sent: list) -> None:
        seq, at = 0, index
        while not stop.is_set():
            seq += 1
            chunk = rng.uniform(-2, 2, (int(rng.integers(1, 4)), 2)).astype(np.float32)
            for _ in range(200):
                at += 1  # a load balancer: each chunk to the next replica
                answer = await http.post(
                    f"{replicas[at % 3].url}/v1/sessions/{sid}/chunks",
                    json={"inputs": chunk.tolist(), "seq": seq},
                )
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503, answer.text  # never 404 or 409
                tally["retries"] += 1
                reason = answer.json()["detail"].split(";")[0]
                reasons[reason] = reasons.get(reason, 0) + 1
                await asyncio.sleep(0.05)
            tally["chunks"] += 1
            sent.append((chunk, np.asarray(answer.json()["outputs"], np.float32)))
            await asyncio.sleep(0.01)

    async def create(http, replica: int, **options) -> dict:
        answer = await http.post(f"{replicas[replica].url}/v1/sessions", json=options)
        assert answer.status_code == 201, answer.text
        return answer.json()

    async def retire(http, version: int, mode: str) -> dict:
        answer = await http.post(
            f"{replicas[version % 3].url}/v1/models/speech/versions/{version}/retire",
            json={"mode": mode},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def scenario():
        async with httpx.AsyncClient(timeout=30) as http:
            stop = asyncio.Event()
            logs: dict[str, list] = {}
            tasks = []

            async def start(info: dict, index: int) -> None:
                logs[info["session_id"]] = []
                tasks.append(
                    asyncio.create_task(
                        stream(http, info["session_id"], index, stop, logs[info["session_id"]])
                    )
                )

            old = [await create(http, i % 3) for i in range(OLD)]
            assert {o["model"]["version"] for o in old} == {1}
            for i, info in enumerate(old):
                await start(info, i)
            await asyncio.sleep(1.0)
            publish(2)
            await all_report(http, 2, "ready")
            new = [await create(http, i % 3) for i in range(NEW)]
            assert {n["model"]["version"] for n in new} == {2}
            for i, info in enumerate(new):
                await start(info, i)
            await asyncio.sleep(1.0)
            carried = await retire(http, 1, "carry")
            assert (carried["moved"], carried["moved_to"]) == (OLD, 2)
            await all_report(http, 1, "retired")
            publish(3)
            await all_report(http, 3, "ready")
            reset = await retire(http, 2, "reset")
            assert (reset["moved"], reset["moved_to"]) == (OLD + NEW, 3)
            await asyncio.sleep(1.0)
            publish(4)
            await all_report(http, 4, "ready")
            drained = await retire(http, 3, "drain")
            assert drained["moved"] == 0 and drained["state"] == "retiring"
            assert (await create(http, 0))["model"]["version"] == 4
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
            states = {
                sid: (await http.get(f"{replicas[0].url}/v1/sessions/{sid}/state")).json()
                for sid in logs
            }
            for sid in logs:
                assert (
                    await http.delete(f"{replicas[1].url}/v1/sessions/{sid}")
                ).status_code == 204
            await all_report(http, 3, "retired")
            return old, new, logs, states

    with running(replicas, timeout=120):
        old, new, logs, states = asyncio.run(scenario())

    paths = {o["session_id"]: [(1, None), (2, "carry"), (3, "reset")] for o in old}
    paths |= {n["session_id"]: [(2, None), (3, "reset")] for n in new}
    for sid, sent in logs.items():
        reference = replay(models, paths[sid], sent)
        state = states[sid]
        assert (
            state["seq"] == len(sent) and state["model"]["version"] == 3
        )  # none lost, none applied twice
        for got, want in zip(state_rows(state), reference.states(), strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5)
    print(
        f"\nrollout under load: {tally['chunks']} chunks, {tally['retries']} answered 503 and sent again, "
        f"0 errors, 0 lost or doubled; the 503s: {reasons}"
    )


def replay(models: dict, path: list[tuple[int, str | None]], sent: list) -> StatefulReference:
    """Keras's answers to ``sent``, on the path of versions the session took: each chunk must match
    the version it is on, or the next one after the move (carried or reset) at that point; the
    session moves once per step of the path, at one chunk boundary."""
    steps = iter(path)
    reference = StatefulReference(models[next(steps)[0]])
    following = next(steps, None)
    for index, (chunk, outputs) in enumerate(sent):
        before = reference.states()
        if np.allclose(reference.feed(chunk), outputs, atol=1e-5):
            continue
        assert following is not None, f"chunk {index} matches no version"
        version, mode = following
        moved = StatefulReference(models[version])
        if mode == "carry":
            moved.set_states(before)
        np.testing.assert_allclose(
            moved.feed(chunk), outputs, atol=1e-5, err_msg=f"chunk {index} after the {mode}"
        )
        reference, following = moved, next(steps, None)
    assert following is None, "the session never moved to the version it should have"
    return reference
