"""The README is a front page that stays short and true, and the docs site holds the rest: every
setting is documented with its flag and variable, and the site builds with no broken link."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from app.config import Settings
from harness.servers import ROOT

DOCS = ROOT / "docs"


def test_every_setting_is_in_the_configuration_table():
    page = (DOCS / "configuration.md").read_text()
    for name in Settings.model_fields:
        flag, env = "--" + name.replace("_", "-"), "SRNN_" + name.upper()
        assert f"| `{flag}` | `{env}` |" in page, (
            f"{flag} is missing from docs/configuration.md's table"
        )


def test_the_readme_is_a_front_page_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10_000
    assert "make serve" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "\nserve:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for page in (
        "api",
        "streaming",
        "clients",
        "models",
        "triton",
        "backends",
        "deploy",
        "console",
        "metrics",
        "security",
        "configuration",
        "architecture",
        "performance",
        "development",
    ):
        assert f"(docs/{page}.md)" in readme and (DOCS / f"{page}.md").exists(), page


@pytest.mark.process
def test_the_docs_site_builds_strictly():
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (the test extra installs it)")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "--site-dir",
            str(ROOT / "test-artifacts" / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stdout + built.stderr


def _same(printed, got) -> bool:
    """A printed document against a real answer: text ending in "…" is a prefix, numbers agree to
    float32's last digits (1e-6: the printed run and this one may differ in the last bit)."""
    if isinstance(printed, dict):
        return (
            isinstance(got, dict)
            and printed.keys() <= got.keys()
            and all(_same(v, got[k]) for k, v in printed.items())
        )
    if isinstance(printed, list):
        return isinstance(got, list) and len(printed) == len(got) and all(map(_same, printed, got))
    if isinstance(printed, str) and printed.endswith("…"):
        return isinstance(got, str) and got.startswith(printed[:-1])
    if isinstance(printed, float) or isinstance(got, float):
        return abs(printed - got) <= 1e-6
    return printed == got


def _walkthrough_calls(text: str):
    """Each ``curl`` of the README's walk-through with the answer printed under it (or None)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        found = re.match(r"curl -s (-X POST )?localhost:8000(\S+)(?: --json '(.*)')?", line)
        if not found:
            continue
        printed = []
        for following in lines[i + 1 :]:
            if not following.startswith("# ") and not following.startswith("#  "):
                break
            printed.append(following[2:])
        document = "".join(printed)
        method = "POST" if found.group(1) or found.group(3) else "GET"
        body = json.loads(found.group(3)) if found.group(3) else None
        yield (
            method,
            found.group(2),
            body,
            (json.loads(document) if document.startswith("{") else None),
        )


@pytest.fixture(scope="module")
def seed_url():
    """One seed server for the walk-through and the stream example (their sessions differ)."""
    from app.model.loader import load_model
    from harness.servers import serve_in_thread

    with serve_in_thread(load_model("seed")) as url:
        yield url


def test_the_walkthrough_prints_what_a_real_run_prints(seed_url):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("[start:walkthrough]")[1].split("[end:walkthrough]")[0]
    assert 'make serve ARGS="--model seed"' in section
    calls = list(_walkthrough_calls(section))
    assert sum(printed is not None for *_, printed in calls) >= 5
    with httpx.Client(base_url=seed_url) as http:
        for method, path, body, printed in calls:
            answer = http.request(method, path, json=body)
            assert answer.status_code in (200, 201), (path, answer.text)
            if printed is not None:
                assert _same(printed, answer.json()), (path, printed, answer.json())


def test_the_raw_websocket_example_runs_as_written(seed_url):
    page = (DOCS / "streaming.md").read_text()
    create = re.search(r"curl -s localhost:8000(\S+) --json '(.*)'", page)
    example = re.search(r"```python\n(import asyncio, json.*?)```", page, re.S).group(1)
    answer = httpx.post(seed_url + create.group(1), json=json.loads(create.group(2)))
    assert answer.status_code == 201
    printed = []
    namespace = {"print": printed.append, "__name__": "docs"}
    exec(example.replace("ws://127.0.0.1:8000", seed_url.replace("http", "ws")), namespace)
    binary, answer, state = printed
    assert binary.shape == (5,) and answer["seq"] == 2 and state["steps"] == 3  # seed: GRU(5)
