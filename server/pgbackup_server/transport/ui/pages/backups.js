// Backups: filter by database, state and trigger; page through any number of runs.
import { api, query } from "../api.js";
import {
  add, badge, bytes, copyChips, h, kindText, link, seconds, table, verification, when,
} from "../dom.js";

const PAGE = 50;
// Tokens of the pages before the one shown, per filter (the address holds the current).
const history = { key: "", tokens: [] };

function select(name, label, value, options) {
  return h("label", {}, label, " ", h("select", { name },
    options.map(([v, text]) => {
      const o = h("option", { value: v }, text);
      if (v === value) o.selected = true;
      return o;
    })));
}

function go(params) {
  location.hash = "#/backups" + query(params);
}

export async function renderBackups(el, params, signal) {
  const filters = { database: params.get("database") || "", status: params.get("status") || "",
    trigger: params.get("trigger") || "" };
  const token = params.get("page") || "";
  const key = JSON.stringify(filters);
  if (history.key !== key || !token) { history.key = key; history.tokens = []; }
  const [stats, page] = await Promise.all([
    api("/api/v1/backup/stats", { signal }),
    api("/api/v1/backups" + query({ ...filters, page_size: PAGE, page_token: token }),
      { signal }),
  ]);
  const names = new Set();
  for (const t of stats.targets || []) {
    names.add(t.name);
    for (const d of t.databases || []) names.add(d);
  }
  for (const d of stats.databases || []) names.add(d.database);
  if (filters.database) names.add(filters.database);
  const form = h("form", { class: "filters", "aria-label": "Filter backups" },
    select("database", "Database", filters.database,
      [["", "all"], ...[...names].sort().map((n) => [n, n])]),
    select("status", "State", filters.status, [["", "any"], ["SUCCEEDED", "Succeeded"],
      ["FAILED", "Failed"], ["RUNNING", "Running"], ["PENDING", "Queued"]]),
    select("trigger", "Trigger", filters.trigger, [["", "any"], ["SCHEDULE", "Scheduled"],
      ["MANUAL", "Manual"]]));
  form.addEventListener("change", () => {
    const data = new FormData(form);
    go({ database: data.get("database"), status: data.get("status"),
      trigger: data.get("trigger") });
  });
  form.addEventListener("submit", (ev) => ev.preventDefault());
  const runs = page.backups || [];
  const nav = h("nav", { class: "pager", "aria-label": "Pages" });
  const pageNo = history.tokens.length + 1;
  if (token) {
    const prev = h("button", { type: "button" }, "← Newer");
    prev.addEventListener("click", () => {
      const before = history.tokens.pop();
      go({ ...filters, page: before || "" });
    });
    nav.append(prev);
  }
  nav.append(h("span", { class: "muted" }, `Page ${pageNo}`));
  if (page.next_page_token) {
    const next = h("button", { type: "button" }, "Older →");
    next.addEventListener("click", () => {
      history.tokens.push(token);
      go({ ...filters, page: page.next_page_token });
    });
    nav.append(next);
  }
  add(el, h("h1", {}, "Backups"), form,
    table(["#", "Database", "Kind", "State", "Trigger", "Started", "Duration", "Size",
      "Verified", "Copies"], runs.map((r) => [
      link(`#/backups/${r.id}`, `#${r.id}`), r.database, kindText(r.kind),
      h("span", {}, badge(r.status), r.error ? h("span", { class: "small err" }, " ",
        r.error.slice(0, 60)) : null),
      r.trigger === "SCHEDULE" ? `schedule ${r.schedule}` : "manual",
      when(r.started_at || r.queued_at), r.finished_at ? seconds(r.duration_seconds) : "—",
      r.status === "SUCCEEDED" ? bytes(r.size_bytes) : "—", verification(r), copyChips(r),
    ]), { caption: "Backups, newest first", empty: "No backups match these filters." }),
    nav);
}
