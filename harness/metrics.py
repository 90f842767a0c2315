"""Reading a server's /metrics (Prometheus text) in tests."""

from __future__ import annotations

import httpx


def scrape(url: str) -> dict[str, float]:
    """Every sample, by its name with labels as written (``srnn_shed_total{reason="share"}``)."""
    samples = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def metric(url: str, name: str, default: float = 0.0) -> float:
    return scrape(url).get(name, default)
