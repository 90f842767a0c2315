// The console's entry: ask for the admin key when the server wants one, then keep the overview
// fresh and show the sessions.
import { ApiError, call, hasKey, setKey } from "./api.js";
import { capacityBar, sparkline } from "./charts.js";
import { SessionView } from "./session.js";
import { SessionTable } from "./table.js";

const STATS_MS = 2000;
const byId = (id) => document.getElementById(id);

let statsTimer = null;

function showLogin(message) {
  clearInterval(statsTimer);
  byId("console").hidden = true;
  byId("login").hidden = false;
  byId("login-error").textContent = message || "";
  byId("key-input").focus();
}

function handle(error) {
  if (error instanceof ApiError && error.status === 401) {
    const hadKey = hasKey();
    setKey(null);
    showLogin(hadKey ? "The key was refused. Enter an admin key." : "");
  } else if (error instanceof ApiError && error.status === 403) {
    setKey(null);
    showLogin("That key belongs to a tenant; the console takes an admin key.");
  } else {
    byId("load-status").textContent = `failed: ${error.message}`;
  }
}

function drawStats(stats) {
  byId("model-name").textContent = stats.model.name;
  byId("model-fingerprint").textContent = stats.model.fingerprint.slice(0, 19) + "…";
  byId("model-fingerprint").title = stats.model.fingerprint;
  byId("backend").textContent = stats.backend;
  byId("queue-depth").textContent = String(stats.queue_depth);
  const { hot, total, capacity } = stats.sessions;
  capacityBar(byId("capacity-bar"), hot, total, capacity);
  byId("capacity-text").textContent =
    `${hot.toLocaleString()} hot, ${total.toLocaleString()} in all, ${capacity.toLocaleString()} slots`;
  byId("chunks-rate").textContent = stats.window.chunks_per_s.toFixed(1);
  byId("p99").textContent = stats.window.p99_ms === null ? "—" : `${stats.window.p99_ms.toFixed(2)} ms`;
  sparkline(byId("chunks-spark"), stats.series.map((s) => s.chunks_per_s));
  sparkline(byId("p99-spark"), stats.series.map((s) => s.p99_ms));
}

async function pollStats() {
  try {
    drawStats(await call("GET", "../v1/stats"));
  } catch (error) {
    handle(error);
  }
}

async function start(table) {
  try {
    drawStats(await call("GET", "../v1/stats")); // also tells whether a key is needed
  } catch (error) {
    handle(error);
    return;
  }
  byId("login").hidden = true;
  byId("console").hidden = false;
  byId("forget-key").hidden = !hasKey();
  clearInterval(statsTimer);
  statsTimer = setInterval(pollStats, STATS_MS);
  table.load();
}

function main() {
  const table = new SessionTable(byId("session-table"), (sid) => view.open(sid), handle);
  const view = new SessionView(table);
  const submit = () => {
    const key = byId("key-input").value.trim();
    if (!key) return;
    setKey(key);
    byId("key-input").value = "";
    start(table);
  };
  byId("key-submit").addEventListener("click", submit);
  byId("key-input").addEventListener("keydown", (e) => { if (e.key === "Enter") submit(); });
  byId("refresh").addEventListener("click", () => table.load());
  byId("forget-key").addEventListener("click", () => { setKey(null); view.close(); showLogin(""); });
  start(table);
}

main();
