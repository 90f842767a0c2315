// One session: its state per layer as heatmaps, its recent outputs, reset and delete. It is
// opened by its link (links.js), never directly. Outputs come from GET .../outputs (the response
// kept for retries of the last chunk), polled while the view is open: chunks that come and go
// between two polls are not drawn, and the chart leaves a gap where they would be.
import { ApiError, call, sessionPath } from "./api.js";
import { Chart, heatmap } from "./charts.js";
import { byId, confirmAction } from "./dom.js";
import { go } from "./links.js";

const POLL_MS = 2000;
const HISTORY_ROWS = 300;
const MAX_LINES = 8; // output dimensions drawn; a wide output shows its first eight
const TITLE = document.title;

export class SessionView {
  // onError takes the failures that are not this view's own (a refused key: the login screen).
  constructor(table, onError) {
    this.table = table;
    this.onError = onError;
    this.sid = null;
    // Bumped by every open and close: a reply that arrives for an earlier visit is dropped.
    this.visit = 0;
    this.timer = null;
    this.history = []; // {x, row}; row null for a gap
    this.lastSeq = null;
    this.chart = null;
    byId("close-session").addEventListener("click", () => go(null));
    byId("reset-session").addEventListener("click", () => this.reset());
    byId("delete-session").addEventListener("click", () => this.remove());
  }

  async open(sid) {
    this.close();
    const visit = this.visit;
    this.sid = sid;
    this.history = [];
    this.lastSeq = null;
    byId("session-id").textContent = sid;
    byId("session-meta").textContent = "";
    byId("session-error").textContent = "";
    byId("outputs-caption").textContent = "";
    document.title = `${sid} · ${TITLE}`;
    byId("session").hidden = false;
    await this.refresh();
    if (visit !== this.visit) return; // closed, or another opened, meanwhile
    this.schedule(visit);
    byId("session").scrollIntoView({ block: "start" });
  }

  // The next read starts POLL_MS after the last one ended, so a slow server never has two in flight.
  schedule(visit) {
    if (visit !== this.visit) return;
    this.timer = setTimeout(async () => {
      await this.refresh();
      this.schedule(visit);
    }, POLL_MS);
  }

  close() {
    clearTimeout(this.timer);
    this.timer = null;
    this.visit += 1;
    this.sid = null;
    byId("session").hidden = true;
    byId("heatmaps").replaceChildren();
    this.chart?.destroy();
    this.chart = null;
    document.title = TITLE;
  }

  async refresh() {
    const sid = this.sid, visit = this.visit;
    if (sid === null) return;
    try {
      const [state, outputs] = await Promise.all([
        call("GET", sessionPath(sid, "/state")), call("GET", sessionPath(sid, "/outputs"))]);
      if (visit !== this.visit) return;
      byId("session-error").textContent = "";
      // The version it runs: watched during a rollout, it changes when the session is moved.
      byId("session-meta").textContent =
        `model ${state.model.name} version ${state.model.version}, seq ${state.seq}, steps ${state.steps}`;
      byId("heatmaps").replaceChildren(...state.layers.map(heatmap));
      this.addOutputs(outputs);
      // The table shows what this view has just read (it reads the listing only every few seconds).
      const latest = outputs.seq >= state.seq ? outputs : state;
      this.table.update(sid, { seq: latest.seq, steps: latest.steps });
    } catch (error) {
      if (visit === this.visit) this.fail(error);
    }
  }

  // x is the chunk's number; a chunk's rows (outputs per step) spread over (seq - 1, seq].
  addOutputs(outputs) {
    if (outputs.outputs !== null && outputs.seq !== this.lastSeq) {
      // Deleted and made again under the same id while open: its history starts again.
      if (this.lastSeq !== null && outputs.seq < this.lastSeq) this.history = [];
      const rows = Array.isArray(outputs.outputs[0]) ? outputs.outputs : [outputs.outputs];
      if (this.lastSeq !== null && outputs.seq > this.lastSeq + 1) {
        this.history.push({ x: this.lastSeq + 0.5, row: null }); // chunks unseen: a gap
      }
      rows.forEach((row, i) => this.history.push({ x: outputs.seq - 1 + (i + 1) / rows.length, row }));
      this.history = this.history.slice(-HISTORY_ROWS);
      this.lastSeq = outputs.seq;
    }
    const drawn = this.history.filter((h) => h.row !== null);
    byId("outputs-caption").textContent = drawn.length
      ? `${drawn.length} output rows, up to chunk ${this.lastSeq}` : "no chunk yet";
    if (!drawn.length) return;
    const dims = Math.min(drawn[0].row.length, MAX_LINES);
    if (this.chart?.series.length !== dims) {
      this.chart?.destroy();
      this.chart = new Chart(byId("outputs-chart"), {
        x: "chunk (seq)", y: "output", whole: true,
        series: Array.from({ length: dims }, (_, d) => ({ label: `output ${d}`, digits: 4 })),
      });
    }
    const data = [this.history.map((h) => h.x)];
    for (let d = 0; d < dims; d++) data.push(this.history.map((h) => (h.row === null ? null : h.row[d])));
    const gaps = this.history.length - drawn.length;
    this.chart.draw(data, `outputs ${dims > 1 ? `0 to ${dims - 1}` : "0"} of chunks up to ${this.lastSeq}, ` +
      `${drawn.length} rows` + (gaps ? `; ${gaps} gaps where chunks went unseen` : ""));
  }

  async reset() {
    const sid = this.sid, visit = this.visit;
    if (!(await confirmAction(`Reset session ${sid}? Its state becomes zeros; seq stays.`, "Reset"))) return;
    if (visit !== this.visit) return; // Back or a link opened another while the question was up
    try {
      const info = await call("POST", sessionPath(sid, "/reset"));
      this.table.update(sid, { seq: info.seq, steps: info.steps, last_active_at: info.last_active_at });
      if (visit === this.visit) await this.refresh();
    } catch (error) {
      if (visit === this.visit) this.fail(error);
    }
  }

  async remove() {
    const sid = this.sid, visit = this.visit;
    if (!(await confirmAction(`Delete session ${sid}? Its state is lost and its client gets 404.`, "Delete"))) return;
    if (visit !== this.visit) return; // Back or a link opened another while the question was up
    // Closed before the DELETE goes out: no read starts after it, and the replies of one already
    // in flight (404 once the session is gone) are dropped.
    go(null);
    this.close();
    try {
      await call("DELETE", sessionPath(sid));
      this.table.remove(sid);
    } catch (error) {
      // 404: gone already (deleted elsewhere, or a resent DELETE after the first one succeeded).
      if (error instanceof ApiError && error.status === 404) this.table.remove(sid);
      else this.onError(error);
    }
  }

  fail(error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      this.close();
      this.onError(error);
      return;
    }
    byId("session-error").textContent = error.status === 404
      ? "this session no longer exists (deleted or expired)" : `failed: ${error.message}`;
  }
}
