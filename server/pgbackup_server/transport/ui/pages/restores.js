// Restores: every restore, newest first, a page at a time.
import { api, query } from "../api.js";
import { add, h } from "../dom.js";
import { restoreList } from "./restore.js";

const pages = [];

export async function renderRestores(el, params, signal) {
  const token = params.get("page") || "";
  if (!token) pages.length = 0;
  const page = await api("/api/v1/restores" + query({ page_size: 50, page_token: token }),
    { signal });
  const nav = h("nav", { class: "pager", "aria-label": "Pages" });
  if (token) {
    const prev = h("button", { type: "button" }, "← Newer");
    prev.addEventListener("click", () => {
      location.hash = "#/restores" + query({ page: pages.pop() || "" });
    });
    nav.append(prev);
  }
  if (page.next_page_token) {
    const next = h("button", { type: "button" }, "Older →");
    next.addEventListener("click", () => {
      pages.push(token);
      location.hash = "#/restores" + query({ page: page.next_page_token });
    });
    nav.append(next);
  }
  const list = restoreList(page.restores || [], { withBackup: true });
  list.querySelector("h2").remove();
  add(el, h("h1", {}, "Restores"), list, nav);
}
