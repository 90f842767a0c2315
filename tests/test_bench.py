"""The committed benchmark results hang together, and the README shows the latest of them.

The benchmark itself (``make bench``) is not part of the test run: it takes minutes and its figures
depend on the machine. What is checked here is that its report is what its own code makes of its
JSON, and that the README's Performance section carries that table and the plots.
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


def test_the_readme_shows_the_latest_table_and_plots(results):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Performance") :]
    table = [
        line for line in (RESULTS / "latest.md").read_text().splitlines() if line.startswith("|")
    ]
    assert table and all(line in section for line in table), (
        "copy bench/results/latest.md into the README"
    )
    assert "bench/results/throughput.png" in section and "bench/results/latency.png" in section


@pytest.mark.parametrize(
    "name, table, section",
    [
        ("flood", report.flood_markdown, ("## Security", "## Configuration")),
        ("live-delays", report.delay_table, ("### Live streams", "## Development")),
    ],
)
def test_the_readme_shows_the_latest_table_of(name, table, section):
    result = json.loads((RESULTS / f"{name}.json").read_text())
    assert table(result) == (RESULTS / f"{name}.md").read_text()
    readme = (ROOT / "README.md").read_text()
    shown = readme[readme.index(section[0]) : readme.index(section[1])]
    lines = [
        line for line in (RESULTS / f"{name}.md").read_text().splitlines() if line.startswith("|")
    ]
    assert lines and all(line in shown for line in lines), (
        f"copy bench/results/{name}.md into the README"
    )
