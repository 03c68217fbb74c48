// Building the page: every value from the API becomes a text node, never markup.
// (The Content-Security-Policy requires Trusted Types, so markup from a string
// would be refused anyway.)

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  add(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  add(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "checked" || k === "value") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

export function add(el, ...children) {
  for (const c of [children].flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return add(el, children);
}

// -- values ------------------------------------------------------------------

const whenFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});

export function utcText(iso) {
  return new Date(iso).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

// A time in the browser's timezone; the UTC time on hover (and for screen readers).
export function when(iso, empty = "—") {
  if (!iso) return h("span", { class: "muted" }, empty);
  const d = new Date(iso);
  return h("time", { datetime: iso, title: utcText(iso) }, whenFormat.format(d));
}

export function ago(iso, now = Date.now()) {
  const s = Math.round((now - new Date(iso).getTime()) / 1000);
  const future = s < 0;
  const a = Math.abs(s);
  const text = a < 90 ? `${a} s` : a < 5400 ? `${Math.round(a / 60)} min`
    : a < 129600 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} days`;
  return future ? `in ${text}` : `${text} ago`;
}

export function bytes(n) {
  n = Number(n || 0);
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

export function seconds(s) {
  s = Number(s || 0);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function plural(n, one, many = one + "s") {
  return `${n} ${Number(n) === 1 ? one : many}`;
}

const STATE_CLASS = { SUCCEEDED: "ok", FAILED: "bad", RUNNING: "run", PENDING: "run",
  OK: "ok" };
const STATE_TEXT = { SUCCEEDED: "Succeeded", FAILED: "Failed", RUNNING: "Running",
  PENDING: "Queued", OK: "Verified" };

export function badge(state, text) {
  return h("span", { class: `badge ${STATE_CLASS[state] || "none"}` },
    text || STATE_TEXT[state] || state || "—");
}

export function verification(run) {
  if (!run || !run.verification) return h("span", { class: "muted" }, "not verified");
  if (run.verification === "OK") return badge("OK");
  return h("span", { class: "badge bad", title: run.verification_reason || "" },
    "Verification failed");
}

const KINDS = { DATABASE: "Logical", GLOBALS: "Globals", PHYSICAL_FULL: "Physical full",
  PHYSICAL_INCREMENTAL: "Physical incremental" };
export function kindText(kind) { return KINDS[kind] || kind || "Logical"; }

// Copies per destination; before destinations existed, the one local file.
export function copies(run) {
  if (run && Array.isArray(run.copies) && run.copies.length) return run.copies;
  if (!run || run.status !== "SUCCEEDED") return [];
  const state = run.file_deleted ? "DELETED" : run.file_missing ? "MISSING" : "SUCCEEDED";
  return [{ destination: "local", state, location: run.file_path, size_bytes: run.size_bytes,
    sha256: run.sha256, stored_at: run.finished_at, error: "" }];
}

export function copyChips(run) {
  const list = copies(run);
  if (!list.length) return h("span", { class: "muted" }, "none");
  return h("span", { class: "chips" }, list.map((c) => h("span", {
    class: `chip ${c.state === "SUCCEEDED" ? "ok" : c.state === "FAILED" ? "bad" : "none"}`,
    title: [c.state, c.location, c.error].filter(Boolean).join(" · "),
  }, c.destination, c.state === "SUCCEEDED" ? " ✓" : c.state === "FAILED" ? " ✗"
    : ` (${String(c.state || "").toLowerCase()})`)));
}

export function link(href, ...children) { return h("a", { href }, ...children); }

// A table; on a phone each row becomes a card whose cells carry their column's name.
// (The roles are explicit because a table styled as blocks loses them in browsers.)
export function table(headers, rows, { caption, empty = "Nothing yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": caption },
    h("table", { role: "table", "aria-label": caption },
      h("thead", { role: "rowgroup" }, h("tr", { role: "row" }, headers.map((t) =>
        h("th", { scope: "col", role: "columnheader" }, t)))),
      h("tbody", { role: "rowgroup" }, rows.map((cells) => h("tr", { role: "row" },
        cells.map((c, i) => h("td", { role: "cell", "data-label": headers[i] || "" }, c)))))));
}

export function errorBox(err, what) {
  return h("div", { class: "alert", role: "alert" },
    h("strong", {}, what ? `${what}: ` : ""), err && err.message ? err.message : String(err));
}

export function busy(button, text) {
  const old = button.textContent;
  button.disabled = true;
  button.textContent = text;
  return () => { button.disabled = false; button.textContent = old; };
}
