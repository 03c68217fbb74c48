// Schedules: when each runs, in words, and its next and last run.
import { api } from "../api.js";
import { cronWords } from "../cron.js";
import { add, badge, h, link, table, when } from "../dom.js";

export async function renderSchedules(el, params, signal) {
  const { schedules = [] } = await api("/api/v1/schedules", { signal });
  add(el, h("h1", {}, "Schedules"), table(
    ["Schedule", "Database", "When", "Next run", "Last run"],
    schedules.map((s) => [
      h("span", {}, s.name, s.enabled ? null : h("span", { class: "badge none" }, " paused")),
      s.target,
      h("span", {}, cronWords(s.cron, s.timezone), h("br"),
        h("code", { class: "small" }, s.cron)),
      s.enabled ? when(s.next_run_time) : h("span", { class: "muted" }, "does not fire"),
      s.last_run ? h("span", {}, link(`#/backups/${s.last_run.id}`, badge(s.last_run.status)),
        " ", when(s.last_run.started_at || s.last_run.queued_at))
        : h("span", { class: "muted" }, "never ran"),
    ]), { caption: "Schedules", empty: "No schedules are configured; backups run only "
      + "when asked." }));
}
