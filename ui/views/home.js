// Home: the hub's status, its rooms, and — in the desktop app — this computer's share and the hubs
// found on the LAN.

import * as backend from "../backend.js";
import { announce, codeBlock, el, errorBox, icon, plural, relativeTime, replaceChildren } from "../dom.js";
import { preselectHub } from "./join.js";

function roomCard(room) {
  const count = typeof room.participantCount === "number" ? room.participantCount : 0;
  return el(
    "li",
    null,
    el(
      "a",
      { class: "room-card", href: `#/room/${encodeURIComponent(room.code)}`, dataset: { code: room.code } },
      el(
        "div",
        { class: "room-card-top" },
        el("span", { class: "room-name" }, room.name),
        room.passwordProtected
          ? el("span", { class: "lock", title: "Password protected" }, icon("lock"), el("span", { class: "sr-only" }, "password protected"))
          : null,
      ),
      el(
        "span",
        { class: "room-code-row" },
        el("span", { class: "code-badge mono" }, room.code),
        el("span", { class: "muted created" }, `created ${relativeTime(room.createdAt)}`),
      ),
      el(
        "span",
        { class: "room-meta" },
        el("span", { class: "room-count" }, icon("users"), count === 0 ? "No one sharing yet" : plural(count, "participant", "participants")),
      ),
    ),
  );
}

function emptyRooms(ctx) {
  return el(
    "div",
    { class: "empty" },
    el("p", { class: "empty-title" }, ctx.caps.share ? "No rooms on this computer yet" : "No rooms on this hub yet"),
    el("p", { class: "muted" }, "Create one, then hand its code to the people who will share their models into it."),
    el("a", { class: "btn btn-primary", href: "#/create" }, icon("plus"), "Create a room"),
  );
}

function openByCode(ctx) {
  const input = el("input", {
    id: "open-code",
    class: "input mono code-input",
    name: "code",
    autocomplete: "off",
    autocapitalize: "characters",
    spellcheck: "false",
    maxlength: "6",
    placeholder: "K7QX2M",
    "aria-describedby": "open-code-error",
  });
  const error = el("p", { id: "open-code-error", class: "field-error", hidden: true });
  const form = el(
    "form",
    {
      class: "inline-form",
      onsubmit: (e) => {
        e.preventDefault();
        const code = backend.normalizeCode(input.value);
        if (!backend.isRoomCode(code)) {
          error.textContent = "A room code is 6 letters, digits, - or _, like K7QX2M.";
          error.hidden = false;
          input.setAttribute("aria-invalid", "true");
          input.focus();
          return;
        }
        ctx.navigate(`#/room/${code}`);
      },
    },
    el("label", { class: "label", for: "open-code" }, "Open a room by code"),
    el("div", { class: "copy-row" }, input, el("button", { class: "btn", type: "submit" }, "Open")),
    error,
  );
  return form;
}

function browserShareNote(ctx) {
  const hub = ctx.hub.url || window.location.origin;
  return el(
    "section",
    { class: "panel", "aria-labelledby": "share-note-title" },
    el("h2", { id: "share-note-title", class: "panel-title" }, icon("share"), "Share a model from your computer"),
    el(
      "p",
      null,
      "Sharing your Ollama or LM Studio, and finding other computers running Gambi on your network, happen in the Gambi desktop app. ",
      "From a terminal, this does the same:",
    ),
    codeBlock(`gambi participant join --hub ${hub} --room CODE --model llama3`, "share command"),
    el("p", { class: "muted small" }, el("a", { href: "#/join" }, "More about sharing"), " · this page shows the hub it was opened from."),
  );
}

/** Shares in one click, then shows where: the room (with its invite), or the picker of rooms found
 * on the LAN when there are some to choose from first. */
export async function shareInOneClick(ctx, slot, args) {
  try {
    const result = await backend.shareNow(args);
    if (result && result.pick) {
      ctx.navigate("#/join");
      return;
    }
    const status = result && result.shared;
    if (status && status.code) {
      announce(`Sharing into ${status.roomName || status.code}`);
      ctx.navigate(`#/room/${encodeURIComponent(status.code)}`);
    }
  } catch (err) {
    if (slot) slot.appendChild(errorBox(backend.asError(err)));
  }
}

/** Shares into `room` on the LAN hub `hub` in one click (moving a running share there); a room with
 * a password opens the Share screen to ask for it. */
export async function shareInto(ctx, hub, room, slot) {
  if (room.passwordProtected) {
    preselectHub(hub.url);
    ctx.navigate(`#/join/${room.code}`);
    return;
  }
  try {
    const settings = await backend.getSettings();
    const status = await backend.startShare({ hub: hub.url, code: room.code, password: null, nickname: settings.nickname, model: "" });
    announce(`Sharing into ${room.name}`);
    if (status && status.code) ctx.navigate(`#/room/${encodeURIComponent(status.code)}`);
  } catch (err) {
    if (slot) slot.appendChild(errorBox(backend.asError(err)));
  }
}

/** Rooms found on the LAN, on hubs other than this computer's: [{ hub, room }]. */
async function lanRooms() {
  try {
    const hubs = await backend.discoveredHubs();
    const found = [];
    for (const hub of hubs || []) for (const room of hub.rooms || []) found.push({ hub, room });
    return found;
  } catch (_) {
    return [];
  }
}

/** Another computer running Gambi, as people know it: its name ("Lab hub", "maya-desktop"). */
export const hubLabel = (hub) => hub.name || hub.url.replace(/^https?:\/\//, "");

/** "Retry now" for a share waiting to reconnect: it tries at once instead of waiting. */
export function retryNowButton(slot) {
  return el(
    "button",
    {
      class: "btn btn-primary",
      type: "button",
      id: "retry-share",
      onclick: async (e) => {
        const button = e.currentTarget;
        button.disabled = true;
        try {
          await backend.shareNow();
          announce("Trying again now");
        } catch (err) {
          if (slot) slot.appendChild(errorBox(backend.asError(err)));
        }
        button.disabled = false;
      },
    },
    icon("refresh"),
    "Retry now",
  );
}

function shareCard(ctx) {
  const body = el("div", { class: "share-body" }, el("p", { class: "muted" }, "Checking…"));
  // One click into a room found on the LAN (or, while sharing, to move the share there).
  const picks = el("div", { class: "share-picks" });
  // Who is using this machine: what the share served, from the hub's counters.
  const served = el("p", { class: "muted small share-served", "aria-live": "polite" });
  const section = el(
    "section",
    { class: "panel", "aria-labelledby": "my-share-title" },
    el("h2", { id: "my-share-title", class: "panel-title" }, icon("share"), "My share"),
    body,
    served,
    picks,
  );
  let current = { state: "off" };
  let remembered = false;
  let lastPicks = "";
  const on = (s) => ["starting", "live", "paused", "reconnecting"].includes(s.state);

  const renderServed = async () => {
    const s = current;
    if (!on(s) || !s.code || !s.participantId) {
      served.textContent = "";
      return;
    }
    try {
      const people = await backend.listParticipants(s.code);
      const me = (people || []).find((p) => p.id === s.participantId);
      const st = me && me.stats;
      if (!st || !st.requests) {
        served.textContent = "No requests served yet.";
        return;
      }
      const bits = [`Served ${plural(st.requestsLast24h || 0, "request", "requests")} in the last 24 hours`];
      const last = Array.isArray(st.recentCallers) ? st.recentCallers[0] : null;
      if (last) bits.push(`last by ${last.caller} (${last.model}), ${relativeTime(last.at)}`);
      served.textContent = bits.join(" · ");
      served.title = Array.isArray(st.recentCallers) ? st.recentCallers.map((c) => `${c.caller} · ${c.model} · ${relativeTime(c.at)}`).join("\n") : "";
    } catch (_) {
      served.textContent = "";
    }
  };

  const renderPicks = async () => {
    const found = (await lanRooms()).filter(({ hub, room }) => !(on(current) && current.code === room.code && current.hub === hub.url));
    const key = JSON.stringify([current.state, current.code, remembered, found.map(({ hub, room }) => [hub.url, room.code, room.name])]);
    if (key === lastPicks) return;
    lastPicks = key;
    // First time with rooms on the LAN: they are the one-click choice; a returning person's own
    // button (the last room) stays the first.
    const primary = on(current) || !remembered;
    replaceChildren(
      picks,
      found.slice(0, 3).map(({ hub, room }) =>
        el(
          "button",
          {
            class: primary ? "btn btn-primary share-pick" : "btn share-pick",
            type: "button",
            onclick: (e) => {
              e.currentTarget.disabled = true;
              shareInto(ctx, hub, room, picks);
            },
          },
          icon("share"),
          on(current) ? `Move my share to ${room.name} on ${hubLabel(hub)}` : `Share into ${room.name} on ${hubLabel(hub)}`,
        ),
      ),
    );
    show(current);
  };

  const show = (status) => {
    const s = status || { state: "off" };
    current = s;
    const words = { off: "Not sharing", starting: "Starting…", live: "Sharing", paused: "Paused", reconnecting: "Reconnecting…", error: "Stopped" };
    const dot = s.state === "live" ? "online" : s.state === "off" ? "offline" : "busy";
    const lanFirst = !remembered && picks.childElementCount > 0;
    const stop = el(
      "button",
      {
        class: "btn",
        type: "button",
        onclick: async () => {
          try {
            show(await backend.stopShare());
            announce("Sharing stopped");
          } catch (err) {
            body.appendChild(errorBox(backend.asError(err)));
          }
        },
      },
      "Stop sharing",
    );
    replaceChildren(
      body,
      el("p", { class: "share-state" }, el("span", { class: `dot dot-${dot}`, "aria-hidden": "true" }), words[s.state] || s.state),
      s.state !== "off" && s.code
        ? el("p", null, "Room ", el("a", { href: `#/room/${encodeURIComponent(s.code)}` }, s.roomName || s.code), s.model ? ` · ${s.model}` : "")
        : null,
      s.message ? el("p", { class: "muted share-message", title: s.detail || null }, s.message) : null,
      s.state === "reconnecting"
        ? el("div", { class: "actions" }, retryNowButton(body), stop)
        : s.state === "off" || s.state === "error"
        ? el(
            "button",
            {
              class: lanFirst ? "btn" : "btn btn-primary",
              type: "button",
              id: "share-now",
              onclick: async (e) => {
                e.currentTarget.disabled = true;
                await shareInOneClick(ctx, body, lanFirst ? { newRoom: true } : undefined);
                e.currentTarget.disabled = false;
              },
            },
            icon("share"),
            lanFirst ? "Share into a new room on this computer" : "Share my Ollama",
          )
          : stop,
    );
  };
  backend.shareStatus().then(
    (s) => {
      show(s);
      renderPicks();
      renderServed();
    },
    (err) => replaceChildren(body, errorBox(backend.asError(err))),
  );
  backend
    .getSettings()
    .then((settings) => {
      remembered = Boolean(settings && Array.isArray(settings.rooms) && settings.rooms.length);
      lastPicks = "";
      renderPicks();
    })
    .catch(() => {});
  const stopStatus = backend.onShareStatus((s) => {
    show(s);
    renderServed();
    lastPicks = "";
    renderPicks();
  });
  const timer = ctx.caps.discovery ? setInterval(renderPicks, 3000) : null;
  const servedTimer = setInterval(renderServed, 5000);
  return {
    section,
    stop: () => {
      stopStatus();
      if (timer) clearInterval(timer);
      clearInterval(servedTimer);
    },
  };
}

function lanCard(ctx) {
  const list = el("div", { class: "lan-body" }, el("p", { class: "muted" }, "Looking for other computers running Gambi…"));
  const section = el(
    "section",
    { class: "panel", "aria-labelledby": "lan-title" },
    el("h2", { id: "lan-title", class: "panel-title" }, icon("wifi"), "Gambi on your network"),
    list,
  );
  const load = async () => {
    try {
      const [hubs, share] = await Promise.all([backend.discoveredHubs(), backend.shareStatus().catch(() => ({ state: "off" }))]);
      const sharing = share && ["live", "starting", "paused", "reconnecting"].includes(share.state);
      if (!hubs.length) {
        replaceChildren(list, el("p", { class: "muted" }, "No other computer running Gambi found yet. They appear here when someone on your network opens Gambi."));
        return;
      }
      replaceChildren(
        list,
        el(
          "ul",
          { class: "lan-list" },
          hubs.map((hub) =>
            el(
              "li",
              { class: "lan-hub" },
              el("p", { class: "lan-hub-name", title: hub.url }, hubLabel(hub), hub.name ? el("span", { class: "muted small" }, ` · ${hub.url.replace(/^https?:\/\//, "")}`) : null),
              (hub.rooms || []).length
                ? el(
                    "ul",
                    { class: "lan-rooms" },
                    hub.rooms.map((room) =>
                      el(
                        "li",
                        null,
                        el("span", null, room.name, " ", el("span", { class: "code-badge mono" }, room.code)),
                        sharing && share.code === room.code && share.hub === hub.url
                          ? el("span", { class: "muted small" }, "Your share is here")
                          : el(
                              "button",
                              {
                                class: "btn btn-sm",
                                type: "button",
                                onclick: (e) => {
                                  e.currentTarget.disabled = true;
                                  shareInto(ctx, hub, room, list);
                                },
                              },
                              sharing ? "Move my share here" : "Share here",
                            ),
                      ),
                    ),
                  )
                : el("p", { class: "muted small" }, "No rooms yet."),
            ),
          ),
        ),
      );
    } catch (err) {
      replaceChildren(list, errorBox(backend.asError(err)));
    }
  };
  load();
  const timer = setInterval(load, 10000);
  return { section, stop: () => clearInterval(timer) };
}

export function renderHome(root, ctx) {
  const status = el("p", { class: "page-sub", id: "hub-status" }, "Checking the hub…");
  const rooms = el("div", { id: "rooms", class: "rooms", "aria-busy": "true" });
  let lastJson = "";

  const head = el(
    "div",
    { class: "page-head" },
    el("div", null, el("h1", { class: "page-title" }, ctx.caps.share ? "Rooms on this computer" : "Rooms on this hub"), status),
    el("div", { class: "page-actions" }, openByCode(ctx), el("a", { class: "btn btn-primary", href: "#/create" }, icon("plus"), "Create room")),
  );

  const extras = el("div", { class: "grid-2" });
  const stops = [];
  if (ctx.caps.share) {
    const card = shareCard(ctx);
    extras.appendChild(card.section);
    stops.push(card.stop);
  }
  if (ctx.caps.discovery) {
    const card = lanCard(ctx);
    extras.appendChild(card.section);
    stops.push(card.stop);
  }
  if (!ctx.caps.share && !ctx.caps.discovery) extras.appendChild(browserShareNote(ctx));

  replaceChildren(root, head, el("section", { "aria-labelledby": "rooms-title" }, el("h2", { id: "rooms-title", class: "sr-only" }, "Rooms"), rooms), extras);

  const load = async () => {
    try {
      const [health, list] = await Promise.all([backend.health(), backend.listRooms()]);
      const where = ctx.hub.url ? ctx.hub.url.replace(/^https?:\/\//, "") : "this hub";
      // A hub on loopback is this computer's alone: saying others reach it would be false.
      const onlyHere = /^(127\.|localhost[:/]|localhost$|\[::1\])/.test(where);
      status.textContent = ctx.caps.share
        ? onlyHere
          ? `Only this computer can reach it (${where}; Settings opens it to your network) · ${plural(list.length, "room", "rooms")}`
          : `Others reach it at ${where} · ${plural(list.length, "room", "rooms")}`
        : `Hub ${where} is running${health.version ? ` · v${health.version}` : ""} · ${plural(list.length, "room", "rooms")}`;
      status.className = "page-sub";
      const json = JSON.stringify(list.map((r) => [r.code, r.name, r.participantCount, r.passwordProtected, r.createdAt]));
      // Rebuild only when something changed, so focus and hover stay put between refreshes.
      if (json !== lastJson) {
        lastJson = json;
        const sorted = [...list].sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0));
        replaceChildren(rooms, sorted.length ? el("ul", { class: "room-grid" }, sorted.map(roomCard)) : emptyRooms(ctx));
      } else {
        // Keep "created … ago" fresh.
        for (const r of list) {
          const card = rooms.querySelector(`[data-code="${CSS.escape(String(r.code))}"] .created`);
          if (card) card.textContent = `created ${relativeTime(r.createdAt)}`;
        }
      }
      rooms.setAttribute("aria-busy", "false");
    } catch (err) {
      const e = backend.asError(err);
      status.textContent = e.message;
      status.className = "page-sub text-bad";
      lastJson = "";
      replaceChildren(rooms, errorBox(e));
      rooms.setAttribute("aria-busy", "false");
    }
  };
  load();
  const timer = setInterval(load, 5000);
  return () => {
    clearInterval(timer);
    for (const stop of stops) stop();
  };
}
