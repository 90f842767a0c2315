// The console's entry: ask for the admin key when the server wants one, then keep the overview
// fresh, show the sessions, and open the one the address names (#/sessions/{id}).
import { ApiError, call, hasKey, setKey } from "./api.js";
import { byId } from "./dom.js";
import { linkedSession } from "./links.js";
import { ModelsView } from "./models.js";
import { Overview } from "./overview.js";
import { SessionView } from "./session.js";
import { SessionTable } from "./table.js";

const STATS_MS = 2000;
const RETRY_MAX_MS = 30000;

let table = null;
let view = null;
let models = null;
let overview = null;
// One stats loop at a time: a new one (a key typed in) or the login screen ends the one before.
let statsRun = 0;
let statsTimer = null;

function stopStats() {
  statsRun += 1;
  clearTimeout(statsTimer);
}

function showLogin(message) {
  // Nothing polls behind the login screen: every call would be refused anyway. The address keeps
  // naming the open session, so it opens again once a key is accepted.
  stopStats();
  table.stop();
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

// The address says which session is open: a link followed, Back, or the view's Close.
function route() {
  if (byId("console").hidden) return; // shown once a key is accepted
  const sid = linkedSession();
  if (sid === null) view.close();
  else if (sid !== view.sid) view.open(sid);
}

function showConsole() {
  byId("login").hidden = true;
  byId("console").hidden = false;
  byId("forget-key").hidden = !hasKey();
  table.load();
  route();
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
      overview.draw(stats);
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
  table = new SessionTable(byId("session-table"), handle);
  view = new SessionView(table, handle);
  models = new ModelsView(handle);
  overview = new Overview();
  window.addEventListener("hashchange", route);
  window.addEventListener("popstate", route); // Back to an entry made by Close (links.js: go)
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
