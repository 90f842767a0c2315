// The sessions table. The admin listing is read page by page (1000 at a time) in the background;
// the first page shows as soon as it arrives, and only one page of rows is ever in the DOM, so
// 100,000 sessions never freeze the page. Filter and sort run here over what has been read.
import { call } from "./api.js";

const PAGE_ROWS = 50;
const REDERIVE_MS = 400; // while loading, filter and sort again at most this often

function idleText(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

const KEYS = {
  session_id: (r) => r.session_id,
  tenant: (r) => r.tenant || "",
  seq: (r) => r.seq,
  steps: (r) => r.steps,
  last_active: (r) => r.lastActive,
  idle: (r) => -r.lastActive,
};

export class SessionTable {
  constructor(root, onOpen, onError) {
    this.root = root;
    this.onOpen = onOpen;
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
    setInterval(() => this.render(), 5000); // idle times move on
  }

  async load() {
    const generation = ++this.generation;
    const rows = [];
    let cursor = null, active = 0;
    this.status.textContent = "loading…";
    try {
      do {
        const query = `?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
        const page = await call("GET", `../v1/sessions${query}`);
        if (generation !== this.generation) return; // a newer load took over
        for (const info of page.sessions) rows.push(withTimes(info));
        cursor = page.next_cursor;
        active = page.active;
        if (this.rows !== rows) { this.rows = rows; this.derive(true); }
        else this.derive(!cursor);
        this.status.textContent = cursor ? `loading… ${rows.length.toLocaleString()} of about ${active.toLocaleString()}`
                                         : `${rows.length.toLocaleString()} sessions`;
      } while (cursor);
    } catch (error) {
      if (generation === this.generation) this.onError(error);
    }
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
    }
    this.derive(true);
  }

  turn(by) {
    const pages = Math.max(1, Math.ceil(this.view.length / PAGE_ROWS));
    this.page = Math.min(pages - 1, Math.max(0, this.page + by));
    this.render();
  }

  // A session changed (reset) or went (deleted) through this console.
  update(info) {
    const i = this.rows.findIndex((r) => r.session_id === info.session_id);
    if (i >= 0) this.rows[i] = withTimes({ ...info, tenant: this.rows[i].tenant });
    this.derive(true);
  }

  remove(sid) {
    const i = this.rows.findIndex((r) => r.session_id === sid);
    if (i >= 0) this.rows.splice(i, 1); // in place: a load in progress keeps appending to it
    this.derive(true);
  }

  derive(now) {
    const moment = performance.now();
    if (!now && moment - this.lastDerived < REDERIVE_MS) return;
    this.lastDerived = moment;
    const needle = this.filter;
    let view = needle
      ? this.rows.filter((r) => r.session_id.toLowerCase().includes(needle) || (r.tenant || "").toLowerCase().includes(needle))
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
      const open = document.createElement("button");
      open.type = "button";
      open.className = "link mono";
      open.textContent = r.session_id;
      open.addEventListener("click", () => this.onOpen(r.session_id));
      const cells = [open, r.tenant ?? "—", r.seq, r.steps, r.last_active_at, idleText(now - r.lastActive)];
      for (const [i, value] of cells.entries()) {
        const td = document.createElement("td");
        if (value instanceof Node) td.append(value);
        else td.textContent = String(value);
        if (i === 2 || i === 3 || i === 5) td.className = "num";
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
