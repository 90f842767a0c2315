"""The benchmark's results as Markdown tables and two PNG plots; the flood and live-stream tables."""

from __future__ import annotations

import json
from pathlib import Path

NAMES = {
    "bare": "bare FastAPI + orjson: no middleware, no model",
    "ceiling": "ceiling (a): no model",
    "naive": "naive (b): Keras per session",
    "memory": "service, memory",
    "redis": "service, Redis",
}


def _rows(results: dict) -> list[str]:
    rows = []
    compute = results.get("large", {}).get("compute")
    for key, transport_of in (("small", None), ("frames", "websocket"), ("large", None)):
        found = results.get(key)
        if not found:
            continue
        scenario = found["scenario"]
        n, steps = str(scenario["sessions"]), scenario["steps"]  # keys as JSON has them
        groups = (
            [("HTTP", found["closed"])]
            if transport_of is None
            else [("WebSocket", found["closed"])]
        )
        if "http" in found:
            groups.append(("HTTP", found["http"]))
        if "websocket" in found:
            groups.append(("WebSocket", found["websocket"]))
        for transport, closed in groups:
            base = closed.get("ceiling", {}).get(n)
            naive = closed.get("naive", {}).get(n)
            for name, by_n in closed.items():
                run = by_n[n]
                rate = run["chunks_per_s"]
                ratios = [
                    f"{rate / base['chunks_per_s']:.2f}" if base and base["chunks_per_s"] else "",
                    f"{rate / naive['chunks_per_s']:,.0f}"
                    if naive and naive["chunks_per_s"]
                    else "",
                    f"{rate / compute['chunks_per_s']:.2f}" if compute and key == "large" else "",
                ]
                rows.append(
                    f"| {key} | {NAMES[name]} | {transport} | {n} | {rate:,.0f} | {rate * steps:,.0f} | "
                    f"{run['p50_ms']:.1f} | {run['p90_ms']:.1f} | {run['p99_ms']:.1f} | {run['server_cpu']:.2f} | "
                    f"{run['client_cpu']:.2f} | {run['server_rss_mb']:,.0f} | "
                    + " | ".join(ratios)
                    + " |"
                )
    if compute:
        rows.append(
            f"| large | compute ceiling (d): step in a loop | none | {compute['batch']} | "
            f"{compute['chunks_per_s']:,.0f} | {compute['time_steps_per_s']:,.0f} | "
            f"{compute['call_ms']:.1f} per call | | | {compute['cpu']:.2f} | | | | | 1.00 |"
        )
    return rows


def markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [
        f"Run {results['started']}, {results['machine']['cpus']} CPUs (load average before: "
        f"{results['machine']['load_before']:.2f}); closed loop: median of {settings['rounds']} rounds x "
        f"{settings['seconds']:g} s.",
        "",
        "| target | measured | needed | met |",
        "|---|---:|---:|:---:|",
    ]
    for t in results["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:,.2f} {t['unit']}"
        need = f"{'>=' if t['at_least'] else '<='} {t['limit']:g} {t['unit']}"
        lines.append(
            f"| {t['name']} ({t['how']}) | {value} | {need} | {'yes' if t['met'] else 'NO'} |"
        )
    lines += [
        "",
        "| scenario | server | transport | sessions | chunks/s | time steps/s | p50 ms | p90 ms | p99 ms "
        "| server CPU | client CPU | server RSS MB | / (a) | / (b) | / (d) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *_rows(results),
    ]
    small = results.get("small")
    if small:
        lines += [
            "",
            "Open loop (small, HTTP, 64 sessions), rates as fractions of each backend's closed-loop peak:",
            "",
            "| backend | offered/s | served/s | p50 ms | p90 ms | p99 ms | sent late | server CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for backend, points in small["open"].items():
            for p in points:
                lines.append(
                    f"| {backend} | {p['offered_per_s']:,.0f} | {p['chunks_per_s']:,.0f} | {p['p50_ms']:.1f} "
                    f"| {p['p90_ms']:.1f} | {p['p99_ms']:.1f} | {p['late']} | {p['server_cpu']:.2f} |"
                )
    found = results.get("live")
    if found:
        lines += ["", "Live streams (`bench.live`):", "", live_table(found).rstrip("\n")]
    idle = results.get("idle")
    if idle:
        lines += [
            "",
            f"Idle sessions (small model, memory backend): {idle['sessions']:,} created in "
            f"{idle['seconds']:.1f} s ({idle['per_s']:,.0f}/s); resident memory "
            f"{idle['rss_before_mb']:,.0f} -> {idle['rss_after_mb']:,.0f} MB "
            f"(+{idle['rss_growth_mb']:,.0f} MB, {idle['bytes_per_session']:,.0f} bytes a session).",
        ]
    start = results.get("start")
    if start:
        tries = ", ".join(f"{t:.1f}" for t in start["tries"])
        lines += [
            "",
            f"Start to ready (default model): {start['seconds']:.1f} s (median of {tries} s).",
        ]
    return "\n".join(lines) + "\n"


def plots(results: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    small = results.get("small")
    if not small:
        return
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for name, by_n in small["closed"].items():
        counts = sorted(by_n, key=int)
        axes.plot(
            [int(n) for n in counts],
            [by_n[n]["chunks_per_s"] for n in counts],
            marker="o",
            label=NAMES[name],
        )
    axes.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent sessions (closed loop)",
        ylabel="chunks/s",
        title="small: GRU 64, F=16, T=10, HTTP",
    )
    _save(plt, figure, axes, folder / "throughput.png")

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for backend, points in small["open"].items():
        offered = [p["offered_per_s"] for p in points]
        for key, style in (("p50_ms", "--"), ("p99_ms", "-")):
            axes.plot(
                offered, [p[key] for p in points], style, marker="o", label=f"{backend} {key[:3]}"
            )
    axes.axhline(10, color="grey", lw=0.8)
    axes.set(
        yscale="log",
        xlabel="offered chunks/s (open loop)",
        ylabel="latency, ms",
        title="small: latency against offered load, 64 sessions",
    )
    _save(plt, figure, axes, folder / "latency.png")


def _save(plt, figure, axes, path: Path) -> None:
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def flood_markdown(result: dict) -> str:
    """The table of ``python -m bench.flood``."""
    lines = [
        "| phase | flood connections | probe let in | its median ms | its p90 ms | "
        "flood served/s | flood shed/s | server CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result["phases"]:
        lines.append(
            f"| {p['name']} | {p['flood_connections']} | {p['probe_admitted']:.0%} | {_ms(p['probe_median_ms'])} "
            f"| {_ms(p['probe_p90_ms'])} | {p['flood_served_per_s']:,.0f} | {p['flood_shed_per_s']:,.0f} "
            f"| {p['server_cpu']:.2f} |"
        )
    settings = result["settings"]
    rounds = ", ".join(f"{r:.2f}" for r in result["flood_vs_share_rounds"])
    log = " --log-level info" if settings.get("access_log") else ""
    lines += [
        "",
        f"`--max-in-flight {settings['max_in_flight']} --max-in-flight-per-tenant {settings['share']} "
        f"--shed-delay {settings['shed_delay']:g}{log}`; each figure the median of {settings['rounds']} rounds "
        f"of {settings['samples']} probe requests. The probe's median under the flood is "
        f"{result['flood_vs_share']:.2f} times its median beside the flood's share (rounds: {rounds}).",
    ]
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def live_table(result: dict) -> str:
    """The table of ``python -m bench.live``: one row per stream count of the sweep."""
    lines = [
        "| live streams | offered chunks/s | served chunks/s | p50 ms | p90 ms | p99 ms | max ms | "
        "refused | unanswered | late sends | chunks per model call | server CPU | server µs per chunk "
        "| generator CPU | holds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    first = result.get("first")
    rows = [(f"{r['streams']:,}", r) for r in result["rows"]]
    if first:
        rows.insert(0, (f"{first['streams']:,}, first {first['seconds']:g} s after ready", first))
    for label, r in rows:
        per_chunk = 1e6 * r["server_cpu"] / r["served_per_s"] if r["served_per_s"] else 0.0
        holds = r["holds"] if "holds" in r else r["p99_ms"] < result["p99_target_ms"]
        lines.append(
            f"| {label} | {r['offered_per_s']:,.0f} | {r['served_per_s']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.0f} | {r['refused']:,} | {r['unanswered']:,} | "
            f"{r['late']:,} | {r.get('mean_batch', 0):.1f} | {r['server_cpu']:.2f} | {per_chunk:.0f} | "
            f"{r['client_cpu']:.2f} | {'yes' if holds else 'no'} |"
        )
    args = f", `{result['server_args']}`" if result["server_args"] else ""
    lines += [
        "",
        f"{result['scenario']}{args}; each row {result['seconds']:g} s measured after 2 s of warm-up "
        f"(run {result['when']}). **Capacity: {result['capacity']:,} streams** (p99 < "
        f"{result['p99_target_ms']:g} ms, nothing refused or unanswered).",
    ]
    return "\n".join(lines) + "\n"


def delay_table(result: dict) -> str:
    """The table of ``python -m bench.live --delays``: latency and batch size against the delay."""
    lines = [
        "| batch delay ms | live streams | chunks per model call | p50 ms | p90 ms | p99 ms | refused | "
        "server CPU | holds |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for found in result["sweeps"]:
        for r in found["rows"]:
            lines.append(
                f"| {found['delay_ms']:g} | {r['streams']:,} | {r['mean_batch']:.1f} | {r['p50_ms']:.1f} | "
                f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['refused']:,} | {r['server_cpu']:.2f} | "
                f"{'yes' if r['holds'] else 'no'} |"
            )
    args = f", `{result['server_args']}`" if result["server_args"] else ""
    lines += [
        "",
        f"{result['scenario']}{args}; each row {result['seconds']:g} s measured after 2 s of warm-up "
        f"(run {result['when']}).",
    ]
    return "\n".join(lines) + "\n"


def save(folder: Path, name: str, result: dict, table: str) -> None:
    """``name``.json and ``name``.md under ``folder``; the table printed too."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / f"{name}.md").write_text(table)
    print(table)
