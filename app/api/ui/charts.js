// Small SVG and DOM drawings. Values reach the page as numbers, attributes and textContent only.
const SVG = "http://www.w3.org/2000/svg";

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function scale(values) {
  const finite = values.filter((v) => Number.isFinite(v));
  const low = Math.min(0, ...finite);
  const high = Math.max(...finite, low + 1e-9);
  return (v) => (v - low) / (high - low);
}

// One polyline over a viewBox of 120 x 30; nulls (no requests that second) are drawn as 0.
export function sparkline(svg, values) {
  const points = values.map((v) => (v === null || v === undefined ? 0 : v));
  const at = scale(points);
  const step = points.length > 1 ? 120 / (points.length - 1) : 0;
  const line = points.map((v, i) => `${(i * step).toFixed(2)},${(29 - 28 * at(v)).toFixed(2)}`);
  svg.querySelector("polyline").setAttribute("points", line.join(" "));
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

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

// Rows of outputs (oldest first), one line per output dimension (the first eight). ``breaks``
// are the rows where a chunk begins that did not follow the one before (chunks went unseen).
export function lineChart(svg, rows, breaks = []) {
  svg.replaceChildren();
  if (!rows.length) return;
  const width = 600, height = 160;
  const dims = Math.min(rows[0].length, PALETTE.length);
  const all = rows.flatMap((row) => row.slice(0, dims));
  const low = Math.min(...all), high = Math.max(...all, low + 1e-9);
  const y = (v) => (height - 4 - ((height - 8) * (v - low)) / (high - low)).toFixed(2);
  const step = rows.length > 1 ? width / (rows.length - 1) : 0;
  if (low < 0 && high > 0) {
    svg.append(svgElement("line", { x1: 0, x2: width, y1: y(0), y2: y(0), class: "axis" }));
  }
  for (const i of breaks) {
    svg.append(svgElement("line", { x1: i * step, x2: i * step, y1: 0, y2: height, class: "break" }));
  }
  for (let d = 0; d < dims; d++) {
    const points = rows.map((row, i) => `${(i * step).toFixed(2)},${y(row[d])}`).join(" ");
    svg.append(svgElement("polyline", { points, stroke: PALETTE[d], fill: "none", "stroke-width": 1.5,
                                        "vector-effect": "non-scaling-stroke" }));
    if (rows.length < 40) { // few points: mark them, a single one would not show at all
      const x = (i) => (rows.length > 1 ? i * step : width / 2);
      rows.forEach((row, i) => svg.append(svgElement("rect", {
        x: x(i) - 3, y: y(row[d]) - 3, width: 6, height: 6, fill: PALETTE[d] })));
    }
  }
}
