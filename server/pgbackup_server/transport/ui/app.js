// The dashboard: a login wall when tokens are configured, then pages by address
// (#/, #/backups, #/backups/<id>, #/schedules, #/restores, #/cleanup).
import { api, ApiError, setToken, token, whenUnauthorized } from "./api.js";
import { add, clear, errorBox, h } from "./dom.js";
import { renderBackup } from "./pages/backup.js";
import { renderBackups } from "./pages/backups.js";
import { renderCleanup } from "./pages/cleanup.js";
import { renderOverview } from "./pages/overview.js";
import { renderRestores } from "./pages/restores.js";
import { renderSchedules } from "./pages/schedules.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const PAGES = [
  ["#/", "Overview"], ["#/backups", "Backups"], ["#/schedules", "Schedules"],
  ["#/restores", "Restores"], ["#/cleanup", "Cleanup"],
];
let current = null; // AbortController of the page on screen
let authRequired = false;

function route() {
  const hash = location.hash || "#/";
  const [path, q] = hash.slice(1).split("?");
  const params = new URLSearchParams(q || "");
  const m = path.match(/^\/backups\/(\d+)$/);
  if (m) return { page: "#/backups", render: (el, sig) => renderBackup(el, m[1], sig) };
  const pages = {
    "/backups": renderBackups, "/schedules": renderSchedules, "/restores": renderRestores,
    "/cleanup": renderCleanup,
  };
  const render = pages[path] || renderOverview;
  return { page: pages[path] ? "#" + path : "#/", render: (el, sig) => render(el, params, sig) };
}

function drawNav(active) {
  nav.hidden = false;
  clear(nav, h("ul", {}, PAGES.map(([href, text]) => h("li", {},
    h("a", { href, "aria-current": href === active ? "page" : false }, text)))),
  authRequired ? h("button", { type: "button", class: "link", onclick: logout }, "Log out")
    : null);
}

async function show() {
  if (current) current.abort();
  current = new AbortController();
  const signal = current.signal;
  const { page, render } = route();
  drawNav(page);
  const view = h("div", { class: "view" });
  clear(main, view);
  try {
    await render(view, signal);
  } catch (err) {
    if (signal.aborted || (err instanceof ApiError && err.status === 401)) return;
    add(view, errorBox(err, "Could not load this page"));
  }
  if (!signal.aborted) {
    const title = view.querySelector("h1");
    document.title = `${title ? title.textContent + " · " : ""}pg-backup-scheduler`;
  }
}

function logout() {
  setToken("");
  login("You are logged out.");
}

function login(message) {
  if (current) current.abort();
  current = null;
  nav.hidden = true;
  nav.replaceChildren();
  const input = h("input", { id: "token", name: "token", type: "password", required: true,
    autocomplete: "current-password", spellcheck: "false" });
  const status = h("p", { class: "form-error", role: "alert" }, message || "");
  const button = h("button", { type: "submit", class: "primary" }, "Log in");
  const form = h("form", { class: "login", novalidate: true },
    h("h1", { tabindex: "-1" }, "Log in"),
    h("p", { class: "muted" }, "This backup service needs an access token. It is kept ",
      "for this browser tab only and sent with every request."),
    h("label", { for: "token" }, "Access token"), input, status, button);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) { status.textContent = "Enter a token."; input.focus(); return; }
    button.disabled = true;
    try {
      await api("/api/v1/backup/stats", { tok: value, quiet: true });
      setToken(value);
      show();
    } catch (err) {
      status.textContent = err instanceof ApiError && err.status === 401
        ? "That token was refused." : `Could not check the token: ${err.message}`;
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  clear(main, form);
  document.title = "Log in · pg-backup-scheduler";
  input.focus();
}

whenUnauthorized(() => {
  const had = token() !== "";
  setToken("");
  authRequired = true;
  login(had ? "Your token was refused; log in again." : "");
});

async function start() {
  try {
    await api("/api/v1/backup/stats", { quiet: true });
    authRequired = token() !== "";
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const had = token() !== "";
      authRequired = true;
      setToken("");
      login(had ? "Your token was refused; log in again." : "");
      return;
    }
  }
  show();
}

window.addEventListener("hashchange", () => {
  if (main.querySelector("form.login")) return; // the wall stays until a token works
  show().then(() => {
    const title = main.querySelector("h1");
    if (title) { title.setAttribute("tabindex", "-1"); title.focus({ preventScroll: true }); }
  });
});
start();
