// Links into the console: /ui/#/sessions/{id} opens that session (the id URL-encoded), so an
// on-call engineer can paste one into a ticket. The hash is the one place that says what is open.
const PREFIX = "#/sessions/";

export function sessionLink(sid) {
  return PREFIX + encodeURIComponent(sid);
}

// The session the address names; null for none (or a hash that does not decode).
export function linkedSession() {
  if (!location.hash.startsWith(PREFIX)) return null;
  try {
    return decodeURIComponent(location.hash.slice(PREFIX.length)) || null;
  } catch {
    return null;
  }
}

// Open a session (or, with null, none): a new history entry, so Back returns to what was open.
export function go(sid) {
  if (sid !== null) {
    location.hash = sessionLink(sid);
    return;
  }
  if (!location.hash) return;
  history.pushState(null, "", location.pathname + location.search);
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}
