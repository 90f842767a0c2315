"""The client as its own distribution: installed alone into fresh virtual environments (from PyPI,
as a user would), at its newest and at its oldest allowed dependencies, used from a project that
has an ``app/`` package of its own, against a real server; and the server's one TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from app.model.builtin import build_seed_model
from app.model.loader import load_model
from harness.servers import ROOT, serve_in_thread
from tests.support.reference import StatefulReference

pytestmark = [
    pytest.mark.network,
    pytest.mark.process,
]  # virtual environments built from the package index

CLIENT = ROOT / "client"
# The lower bounds in client/pyproject.toml, each at its oldest.
OLDEST = ["httpx==0.27.0", "numpy==1.26.0", "orjson==3.9.0", "websockets==13.1", "rich==13.0.0"]
SEQUENCE = np.arange(-4, 5, dtype=np.float32).reshape(9, 1)  # the notebook's


def venv(where: Path, *requirements: str) -> Path:
    """A fresh virtual environment with the client (and ``requirements`` first); its python."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if requirements:
        subprocess.run([*pip, *requirements], check=True, timeout=600, capture_output=True)
    subprocess.run(
        [*pip, *(["--no-deps"] if requirements else []), str(CLIENT)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    return python


def size_mb(folder: Path) -> float:
    return (
        sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
        / 2**20
    )


@pytest.fixture(scope="module")
def seed_url():
    with serve_in_thread(load_model("seed")) as url:
        yield url


def test_the_client_installs_alone_under_100_mb_and_works_beside_a_project_app_package(
    tmp_path, seed_url
):
    empty = tmp_path / "empty"
    subprocess.run([sys.executable, "-m", "venv", str(empty)], check=True, timeout=120)
    python = venv(tmp_path / "env")
    added = size_mb(tmp_path / "env") - size_mb(empty)
    assert added < 100, f"the client adds {added:.0f} MB"
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {entry["name"].lower() for entry in json.loads(installed)}
    assert not {name for name in names if "tensorflow" in name or name == "keras"}
    # Typed (PEP 561): the marker is installed with the package, not only in the source tree.
    assert list((tmp_path / "env").glob("lib/python*/site-packages/stateful_rnn_client/py.typed"))
    project = tmp_path / "project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text("NAME = 'their own app'\n")
    (project / "main.py").write_text(
        textwrap.dedent(f"""
        import numpy as np
        import app
        from stateful_rnn_client import Client

        with Client({seed_url!r}) as client:
            session = client.create_session()
            for chunk in np.split(np.arange(-4, 5, dtype=np.float32).reshape(9, 1), 3):
                outputs = session.push(chunk)
            with session.stream() as stream:
                stream.send(np.array([[0.5]]))
        print(app.NAME, outputs.tolist())
    """)
    )
    done = subprocess.run(
        [str(python), "main.py"], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    name, _, outputs = done.stdout.partition(" [")
    assert name == "their own app"
    whole = StatefulReference(build_seed_model()).feed(SEQUENCE)
    np.testing.assert_allclose(json.loads("[" + outputs), whole, atol=1e-5)


@pytest.mark.parametrize("transport", ["ws", "http"])
def test_the_stream_command_works_at_the_oldest_allowed_dependencies(
    tmp_path_factory, seed_url, transport
):
    python = oldest_env(tmp_path_factory)
    source = tmp_path_factory.mktemp("rows") / "rows.csv"
    source.write_text("\n".join(str(v) for v in SEQUENCE[:, 0]) + "\n")
    out = source.with_name("out.csv")
    done = subprocess.run(
        [
            str(python),
            "-m",
            "stateful_rnn_client",
            "stream",
            str(source),
            "--url",
            seed_url,
            "--chunk",
            "3",
            "--transport",
            transport,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    written = np.loadtxt(out, delimiter=",", ndmin=2)[-1]  # a last-step model: a row per chunk
    np.testing.assert_allclose(
        written, StatefulReference(build_seed_model()).feed(SEQUENCE), atol=1e-5
    )


_oldest: dict[str, Path] = {}


def oldest_env(tmp_path_factory) -> Path:
    if "python" not in _oldest:
        python = venv(tmp_path_factory.mktemp("oldest") / "env", *OLDEST)
        versions = subprocess.run(
            [
                str(python),
                "-c",
                "import httpx, numpy, websockets; print(httpx.__version__, numpy.__version__, websockets.__version__)",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert versions == ["0.27.0", "1.26.0", "13.1"]
        _oldest["python"] = python
    return _oldest["python"]


def test_the_oldest_versions_tested_are_the_lower_bounds_the_client_declares():
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    declared = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {}
    for line in declared:
        requirement = Requirement(line)
        (lower,) = [s.version for s in requirement.specifier if s.operator == ">="]
        bounds[requirement.name] = Version(lower)
    assert bounds == {
        name: Version(version) for name, _, version in (pin.partition("==") for pin in OLDEST)
    }


def test_the_server_names_one_tensorflow_which_an_installed_one_satisfies():
    from importlib.metadata import distributions, requires

    from packaging.requirements import Requirement

    wanted = [
        r for r in map(Requirement, requires("stateful-rnn")) if r.name.startswith("tensorflow")
    ]
    assert [(r.name, r.extras, str(r.marker or "")) for r in wanted] == [
        ("tensorflow", set(), ""),
        ("tensorflow", {"and-cuda"}, 'extra == "gpu"'),
    ]
    owners = [
        d.metadata["Name"]
        for d in distributions()
        if any(str(f).startswith("tensorflow/__init__.py") for f in (d.files or ()))
    ]
    assert len(owners) == 1, owners  # one distribution owns site-packages/tensorflow
    # Installing the server again next to it installs no other TensorFlow.
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--report",
            "-",
            "--disable-pip-version-check",
            "-e",
            str(CLIENT),
            "-e",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    planned = {item["metadata"]["name"].lower() for item in json.loads(report)["install"]}
    assert not {name for name in planned if name.startswith("tensorflow") or name == "keras"}, (
        planned
    )
