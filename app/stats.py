"""Chunks per second and chunk latency over the last minute, for the operations console.

A sampler reads the Prometheus counters and the engine's chunk latency histogram once a second and
keeps the last minute of readings (and refreshes the sampled gauges, :func:`app.metrics.refresh`).
The hot path pays nothing for it: the figures it reads are the ones ``/metrics`` already keeps, and
the browser gets numbers instead of parsing Prometheus text. Percentiles are estimated from
histogram buckets the way Prometheus's ``histogram_quantile`` does, so they are only as fine as the
buckets of ``srnn_chunk_seconds``. Every figure is of chunks applied, over every transport, and of
their time in the engine: from arrival to answer (``total``), waiting (``queue``); and of the model
calls (``srnn_model_call_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass

from app import metrics

PHASES = ("total", "queue")
Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count)


@dataclass(frozen=True)
class Reading:
    at: float  # time.time()
    chunks: float  # srnn_chunks_total
    buckets: dict[str, Buckets]  # per phase, summed over transports


def read_metrics(now: float) -> Reading:
    chunks = 0.0
    for sample in metrics.CHUNKS.collect()[0].samples:
        if sample.name == "srnn_chunks_total":
            chunks = sample.value
    buckets: dict[str, dict[float, float]] = {phase: {} for phase in (*PHASES, "model")}
    for sample in metrics.CHUNK_SECONDS.collect()[0].samples:
        if sample.name.endswith("_bucket"):
            phase, bound = buckets[sample.labels["phase"]], float(sample.labels["le"])
            phase[bound] = phase.get(bound, 0.0) + sample.value
    for sample in metrics.MODEL_SECONDS.collect()[0].samples:  # per call, not per chunk
        if sample.name.endswith("_bucket"):
            buckets["model"][float(sample.labels["le"])] = sample.value
    return Reading(
        now, chunks, {phase: tuple(sorted(found.items())) for phase, found in buckets.items()}
    )


def quantile(q: float, before: Buckets, after: Buckets) -> float | None:
    """The q-quantile of what was observed between two readings of a histogram, in seconds; None
    when nothing was. Linear within the bucket that holds it, as histogram_quantile does."""
    earlier = dict(before)
    counts = [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]
    if not counts or counts[-1][1] <= 0:
        return None
    rank = q * counts[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: its bound is all that is known
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = bound, cumulative
    return lower


class RollingStats:
    """The last ``window`` readings, one every ``every_s`` seconds."""

    def __init__(self, window: int = 60, every_s: float = 1.0):
        self.every_s = every_s
        self.readings: deque[Reading] = deque(maxlen=window + 1)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self.sample()
        self._task = asyncio.create_task(self._sample_forever(), name="stats-sampler")

    async def stop(self) -> None:
        # Awaited, so the task is finished before the loop closes (else: "Task was destroyed but it
        # is pending").
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self.sample()

    def sample(self) -> None:
        metrics.refresh()
        self.readings.append(read_metrics(time.time()))

    def summary(self, recent: int = 10) -> dict:
        """Per-interval series for sparklines, and the figures of the last ``recent`` intervals
        (plus what happened since the last reading, so a page that just served chunks sees them)."""
        readings = [*self.readings, read_metrics(time.time())]
        series = []
        for before, after in zip(readings, readings[1:-1]):
            series.append(_interval(before, after))
        start = readings[max(0, len(readings) - 1 - recent)]
        return {"window": _interval(start, readings[-1]), "series": series}


def _interval(before: Reading, after: Reading) -> dict:
    seconds = max(after.at - before.at, 1e-6)
    interval = {
        "at": after.at,
        "seconds": round(seconds, 3),
        "chunks": int(after.chunks - before.chunks),
        "chunks_per_s": round((after.chunks - before.chunks) / seconds, 3),
    }
    for phase, key in (("total", "p99_ms"), ("queue", "queue_p99_ms"), ("model", "model_p99_ms")):
        p99 = quantile(0.99, before.buckets.get(phase, ()), after.buckets.get(phase, ()))
        interval[key] = None if p99 is None else round(1000 * p99, 3)
    return interval
