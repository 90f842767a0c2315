"""The route-contract tests of the fast tier (tests/routes), again against real server processes: in
one process and as an engine process with two API workers (the ``client`` of tests/api/conftest)."""

import pytest

from tests.routes.test_chunk_errors import *  # noqa: F403
from tests.routes.test_exactly_once import *  # noqa: F403
from tests.routes.test_notebook import *  # noqa: F403
from tests.routes.test_state import *  # noqa: F403

pytestmark = pytest.mark.process  # server processes, one of them with API workers
