// One session: its state per layer as heatmaps, its recent outputs, reset and delete.
// Outputs come from GET .../outputs (the response kept for retries of the last chunk), polled
// while the view is open: chunks that come and go between two polls are not drawn (a dashed line
// marks the gap).
import { ApiError, call, sessionPath } from "./api.js";
import { heatmap, lineChart } from "./charts.js";
import { byId, confirmAction } from "./dom.js";

const POLL_MS = 2000;
const HISTORY_ROWS = 300;

export class SessionView {
  // onError takes the failures that are not this view's own (a refused key: the login screen).
  constructor(table, onError) {
    this.table = table;
    this.onError = onError;
    this.sid = null;
    // Bumped by every open and close: a reply that arrives for an earlier visit is dropped.
    this.visit = 0;
    this.timer = null;
    this.history = [];
    this.breaks = [];
    this.lastSeq = null;
    byId("close-session").addEventListener("click", () => this.close());
    byId("reset-session").addEventListener("click", () => this.reset());
    byId("delete-session").addEventListener("click", () => this.remove());
  }

  async open(sid) {
    this.close();
    const visit = this.visit;
    this.sid = sid;
    this.history = [];
    this.breaks = [];
    this.lastSeq = null;
    byId("session-id").textContent = sid;
    byId("session").hidden = false;
    await this.refresh();
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
    byId("outputs-chart").replaceChildren();
  }

  async refresh() {
    const sid = this.sid, visit = this.visit;
    if (sid === null) return;
    try {
      const [state, outputs] = await Promise.all([
        call("GET", sessionPath(sid, "/state")), call("GET", sessionPath(sid, "/outputs"))]);
      if (visit !== this.visit) return;
      byId("session-error").textContent = "";
      byId("session-meta").textContent = `seq ${state.seq}, steps ${state.steps}`;
      byId("heatmaps").replaceChildren(...state.layers.map(heatmap));
      this.addOutputs(outputs);
    } catch (error) {
      if (visit === this.visit) this.fail(error);
    }
  }

  addOutputs(outputs) {
    if (outputs.outputs !== null && outputs.seq !== this.lastSeq) {
      const rows = Array.isArray(outputs.outputs[0]) ? outputs.outputs : [outputs.outputs];
      // Chunks between two polls are not seen: mark where the line skips them.
      if (this.lastSeq !== null && outputs.seq !== this.lastSeq + 1) this.breaks.push(this.history.length);
      const overflow = Math.max(0, this.history.length + rows.length - HISTORY_ROWS);
      this.history = this.history.concat(rows).slice(overflow);
      this.breaks = this.breaks.map((i) => i - overflow).filter((i) => i > 0);
      this.lastSeq = outputs.seq;
    }
    lineChart(byId("outputs-chart"), this.history, this.breaks);
    byId("outputs-caption").textContent = this.history.length
      ? `${this.history.length} output rows, up to chunk ${this.lastSeq}` : "no chunk yet";
  }

  async reset() {
    const sid = this.sid, visit = this.visit;
    if (!(await confirmAction(`Reset session ${sid}? Its state becomes zeros; seq stays.`, "Reset"))) return;
    try {
      this.table.update(await call("POST", sessionPath(sid, "/reset")));
      if (visit === this.visit) await this.refresh();
    } catch (error) {
      if (visit === this.visit) this.fail(error);
    }
  }

  async remove() {
    const sid = this.sid;
    if (!(await confirmAction(`Delete session ${sid}? Its state is lost and its client gets 404.`, "Delete"))) return;
    // Closed before the DELETE goes out: no read starts after it, and the replies of one already
    // in flight (404 once the session is gone) are dropped.
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
