import os

from hypothesis import HealthCheck, settings

# Each example builds and compiles a Keras model: slow by unit-test standards, so no deadline.
settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# SRNN_RUNTIME=tensorflow runs the suite on the TensorFlow runtime: servers read it as a setting,
# and the models tests build in this process take it as their default too (CI runs the exactness
# tests once this way, .ci/run).
if runtime := os.environ.get("SRNN_RUNTIME"):
    from app.model.step import StreamingModel

    StreamingModel.__init__.__kwdefaults__["runtime"] = runtime


import pytest  # noqa: E402

from harness.redis import SHARED_URL, delete_prefix, new_prefix, own_redis, reachable  # noqa: E402


@pytest.fixture(scope="session")
def redis_url():
    """The machine's Redis if it answers (CI and the dev machine start one on 6379), else one
    started for this run (a laptop with redis-server installed)."""
    if reachable(SHARED_URL):
        yield SHARED_URL
    else:
        with own_redis(appendonly=False) as server:
            yield server.url


@pytest.fixture()
def redis_prefix(redis_url):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    delete_prefix(redis_url, prefix)
