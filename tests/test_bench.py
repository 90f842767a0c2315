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
    section = readme[readme.index("## Performance"):]
    table = [line for line in (RESULTS / "latest.md").read_text().splitlines() if line.startswith("|")]
    assert table and all(line in section for line in table), "copy bench/results/latest.md into the README"
    assert "bench/results/throughput.png" in section and "bench/results/latency.png" in section


def test_the_readme_shows_the_latest_flood_table():
    result = json.loads((RESULTS / "flood.json").read_text())
    assert report.flood_markdown(result) == (RESULTS / "flood.md").read_text()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Security"):readme.index("## Configuration")]
    table = [line for line in (RESULTS / "flood.md").read_text().splitlines() if line.startswith("|")]
    assert table and all(line in section for line in table), "copy bench/results/flood.md into the README"


def test_the_readme_shows_the_latest_batching_delay_table():
    result = json.loads((RESULTS / "live-delays.json").read_text())
    assert report.delay_table(result) == (RESULTS / "live-delays.md").read_text()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Live streams"):readme.index("## Development")]
    table = [line for line in (RESULTS / "live-delays.md").read_text().splitlines() if line.startswith("|")]
    assert table and all(line in section for line in table), "copy bench/results/live-delays.md into the README"
