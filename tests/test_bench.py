"""The committed benchmark results hang together, and the docs show the latest of them.

The benchmark itself (``make bench``) is not part of the test run: it takes minutes and its figures
depend on the machine. What is checked here is that its report is what its own code makes of its
JSON, and that docs/performance.md (and security.md) carry those tables and the plots.
"""

import json
from pathlib import Path

import pytest

from bench import report, targets

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads((RESULTS / "latest.json").read_text())


def test_the_report_is_what_the_code_makes_of_the_json(results):
    assert targets.check(results) == results["targets"]
    assert report.markdown(results) == (RESULTS / "latest.md").read_text()
    for plot in ("throughput.png", "latency.png"):
        assert (RESULTS / plot).stat().st_size > 1000


def test_the_docs_show_the_latest_table_and_plots(results):
    section = (ROOT / "docs" / "performance.md").read_text()
    table = [
        line for line in (RESULTS / "latest.md").read_text().splitlines() if line.startswith("|")
    ]
    assert table and all(line in section for line in table), (
        "copy bench/results/latest.md into docs/performance.md"
    )
    assert "bench-results/throughput.png" in section and "bench-results/latency.png" in section


@pytest.mark.parametrize(
    "name, table, section",
    [
        ("flood", report.flood_markdown, "security.md"),
        ("live-delays", report.delay_table, "performance.md"),
    ],
)
def test_the_docs_show_the_latest_table_of(name, table, section):
    result = json.loads((RESULTS / f"{name}.json").read_text())
    assert table(result) == (RESULTS / f"{name}.md").read_text()
    shown = (ROOT / "docs" / section).read_text()
    lines = [
        line for line in (RESULTS / f"{name}.md").read_text().splitlines() if line.startswith("|")
    ]
    assert lines and all(line in shown for line in lines), (
        f"copy bench/results/{name}.md into docs/{section}"
    )
