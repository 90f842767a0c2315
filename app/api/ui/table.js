// The sessions table. The admin listing is read page by page (1000 at a time) in the background;
// the first page shows as soon as it arrives, and only one page of rows is ever in the DOM, so
// 100,000 sessions never freeze the page. Filter and sort run here over what has been read. While
// the console is open the listing is read again every few seconds and swapped in whole when read,
// so the table never goes stale and never flickers through a half-read listing.
import { call } from "./api.js";
import { sessionLink } from "./links.js";

const PAGE_ROWS = 50;
const REDERIVE_MS = 400; // while loading, filter and sort again at most this often
const REFRESH_MS = 5000;
// Each cell's heading, for the narrow layout where a row is a card and headings sit in the cells.
const LABELS = ["id", "tenant", "model", "seq", "steps", "last active", "idle"];

// A session's version, as "name v2": during a rollout the table shows who has moved.
const modelText = (r) => (r.model ? `${r.model.name} v${r.model.version}` : "—");

// Local time, as the charts show it: the time alone today, the date too before that.
function localTime(ms) {
  const at = new Date(ms);
  return at.toDateString() === new Date().toDateString() ? at.toLocaleTimeString() : at.toLocaleString();
}

function idleText(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const KEYS = {
  session_id: (r) => r.session_id,
  tenant: (r) => r.tenant || "",
  model: (r) => (r.model ? `${r.model.name}\u0000${String(r.model.version).padStart(12, "0")}` : ""),
  seq: (r) => r.seq,
  steps: (r) => r.steps,
  last_active: (r) => r.lastActive,
  idle: (r) => -r.lastActive,
};

export class SessionTable {
  constructor(root, onError) {
    this.root = root;
    this.onError = onError;
    this.body = root.querySelector("tbody");
    this.rows = [];
    this.view = [];
    this.page = 0;
    this.sort = { key: "session_id", dir: 1 };
    this.filter = "";
    this.generation = 0;
    this.lastDerived = 0;
    this.status = document.getElementById("load-status");
    for (const th of root.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => this.sortBy(th.dataset.sort));
    }
    document.getElementById("prev-page").addEventListener("click", () => this.turn(-1));
    document.getElementById("next-page").addEventListener("click", () => this.turn(1));
    document.getElementById("filter").addEventListener("input", (e) => this.setFilter(e.target.value));
    this.readAt = document.getElementById("read-at");
    this.timer = null;
    this.reading = false;
    this.complete = false; // a whole listing has been read and shown
  }

  // Reads the whole listing. Into an empty table each page shows as it arrives; over a table
  // already drawn the new listing is swapped in once read. The next read is due REFRESH_MS after
  // this one ends (longer when reads are slow: they cost the server too), never two at once.
  async load() {
    const generation = ++this.generation;
    clearTimeout(this.timer);
    const progressive = !this.complete;
    const started = performance.now();
    const rows = [];
    let cursor = null, active = 0;
    this.reading = true;
    if (progressive) this.status.textContent = "loading…";
    try {
      do {
        const query = `?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
        const page = await call("GET", `../v1/sessions${query}`);
        if (generation !== this.generation) return; // a newer load took over, or the table stopped
        for (const info of page.sessions) rows.push(withTimes(info));
        cursor = page.next_cursor;
        active = page.active;
        if (progressive) {
          if (this.rows !== rows) { this.rows = rows; this.derive(true); }
          else this.derive(!cursor);
          if (cursor) this.status.textContent = `loading… ${rows.length.toLocaleString()} of about ${active.toLocaleString()}`;
        }
      } while (cursor);
      if (!progressive) { this.rows = rows; this.derive(true); }
      this.complete = true;
      this.status.textContent = `${rows.length.toLocaleString()} sessions`;
      this.readAt.textContent = `read at ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (generation !== this.generation) return;
      this.onError(error); // a refused key stops the table (the login screen); others are retried
      this.render(); // the rows read before stay, their idle times moving on
    }
    if (generation !== this.generation) return;
    this.reading = false;
    const took = performance.now() - started;
    // A hidden tab reads nothing; it reads again as soon as it is looked at.
    this.timer = setTimeout(() => (document.hidden ? this.whenVisible() : this.load()),
                            Math.max(REFRESH_MS, 4 * took));
  }

  whenVisible() {
    const generation = this.generation;
    document.addEventListener("visibilitychange", () => {
      if (generation === this.generation) this.load();
    }, { once: true });
  }

  // Behind the login screen nothing is read.
  stop() {
    this.generation += 1;
    this.reading = false;
    clearTimeout(this.timer);
  }

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    this.page = 0;
    this.derive(true);
  }

  sortBy(key) {
    this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
    for (const th of this.root.querySelectorAll("th[data-sort]")) {
      th.classList.toggle("asc", th.dataset.sort === key && this.sort.dir > 0);
      th.classList.toggle("desc", th.dataset.sort === key && this.sort.dir < 0);
      if (th.dataset.sort === key) th.setAttribute("aria-sort", this.sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    this.derive(true);
  }

  turn(by) {
    const pages = Math.max(1, Math.ceil(this.view.length / PAGE_ROWS));
    this.page = Math.min(pages - 1, Math.max(0, this.page + by));
    this.render();
  }

  // A session changed (reset through this console, or a chunk seen by the open session view).
  update(sid, fields) {
    const row = this.rows.find((r) => r.session_id === sid);
    if (!row || Object.entries(fields).every(([key, value]) => row[key] === value)) return;
    Object.assign(row, fields);
    if (fields.last_active_at) row.lastActive = Date.parse(fields.last_active_at);
    // The row is shared with the derived view: sort again only when its order may have changed.
    const sortKey = this.sort.key === "idle" ? "last_active" : this.sort.key;
    if (sortKey in fields || (sortKey === "last_active" && fields.last_active_at)) this.derive(true);
    else this.render();
  }

  // A session deleted through this console. A read begun before the DELETE may still list it:
  // that read starts over.
  remove(sid) {
    const i = this.rows.findIndex((r) => r.session_id === sid);
    if (i >= 0) this.rows.splice(i, 1); // in place: a first load in progress keeps appending to it
    this.derive(true);
    if (this.reading) this.load();
  }

  derive(now) {
    const moment = performance.now();
    if (!now && moment - this.lastDerived < REDERIVE_MS) return;
    this.lastDerived = moment;
    const needle = this.filter;
    let view = needle
      ? this.rows.filter((r) => [r.session_id, r.tenant || "", modelText(r)].some((text) => text.toLowerCase().includes(needle)))
      : this.rows.slice();
    const key = KEYS[this.sort.key], dir = this.sort.dir;
    view.sort((a, b) => {
      const x = key(a), y = key(b);
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    this.view = view;
    this.render();
  }

  render() {
    const pages = Math.max(1, Math.ceil(this.view.length / PAGE_ROWS));
    this.page = Math.min(this.page, pages - 1);
    const now = Date.now();
    const trs = this.view.slice(this.page * PAGE_ROWS, (this.page + 1) * PAGE_ROWS).map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.sid = r.session_id; // an attribute value, never markup
      const link = document.createElement("a");
      link.className = "mono";
      link.href = sessionLink(r.session_id); // "#/sessions/…": opens it here, and can be shared
      link.textContent = r.session_id;
      const cells = [link, r.tenant ?? "—", modelText(r), r.seq, r.steps, localTime(r.lastActive), idleText(now - r.lastActive)];
      for (const [i, value] of cells.entries()) {
        const td = document.createElement("td");
        if (value instanceof Node) td.append(value);
        else td.textContent = String(value);
        td.dataset.label = LABELS[i];
        if (i === 3 || i === 4 || i === 6) td.className = "num";
        if (i === 5) td.title = r.last_active_at; // the exact instant, in UTC
        tr.append(td);
      }
      return tr;
    });
    this.body.replaceChildren(...trs);
    document.getElementById("page-info").textContent =
      `page ${this.page + 1} of ${pages} (${this.view.length.toLocaleString()} shown of ${this.rows.length.toLocaleString()})`;
  }
}

function withTimes(info) {
  return { ...info, lastActive: Date.parse(info.last_active_at) };
}
