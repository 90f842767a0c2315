"""The README is a front page that stays short and true, and the docs site holds the rest: every
setting is documented with its flag and variable, and the site builds with no broken link."""

import importlib.util
import os
import subprocess
import sys

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
