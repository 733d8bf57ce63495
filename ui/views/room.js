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
  relativeTime,
  replaceChildren,
  statusDot,
} from "../dom.js";
import { baseUrl } from "./create.js";

const MAX_REQUESTS = 50;
const MAX_LOG = 100;
const STATUS_WORDS = { online: "Online", busy: "Busy", paused: "Paused", offline: "Offline" };

/** "Paused — model server stopped": a paused participant says why (the hub's words). */
function statusWords(p, status) {
  const reason = status === "paused" && typeof p.pausedReason === "string" ? p.pausedReason : "";
  return reason ? `${STATUS_WORDS[status]} — ${reason}` : STATUS_WORDS[status];
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

function connectionBadge(p) {
  const c = p.connection || {};
  if (c.kind === "direct") return el("span", { class: "badge", title: "The hub calls this participant's server directly" }, "direct");
  if (c.connected) return el("span", { class: "badge badge-ok", title: "Its tunnel to the hub is open" }, "tunnel up");
  return el("span", { class: "badge badge-warn", title: "No open tunnel: the hub can't route requests to it yet" }, "no tunnel");
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
      statusDot(status),
      el("span", { class: "nickname" }, p.nickname),
      el("span", { class: ["status", `text-${status}`] }, statusWords(p, status)),
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
    el(
      "div",
      { class: "participant-foot" },
      el("span", null, "Last seen ", el("span", { class: "last-seen", dataset: { ts: p.lastSeen || 0 } }, relativeTime(p.lastSeen))),
      el("span", { class: "mono muted small participant-id" }, p.id),
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

function statTile(label, id) {
  const value = el("span", { class: "stat-value", id }, "—");
  return { node: el("div", { class: "stat" }, el("span", { class: "stat-label" }, label), value), value };
}

// ---- The screen ---------------------------------------------------------------------------------

export function renderRoom(root, ctx) {
  const code = backend.normalizeCode(ctx.params[0]);
  const participants = new Map();
  const touched = new Map(); // participant id -> event sequence number that last changed it
  const requests = new Map(); // request id -> { at, participantId, model, state, metrics, error, row }
  let eventSeq = 0;
  // Each try of a protected room's password is answered once: the list and the stream both refuse
  // a wrong one, and the second refusal must not wipe what the person has started typing.
  let tries = 0;
  let askedFor = -1;
  let room = null;
  let stopStream = null;
  let closed = false;
  const timers = [];

  const title = el("h1", { class: "page-title" }, "Room ", code);
  const lock = el("span", { class: "lock", hidden: true, title: "Password protected" }, icon("lock"), el("span", null, "Password protected"));
  const live = el("span", { class: "live", id: "live-state", dataset: { state: "connecting" }, role: "status" }, el("span", { class: "live-dot", "aria-hidden": "true" }), el("span", { class: "live-text" }, "Connecting…"));
  const headActions = el("div", { class: "page-actions" });
  const banner = el("div", { class: "banner-slot" });
  const list = el("ul", { class: "participants", id: "participants", "aria-live": "off" });
  const listEmpty = el(
    "div",
    { class: "empty small-empty" },
    el("p", { class: "empty-title" }, "No one is sharing into this room yet"),
    el("p", { class: "muted" }, "Share a model from the Gambi app, or with the command on the ", el("a", { href: `#/join/${code}` }, "Share a model"), " page."),
  );
  const activityBody = el("tbody", { id: "activity-rows" });
  const activityEmpty = el("p", { class: "muted activity-empty" }, "Requests to the room appear here as they happen.");
  const log = el("ol", { class: "log", id: "event-log" });
  const logEmpty = el("p", { class: "muted" }, "Waiting for events…");
  const connect = el("div", { class: "connect" });
  const endpoint = el("section", { class: "panel endpoint", "aria-label": "How to reach this room" });

  const stats = {
    online: statTile("Online", "stat-online"),
    requests: statTile("Requests", "stat-requests"),
    ttft: statTile("Avg. first token", "stat-ttft"),
    tps: statTile("Avg. speed", "stat-tps"),
  };

  const nameOf = (id) => {
    const p = participants.get(id);
    return p ? p.nickname : id;
  };

  // -- Participants

  const renderParticipants = () => {
    const sorted = [...participants.values()].sort((a, b) => {
      const rank = { online: 0, busy: 0, paused: 1, offline: 2 };
      return (rank[a.status] ?? 2) - (rank[b.status] ?? 2) || String(a.nickname).localeCompare(String(b.nickname));
    });
    replaceChildren(list, sorted.map(participantCard));
    listEmpty.hidden = sorted.length > 0;
    const online = sorted.filter((p) => p.status !== "offline").length;
    stats.online.value.textContent = `${online} / ${sorted.length}`;
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
    const done = [...requests.values()].filter((r) => r.state === "done" && r.metrics);
    stats.requests.value.textContent = String(requests.size);
    const avg = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
    const ttft = avg(done.map((r) => r.metrics.ttftMs).filter((x) => typeof x === "number"));
    const tps = avg(done.map((r) => r.metrics.tokensPerSecond).filter((x) => typeof x === "number"));
    stats.ttft.value.textContent = ttft === null ? "—" : millis(ttft);
    stats.tps.value.textContent = tps === null ? "—" : perSecond(tps);
  };

  const requestRow = (r) => {
    const m = r.metrics || {};
    const result =
      r.state === "pending"
        ? el("span", { class: "badge badge-busy" }, "running")
        : r.state === "done"
          ? el("span", { class: "badge badge-ok" }, "done")
          : el("span", { class: "badge badge-bad", title: r.error || "" }, "failed");
    const tokens = typeof m.outputTokens === "number" ? String(m.outputTokens) : "—";
    const row = el(
      "tr",
      { dataset: { requestId: r.id, state: r.state } },
      el("td", { class: "mono small" }, clockTime(r.at)),
      el("td", { class: "who" }, nameOf(r.participantId)),
      el("td", { class: "mono small" }, r.model || "—"),
      el("td", null, result, r.state === "error" && r.error ? el("span", { class: "error-text small" }, ` ${r.stage ? `${r.stage}: ` : ""}${r.error}`) : null),
      el("td", { class: "num ttft" }, r.state === "done" ? millis(m.ttftMs) : "—"),
      el("td", { class: "num tps" }, r.state === "done" ? perSecond(m.tokensPerSecond) : "—"),
      el("td", { class: "num" }, tokens),
      el("td", { class: "num" }, r.state === "done" ? millis(m.durationMs) : "—"),
    );
    if (r.row && r.row.parentNode) r.row.replaceWith(row);
    else activityBody.insertBefore(row, activityBody.firstChild);
    r.row = row;
  };

  const trackRequest = (data, at, change) => {
    const id = String(data.requestId || `${at}-${data.participantId}`);
    let r = requests.get(id);
    if (!r) {
      r = { id, at, participantId: data.participantId, model: data.model, state: "pending", row: null };
      requests.set(id, r);
      while (requests.size > MAX_REQUESTS) {
        const [oldest] = requests.keys();
        const gone = requests.get(oldest);
        if (gone.row) gone.row.remove();
        requests.delete(oldest);
      }
    }
    change(r);
    requestRow(r);
    activityEmpty.hidden = true;
    updateStats();
  };

  // -- Event log

  const addLog = (at, type, text) => {
    logEmpty.hidden = true;
    log.insertBefore(
      el("li", { class: "log-item", dataset: { type } }, el("time", { class: "mono small muted", datetime: new Date(at).toISOString() }, clockTime(at)), el("span", { class: "log-type mono small" }, type), el("span", { class: "log-text" }, text)),
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
          addLog(at, event.type, `${data.nickname} updated`);
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
        addLog(at, event.type, `${nameOf(data.participantId)} got a request for ${data.model}`);
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
          addLog(at, event.type, bits.join(" · "));
        }
        return;
      case "llm.error":
        trackRequest(data, at, (r) => {
          r.state = "error";
          r.error = typeof data.error === "string" ? data.error : "failed";
          r.stage = typeof data.stage === "string" ? data.stage : null;
        });
        addLog(at, event.type, `${nameOf(data.participantId)} failed: ${data.error}`);
        return;
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
        errorBox({ message, hint: room ? null : hint }, el("p", null, el("a", { href: "#/" }, "See the rooms on this hub"))),
      ),
    );
  }

  // -- Host actions

  const deleteControls = () => {
    const token = backend.hostToken(code);
    if (!token) return;
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

  const activityTable = el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "activity", id: "activity" },
      el("caption", { class: "sr-only" }, "Recent requests, newest first"),
      el(
        "thead",
        null,
        el(
          "tr",
          null,
          el("th", { scope: "col" }, "Time"),
          el("th", { scope: "col" }, "Participant"),
          el("th", { scope: "col" }, "Model"),
          el("th", { scope: "col" }, "Result"),
          el("th", { scope: "col", class: "num" }, el("abbr", { title: "Time to first token" }, "TTFT")),
          el("th", { scope: "col", class: "num" }, "Speed"),
          el("th", { scope: "col", class: "num" }, "Tokens"),
          el("th", { scope: "col", class: "num" }, "Duration"),
        ),
      ),
      activityBody,
    ),
  );

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
    el("div", { class: "stats" }, Object.values(stats).map((s) => s.node)),
    el(
      "div",
      { class: "room-grid-layout" },
      el(
        "div",
        { class: "col-main" },
        el("section", { class: "panel", "aria-labelledby": "participants-title" }, el("h2", { id: "participants-title", class: "panel-title" }, icon("users"), "Participants"), list, listEmpty),
        el("section", { class: "panel", "aria-labelledby": "activity-title" }, el("h2", { id: "activity-title", class: "panel-title" }, icon("cpu"), "Live activity"), activityTable, activityEmpty),
      ),
      el(
        "div",
        { class: "col-side" },
        el("section", { class: "panel", "aria-labelledby": "log-title" }, el("h2", { id: "log-title", class: "panel-title" }, icon("list"), "Event log"), logEmpty, log),
      ),
    ),
    el("section", { class: "panel", "aria-labelledby": "connect-title" }, el("h2", { id: "connect-title", class: "panel-title" }, icon("terminal"), "Call this room from code"), connect),
  );
  listEmpty.hidden = true;
  updateStats();
  deleteControls();

  const renderConnect = () => {
    const base = baseUrl(ctx.hub.url, code);
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

  // -- Start

  backend.getRoom(code).then(
    (r) => {
      if (closed) return;
      room = r;
      replaceChildren(title, r.name);
      document.title = `${r.name} · Gambi`;
      lock.hidden = !r.passwordProtected;
      renderConnect();
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
      if (!closed && room) reloadParticipants();
    }, 15000),
  );

  return () => {
    closed = true;
    for (const t of timers) clearInterval(t);
    if (stopStream) stopStream();
    document.title = "Gambi";
  };
}

