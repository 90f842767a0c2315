// The console's entry: ask for the admin key when the server wants one, then keep the overview
// fresh and show the sessions.
import { ApiError, call, hasKey, setKey } from "./api.js";
import { capacityBar, sparkline } from "./charts.js";
import { byId } from "./dom.js";
import { ModelsView } from "./models.js";
import { SessionView } from "./session.js";
import { SessionTable } from "./table.js";

const STATS_MS = 2000;
const RETRY_MAX_MS = 30000;

let table = null;
let view = null;
let models = null;
// One stats loop at a time: a new one (a key typed in) or the login screen ends the one before.
let statsRun = 0;
let statsTimer = null;

function stopStats() {
  statsRun += 1;
  clearTimeout(statsTimer);
}

function showLogin(message) {
  // Nothing polls behind the login screen: every call would be refused anyway.
  stopStats();
  view.close();
  byId("banner").hidden = true;
  byId("console").hidden = true;
  byId("login").hidden = false;
  byId("login-error").textContent = message || "";
  byId("key-input").focus();
}

function refused(error) {
  return error instanceof ApiError && (error.status === 401 || error.status === 403);
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
  const ms = (value) => (value === null ? "—" : `${value.toFixed(2)} ms`);
  byId("p99").textContent = ms(stats.window.p99_ms);
  byId("queue-p99").textContent = ms(stats.window.queue_p99_ms);
  byId("model-p99").textContent = ms(stats.window.model_p99_ms);
  sparkline(byId("chunks-spark"), stats.series.map((s) => s.chunks_per_s));
  sparkline(byId("p99-spark"), stats.series.map((s) => s.p99_ms));
}

function showConsole() {
  byId("login").hidden = true;
  byId("console").hidden = false;
  byId("forget-key").hidden = !hasKey();
  table.load();
}

// The first answer also tells whether a key is needed (401). Each read is scheduled when the one
// before has ended, so a slow server never has two in flight; while the server does not answer,
// the banner says so and the wait doubles (up to 30 s).
function startStats() {
  stopStats();
  const run = statsRun;
  let failures = 0;
  const tick = async () => {
    let wait = STATS_MS;
    try {
      const stats = await call("GET", "../v1/stats");
      if (run !== statsRun) return;
      failures = 0;
      byId("banner").hidden = true;
      drawStats(stats);
      if (byId("console").hidden) showConsole();
      models.load();
    } catch (error) {
      if (run !== statsRun) return;
      if (refused(error)) {
        handle(error);
        return;
      }
      failures += 1;
      wait = Math.min(RETRY_MAX_MS, STATS_MS * 2 ** (failures - 1));
      byId("banner").textContent =
        `The server did not answer (${error.message}); trying again in ${Math.round(wait / 1000)} s.`;
      byId("banner").hidden = false;
    }
    statsTimer = setTimeout(tick, wait);
  };
  tick();
}

function main() {
  table = new SessionTable(byId("session-table"), (sid) => view.open(sid), handle);
  view = new SessionView(table, handle);
  models = new ModelsView(handle);
  const submit = () => {
    const key = byId("key-input").value.trim();
    if (!key) return;
    setKey(key);
    byId("key-input").value = "";
    startStats();
  };
  byId("key-submit").addEventListener("click", submit);
  byId("key-input").addEventListener("keydown", (e) => { if (e.key === "Enter") submit(); });
  byId("refresh").addEventListener("click", () => table.load());
  byId("forget-key").addEventListener("click", () => { setKey(null); showLogin(""); });
  startStats();
}

main();
