// The console's drawings. Time series are uPlot charts (vendored unmodified in ./vendor: axes,
// units, gaps where there is no data and a hover legend, drawn on a canvas, so nothing breaks the
// page's strict CSP); the capacity bar and the state heatmaps are plain DOM. Values reach the page
// as numbers, attributes and textContent only.
import uPlot from "./vendor/uPlot.esm.js";

export const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

function rootFontPx() {
  return parseFloat(getComputedStyle(document.documentElement).fontSize) || 14;
}

// Room for the widest tick label: the labels grow with the font on a wall display.
function axisSize(font) {
  return (u, values) => {
    if (!values) return font * 4;
    const chars = Math.max(2, ...values.map((v) => String(v).length));
    return Math.ceil(font * (0.62 * chars + 2.4));
  };
}

const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7, 1e8];
// One line per tick (uPlot's default adds a date line, which crowds a narrow chart).
const clock = (u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false }));
// A value with no neighbour (nulls both sides) draws no line: mark it, or it would not show at all.
function lone(u, si, show) {
  if (show) return null; // uPlot marks every point already
  const ys = u.data[si], found = [];
  ys.forEach((y, i) => { if (y != null && ys[i - 1] == null && ys[i + 1] == null) found.push(i); });
  return found.length ? found : null;
}

const fixed = (digits) => (u, v) => (v === null || v === undefined ? "—" : v.toFixed(digits));

// A chart as wide as its box, following it (a phone turned, a window resized); its height is the
// box's --plot-height, so the style sheet sizes it per screen. The uPlot instance hangs on the box
// as `.chart`, for the page's own code and its tests to read.
export class Chart {
  // series: [{label, digits}], y: the y axis's label (with its unit); x: the x axis's label, or
  // "time" for Unix seconds drawn as local time; span: the x axis always shows this many seconds up
  // to the last point (what is missing stays blank); whole: x ticks at whole numbers only;
  // floor: the y axis starts at 0 (rates, latencies).
  constructor(box, { series, x, y, span = null, whole = false, floor = false }) {
    this.box = box;
    this.series = series;
    const font = Math.round(rootFontPx() * 0.9);
    const axisFont = `${font}px system-ui, sans-serif`;
    const labelFont = `600 ${font}px system-ui, sans-serif`;
    const time = x === "time";
    const yRange = floor ? (u, low, high) => [0, high > 0 ? high * 1.1 : 1] : undefined;
    // From the last point, not uPlot's own maximum (padded far ahead when there is one point).
    const xRange = span ? (u) => {
      const end = u.data[0].at(-1) ?? Date.now() / 1000;
      return [end - span, end];
    } : undefined;
    this.plot = new uPlot({
      ...this.size(),
      scales: { x: xRange ? { time, range: xRange } : { time }, y: yRange ? { range: yRange } : {} },
      series: [
        { label: time ? "time" : x, value: time ? undefined : fixed(2) },
        ...series.map((s, i) => ({
          label: s.label, stroke: s.colour || PALETTE[i % PALETTE.length], width: 1.5,
          spanGaps: false, value: fixed(s.digits ?? 2), points: { filter: lone },
        })),
      ],
      axes: [
        { label: time ? "local time" : x, font: axisFont, labelFont, labelSize: font * 1.6, size: font * 2.6,
          ...(time ? { values: clock, space: font * 6 } : {}), ...(whole ? { incrs: WHOLE } : {}) },
        { label: y, font: axisFont, labelFont, labelSize: font * 1.6, size: axisSize(font) },
      ],
      // Redrawn every 2 s from fresh data: a drag-zoom would only be undone.
      cursor: { drag: { x: false, y: false } },
    }, [[], ...series.map(() => [])], box);
    box.chart = this.plot;
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(box);
  }

  size() {
    const height = parseFloat(getComputedStyle(this.box).getPropertyValue("--plot-height")) || 140;
    return { width: Math.max(120, Math.floor(this.box.clientWidth)), height };
  }

  resize() {
    if (!this.box.clientWidth) return; // hidden: sized again when shown
    const { width, height } = this.size();
    if (width !== this.plot.width || height !== this.plot.height) this.plot.setSize({ width, height });
  }

  // data: [xs, ys of each series]; summary: what the chart shows, in words (its accessible name).
  draw(data, summary) {
    this.plot.setData(data);
    this.box.setAttribute("aria-label", summary);
  }

  destroy() {
    this.observer.disconnect();
    this.plot.destroy();
    delete this.box.chart;
  }
}

// Points meant `step` apart: where one or more are missing (the sampler skipped, the server
// restarted), a row of nulls goes between, so the lines break there instead of bridging the hole.
export function withGaps(xs, columns, step) {
  const out = [[], ...columns.map(() => [])];
  xs.forEach((x, i) => {
    if (i > 0 && x - xs[i - 1] > 1.5 * step) {
      out[0].push((x + xs[i - 1]) / 2);
      columns.forEach((_, c) => out[c + 1].push(null));
    }
    out[0].push(x);
    columns.forEach((column, c) => out[c + 1].push(column[i]));
  });
  return out;
}

export function capacityBar(bar, used, capacity) {
  bar.querySelector(".fill").style.width = `${Math.min(100, (100 * used) / Math.max(capacity, 1)).toFixed(2)}%`;
}

// Diverging colour: blue below zero, white at zero, red above; |value| of `limit` is full colour.
function colour(value, limit) {
  const t = Math.max(-1, Math.min(1, value / limit));
  const fade = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? `rgb(255, ${fade}, ${fade})` : `rgb(${fade}, ${fade}, 255)`;
}

// A layer's state: one row of cells per state tensor (LSTM: h, then c).
export function heatmap(layer) {
  const figure = document.createElement("figure");
  // Cells big enough to see for a small layer, small enough to fit a line for a large one.
  figure.className = layer.states[0].length <= 64 ? "heatmap large" : "heatmap";
  figure.dataset.layer = layer.name;
  const values = layer.states.flat();
  const peak = Math.max(0, ...values.map(Math.abs));
  const caption = document.createElement("figcaption");
  caption.textContent = `${layer.name} (${layer.kind}, ${layer.states[0].length} units): max |value| = ${peak.toPrecision(4)}`;
  figure.append(caption);
  const names = layer.states.length === 2 ? ["h", "c"] : ["h"];
  layer.states.forEach((row, r) => {
    const line = document.createElement("div");
    line.className = "cells";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = names[r] || String(r);
    line.append(label);
    row.forEach((value, i) => {
      const cell = document.createElement("span");
      cell.className = "cell";
      cell.dataset.value = String(value);
      cell.title = `${label.textContent}[${i}] = ${value}`;
      cell.style.background = colour(value, Math.max(1, peak));
      line.append(cell);
    });
    figure.append(line);
  });
  return figure;
}
