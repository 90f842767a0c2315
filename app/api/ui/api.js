// Every call goes through the public API, with the admin key the operator typed in this tab.
const KEY = "srnn-admin-key";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export function hasKey() {
  return sessionStorage.getItem(KEY) !== null;
}

// Relative to /ui/, so the console keeps working behind a proxy that serves it under a prefix.
export function sessionPath(sid, rest = "") {
  return `../v1/sessions/${encodeURIComponent(sid)}${rest}`;
}

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, (answer && answer.detail) || response.statusText);
  return answer;
}
