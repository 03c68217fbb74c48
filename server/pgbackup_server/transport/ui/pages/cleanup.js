// Cleanup: see what the retention policy would delete, then delete it.
import { api } from "../api.js";
import { add, busy, bytes, clear, errorBox, h, plural } from "../dom.js";

export async function renderCleanup(el, params, signal) {
  const out = h("div", { "aria-live": "polite" });
  const preview = h("button", { type: "button", class: "primary" }, "Preview (dry run)");
  preview.addEventListener("click", async () => {
    const done = busy(preview, "Checking…");
    try {
      const res = await api("/api/v1/backup/cleanup", { body: { dry_run: true }, signal });
      const files = res.files || [];
      if (!files.length) {
        clear(out, h("p", { class: "calm" }, "Nothing to delete: every backup is within ",
          "the retention policy."));
        return;
      }
      const apply = h("button", { type: "button", class: "danger" },
        `Delete ${plural(files.length, "file")}`);
      apply.addEventListener("click", async () => {
        busy(apply, "Deleting…");
        try {
          const r = await api("/api/v1/backup/cleanup", { body: { dry_run: false }, signal });
          clear(out, h("p", { class: "done" }, `Deleted ${plural(r.deleted_files, "file")}, `,
            `freed ${bytes(r.freed_bytes)}.`),
          h("ul", { class: "files" }, (r.files || []).map((f) => h("li", {}, h("code", {}, f)))));
        } catch (err) {
          clear(out, errorBox(err, "Cleanup failed"));
        }
      });
      clear(out, h("p", {}, `${plural(files.length, "file")} would be deleted, freeing `,
        `${bytes(res.freed_bytes)}:`),
      h("ul", { class: "files" }, files.map((f) => h("li", {}, h("code", {}, f)))), apply);
    } catch (err) {
      clear(out, errorBox(err, "Dry run failed"));
    } finally {
      done();
    }
  });
  add(el, h("h1", {}, "Cleanup"),
    h("p", {}, "Applies the retention policy to the backup directory. The newest good ",
      "backups are always kept, and nothing is deleted while a database's newest run ",
      "failed."), h("div", { class: "actions" }, preview), out);
}
