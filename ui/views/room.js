// Room: who is in it (health, specs, models, last seen), what they are doing (live requests with time
// to first token and tokens per second), the event log, and how to call the room from code. Kept
// live by the room's event stream; nothing here reloads the page.

import * as backend from "../backend.js";
import {
  announce,
  clockTime,
  codeBlock,
  copyField,
  el,
  errorBox,
  gib,
  icon,
  millis,
  perSecond,
  plural,
  relativeTime,
  replaceChildren,
  statusDot,
} from "../dom.js";
import { liveActivity } from "./activity.js";
import { baseUrl } from "./create.js";

const MAX_LOG = 100;
const STATUS_WORDS = { online: "Online", busy: "Busy", paused: "Paused", offline: "Offline" };

/** "Paused — model server stopped": a paused participant says why (the hub's words). */
function statusWords(p, status) {
  const reason = status === "paused" && typeof p.pausedReason === "string" ? p.pausedReason : "";
  return reason ? `${STATUS_WORDS[status]} — ${reason}` : STATUS_WORDS[status];
}
// What the log says for each kind of event, instead of the event's wire name.
const LOG_WORDS = {
  "participant.joined": "Joined",
  "participant.updated": "Changed",
  "participant.offline": "Offline",
  "participant.left": "Left",
  "llm.request": "Request",
  "llm.complete": "Answered",
  "llm.error": "Failed",
  "llm.rejected": "Refused",
  "llm.queued": "Waiting",
  "stream.lagged": "Missed",
};

/** Whether a participant can take requests now: the hub's own rule (hub::stats::is_online). */
function isOnline(p) {
  const c = p.connection || {};
  return (p.status === "online" || p.status === "busy") && (c.connected === true || c.kind === "direct");
}

// ---- Pieces -------------------------------------------------------------------------------------

function specsList(p) {
  const s = p.specs || {};
  const rows = [];
  const gpus = Array.isArray(s.gpus) && s.gpus.length > 1 ? s.gpus.map((g) => g.name).filter(Boolean).join(", ") : s.gpu;
  if (gpus) rows.push(["GPU", gpus]);
  if (gib(s.vram)) rows.push(["VRAM", gib(s.vram)]);
  if (gib(s.ram)) rows.push(["RAM", gib(s.ram)]);
  if (s.cpu) rows.push(["CPU", typeof s.cpuCores === "number" ? `${s.cpu} · ${s.cpuCores} cores` : s.cpu]);
  if (!rows.length) return el("p", { class: "muted small" }, "No machine specs reported.");
  return el(
    "dl",
    { class: "specs" },
    rows.map(([k, v]) => el("div", { class: "spec" }, el("dt", null, k), el("dd", null, v))),
  );
}

/** A share whose link to the room is not up yet: it is on its way, not serving. */
function connecting(p) {
  const c = p.connection || {};
  return c.kind !== "direct" && c.connected === false;
}

function connectionBadge(p) {
  const c = p.connection || {};
  if (c.kind === "direct") return el("span", { class: "badge", title: "Gambi calls its model server at its address" }, "by address");
  return null;
}

/** "Served 2 requests · last by 192.168.1.7, 2 min ago", from the hub's counters. */
function servedLine(p) {
  const s = p.stats;
  if (!s || !s.requests) return null;
  const last = Array.isArray(s.recentCallers) ? s.recentCallers[0] : null;
  const bits = [`Served ${plural(s.requests, "request", "requests")}`];
  if (last) bits.push(`last by ${last.caller}, ${relativeTime(last.at)}`);
  const callers = Array.isArray(s.recentCallers) ? s.recentCallers.map((c) => `${c.caller} · ${c.model} · ${clockTime(c.at)}`).join("\n") : "";
  return el("p", { class: "participant-served", title: callers ? `Recent callers:\n${callers}` : null }, bits.join(" · "));
}

function participantCard(p) {
  const status = STATUS_WORDS[p.status] ? p.status : "offline";
  const loaded = Array.isArray(p.loadedModels) ? p.loadedModels : [];
  return el(
    "li",
    { class: ["participant", `is-${status}`], dataset: { participantId: p.id, status } },
    el(
      "div",
      { class: "participant-head" },
      statusDot(status === "online" && connecting(p) ? "paused" : status),
      el("span", { class: "nickname", title: `Participant id: ${p.id}` }, p.nickname),
      status === "online" && connecting(p)
        ? el(
            "span",
            { class: ["status", "text-paused"], title: "Its link to the room is not up yet: the room sends it requests once it is" },
            "Connecting…",
          )
        : el("span", { class: ["status", `text-${status}`] }, statusWords(p, status)),
      // An offline participant's tunnel says nothing more (and may be stale from before it went).
      status === "offline" ? null : connectionBadge(p),
    ),
    el(
      "div",
      { class: "participant-model" },
      el("span", { class: "label-inline" }, "Model"),
      el("span", { class: "model mono" }, p.model),
    ),
    loaded.length
      ? el(
          "div",
          { class: "loaded" },
          el("span", { class: "label-inline" }, "Loaded"),
          el(
            "ul",
            { class: "chips" },
            loaded.map((m) => el("li", { class: "chip mono" }, m.name, gib(m.vram) ? el("span", { class: "muted" }, ` ${gib(m.vram)}`) : null)),
          ),
        )
      : null,
    specsList(p),
    servedLine(p),
    el(
      "div",
      { class: "participant-foot" },
      el("span", null, "Last seen ", el("span", { class: "last-seen", dataset: { ts: p.lastSeen || 0 } }, relativeTime(p.lastSeen))),
    ),
  );
}

function snippets(base, key) {
  return {
    curl: [
      `curl ${base}/chat/completions \\`,
      `  -H "Content-Type: application/json" \\`,
      `  -H "Authorization: Bearer ${key}" \\`,
      `  -d '{"model": "*", "messages": [{"role": "user", "content": "Hello!"}]}'`,
    ].join("\n"),
    Python: [
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url="${base}", api_key="${key}")`,
      "reply = client.chat.completions.create(",
      '    model="*",',
      '    messages=[{"role": "user", "content": "Hello!"}],',
      ")",
      "print(reply.choices[0].message.content)",
    ].join("\n"),
    JavaScript: [
      'import OpenAI from "openai";',
      "",
      `const client = new OpenAI({ baseURL: "${base}", apiKey: "${key}" });`,
      "const reply = await client.chat.completions.create({",
      '  model: "*",',
      '  messages: [{ role: "user", content: "Hello!" }],',
      "});",
      "console.log(reply.choices[0].message.content);",
    ].join("\n"),
  };
}

/** Accessible tabs: arrow keys move between them, only the selected one is in the tab order. */
function tabs(items) {
  const names = Object.keys(items);
  const tabButtons = [];
  const panels = [];
  const select = (i, focus) => {
    tabButtons.forEach((b, j) => {
      b.setAttribute("aria-selected", String(i === j));
      b.tabIndex = i === j ? 0 : -1;
      panels[j].hidden = i !== j;
    });
    if (focus) tabButtons[i].focus();
  };
  names.forEach((name, i) => {
    const id = `snippet-${name.toLowerCase()}`;
    tabButtons.push(
      el(
        "button",
        {
          type: "button",
          role: "tab",
          id: `${id}-tab`,
          class: "tab",
          "aria-controls": id,
          onclick: () => select(i, false),
          onkeydown: (e) => {
            const last = names.length - 1;
            const to = { ArrowRight: i === last ? 0 : i + 1, ArrowLeft: i === 0 ? last : i - 1, Home: 0, End: last }[e.key];
            if (to !== undefined) {
              e.preventDefault();
              select(to, true);
            }
          },
        },
        name,
      ),
    );
    panels.push(el("div", { role: "tabpanel", id, "aria-labelledby": `${id}-tab`, class: "tabpanel" }, codeBlock(items[name], `${name} snippet`)));
  });
  select(0, false);
  return el("div", { class: "tabs" }, el("div", { role: "tablist", "aria-label": "Code snippets", class: "tablist" }, tabButtons), panels);
}

function statTile(label, id, help) {
  const value = el("span", { class: "stat-value", id }, "—");
  return { node: el("div", { class: "stat", title: help || null }, el("span", { class: "stat-label" }, label), value), value };
}

// ---- The screen ---------------------------------------------------------------------------------

export function renderRoom(root, ctx) {
  const code = backend.normalizeCode(ctx.params[0]);
  const participants = new Map();
  const touched = new Map(); // participant id -> event sequence number that last changed it
  let eventSeq = 0;
  // Each try of a protected room's password is answered once: the list and the stream both refuse
  // a wrong one, and the second refusal must not wipe what the person has started typing.
  let tries = 0;
  let askedFor = -1;
  let room = null;
  // The hub's counters for the room (`stats` of GET /v1/rooms/:code): what it served before this
  // page opened too. Null when the hub gives none (an older hub, or a locked room).
  let hubStats = null;
  let statsTimer = null;
  // Until the first list arrives, an empty list means "not known yet", not "no one".
  let listed = false;
  let stopStream = null;
  let closed = false;
  const timers = [];

  const title = el("h1", { class: "page-title" }, "Room ", code);
  const lock = el("span", { class: "lock", hidden: true, title: "Password protected" }, icon("lock"), el("span", null, "Password protected"));
  const live = el("span", { class: "live", id: "live-state", dataset: { state: "connecting" }, role: "status" }, el("span", { class: "live-dot", "aria-hidden": "true" }), el("span", { class: "live-text" }, "Connecting…"));
  const headActions = el("div", { class: "page-actions" });
  const banner = el("div", { class: "banner-slot" });
  const list = el("ul", { class: "participants", id: "participants", "aria-live": "off" });
  const emptyTitle = el("p", { class: "empty-title" }, "No one is sharing into this room yet");
  const listEmpty = el(
    "div",
    { class: "empty small-empty" },
    emptyTitle,
    el("p", { class: "muted" }, "Share a model from the Gambi app, or with the command on the ", el("a", { href: `#/join/${code}` }, "Share a model"), " page."),
  );
  const invite = el("section", { class: "panel", "aria-labelledby": "invite-title" });
  const log = el("ol", { class: "log", id: "event-log" });
  const logEmpty = el("p", { class: "muted" }, "Waiting for events…");
  const connect = el("div", { class: "connect" });
  const endpoint = el("section", { class: "panel endpoint", "aria-label": "How to reach this room" });

  const stats = {
    online: statTile("Sharing", "stat-online", "Participants that can take requests now, of all the participants in the room"),
    requests: statTile("Requests", "stat-requests", "Requests this room has served, counted since Gambi started on the computer that holds the room"),
    ttft: statTile("Avg. first token", "stat-ttft", "How long a request waits for the first word of its answer, on average over the last 5 minutes"),
    tps: statTile("Avg. speed", "stat-tps", "How fast answers are written, in tokens (pieces of words) per second, on average over the last 5 minutes"),
  };

  const nameOf = (id) => {
    const p = participants.get(id);
    return p ? p.nickname : id;
  };
  const activity = liveActivity(nameOf);

  // -- Participants

  const renderParticipants = () => {
    const sorted = [...participants.values()].sort((a, b) => {
      const rank = { online: 0, busy: 0, paused: 1, offline: 2 };
      return (rank[a.status] ?? 2) - (rank[b.status] ?? 2) || String(a.nickname).localeCompare(String(b.nickname));
    });
    replaceChildren(list, sorted.map(participantCard));
    const online = sorted.filter(isOnline).length;
    // Who shared before counts the ones that left too, as the hub remembers them.
    const shared = Math.max(sorted.length, (hubStats && hubStats.participantsShared) || 0);
    listEmpty.hidden = !listed || online > 0;
    if (shared > 0) {
      emptyTitle.textContent = `No one is sharing right now — ${plural(shared, "person", "people")} shared earlier`;
    } else {
      emptyTitle.textContent = "No one is sharing into this room yet";
    }
    replaceChildren(stats.online.value, `${online} online`, el("span", { class: "stat-of" }, ` of ${sorted.length}`));
  };

  const upsertParticipant = (p) => {
    if (!p || typeof p.id !== "string") return;
    participants.set(p.id, p);
    touched.set(p.id, ++eventSeq);
  };

  const reloadParticipants = async () => {
    const since = eventSeq;
    const triesAtStart = tries;
    try {
      const fresh = await backend.listParticipants(code);
      const seen = new Set();
      for (const p of fresh) {
        seen.add(p.id);
        // An event newer than this request already told us more.
        if ((touched.get(p.id) || 0) > since) continue;
        participants.set(p.id, p);
      }
      for (const id of [...participants.keys()]) {
        if (!seen.has(id) && (touched.get(id) || 0) <= since) participants.delete(id);
      }
      listed = true;
      renderParticipants();
      if (banner.firstChild && banner.dataset.kind === "transient") replaceChildren(banner);
    } catch (err) {
      // A refusal of a password the person has since replaced says nothing about the new one.
      const refusal = backend.asError(err).code;
      if (triesAtStart !== tries && (refusal === "INVALID_PASSWORD" || refusal === "ROOM_PASSWORD_REQUIRED")) return;
      handleRoomError(err);
    }
  };

  // -- Activity

  const updateStats = () => {
    if (hubStats) {
      stats.requests.value.textContent = String(hubStats.requests || 0);
      stats.ttft.value.textContent = typeof hubStats.avgTtftMs === "number" ? millis(hubStats.avgTtftMs) : "—";
      stats.tps.value.textContent = typeof hubStats.avgTokensPerSecond === "number" ? perSecond(hubStats.avgTokensPerSecond) : "—";
      return;
    }
    // A hub that keeps no counters: what this page has seen is all there is, and it says so.
    const done = activity.answered();
    stats.requests.value.textContent = String(activity.seen());
    stats.requests.node.title = "Requests seen since this page opened";
    const avg = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
    const ttft = avg(done.map((r) => r.metrics.ttftMs).filter((x) => typeof x === "number"));
    const tps = avg(done.map((r) => r.metrics.tokensPerSecond).filter((x) => typeof x === "number"));
    stats.ttft.value.textContent = ttft === null ? "—" : millis(ttft);
    stats.tps.value.textContent = tps === null ? "—" : perSecond(tps);
  };

  const applyRoom = (r) => {
    room = r;
    hubStats = r && r.stats && typeof r.stats === "object" ? r.stats : null;
    updateStats();
    renderParticipants();
  };

  // The hub's counters move with each answer; read them again shortly after (once for a burst).
  const refreshStats = (delay = 400) => {
    if (statsTimer || closed) return;
    statsTimer = setTimeout(async () => {
      statsTimer = null;
      if (closed) return;
      try {
        applyRoom(await backend.getRoom(code));
      } catch {
        // The stream and the participant list report a lost hub or room.
      }
      // Each card says what its participant served, from the same counters.
      reloadParticipants();
    }, delay);
  };

  /** Shows an llm.request / llm.complete / llm.error in the activity; `change` updates it. */
  const trackRequest = (data, at, change) => {
    // The hub has counted a new one already; show it now, and let the next read confirm.
    if (activity.track(data, at, change) && hubStats) hubStats.requests = (hubStats.requests || 0) + 1;
    updateStats();
  };

  // -- Event log

  const addLog = (at, type, text, help = null) => {
    logEmpty.hidden = true;
    log.insertBefore(
      el("li", { class: "log-item", dataset: { type } }, el("time", { class: "mono small muted", datetime: new Date(at).toISOString() }, clockTime(at)), el("span", { class: "log-type small" }, LOG_WORDS[type] || "Event"), el("span", { class: "log-text", title: help }, text)),
      log.firstChild,
    );
    while (log.children.length > MAX_LOG) log.lastChild.remove();
  };

  // -- Events

  const onEvent = (event) => {
    if (closed || !event || typeof event.type !== "string") return;
    const at = typeof event.timestamp === "number" ? event.timestamp : Date.now();
    const data = event.data && typeof event.data === "object" ? event.data : {};
    switch (event.type) {
      case "connected":
        // A new stream (first, or after a reconnect the browser couldn't resume): start from the
        // hub's current state.
        reloadParticipants();
        return;
      case "participant.joined":
        upsertParticipant(data);
        renderParticipants();
        addLog(at, event.type, `${data.nickname} joined with ${data.model}`);
        announce(`${data.nickname} joined the room`);
        return;
      case "participant.updated": {
        const before = participants.get(data.id);
        upsertParticipant(data);
        renderParticipants();
        if (before && before.status !== data.status) {
          const back = { offline: "is back online", paused: "is serving again" }[before.status] || "is free again";
          const paused = `is paused (${typeof data.pausedReason === "string" ? data.pausedReason : "not serving"})`;
          const words = { online: back, busy: "is busy", paused, offline: "went offline" };
          addLog(at, event.type, `${data.nickname} ${words[data.status] || `is ${data.status}`}`);
          if (before.status === "offline") announce(`${data.nickname} is back online`);
        } else {
          addLog(at, event.type, `${data.nickname}'s details changed`);
        }
        return;
      }
      case "participant.offline": {
        const p = participants.get(data.participantId);
        if (p) participants.set(p.id, { ...p, status: "offline" });
        touched.set(data.participantId, ++eventSeq);
        renderParticipants();
        addLog(at, event.type, `${nameOf(data.participantId)} went offline`);
        announce(`${nameOf(data.participantId)} went offline`);
        return;
      }
      case "participant.left": {
        const name = nameOf(data.participantId);
        participants.delete(data.participantId);
        touched.set(data.participantId, ++eventSeq);
        renderParticipants();
        addLog(at, event.type, `${name} left`);
        return;
      }
      case "llm.request":
        trackRequest(data, at, () => {});
        addLog(at, event.type, `${nameOf(data.participantId)} got a request for ${data.model}${typeof data.caller === "string" ? ` from ${data.caller}` : ""}`);
        refreshStats();
        return;
      case "llm.complete":
        trackRequest(data, at, (r) => {
          r.state = "done";
          r.metrics = data.metrics || {};
        });
        {
          const m = data.metrics || {};
          const bits = [`${nameOf(data.participantId)} answered`, `first token ${millis(m.ttftMs)}`];
          if (typeof m.tokensPerSecond === "number") bits.push(perSecond(m.tokensPerSecond));
          addLog(at, event.type, bits.join(" · "), "First token: how long the request waited for the first word of its answer. tok/s: how fast the answer was written, in tokens (pieces of words) per second.");
        }
        refreshStats();
        return;
      case "llm.error":
        trackRequest(data, at, (r) => {
          r.state = "error";
          r.error = typeof data.error === "string" ? data.error : "failed";
          r.stage = typeof data.stage === "string" ? data.stage : null;
        });
        addLog(at, event.type, `${nameOf(data.participantId)} couldn't answer: ${data.error}`);
        refreshStats();
        return;
      case "llm.queued": {
        // Every place that serves the model is taken: the request waits its turn in the room.
        const r = activity.queued(data, at);
        const from = r.caller ? ` from ${r.caller}` : "";
        const place = typeof data.position === "number" ? ` (${data.position === 1 ? "next" : `${data.position} in line`})` : "";
        addLog(at, event.type, `A request for ${r.model || "a model"}${from} waits for a free place${place}`);
        return;
      }
      case "llm.rejected": {
        // Refused before anyone was asked (no one serves the model, everyone is busy): not served,
        // so not counted, but shown with the hub's sentence.
        const r = activity.rejected(data, at);
        const from = r.caller ? ` from ${r.caller}` : "";
        addLog(at, event.type, `A request for ${r.model || "a model"}${from} was turned away. ${r.error || "No one could take it."}`);
        return;
      }
      case "stream.lagged":
        addLog(at, event.type, "Some events were missed; the participant list was reloaded");
        reloadParticipants();
        return;
      default:
        return;
    }
  };

  const setLive = (state) => {
    const words = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", closed: "Disconnected", locked: "Locked" };
    live.dataset.state = state;
    live.querySelector(".live-text").textContent = words[state] || state;
    if (state === "closed" && !closed && banner.dataset.kind !== "locked") {
      checkRoomStillThere();
      // A stream refused for want of the password: the participant list tells (and asks).
      if (room && room.passwordProtected) reloadParticipants();
    }
  };

  // -- Errors

  function handleRoomError(err) {
    const e = backend.asError(err);
    if (e.code === "ROOM_NOT_FOUND") {
      roomGone(room ? `Room ${code} is gone — its host deleted it, or it expired.` : e.message, e.hint);
      return;
    }
    if (e.code === "ROOM_PASSWORD_REQUIRED" || (e.code === "INVALID_PASSWORD" && room && room.passwordProtected)) {
      askPassword(e.code === "INVALID_PASSWORD");
      return;
    }
    // Cleared by the next successful reload (the hub came back).
    banner.dataset.kind = "transient";
    replaceChildren(banner, errorBox(e));
  }

  // A protected room shows who is in it only to those who know its password: asked once, then
  // kept for this tab.
  function askPassword(wrong) {
    if (banner.dataset.kind === "locked" && askedFor === tries) return;
    askedFor = tries;
    backend.forgetRoomKey(code);
    if (stopStream) stopStream();
    stopStream = null;
    setLive("locked");
    const input = el("input", {
      id: "room-password",
      class: "input",
      type: "password",
      autocomplete: "current-password",
      "aria-label": "Room password",
    });
    const form = el(
      "form",
      {
        class: "unlock",
        id: "unlock-room",
        onsubmit: (ev) => {
          ev.preventDefault();
          const password = input.value;
          if (!password) {
            input.focus();
            return;
          }
          tries += 1;
          backend.rememberRoomKey(code, password);
          banner.dataset.kind = "";
          replaceChildren(banner);
          reloadParticipants();
          refreshStats(0);
          if (!stopStream) stopStream = backend.subscribe(code, onEvent, setLive);
        },
      },
      input,
      el("button", { class: "btn btn-primary", type: "submit" }, "Show the room"),
    );
    banner.dataset.kind = "locked";
    replaceChildren(
      banner,
      errorBox(
        {
          message: wrong ? "Wrong password." : "This room is password-protected.",
          hint: "Enter its password to see who is in it and what happens there. It is kept in this tab only.",
        },
        form,
      ),
    );
    input.focus();
  }

  async function checkRoomStillThere() {
    try {
      await backend.getRoom(code);
      if (banner.dataset.kind !== "locked") replaceChildren(banner);
    } catch (err) {
      handleRoomError(err);
    }
  }

  function roomGone(message, hint) {
    closed = true;
    if (stopStream) stopStream();
    stopStream = null;
    live.hidden = true;
    replaceChildren(
      root,
      el(
        "div",
        { class: "narrow" },
        el("a", { class: "back", href: "#/" }, icon("arrowLeft"), "All rooms"),
        el("h1", { class: "page-title", tabindex: "-1" }, "Room ", code),
        errorBox({ message, hint: room ? null : hint }, el("p", null, el("a", { href: "#/" }, ctx.caps.share ? "See the rooms on this computer" : "See the rooms on this hub"))),
      ),
    );
  }

  // -- Host actions

  // The host token this tab was given when it made the room; in the app, the one the app keeps
  // for a room it made (`isHost`: the command needs no token then).
  let deleteShown = false;
  const deleteControls = (appKeepsToken) => {
    const token = backend.hostToken(code) || null;
    if (deleteShown || (!token && !appKeepsToken)) return;
    deleteShown = true;
    const confirmBox = el("div", { class: "confirm", hidden: true, role: "group", "aria-label": "Confirm deleting the room" });
    const del = el("button", { class: "btn btn-danger", type: "button", id: "delete-room" }, icon("trash"), "Delete room");
    del.addEventListener("click", () => {
      del.hidden = true;
      confirmBox.hidden = false;
      confirmBox.querySelector("button").focus();
    });
    replaceChildren(
      confirmBox,
      el("span", null, `Delete ${code} for everyone?`),
      el(
        "button",
        {
          class: "btn btn-danger btn-sm",
          type: "button",
          onclick: async () => {
            try {
              await backend.deleteRoom(code, token);
              backend.forgetHostToken(code);
              announce(`Room ${code} deleted`);
              closed = true;
              ctx.navigate("#/");
            } catch (err) {
              banner.dataset.kind = "action";
              replaceChildren(banner, errorBox(backend.asError(err)));
            }
          },
        },
        "Delete",
      ),
      el(
        "button",
        {
          class: "btn btn-ghost btn-sm",
          type: "button",
          onclick: () => {
            confirmBox.hidden = true;
            del.hidden = false;
            del.focus();
          },
        },
        "Cancel",
      ),
    );
    headActions.append(del, confirmBox);
  };

  // -- Layout

  replaceChildren(
    root,
    el("a", { class: "back", href: "#/" }, icon("arrowLeft"), "All rooms"),
    el(
      "div",
      { class: "page-head" },
      el("div", null, title, el("div", { class: "room-sub" }, el("span", { class: "code-badge mono", id: "room-code" }, code), lock, live)),
      headActions,
    ),
    banner,
    endpoint,
    invite,
    el("div", { class: "stats" }, Object.values(stats).map((s) => s.node)),
    el(
      "div",
      { class: "room-grid-layout" },
      el(
        "div",
        { class: "col-main" },
        el("section", { class: "panel", "aria-labelledby": "participants-title" }, el("h2", { id: "participants-title", class: "panel-title" }, icon("users"), "Participants"), list, listEmpty),
      ),
      el(
        "div",
        { class: "col-side" },
        el("section", { class: "panel", "aria-labelledby": "log-title" }, el("h2", { id: "log-title", class: "panel-title" }, icon("list"), "Event log"), logEmpty, log),
      ),
    ),
    // The whole width: nine columns fit a 980-pixel window without scrolling sideways.
    el("section", { class: "panel", "aria-labelledby": "activity-title", id: "activity-panel" }, el("h2", { id: "activity-title", class: "panel-title" }, icon("cpu"), "Live activity"), activity.table, activity.empty),
    el("section", { class: "panel", "aria-labelledby": "connect-title" }, el("h2", { id: "connect-title", class: "panel-title" }, icon("terminal"), "Call this room from code"), connect),
  );
  listEmpty.hidden = true;
  updateStats();
  deleteControls(false);

  // Every URL shown or copied is built from the hub that holds the room: in the app, the room says
  // which (`hubUrl`: this computer's hub, or another hub on the network); on a hub's own page, it
  // is the page's hub.
  const hubBase = () => (room && typeof room.hubUrl === "string" && room.hubUrl) || ctx.hub.url;

  const renderConnect = () => {
    const base = baseUrl(hubBase(), code);
    const key = room && room.passwordProtected ? "<room password>" : "gambi";
    const keyNote = room && room.passwordProtected ? "API key: the room's password." : "API key: anything non-empty (the room has no password).";
    replaceChildren(endpoint, copyField("OpenAI base URL", base, { help: `${keyNote} Model "*" picks any participant.` }));
    replaceChildren(
      connect,
      el(
        "p",
        { class: "help" },
        'Any OpenAI client works. Model "*" picks any available participant, "model:NAME" one that serves that model, and a participant id that participant. ',
        keyNote,
      ),
      tabs(snippets(base, key)),
    );
  };
  renderConnect();

  // -- The invite: a link anyone can open (the hub's /join/CODE page), and its QR code.

  const inviteLink = () => `${(hubBase() || window.location.origin).replace(/\/+$/, "")}/join/${code}`;
  const qr = el("img", { class: "qr", id: "room-qr", alt: "QR code of the invite link", width: "148", height: "148", hidden: true });
  const renderInvite = () => replaceChildren(
    invite,
    el("h2", { id: "invite-title", class: "panel-title" }, icon("users"), "Invite people"),
    el(
      "div",
      { class: "room-invite" },
      el(
        "div",
        null,
        copyField("Invite link", inviteLink(), { help: "Anyone who opens it sees how to share a model into this room, or use it from code. Scan the code with a phone or a laptop nearby." }),
      ),
      qr,
    ),
  );
  renderInvite();
  backend.inviteQr(code).then((src) => {
    if (closed || !src) return;
    // Set as a property: the URL is the hub's own QR image (or a data: URL of its SVG, which an
    // <img> shows without running anything), not text from the network.
    qr.src = src;
    qr.hidden = false;
  });

  // -- Start

  backend.getRoom(code).then(
    (r) => {
      if (closed) return;
      applyRoom(r);
      deleteControls(r.isHost === true);
      replaceChildren(title, r.name);
      document.title = `${r.name} · Gambi`;
      lock.hidden = !r.passwordProtected;
      renderConnect();
      renderInvite();
      stopStream = backend.subscribe(code, onEvent, setLive);
    },
    (err) => handleRoomError(err),
  );

  // Heartbeats don't produce events, so "last seen" comes from a periodic reload; the relative
  // times tick in between.
  timers.push(
    setInterval(() => {
      const now = Date.now();
      for (const node of list.querySelectorAll(".last-seen")) node.textContent = relativeTime(Number(node.dataset.ts), now);
    }, 5000),
  );
  timers.push(
    setInterval(() => {
      if (!closed && room) refreshStats(0);
    }, 15000),
  );

  return () => {
    closed = true;
    for (const t of timers) clearInterval(t);
    if (statsTimer) clearTimeout(statsTimer);
    if (stopStream) stopStream();
    document.title = "Gambi";
  };
}

