// Overview: open alerts first, then one row per database.
import { api, query } from "../api.js";
import { sizeChart } from "../chart.js";
import {
  add, ago, badge, busy, copyChips, errorBox, h, link, plural, table, verification, when,
} from "../dom.js";

const ALERT_TITLES = {
  STALE: "No recent backup", MISSED_SCHEDULE: "Missed schedule",
  VERIFICATION_FAILED: "Verification failed",
};

function alertList(alerts) {
  if (!alerts.length) return null;
  return h("section", { class: "alerts", "aria-label": "Open alerts" },
    h("h2", {}, plural(alerts.length, "open alert")),
    h("ul", {}, alerts.map((a) => h("li", { class: "alert" },
      h("strong", {}, ALERT_TITLES[a.kind] || a.kind, ": ", a.subject), " ",
      a.message ? h("span", {}, a.message) : null, " ",
      h("span", { class: "muted" }, "since ", when(a.since)),
      Number(a.run_id) ? [" ", link(`#/backups/${a.run_id}`, `backup #${a.run_id}`)] : null))));
}

// One row per (target, database): every configured target, also those never run.
function rowsOf(stats) {
  const rows = [];
  const seen = new Set();
  for (const t of stats.targets || []) {
    const dbs = t.databases && t.databases.length ? t.databases : [t.name];
    for (const db of dbs) { rows.push({ target: t.name, database: db }); seen.add(db); }
  }
  for (const d of stats.databases || []) {
    if (!seen.has(d.database)) rows.push({ target: "", database: d.database });
  }
  return rows;
}

async function details(row, signal) {
  const base = { database: row.database };
  const [newest, ok] = await Promise.all([
    api("/api/v1/backups" + query({ ...base, page_size: 1 }), { signal }),
    api("/api/v1/backups" + query({ ...base, status: "SUCCEEDED", page_size: 1000 }),
      { signal }),
  ]);
  return { newest: (newest.backups || [])[0], successes: ok.backups || [] };
}

function nextRun(schedules, target) {
  const times = schedules.filter((s) => s.target === target && s.next_run_time)
    .map((s) => s.next_run_time).sort();
  return times[0];
}

function runNowButton(target) {
  if (!target) return null;
  const button = h("button", { type: "button", class: "small" }, "Back up now");
  button.addEventListener("click", async () => {
    const done = busy(button, "Starting…");
    try {
      const res = await api("/api/v1/backup/create", { body: { database: target,
        background: true } });
      location.hash = `#/backups/${res.backup.id}`;
    } catch (err) {
      done();
      button.after(errorBox(err, "Backup not started"));
    }
  });
  return button;
}

export async function renderOverview(el, params, signal) {
  const [stats, schedules, alerts] = await Promise.all([
    api("/api/v1/backup/stats", { signal }), api("/api/v1/schedules", { signal }),
    api("/api/v1/alerts", { signal }),
  ]);
  const rows = rowsOf(stats);
  const known = new Set((stats.targets || []).flatMap((t) => t.databases || []));
  const data = await Promise.all(rows.map((r) =>
    (known.has(r.database) || !r.target ? details(r, signal) : { successes: [] })));
  const list = (schedules.schedules || []);
  add(el, 
    h("h1", {}, "Overview"),
    alertList(alerts.alerts || []) || h("p", { class: "calm" }, "No open alerts."),
    table(["Database", "Last success", "Next run", "Newest run", "Verified", "Copies",
      "Last 90 days", ""], rows.map((r, i) => {
      const { newest, successes } = data[i];
      const last = successes[0];
      return [
        h("span", { class: "db" }, link(`#/backups?database=${encodeURIComponent(r.database)}`,
          r.database), r.target && r.target !== r.database
          ? h("span", { class: "muted small" }, ` (${r.target})`) : null),
        last ? h("span", {}, link(`#/backups/${last.id}`, ago(last.finished_at)), h("br"),
          h("span", { class: "small" }, when(last.finished_at)))
          : h("span", { class: "badge bad" }, "never"),
        nextRun(list, r.target) ? when(nextRun(list, r.target))
          : h("span", { class: "muted" }, "not scheduled"),
        newest ? h("span", {}, link(`#/backups/${newest.id}`, badge(newest.status)),
          newest.error ? h("span", { class: "small err" }, " ", newest.error.slice(0, 80))
            : null) : h("span", { class: "muted" }, "—"),
        verification(last),
        copyChips(last),
        sizeChart(successes),
        runNowButton(r.target),
      ];
    }), { caption: "Databases", empty: "No database is configured." }),
    h("p", { class: "muted small" }, `${plural(stats.total_backups, "backup")} on disk, `,
      `${plural(stats.failed_runs, "failed run")}. Times are in your timezone; hover `,
      "for UTC."));
}
