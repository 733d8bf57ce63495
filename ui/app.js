// The shell: hash routing between the screens, the hub status in the top bar, and what every
// screen gets (capabilities, the hub's address). Screens live in views/; the backend in backend.js.

import * as backend from "./backend.js";
import { el, replaceChildren } from "./dom.js";
import { renderHome } from "./views/home.js";
import { renderCreate } from "./views/create.js";
import { renderJoin } from "./views/join.js";
import { renderRoom } from "./views/room.js";
import { renderSettings } from "./views/settings.js";

const ROUTES = [
  { pattern: /^\/?$/, nav: "home", render: renderHome },
  { pattern: /^\/create\/?$/, nav: "create", render: renderCreate },
  { pattern: /^\/join(?:\/([A-Za-z0-9_-]{1,16}))?\/?$/, nav: "join", render: renderJoin },
  { pattern: /^\/room\/([A-Za-z0-9_-]{1,16})\/?$/, nav: "home", render: renderRoom },
  { pattern: /^\/settings\/?$/, nav: "settings", render: renderSettings },
];

const state = {
  caps: { share: false, discovery: false, settings: false },
  hub: { url: window.location.origin, state: "running" },
  cleanup: null,
  firstRender: true,
};

function currentPath() {
  const hash = window.location.hash || "#/";
  return hash.startsWith("#") ? hash.slice(1) : hash;
}

function notFound(root) {
  replaceChildren(
    root,
    el(
      "section",
      { class: "panel empty" },
      el("h1", { class: "page-title", tabindex: "-1" }, "There's no such page"),
      el("p", null, "The address may have a typo in it."),
      el("a", { class: "btn btn-primary", href: "#/" }, "Go to the rooms"),
    ),
  );
}

function route() {
  if (state.cleanup) {
    try {
      state.cleanup();
    } catch {
      // A view that fails to clean up must not block the next one.
    }
    state.cleanup = null;
  }
  const path = currentPath();
  const root = document.getElementById("view");
  let matched = null;
  let params = [];
  for (const r of ROUTES) {
    const m = path.match(r.pattern);
    if (m) {
      matched = r;
      params = m.slice(1);
      break;
    }
  }
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (matched && link.dataset.nav === matched.nav && !(matched.nav === "home" && path.startsWith("/room/"))) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  replaceChildren(root);
  if (!matched) {
    notFound(root);
  } else {
    const ctx = { params, caps: state.caps, hub: state.hub, navigate: (to) => (window.location.hash = to) };
    const cleanup = matched.render(root, ctx);
    state.cleanup = typeof cleanup === "function" ? cleanup : null;
  }
  // Moving between screens moves focus to the new screen's title, so keyboard and screen reader
  // users start at the top of what changed. The first load keeps the browser's own focus.
  if (!state.firstRender) {
    const title = root.querySelector("h1");
    if (title) {
      if (!title.hasAttribute("tabindex")) title.setAttribute("tabindex", "-1");
      title.focus({ preventScroll: false });
    }
    window.scrollTo(0, 0);
  }
  state.firstRender = false;
}

// ---- Hub status in the top bar ------------------------------------------------------------------

let healthTimer = null;

// Touches the pill only when its state changes: it is a live region, and rewriting the same words
// every few seconds would make screen readers repeat them.
function show(pill, stateName, dotClass, words, title) {
  if (pill.dataset.state === stateName && pill.querySelector(".hub-pill-text").textContent === words) return;
  pill.querySelector(".dot").className = dotClass;
  pill.querySelector(".hub-pill-text").textContent = words;
  pill.dataset.state = stateName;
  pill.title = title;
}

async function refreshHealth() {
  const pill = document.getElementById("hub-pill");
  if (!pill) return;
  try {
    const health = await backend.health();
    // In the app it is this computer's Gambi; in a browser, the hub that served the page.
    const running = state.caps.share ? "Gambi is on" : "Hub running";
    show(pill, "ok", "dot dot-online", health && health.version ? `${running} · v${health.version}` : running, "");
  } catch (err) {
    const words = state.caps.share
      ? state.hub.state === "off" ? "Gambi is off here" : "Gambi isn't answering"
      : state.hub.state === "off" ? "Hub is off" : "Hub not answering";
    show(pill, "down", "dot dot-offline", words, (err && err.message) || "");
  }
}

async function start() {
  const skip = document.querySelector(".skip-link");
  if (skip) {
    // The skip link must not change the hash: the hash is the route.
    skip.addEventListener("click", (e) => {
      e.preventDefault();
      const main = document.getElementById("main");
      if (main) main.focus();
    });
  }
  const [caps, hub] = await Promise.all([
    backend.capabilities(),
    backend.hubInfo().catch(() => ({ url: window.location.origin, state: "running" })),
  ]);
  state.caps = caps;
  state.hub = hub || state.hub;
  document.documentElement.dataset.backend = backend.kind;
  const settingsLink = document.querySelector('[data-nav="settings"]');
  if (settingsLink) settingsLink.hidden = !caps.settings;
  window.addEventListener("hashchange", route);
  route();
  refreshHealth();
  healthTimer = setInterval(refreshHealth, 10000);
}

window.addEventListener("pagehide", () => clearInterval(healthTimer));

start();
