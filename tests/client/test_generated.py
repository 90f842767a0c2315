"""A client generated from the OpenAPI document by a maintained generator (openapi-python-client,
installed from PyPI into a fresh virtual environment) drives a session against a real server with
keys: the document is one a generator can use."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from app.model.builtin import build_seed_model
from app.model.loader import load_model
from harness.servers import serve_in_thread
from tests.support.reference import StatefulReference

pytestmark = [
    pytest.mark.network,
    pytest.mark.process,
]  # a generator installed from the package index

KEY = "acme-key-generated"
SEQUENCE = np.arange(-4, 5, dtype=np.float32).reshape(9, 1)  # the notebook's


def test_a_client_generated_from_the_openapi_document_drives_a_session(tmp_path):
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "openapi-python-client",
        ],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (tmp_path / "config.yml").write_text(
        "package_name_override: srnn_api\nproject_name_override: srnn-api\n"
    )
    with serve_in_thread(load_model("seed"), api_keys=f"acme:{KEY}") as url:
        (tmp_path / "openapi.json").write_text(
            subprocess.run(
                [str(python), "-c", f"import httpx; print(httpx.get('{url}/openapi.json').text)"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        generated = subprocess.run(
            [
                str(env / "bin" / "openapi-python-client"),
                "generate",
                "--path",
                "openapi.json",
                "--output-path",
                "srnn_api",
                "--config",
                "config.yml",
                "--meta",
                "none",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert generated.returncode == 0, generated.stdout + generated.stderr
        assert "Endpoint will not be generated" not in generated.stdout, generated.stdout
        (tmp_path / "drive.py").write_text(
            textwrap.dedent(f"""
            import json
            from srnn_api import AuthenticatedClient
            from srnn_api.api.chunks import push_chunk
            from srnn_api.api.sessions import create_session, delete_session
            from srnn_api.api.state import get_state
            from srnn_api.models import CreateSessionCreateSession, PushChunkChunkRequest, SessionInfo

            client = AuthenticatedClient(base_url={url!r}, token={KEY!r})
            info = create_session.sync(client=client, body=CreateSessionCreateSession(session_id="generated-1"))
            assert isinstance(info, SessionInfo), info
            rows = [float(v) for v in range(-4, 5)]
            for seq, start in enumerate((0, 3, 6), start=1):
                answer = push_chunk.sync(info.session_id, client=client,
                                         body=PushChunkChunkRequest(inputs=rows[start:start + 3], seq=seq))
            state = get_state.sync(info.session_id, client=client)
            assert (state.seq, state.steps) == (3, 9), state
            refused = create_session.sync_detailed(client=AuthenticatedClient(base_url={url!r}, token="wrong"))
            assert refused.status_code == 401 and refused.parsed.status == 401, refused
            assert delete_session.sync_detailed(info.session_id, client=client).status_code == 204
            print(json.dumps(answer.outputs))
        """)
        )
        driven = subprocess.run(
            [str(python), "drive.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    assert driven.returncode == 0, driven.stderr
    whole = StatefulReference(build_seed_model()).feed(SEQUENCE)
    np.testing.assert_allclose(json.loads(driven.stdout), whole, atol=1e-5)
