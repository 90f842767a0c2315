"""schemathesis against /openapi.json: every operation, authenticated, finds no 5xx and no response
that breaks the schema. (Its pytest plugin does not load under pytest 9, so the operations are
driven here through its Python API, each with hypothesis.)"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.model.loader import load_model
from harness.servers import serve_in_thread

ADMIN = "admin-key-schemathesis"


@pytest.fixture(scope="module")
def api_schema():
    with serve_in_thread(
        load_model("seed"),
        admin_keys=ADMIN,
        api_keys="t:tenant-key-schemathesis",
        max_chunk_steps=64,
        capacity=4096,
        # Its probe of each case without the key gets a 401, held a quarter second by default:
        # answered at once here (tests/api/test_admission.py tests the holding).
        shed_delay=0,
    ) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def operations(api_schema):
    return [result.ok() for result in api_schema.get_all_operations()]


@pytest.mark.slow
def test_every_operation_keeps_to_its_schema(api_schema):
    checked = []
    for operation in operations(api_schema):

        @settings(
            max_examples=60, suppress_health_check=list(HealthCheck), deadline=None, database=None
        )
        @given(case=operation.as_strategy())
        def run(case):
            # Every check but "schema-valid data is accepted": a well-formed but unknown cursor,
            # or a chunk of the wrong width, is valid JSON Schema and rightly refused.
            case.call_and_validate(
                headers={"Authorization": f"Bearer {ADMIN}"},
                excluded_checks=[positive_data_acceptance],
            )

        run()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) >= 11, checked
