// Restoring a backup: into a new database (whole or some tables), or over an
// existing one after typing its name.
import { api } from "../api.js";
import { badge, clear, errorBox, h, link, seconds, table, when } from "../dom.js";

export function restoreList(restores, { withBackup = false } = {}) {
  return h("section", {}, h("h2", {}, "Restores"), table([
    "#", ...(withBackup ? ["Backup"] : []), "Into database", "State", "Started", "Duration",
    "Tables", "Requested by", "Error"], restores.map((r) => [
    `#${r.id}`, ...(withBackup ? [link(`#/backups/${r.backup_id}`, `#${r.backup_id}`)] : []),
    r.target_database, badge(r.status), when(r.started_at),
    r.finished_at ? seconds(r.duration_seconds) : "—",
    [...(r.schemas || []).map((s) => `${s}.*`), ...(r.tables || [])].join(", ") || "all",
    r.requested_by, r.error ? h("span", { class: "err" }, r.error) : ""]),
  { caption: "Restores", empty: "No restores yet." }));
}

async function follow(id, out, signal) {
  for (;;) {
    const r = await api(`/api/v1/restores/${id}`, { signal });
    if (r.status !== "RUNNING" && r.status !== "PENDING") return r;
    clear(out, h("p", { class: "muted" }, `Restore #${id} running, `,
      seconds((Date.now() - new Date(r.started_at).getTime()) / 1000), "…"));
    await new Promise((ok) => setTimeout(ok, 700));
  }
}

export function restoreForm(run, contents, signal) {
  const tables = (contents ? contents.entries || [] : []).filter((e) => e.kind === "TABLE");
  const target = h("input", { id: "restore-target", name: "target", autocomplete: "off",
    spellcheck: "false", placeholder: `${run.database}_restored` });
  const overwrite = h("input", { id: "restore-overwrite", type: "checkbox" });
  const force = h("input", { id: "restore-force", type: "checkbox" });
  const confirm = h("input", { id: "restore-confirm", autocomplete: "off", spellcheck: "false" });
  const confirmRow = h("div", { class: "confirm", hidden: true },
    h("label", { for: "restore-confirm" }, "Type the name of the database to replace"),
    confirm,
    h("label", { class: "check" }, force, " Also if it is the live database this backup ",
      "came from, or postgres"));
  const picks = tables.map((t) => h("input", { type: "checkbox", name: "table",
    value: `${t.schema}.${t.name}` }));
  const submit = h("button", { type: "submit", class: "primary" }, "Restore");
  const out = h("div", { "aria-live": "polite" });
  const update = () => {
    confirmRow.hidden = !overwrite.checked;
    const name = target.value.trim();
    submit.disabled = overwrite.checked && (!name || confirm.value.trim() !== name);
    const n = picks.filter((p) => p.checked).length;
    submit.textContent = overwrite.checked ? `Replace ${name || "…"}`
      : n ? `Restore ${n === 1 ? "1 table" : `${n} tables`}` : "Restore whole backup";
  };
  const form = h("form", { class: "restore", "aria-labelledby": "restore-h" },
    h("h2", { id: "restore-h" }, "Restore"),
    h("label", { for: "restore-target" }, "Into database"), target,
    h("p", { class: "muted small" }, "Empty: a new database named after the backup."),
    tables.length ? h("fieldset", {}, h("legend", {}, "Only these tables (none: everything)"),
      h("div", { class: "picks" }, picks.map((p, i) => h("label", { class: "check" }, p, " ",
        `${tables[i].schema}.${tables[i].name}`)))) : null,
    h("label", { class: "check" }, overwrite, " Replace an existing database"),
    confirmRow, h("div", { class: "actions" }, submit), out);
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    update();
    if (submit.disabled) return;
    submit.disabled = true;
    clear(out, h("p", { class: "muted" }, "Starting the restore…"));
    try {
      const started = await api(`/api/v1/backups/${run.id}:restore`, { signal, body: {
        target_database: target.value.trim(), overwrite: overwrite.checked,
        force: overwrite.checked && force.checked,
        tables: picks.filter((p) => p.checked).map((p) => p.value), background: true } });
      const done = await follow(started.id, out, signal);
      clear(out, done.status === "SUCCEEDED"
        ? h("p", { class: "done" }, badge("SUCCEEDED", "Restored"), ` into ${done.target_database}`,
          ` in ${seconds(done.duration_seconds)} (restore #${done.id}).`)
        : errorBox(done.error, `Restore #${done.id} failed`));
    } catch (err) {
      if (!signal.aborted) clear(out, errorBox(err, "Restore refused"));
    } finally {
      update();
    }
  });
  update();
  return form;
}
