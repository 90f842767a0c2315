"""The issue's targets, each a ratio or a figure from one run, checked against its threshold."""

from __future__ import annotations

from typing import Any


def _target(
    name: str, value: float | None, limit: float, at_least: bool, unit: str, how: str
) -> dict:
    met = None if value is None else (value >= limit if at_least else value <= limit)
    return {
        "name": name,
        "value": value,
        "limit": limit,
        "at_least": at_least,
        "unit": unit,
        "met": met,
        "how": how,
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def check(results: dict[str, Any]) -> list[dict]:
    found: list[dict] = []
    small = results.get("small")
    if small:
        n = str(small["scenario"]["sessions"])  # keys as JSON has them
        closed = small["closed"]
        memory = closed["memory"][n]["chunks_per_s"]
        found.append(
            _target(
                "small, HTTP: share of the HTTP ceiling",
                _ratio(memory, closed["ceiling"][n]["chunks_per_s"]),
                0.70,
                True,
                "x",
                f"memory backend / ceiling, {n} sessions, closed loop",
            )
        )
        if "bare" in closed:
            found.append(
                _target(
                    "small, HTTP: share of a bare FastAPI + orjson endpoint",
                    _ratio(memory, closed["bare"][n]["chunks_per_s"]),
                    0.70,
                    True,
                    "x",
                    f"memory backend / the chunk route on plain FastAPI, {n} sessions, closed loop",
                )
            )
        found.append(
            _target(
                "small, HTTP: times the naive baseline",
                _ratio(memory, closed["naive"][n]["chunks_per_s"]),
                100,
                True,
                "x",
                f"memory backend / naive Keras, {n} sessions, closed loop",
            )
        )
        half = min(small["open"]["memory"], key=lambda p: abs(p["fraction"] - 0.5))
        found.append(
            _target(
                "p99 latency at half the peak (open loop)",
                half["p99_ms"],
                10,
                False,
                "ms",
                f"memory backend, {half['offered_per_s']:,.0f} chunks/s offered",
            )
        )
        found.append(
            _target(
                "Redis: share of the memory backend",
                _ratio(closed["redis"][n]["chunks_per_s"], memory),
                0.60,
                True,
                "x",
                f"small, HTTP, {n} sessions",
            )
        )
    frames = results.get("frames")
    if frames:
        n = str(frames["scenario"]["sessions"])
        closed = frames["closed"]
        found.append(
            _target(
                "frames, WebSocket: share of the echo of the stream's own transport",
                _ratio(closed["memory"][n]["chunks_per_s"], closed["ceiling"][n]["chunks_per_s"]),
                0.60,
                True,
                "x",
                f"memory backend / echo WebSocket, {n} streams, T=1",
            )
        )
    large = results.get("large")
    if large:
        n = str(large["scenario"]["sessions"])
        compute = large["compute"]["chunks_per_s"]
        best = max(
            ("HTTP", large["closed"]["memory"][n]["chunks_per_s"]),
            ("WebSocket", large["websocket"]["memory"][n]["chunks_per_s"]),
            key=lambda t: t[1],
        )
        found.append(
            _target(
                "large: share of the compute ceiling",
                _ratio(best[1], compute),
                0.70,
                True,
                "x",
                f"time steps/s over {best[0]} (the faster transport), {n} sessions / "
                f"the compiled step in a loop, batch {large['compute']['batch']}",
            )
        )
    live = results.get("live")
    if live:
        found.append(
            _target(
                "live streams held in real time",
                live["capacity"],
                1000,
                True,
                "streams",
                f"each a T=10 chunk every {live['period_ms']:g} ms over WebSocket, open loop; "
                f"p99 < {live['p99_target_ms']:g} ms, nothing refused",
            )
        )
        at = {row["streams"]: row for row in live["rows"]}
        row = at.get(1000)
        if row and row["served_per_s"]:
            found.append(
                _target(
                    "server CPU per chunk at 1,000 live streams",
                    1e6 * row["server_cpu"] / row["served_per_s"],
                    60,
                    False,
                    "µs",
                    "server CPU (cores) / chunks served per second",
                )
            )
        first = live.get("first")
        steady = first and at.get(first["streams"])
        if steady:
            found.append(
                _target(
                    "first seconds after /readyz: p99 beyond the steady state's",
                    first["p99_ms"] - steady["p99_ms"],
                    10,
                    False,
                    "ms",
                    f"{first['streams']:,} streams, the first {first['seconds']:g} s from ready "
                    f"(p99 {first['p99_ms']:.1f} ms) against a warm row (p99 {steady['p99_ms']:.1f} ms)",
                )
            )
    idle = results.get("idle")
    if idle:
        found.append(
            _target(
                f"{idle['sessions']:,} idle sessions: resident memory growth",
                idle["rss_growth_mb"],
                150,
                False,
                "MB",
                "RSS after creating them - before",
            )
        )
        found.append(
            _target(
                f"{idle['sessions']:,} idle sessions: time to create",
                idle["seconds"],
                30,
                False,
                "s",
                "POST /v1/sessions from wrk, 32 connections",
            )
        )
    start = results.get("start")
    if start:
        found.append(
            _target(
                "start to /readyz 200 (default model)",
                start["seconds"],
                20,
                False,
                "s",
                "median of process starts",
            )
        )
    return found
