// The overview: this replica's figures from GET /v1/stats, and its last minute as two charts.
import { Chart, capacityBar, withGaps } from "./charts.js";
import { byId } from "./dom.js";

// A latency in the unit that reads best: 0.42 ms, 12.3 ms, 412 ms, 4.15 s.
const ms = (value) => {
  if (value === null) return "—";
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  return `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ms`;
};

export class Overview {
  constructor() {
    this.chunks = new Chart(byId("chunks-chart"), {
      x: "time", y: "chunks/s", span: 60, floor: true, series: [{ label: "chunks/s", digits: 1 }],
    });
    this.latency = new Chart(byId("latency-chart"), {
      x: "time", y: "ms", span: 60, floor: true,
      series: [{ label: "p99 in the engine" }, { label: "p99 waiting" }, { label: "p99 model call" }],
    });
  }

  draw(stats) {
    byId("replica").textContent = stats.replica;
    // With several models no one is the default: the Models table below shows them all.
    const { name, version, fingerprint } = stats.model;
    byId("model-name").textContent = name === null ? "several" : `${name} v${version}`;
    byId("model-fingerprint").textContent = fingerprint === null ? "see Models" : fingerprint.slice(0, 19) + "…";
    byId("model-fingerprint").title = fingerprint || "";
    byId("backend").textContent = stats.backend;
    byId("queue-depth").textContent = String(stats.queue_depth);
    // The bar is this replica's slot table; the total is a count of another kind (on Redis, every
    // replica's sessions), so it is a number beside the bar, not a part of it.
    const { hot, total, capacity } = stats.sessions;
    capacityBar(byId("capacity-bar"), hot, capacity);
    byId("capacity-text").textContent =
      `${hot.toLocaleString()} hot of ${capacity.toLocaleString()} slots on this replica`;
    byId("total-label").textContent = stats.backend === "redis" ? "sessions in Redis" : "sessions in all";
    byId("sessions-total").textContent = total === null ? "unknown (the store does not answer)" : total.toLocaleString();
    byId("chunks-rate").textContent = stats.window.chunks_per_s.toFixed(1);
    byId("p99").textContent = ms(stats.window.p99_ms);
    byId("queue-p99").textContent = ms(stats.window.queue_p99_ms);
    byId("model-p99").textContent = ms(stats.window.model_p99_ms);
    this.drawSeries(stats.series);
  }

  // A second without chunks has a rate of 0 but no latency: a gap in the latency lines, not a 0.
  drawSeries(series) {
    const at = series.map((s) => s.at);
    const step = series.length ? series[series.length - 1].seconds || 1 : 1;
    const rates = series.map((s) => s.chunks_per_s);
    const peak = Math.max(0, ...rates);
    this.chunks.draw(withGaps(at, [rates], step),
      `chunks applied per second over the last ${series.length} s: now ${(rates.at(-1) ?? 0).toFixed(1)}, at most ${peak.toFixed(1)}`);
    const columns = [series.map((s) => s.p99_ms), series.map((s) => s.queue_p99_ms), series.map((s) => s.model_p99_ms)];
    const idle = series.filter((s) => s.p99_ms === null).length;
    const known = columns[0].filter((v) => v !== null);
    this.latency.draw(withGaps(at, columns, step),
      `99th percentile chunk latency in ms over the last ${series.length} s: ` +
      (known.length ? `at most ${Math.max(...known).toFixed(2)} ms` : "no chunks") +
      (idle && known.length ? `; no chunks (no data) in ${idle} of them` : ""));
  }
}
