// The API on the page's own origin (Envoy), with the session's bearer token.
const KEY = "pgbackup.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

export function token() { return sessionStorage.getItem(KEY) || ""; }
export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

function headers(tok, json) {
  const out = { Accept: "application/json" };
  if (tok) out.Authorization = "Bearer " + tok;
  if (json) out["Content-Type"] = "application/json";
  return out;
}

async function failure(resp) {
  const text = await resp.text();
  let message = text;
  let code = 0;
  try {
    const data = JSON.parse(text);
    message = data.message || text;
    code = data.code || 0;
  } catch { /* plain text from a proxy */ }
  return new ApiError(resp.status, code, message || resp.statusText || "request failed");
}

// GET (no body) or POST (body): the parsed JSON, or an ApiError. A 401 also
// tells the app, which shows the login page.
export async function api(path, { body, signal, tok = token(), quiet = false } = {}) {
  const resp = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: headers(tok, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    signal,
  });
  if (!resp.ok) {
    const err = await failure(resp);
    if (resp.status === 401 && !quiet) onUnauthorized(err);
    throw err;
  }
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

// A query string; "%20" for a space, since the REST gateway takes "+" literally.
export function query(params) {
  const parts = Object.entries(params).filter(([, v]) => v !== "" && v != null)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length ? "?" + parts.join("&") : "";
}

// WatchBackup through the transcoder: one JSON array, sent element by element.
// Calls onEvent for each complete object as it arrives.
export async function watch(id, onEvent, signal) {
  const resp = await fetch(`/api/v1/backups/${id}:watch`, {
    headers: headers(token(), false), cache: "no-store", signal,
  });
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "", depth = 0, inString = false, escaped = false, start = -1;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const from = buf.length;
    buf += decoder.decode(value, { stream: true });
    for (let i = from; i < buf.length; i++) {
      const c = buf[i];
      if (inString) {
        if (escaped) escaped = false;
        else if (c === "\\") escaped = true;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === "{") { if (depth++ === 0) start = i; }
      else if (c === "}" && --depth === 0) {
        onEvent(JSON.parse(buf.slice(start, i + 1)));
        buf = buf.slice(i + 1);
        i = -1;
      }
    }
  }
}
