// The Room screen's live activity: one row per request, newest first — when, who served it, who
// asked, the model, how it went, how fast — and a refused request (no one could take it) with the
// hub's sentence on a row of its own. Fed by the room's event stream (views/room.js).

import { clockTime, el, millis, perSecond } from "../dom.js";

const MAX_REQUESTS = 50;

/** 1 -> "1st", 2 -> "2nd", 11 -> "11th": a place in line. */
function ordinal(n) {
  if (typeof n !== "number") return "?";
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
  return `${n}${suffix}`;
}

/** The table, and what the Room screen tells it. `nameOf(participantId)` is a nickname. */
export function liveActivity(nameOf) {
  const requests = new Map(); // request id -> { id, at, participantId, model, caller, state, metrics, error, row, note }
  const body = el("tbody", { id: "activity-rows" });
  const empty = el("p", { class: "muted activity-empty" }, "Requests to the room appear here as they happen.");

  // What went wrong with a request, in a sentence: on a row of its own under the request, across
  // the whole table, so it reads as a sentence and not one word per line in a narrow column.
  const failureSentence = (r) => {
    if (r.state === "rejected") return r.error || "The room couldn't send it to anyone.";
    if (r.state !== "error") return null;
    return `${nameOf(r.participantId)} couldn't answer: ${r.error || "it failed"}${/[.!?]$/.test(r.error || "") ? "" : "."}`;
  };

  const draw = (r) => {
    const m = r.metrics || {};
    const result = {
      queued: () =>
        el("span", { class: "badge badge-warn", title: "Every place that serves this model was taken: it waits its turn" }, `waiting · ${ordinal(r.position)} in line`),
      pending: () => el("span", { class: "badge badge-busy" }, "running"),
      done: () => el("span", { class: "badge badge-ok" }, "done"),
      rejected: () => el("span", { class: "badge badge-bad", title: "The room didn't send it to anyone" }, "refused"),
    }[r.state];
    const tokens = typeof m.outputTokens === "number" ? String(m.outputTokens) : "—";
    const sentence = failureSentence(r);
    const who =
      r.state === "rejected"
        ? el("td", { class: "who muted" }, "No one")
        : r.state === "queued"
          ? el("td", { class: "who muted" }, "Not yet")
          : el("td", { class: "who", title: `Participant id: ${r.participantId}` }, nameOf(r.participantId));
    const row = el(
      "tr",
      { class: sentence ? "has-note" : null, dataset: { requestId: r.id, state: r.state } },
      el("td", { class: "mono small" }, clockTime(r.at)),
      who,
      el("td", { class: "caller mono small" }, r.caller || "—"),
      el("td", { class: "mono small model" }, r.model || "—"),
      el("td", null, result ? result() : el("span", { class: "badge badge-bad" }, "failed")),
      el("td", { class: "num ttft" }, r.state === "done" ? millis(m.ttftMs) : "—"),
      el("td", { class: "num tps" }, r.state === "done" ? perSecond(m.tokensPerSecond) : "—"),
      el("td", { class: "num" }, tokens),
      el("td", { class: "num" }, r.state === "done" ? millis(m.durationMs) : "—"),
    );
    const note = sentence
      ? el("tr", { class: "row-note", dataset: { noteFor: r.id } }, el("td", { colspan: "9" }, el("span", { class: "error-text" }, sentence)))
      : null;
    if (r.note) r.note.remove();
    if (r.row && r.row.parentNode) r.row.replaceWith(row);
    else body.insertBefore(row, body.firstChild);
    if (note) row.after(note);
    r.row = row;
    r.note = note;
    empty.hidden = true;
  };

  const keep = (r) => {
    requests.set(r.id, r);
    while (requests.size > MAX_REQUESTS) {
      const [oldest] = requests.keys();
      const gone = requests.get(oldest);
      if (gone.row) gone.row.remove();
      if (gone.note) gone.note.remove();
      requests.delete(oldest);
    }
  };

  const table = el(
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
          el("th", { scope: "col", title: "The address the request came from" }, "Caller"),
          el("th", { scope: "col" }, "Model"),
          el("th", { scope: "col" }, "Result"),
          el("th", { scope: "col", class: "num" }, el("abbr", { title: "How long the request waited for the first word of its answer" }, "First token")),
          el("th", { scope: "col", class: "num" }, el("abbr", { title: "Tokens (pieces of words) written per second" }, "Speed")),
          el("th", { scope: "col", class: "num" }, "Tokens"),
          el("th", { scope: "col", class: "num" }, "Duration"),
        ),
      ),
      body,
    ),
  );

  return {
    table,
    empty,
    /** An llm.request, llm.complete or llm.error: `change(r)` updates its row. True when it is new. */
    track(data, at, change) {
      const id = String(data.requestId || `${at}-${data.participantId}`);
      let r = requests.get(id);
      // New to the table, or out of the queue now: a request the room has begun to serve.
      const fresh = !r || r.state === "queued";
      if (!r) {
        r = { id, at, participantId: data.participantId, model: data.model, caller: null, state: "pending", row: null, note: null };
        keep(r);
      } else if (r.state === "queued") {
        r.state = "pending";
        r.participantId = data.participantId;
        if (typeof data.model === "string") r.model = data.model;
      }
      if (typeof data.caller === "string") r.caller = data.caller;
      change(r);
      draw(r);
      return fresh;
    },
    /** An llm.queued: a row that waits, until its llm.request (or llm.rejected) arrives. */
    queued(data, at) {
      const id = String(data.requestId || `${at}-queued`);
      const r = requests.get(id) || { id, at, participantId: null, caller: null, row: null, note: null };
      r.state = "queued";
      r.model = typeof data.model === "string" ? data.model : null;
      r.caller = typeof data.caller === "string" ? data.caller : null;
      r.position = typeof data.position === "number" ? data.position : null;
      keep(r);
      draw(r);
      return r;
    },
    /** An llm.rejected: a row of its own, with the hub's sentence. */
    rejected(data, at) {
      // A wait that ran out: its waiting row gives way to the refusal.
      const waited = requests.get(String(data.requestId || ""));
      if (waited) {
        if (waited.row) waited.row.remove();
        if (waited.note) waited.note.remove();
        requests.delete(waited.id);
      }
      const r = {
        id: String(data.requestId || `${at}-rejected`),
        at,
        participantId: null,
        model: typeof data.model === "string" ? data.model : null,
        caller: typeof data.caller === "string" ? data.caller : null,
        state: "rejected",
        error: typeof data.message === "string" ? data.message : null,
        row: null,
        note: null,
      };
      keep(r);
      draw(r);
      return r;
    },
    /** Requests seen since the page opened (refusals and those still waiting aside). */
    seen: () => [...requests.values()].filter((r) => r.state !== "rejected" && r.state !== "queued").length,
    /** The answered ones, with their metrics. */
    answered: () => [...requests.values()].filter((r) => r.state === "done" && r.metrics),
  };
}
