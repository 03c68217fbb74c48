// One backup: live progress while it runs, its details, copies, verification,
// contents, restore, and the restores made from it.
import { api, query, watch } from "../api.js";
import {
  add, badge, bytes, clear, copies, errorBox, h, kindText, link, plural, seconds, table,
  verification, when,
} from "../dom.js";
import { restoreForm, restoreList } from "./restore.js";

function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined &&
    v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function code(text) { return text ? h("code", { class: "wrap" }, text) : null; }

function fileState(run) {
  if (run.file_deleted) return "deleted by retention";
  if (run.file_missing) return "missing from disk";
  return run.status === "SUCCEEDED" ? "present" : "";
}

// Live progress: WatchBackup's events as they come; polling when streaming fails.
function progress(run, signal, onEnd) {
  const bar = h("progress", { max: 100 });
  const text = h("p", { class: "small", "aria-live": "polite" }, "Waiting for pg_dump…");
  const box = h("section", { class: "progress", "aria-label": "Progress" },
    h("h2", {}, "In progress"), bar, text);
  const show = (p) => {
    const head = document.querySelector("h1 .badge");
    if (head && p.status) head.replaceWith(badge(p.status));
    const written = Number(p.bytes_written || 0), total = Number(p.estimated_total_bytes || 0);
    const rate = Number(p.bytes_per_second || 0);
    if (total > 0) bar.value = Math.min(100, (written / total) * 100);
    const parts = [`${badgeText(p.status)}: ${bytes(written)}`];
    if (total > 0) parts.push(`of about ${bytes(total)}`);
    if (rate > 0) parts.push(`at ${bytes(rate)}/s`);
    if (rate > 0 && total > written) parts.push(`about ${seconds((total - written) / rate)} left`);
    if (p.elapsed_seconds) parts.push(`${seconds(p.elapsed_seconds)} elapsed`);
    text.textContent = parts.join(", ");
  };
  let ended = false;
  const end = () => { if (!ended && !signal.aborted) { ended = true; onEnd(); } };
  watch(run.id, (p) => { show(p); if (p.backup) end(); }, signal).then(end).catch(async () => {
    let last = null;
    while (!signal.aborted && !ended) {
      try {
        const r = await api(`/api/v1/backups/${run.id}`, { signal });
        const now = Date.now();
        const rate = last ? (Number(r.bytes_written) - last.bytes) / ((now - last.t) / 1000) : 0;
        last = { bytes: Number(r.bytes_written), t: now };
        show({ ...r, bytes_per_second: rate });
        if (r.status === "SUCCEEDED" || r.status === "FAILED") { end(); return; }
      } catch { /* keep trying */ }
      await new Promise((ok) => setTimeout(ok, 1000));
    }
  });
  return box;
}

function badgeText(status) { return status === "PENDING" ? "Queued" : "Running"; }

function verifyState(run) {
  return [verification(run), run.verified_at ? [" ", when(run.verified_at)] : null,
    run.verification_reason ? [" — ", run.verification_reason] : null];
}

function verifySection(run, signal) {
  const out = h("div", { "aria-live": "polite" });
  const state = h("p", { class: "verify-state" }, verifyState(run));
  const button = (deep) => {
    const b = h("button", { type: "button" }, deep ? "Verify (deep)" : "Verify (quick)");
    b.addEventListener("click", async () => {
      const buttons = b.parentElement.querySelectorAll("button");
      buttons.forEach((x) => { x.disabled = true; });
      clear(out, h("p", { class: "muted" }, deep ? "Restoring into a scratch database…"
        : "Checking the checksum and the archive…"));
      try {
        const res = await api(`/api/v1/backups/${run.id}:verify`, { body: { deep } });
        const how = deep ? `deep check: restored into a scratch database (dropped), ` +
          `${plural((res.tables || []).length, "table")}` : "quick check: checksum and archive";
        clear(out, h("p", {}, badge(res.verification === "OK" ? "OK" : "FAILED",
          res.verification === "OK" ? "Verified" : "Verification failed"), " ",
        res.reason || how, ` (${seconds(res.duration_seconds)})`),
        res.tables && res.tables.length ? table(["Table", "Rows"], res.tables.map((t) =>
          [`${t.schema}.${t.table}`, Number(t.rows).toLocaleString()]),
        { caption: "Rows restored" }) : null);
        clear(state, verifyState(await api(`/api/v1/backups/${run.id}`, { signal })));
      } catch (err) {
        clear(out, errorBox(err, "Verification did not run"));
      } finally {
        buttons.forEach((x) => { x.disabled = false; });
      }
    });
    return b;
  };
  return h("section", { "aria-labelledby": "verify-h" },
    h("h2", { id: "verify-h" }, "Verification"), state,
    run.status === "SUCCEEDED" && !run.file_deleted && !run.file_missing
      ? h("div", { class: "actions" }, button(false), button(true)) : null, out);
}

function contentsSection(contents) {
  const entries = (contents.entries || []).filter((e) => e.kind === "TABLE");
  return h("section", {}, h("h2", {}, "Contents"),
    table(["Table", "Size in backup"], entries.map((e) => [`${e.schema}.${e.name}`,
      bytes(e.size_bytes)]), { caption: "Tables in this backup",
      empty: "No tables in this backup." }));
}

export async function renderBackup(el, id, signal) {
  const run = await api(`/api/v1/backups/${id}`, { signal });
  // Contents and restore into a database are for logical (pg_dump) backups.
  const usable = run.status === "SUCCEEDED" && !run.file_deleted && !run.file_missing &&
    (!run.kind || run.kind === "DATABASE");
  const physical = String(run.kind || "").startsWith("PHYSICAL");
  const [contents, restores] = await Promise.all([
    usable ? api(`/api/v1/backups/${id}/contents`, { signal }).catch((e) => e) : null,
    api("/api/v1/restores" + query({ backup_id: id, page_size: 20 }), { signal }),
  ]);
  const reload = () => {
    if (!signal.aborted) window.dispatchEvent(new HashChangeEvent("hashchange"));
  };
  const parent = Number(run.parent_id || 0);
  add(el, 
    h("p", { class: "crumbs" }, link("#/backups", "Backups"), " / ", `#${run.id}`),
    h("h1", {}, `Backup #${run.id} `, h("span", { class: "db" }, run.database), " ",
      badge(run.status)),
    run.status === "RUNNING" || run.status === "PENDING" ? progress(run, signal, reload) : null,
    run.error ? h("section", { class: "alert", role: "alert" }, h("h2", {}, "Error"),
      h("pre", { class: "log" }, run.error)) : null,
    dl([
      ["Database", run.database], ["Target", run.target],
      ["Kind", kindText(run.kind)],
      ["Based on", parent ? link(`#/backups/${parent}`, `#${parent}`) : null],
      ["Taken as full", run.type_reason],
      ["WAL", run.start_lsn ? `${run.start_lsn} – ${run.end_lsn || "…"}` +
        (run.timeline ? ` (timeline ${run.timeline})` : "") : null],
      ["Restore chain", run.chain ? run.chain.split(",").map((c, i) => [i ? " → " : "",
        link(`#/backups/${c.trim()}`, `#${c.trim()}`)]) : null],
      ["Trigger", run.trigger === "SCHEDULE" ? `schedule ${run.schedule}` : "manual"],
      ["Queued", when(run.queued_at)], ["Started", when(run.started_at)],
      ["Finished", run.finished_at ? when(run.finished_at) : null],
      ["Duration", run.finished_at ? seconds(run.duration_seconds) : null],
      ["Size", run.status === "SUCCEEDED" ? bytes(run.size_bytes) : null],
      ["File", code(run.file_path)], ["File state", fileState(run)],
      ["SHA-256", code(run.sha256)],
      ["Format", [run.format, run.compression].filter(Boolean).join(", ")],
      ["pg_dump", run.pg_dump_version], ["Server", run.server_version],
      ["Directory", code(run.backup_dir)],
    ]),
    h("section", {}, h("h2", {}, "Copies"), table(["Destination", "State", "Location", "Size",
      "SHA-256", "Stored", "Error"], copies(run).map((c) => [c.destination,
      badge(c.state === "SUCCEEDED" ? "SUCCEEDED" : c.state === "FAILED" ? "FAILED" : "",
        String(c.state || "").toLowerCase()), code(c.location), bytes(c.size_bytes),
      code(c.sha256), when(c.stored_at), c.error || ""]),
    { caption: "Copies per destination", empty: "No copies: the backup did not succeed." })),
    verifySection(run, signal),
    usable ? restoreForm(run, contents instanceof Error ? null : contents, signal) : null,
    physical && run.status === "SUCCEEDED" ? h("p", { class: "muted" }, "A physical backup ",
      "is restored into a data directory: backupctl restore ", String(run.id),
      " --target-directory DIR (see the README).") : null,
    contents instanceof Error ? errorBox(contents, "Contents unavailable")
      : contents ? contentsSection(contents) : null,
    restoreList(restores.restores || []));
}
