"""The Redis store on a real three-master Redis Cluster: sessions spread over the masters, chunks
exact and applied once, the tenant quota (whose set lives in another slot), the listing across
every master, and the HTTP property test on random models."""

import asyncio
import base64

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.model.builtin import build_seed_model
from app.model.step import StreamingModel
from harness.cluster import redis_cluster
from harness.redis import new_prefix
from harness.servers import serve_in_thread
from tests.api.test_http_property import check_random_model_over_http
from tests.support.models import architectures
from tests.support.reference import StatefulReference, state_rows

pytestmark = pytest.mark.deploy  # nginx, Redis Cluster, replicas or the deploy files

ADMIN = {"Authorization": "Bearer admin-key-0"}
ALPHA = {"Authorization": "Bearer alpha-key-1"}
BETA = {"Authorization": "Bearer beta-key-22"}
QUOTA = 3


@pytest.fixture(scope="module")
def cluster():
    with redis_cluster(3) as servers:
        yield servers


@pytest.fixture(scope="module")
def server(cluster):
    prefix = new_prefix()
    with serve_in_thread(
        StreamingModel(build_seed_model(), "seed"),
        backend="redis",
        redis_url=cluster.url,
        redis_prefix=prefix,
        api_keys="alpha:alpha-key-1,beta:beta-key-22",
        admin_keys="admin-key-0",
        max_sessions_per_tenant=QUOTA,
    ) as url:
        yield url, prefix


def test_sessions_spread_over_every_master_and_stream_exactly(cluster, server):
    url, prefix = server
    data = np.random.default_rng(7).uniform(-3, 3, (24, 30, 1)).astype(np.float32)
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        ids = cluster.ids_on_every_master(prefix, len(data) // len(cluster.ports))
        for sid in ids:
            assert http.post("/v1/sessions", json={"session_id": sid}).status_code == 201
        for cut in ([0, 7], [7, 8], [8, 30]):
            for sid, sequence in zip(ids, data):
                answer = http.post(
                    f"/v1/sessions/{sid}/chunks", json={"inputs": sequence[slice(*cut)].tolist()}
                )
                assert answer.status_code == 200, answer.text
        states = [http.get(f"/v1/sessions/{sid}/state").json() for sid in ids]
    holders = set()
    for sid, sequence, state in zip(ids, data, states):
        key = f"{prefix}:{{{sid}}}"
        # The hash tag puts the key in the session id's slot, and one master holds it.
        slot = cluster.node(cluster.ports[0]).cluster("keyslot", key)
        assert slot == cluster.node(cluster.ports[0]).cluster("keyslot", sid)
        holders.add(cluster.holder(key))
        reference = StatefulReference(build_seed_model())
        reference.feed(sequence)
        assert (state["seq"], state["steps"]) == (3, 30)
        np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)
    assert holders == set(cluster.ports), "the ids were chosen to land on all three masters"


def test_exactly_once_with_seq(server):
    url, _ = server
    with httpx.Client(base_url=url, headers=ALPHA, timeout=30) as http:
        sid = http.post("/v1/sessions").json()["session_id"]
        first = http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0], "seq": 1})
        again = http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0], "seq": 1})
        assert again.headers["x-replayed"] == "true" and again.content == first.content
        conflict = http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [9.0], "seq": 3})
        assert conflict.status_code == 409 and conflict.json()["expected_seq"] == 2
        assert http.get(f"/v1/sessions/{sid}").json()["seq"] == 1
        assert http.delete(f"/v1/sessions/{sid}").status_code == 204


def test_tenant_quota_across_slots(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as http:
        ids = [http.post("/v1/sessions", headers=BETA).json()["session_id"] for _ in range(QUOTA)]
        refused = http.post("/v1/sessions", headers=BETA)
        assert refused.status_code == 429 and "retry-after" in refused.headers
        assert http.post("/v1/sessions", headers=ALPHA).status_code == 201  # another tenant's count
        assert http.delete(f"/v1/sessions/{ids[0]}", headers=BETA).status_code == 204
        assert http.post("/v1/sessions", headers=BETA).status_code == 201
        assert http.post("/v1/sessions", headers=BETA).status_code == 429


def test_listing_walks_every_master(cluster, server):
    url, prefix = server
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        made = {http.post("/v1/sessions").json()["session_id"] for _ in range(20)}
        listed, cursor, pages = [], None, 0
        while True:
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/sessions", params=params).json()
            assert len(page["sessions"]) <= 7
            listed += [s["session_id"] for s in page["sessions"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(listed) == len(set(listed)), "a session was listed twice"
        stored = {k.decode()[len(prefix) + 2 : -1] for k in cluster.keys(f"{prefix}:{{*}}")}
        assert made <= set(listed) == stored and pages >= 3
        # A well-formed cursor (what the server hands out: URL-safe base64 of "<node>:<scan>") that
        # names a node no master is: 422, not the first page and not a 500.
        gone = base64.urlsafe_b64encode(b"12345:0").decode().rstrip("=")
        answer = http.get("/v1/sessions", params={"cursor": gone})
        assert answer.status_code == 422 and "no longer has" in answer.text, answer.text
        assert http.get("/readyz").status_code == 200


@settings(max_examples=8)
@given(architecture=architectures, data=st.data())
def test_random_models_over_http_on_a_cluster_equal_keras_stateful(cluster, architecture, data):
    check_random_model_over_http(
        architecture, data, backend="redis", redis_url=cluster.url, redis_prefix=new_prefix()
    )


def test_a_master_down_fails_only_its_own_sessions():
    """Chunks of one batch spread over the masters: with one master killed (and before the cluster
    gives up on it), sessions on the others are served; its own answer 503, and /readyz says 503."""
    with (
        redis_cluster(3) as cluster,
        serve_in_thread(
            StreamingModel(build_seed_model(), "seed"),
            backend="redis",
            redis_url=cluster.url,
            redis_prefix="down",
        ) as url,
    ):
        ids = cluster.ids_on_every_master("down", 8)
        with httpx.Client(base_url=url, timeout=30) as http:
            for sid in ids:
                assert http.post("/v1/sessions", json={"session_id": sid}).status_code == 201
        holders = {sid: cluster.holder(f"down:{{{sid}}}") for sid in ids}
        doomed = cluster.ports[2]
        assert set(holders.values()) == set(cluster.ports)
        cluster.processes[2].kill()
        cluster.processes[2].wait()

        async def push_all():
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                return await asyncio.gather(
                    *(
                        http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0]})
                        for sid in ids
                    )
                )

        answers = asyncio.run(push_all())
        for sid, answer in zip(ids, answers):
            if holders[sid] == doomed:
                assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
            else:
                assert answer.status_code == 200, answer.text
        assert httpx.get(f"{url}/readyz").status_code == 503
