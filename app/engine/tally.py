"""What each model version has done in this engine since it started: chunks applied and refused,
model calls, and their times, as the Open Inference Protocol's statistics extension reports them
(Triton's ``model_stats``).

Plain integers added once a batch on the event loop. The Prometheus histograms keep the same events
in buckets, summed over versions or over transports; the extension wants exact sums per version and
per batch size, and reading them must not depend on Prometheus's multiprocess files.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class Tally:
    """One version's figures. ``compute`` is its model calls (padding and splitting included);
    ``success`` a chunk's time from arrival to answer, ``queue`` from arrival to its model call."""

    last_inference_ms: int = 0  # wall clock of the last chunk applied; 0: none yet
    inferences: int = 0  # chunks applied
    executions: int = 0  # model calls
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute: Duration = field(default_factory=Duration)
    # Model calls and their time, by rows per call.
    batches: dict[int, Duration] = field(default_factory=dict)

    def called(self, rows: int, seconds: float) -> None:
        self.executions += 1
        self.compute.add(seconds, rows)
        self.batches.setdefault(rows, Duration()).add(seconds)
