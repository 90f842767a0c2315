// The models and their versions: state, live sessions, layout; and retiring a version, choosing
// what its sessions do (drain, reset or carry).
import { call } from "./api.js";
import { byId, confirmAction } from "./dom.js";

const MODES = {
  drain: "its sessions stay on it until they end or expire; then it is unloaded",
  reset: "its sessions move to the newest ready version with a zeroed state",
  carry: "its sessions move to the newest ready version with their state (identical state layouts only)",
};

// Each cell's heading, for the narrow layout where a row is a card and headings sit in the cells.
const LABELS = ["model", "version", "state", "live sessions", "layout", "fingerprint", "retire"];

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function layout(version) {
  if (!version.recurrent_layers) return "—";
  const layers = version.recurrent_layers.map((r) => `${r.kind} ${r.units}`).join(", ");
  return `${version.input_features} in → ${layers} → ${version.output.size}${version.output.per_step ? " per step" : ""}`;
}

export class ModelsView {
  // onError takes what is not the panel's own to show (a refused key: the login screen).
  constructor(onError) {
    this.onError = onError;
    this.body = byId("model-table").querySelector("tbody");
  }

  async load() {
    try {
      const { models } = await call("GET", "../v1/models");
      this.draw(models);
    } catch (error) {
      if (error.status === 401 || error.status === 403) this.onError(error);
      else byId("models-status").textContent = `failed: ${error.message}`;
    }
  }

  draw(models) {
    const rows = [];
    for (const model of models) {
      for (const version of model.versions) {
        const tr = document.createElement("tr");
        tr.dataset.model = model.name;
        tr.dataset.version = String(version.version);
        const isDefault = model.default_version === version.version ? " (new sessions)" : "";
        tr.append(cell(model.name), cell(String(version.version), "num"), cell(version.state + isDefault),
                  cell(version.live_sessions.toLocaleString(), "num"), cell(layout(version)),
                  cell(version.error || (version.fingerprint ? version.fingerprint.slice(0, 19) + "…" : "—"), "mono"));
        const actions = document.createElement("td");
        if (version.state === "ready" || version.state === "retiring") {
          for (const mode of Object.keys(MODES)) {
            if (version.retired === mode) continue;
            const button = document.createElement("button");
            button.type = "button";
            button.textContent = mode;
            button.title = `Retire: ${MODES[mode]}`;
            button.addEventListener("click", () => this.retire(model.name, version.version, mode));
            actions.append(button);
          }
        }
        tr.append(actions);
        [...tr.children].forEach((td, i) => { td.dataset.label = LABELS[i]; });
        rows.push(tr);
      }
    }
    this.body.replaceChildren(...rows);
  }

  async retire(name, version, mode) {
    const question = `Retire version ${version} of ${name} (${mode})? New sessions stop getting it; ${MODES[mode]}.`;
    if (!(await confirmAction(question, `Retire (${mode})`))) return;
    const path = `../v1/models/${encodeURIComponent(name)}/versions/${version}/retire`;
    try {
      const result = await call("POST", path, { mode });
      byId("models-status").textContent = result.moved_to === null
        ? `version ${version} of ${name} is ${result.state}: ${result.live_sessions} sessions draining`
        : `version ${version} of ${name}: ${result.moved} sessions moved to version ${result.moved_to}`;
    } catch (error) {
      if (error.status === 401 || error.status === 403) this.onError(error);
      else byId("models-status").textContent = `not retired: ${error.message}`;
    }
    await this.load();
  }
}
