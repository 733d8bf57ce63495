// How the UI talks to its backend. The rest of the UI imports only this module.
//
// Two implementations of one interface:
// - inside the desktop app (`window.__TAURI__` or `window.__TAURI_INTERNALS__` present): Tauri
//   commands and events, answered by the app's embedded hub, share and discovery;
// - in a plain browser: the hub's HTTP API on the same origin (`/v1/...`) and its SSE stream.
//
// ---------------------------------------------------------------------------------------------
// The contract for the desktop shell. Each command is called as `invoke(name, args)`; argument
// names are camelCase on this side (Tauri maps them to snake_case Rust parameters). A command
// that fails rejects with a plain sentence (a string) that the UI shows as is, or with
// `{ message, hint? }`.
//
//   command            args                                         resolves to
//   -----------------  -------------------------------------------  ------------------------------
//   capabilities       —                                            { share: bool, discovery: bool, settings: bool }
//   hub_info           —                                            { url: string|null, state: "running"|"loopback"|"off", version?: string }
//                                                                    url = the address other machines use (http://192.168.1.20:3000)
//   hub_health         —                                            { status: "ok", timestamp: ms, version?: string }
//   list_rooms         —                                            RoomSummary[]   (as GET /v1/rooms `data`)
//   create_room        { name: string, password: string|null }     { room: RoomSummary, hostId, hostToken }
//   get_room           { code, password: string|null }              RoomSummary, with `stats` (as GET /v1/rooms/:code `data`)
//                                                                    and `hubUrl`: the address others use for the hub holding it,
//                                                                    `isHost`: the app keeps the room's host token (it made it)
//   invite_qr          { code }                                     string: the SVG of the QR code of the room's invite
//                                                                    link, http://HUB/join/CODE (hub::invite::qr_svg);
//                                                                    optional: without it the Room screen shows no QR code
//   list_participants  { code, password: string|null }              Participant[]   (as GET /v1/rooms/:code/participants `data`)
//                                                                    (password: a protected room's password, or its host token)
//   delete_room        { code, hostToken: string|null }             { success: true }  (null: the token the app keeps)
//   subscribe_room     { code, password: string|null }              null — starts emitting "room-event" for that room
//   unsubscribe_room   { code }                                     null
//   share_status       —                                            ShareStatus
//   local_models       —                                            { provider: { kind: "ollama"|"lmstudio"|"openai", url },
//                                                                      models: [{ name, loaded: bool, vram?: GiB, size?: GiB }] }
//                                                                    (rejects with "Ollama isn't running …" when no server answers)
//   start_share        { hub: string|null, code, password: string|null, nickname, model }
//                                                                   ShareStatus     (hub null = this app's own hub)
//   share_now          { newRoom: bool }                            { shared: ShareStatus } | { pick: true }
//                                                                    "Share my Ollama" in one click: the last room, or a
//                                                                    new room on this app's hub (newRoom: always that);
//                                                                    pick: rooms found on the LAN are to be offered first;
//                                                                    while reconnecting: "Retry now", tries again at once
//   stop_share         —                                            ShareStatus
//   open_help          { page: "ollama"|"lmstudio" }                null — opens that download page in the system's browser
//   discovered_hubs    —                                            [{ url, name?, version?, rooms: RoomSummary[] }]
//   get_settings       —                                            Settings
//   save_settings      { settings: Settings }                       Settings
//
// Events the shell emits (Tauri `emit`, any target):
//   "room-event"    payload { id?: number, type, timestamp, roomCode, data }   — the /v1 SSE envelope,
//                   plus "connected" when forwarding starts and "stream.lagged" when events were lost
//   "share-status"  payload ShareStatus, whenever it changes
//
// ShareStatus = { state: "off"|"starting"|"live"|"paused"|"reconnecting"|"error", hub?: url, code?: string,
//                 roomName?: string, model?: string, participantId?: string, message?: sentence,
//                 detail?: what failed in the software's words (a tooltip),
//                 attempt?: number, retryInMs?: number (while reconnecting),
//                 ownHub: bool (the room is on this app's hub) }
// Settings    = { nickname, providerEndpoint: string|null, preferredModel: string|null,
//                 hubExposure: "lan"|"loopback"|"off", hubPort: number, notifications: bool,
//                 shareOnStart: bool, pauseWhileOwnerBusy: bool, allowedHosts: string[],
//                 corsOrigins: string[] }
// RoomSummary and Participant are the hub's public forms (shared/spec/PROTOCOL.md).
// ---------------------------------------------------------------------------------------------

/** An error the UI can show: `message` is a sentence, `hint` says what to do. */
export class BackendError extends Error {
  constructor(message, { hint = null, code = null, status = null } = {}) {
    super(message);
    this.name = "BackendError";
    this.hint = hint;
    this.code = code;
    this.status = status;
  }
}

const tauriGlobal = typeof window !== "undefined" ? window.__TAURI__ : undefined;
const tauriInternals = typeof window !== "undefined" ? window.__TAURI_INTERNALS__ : undefined;

/** "tauri" inside the desktop app, "http" in a plain browser. */
export const kind = tauriGlobal || tauriInternals ? "tauri" : "http";

// ---- Tauri ------------------------------------------------------------------------------------

function tauriError(err) {
  if (err instanceof BackendError) return err;
  if (typeof err === "string") return new BackendError(err);
  if (err && typeof err.message === "string") return new BackendError(err.message, { hint: err.hint || null, code: err.code || null });
  return new BackendError("The app couldn't do that. Try again, or restart Gambi.");
}

async function invoke(command, args) {
  const call = (tauriGlobal && tauriGlobal.core && tauriGlobal.core.invoke) || (tauriInternals && tauriInternals.invoke);
  if (!call) throw new BackendError("The app's backend isn't available. Restart Gambi.");
  try {
    return await call(command, args || {});
  } catch (err) {
    throw tauriError(err);
  }
}

/** Listens to a Tauri event; resolves to a function that stops listening. */
async function listen(event, handler) {
  if (tauriGlobal && tauriGlobal.event && tauriGlobal.event.listen) {
    return tauriGlobal.event.listen(event, (e) => handler(e.payload));
  }
  // Without `withGlobalTauri`, do what @tauri-apps/api's `listen` does.
  const id = tauriInternals.transformCallback((e) => handler(e.payload));
  const eventId = await invoke("plugin:event|listen", { event, target: { kind: "Any" }, handler: id });
  return async () => {
    const internals = window.__TAURI_EVENT_PLUGIN_INTERNALS__;
    if (internals && internals.unregisterListener) internals.unregisterListener(event, eventId);
    await invoke("plugin:event|unlisten", { event, eventId });
  };
}

const tauri = {
  capabilities: () => invoke("capabilities"),
  hubInfo: () => invoke("hub_info"),
  health: () => invoke("hub_health"),
  listRooms: () => invoke("list_rooms"),
  createRoom: ({ name, password }) => invoke("create_room", { name, password: password || null }),
  getRoom: (code) => invoke("get_room", { code, password: roomCredential(code) }),
  // The window may show only its own files and data: URLs, so the SVG comes back as text.
  async inviteQr(code) {
    const svg = await invoke("invite_qr", { code });
    return typeof svg === "string" && svg.includes("<svg") ? `data:image/svg+xml,${encodeURIComponent(svg)}` : null;
  },
  listParticipants: (code) => invoke("list_participants", { code, password: roomCredential(code) }),
  deleteRoom: (code, hostToken) => invoke("delete_room", { code, hostToken }),
  subscribe(code, onEvent, onState = () => {}) {
    let stopped = false;
    let unlisten = null;
    onState("connecting");
    listen("room-event", (payload) => {
      if (stopped || !payload || String(payload.roomCode || "").toUpperCase() !== code) return;
      if (payload.type === "connected") onState("live");
      onEvent(payload);
    })
      .then((stop) => {
        unlisten = stop;
        if (stopped) stop();
        return invoke("subscribe_room", { code, password: roomCredential(code) });
      })
      .then(() => {
        if (!stopped) onState("live");
      })
      .catch(() => {
        if (!stopped) onState("closed");
      });
    return () => {
      stopped = true;
      if (unlisten) unlisten();
      invoke("unsubscribe_room", { code }).catch(() => {});
    };
  },
  shareStatus: () => invoke("share_status"),
  localModels: () => invoke("local_models"),
  startShare: ({ hub = null, code, password = null, nickname, model }) =>
    invoke("start_share", { hub, code, password: password || null, nickname, model }),
  shareNow: ({ newRoom = false } = {}) => invoke("share_now", { newRoom }),
  openHelp: (page) => invoke("open_help", { page }).catch(() => {}),
  stopShare: () => invoke("stop_share"),
  onShareStatus(handler) {
    let unlisten = null;
    let stopped = false;
    listen("share-status", handler).then((stop) => {
      unlisten = stop;
      if (stopped) stop();
    });
    return () => {
      stopped = true;
      if (unlisten) unlisten();
    };
  },
  discoveredHubs: () => invoke("discovered_hubs"),
  getSettings: () => invoke("get_settings"),
  saveSettings: (settings) => invoke("save_settings", { settings }),
};

// ---- Plain browser: the hub's HTTP API --------------------------------------------------------

const UNREACHABLE = () =>
  new BackendError("The hub isn't answering — is it still running?", {
    hint: "Start it again (gambi hub serve), then reload this page.",
    code: "HUB_UNREACHABLE",
  });

// The sentence for each /v1 error code the UI can meet; the envelope's own message and hint fill in
// the rest. `code` is the room the request was about, if any.
function friendly(errorBody, status, code) {
  const e = (errorBody && errorBody.error) || {};
  const hubCode = typeof e.code === "string" ? e.code : null;
  const message = typeof e.message === "string" ? e.message : null;
  const hint = typeof e.hint === "string" ? e.hint : null;
  switch (hubCode) {
    case "ROOM_NOT_FOUND":
      return new BackendError(code ? `Room ${code} isn't on this hub — check the code.` : "That room isn't on this hub — check the code.", {
        hint: "Room codes are 6 letters, digits, - or _, like K7QX2M. The room may also have been deleted.",
        code: hubCode,
        status,
      });
    case "INVALID_PASSWORD":
      return new BackendError("Wrong password.", { hint: hint || "Ask the room's host for the password.", code: hubCode, status });
    case "ROOM_PASSWORD_REQUIRED":
      return new BackendError("This room is password-protected.", {
        hint: "Enter its password to see who is in it and what happens there.",
        code: hubCode,
        status,
      });
    case "INVALID_HOST_TOKEN":
    case "HOST_TOKEN_REQUIRED":
      return new BackendError("Only the room's host can delete it, and this browser doesn't hold its host token.", {
        hint,
        code: hubCode,
        status,
      });
    default:
      break;
  }
  if (message) return new BackendError(message, { hint, code: hubCode, status });
  if (status >= 500) {
    return new BackendError("The hub ran into a problem.", { hint: "Try again in a moment; if it keeps happening, restart the hub.", status });
  }
  return new BackendError("The hub refused that request.", { hint: "Reload the page and try again.", status });
}

async function request(method, path, { body, headers, code } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { Accept: "application/json", ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...headers },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      cache: "no-store",
    });
  } catch {
    throw UNREACHABLE();
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  if (!response.ok) {
    // A proxy or a dead upstream answers 502/503/504 without the hub's envelope.
    if (!json && [502, 503, 504].includes(response.status)) throw UNREACHABLE();
    throw friendly(json, response.status, code);
  }
  if (!json || !("data" in json)) throw new BackendError("The hub sent an answer this page doesn't understand.", { hint: "Reload the page." });
  return json.data;
}

const roomPath = (code) => `v1/rooms/${encodeURIComponent(code)}`;

// Relative paths ("v1/rooms", not "/v1/rooms"), resolved against the page: the UI works whatever
// host name or address the hub was reached by.
const V1_EVENT_TYPES = [
  "connected",
  "room.created",
  "participant.joined",
  "participant.updated",
  "participant.left",
  "participant.offline",
  "llm.request",
  "llm.complete",
  "llm.error",
  "llm.rejected",
  "llm.queued",
  "stream.lagged",
];

const http = {
  async capabilities() {
    return { share: false, discovery: false, settings: false };
  },
  async hubInfo() {
    return { url: window.location.origin, state: "running" };
  },
  health: () => request("GET", "v1/health"),
  listRooms: () => request("GET", "v1/rooms"),
  createRoom: ({ name, password }) => request("POST", "v1/rooms", { body: password ? { name, password } : { name } }),
  // With a protected room's key, the hub adds the room's `stats`; without it, the summary alone.
  getRoom: (code) => request("GET", roomPath(code), { code, headers: credentialHeaders(code) }),
  listParticipants: (code) => request("GET", `${roomPath(code)}/participants`, { code, headers: credentialHeaders(code) }),
  // The hub draws the invite's QR code; the page is on the hub's origin, so a relative URL is it.
  inviteQr: async (code) => `join/${encodeURIComponent(code)}/qr.svg`,
  deleteRoom: (code, hostToken) =>
    request("DELETE", roomPath(code), { code, headers: { Authorization: `Bearer ${hostToken}` } }),
  subscribe(code, onEvent, onState = () => {}) {
    // The stream is read with fetch, not EventSource, so a protected room's password (or host
    // token) goes in the Authorization header. Like EventSource it reconnects by itself and sends
    // Last-Event-ID, so the hub replays what was missed; when the hub refuses the stream (the room
    // is gone, or its password is needed) it tells the caller and tries again later.
    let stopped = false;
    let retry = null;
    let controller = null;
    let lastId = null;
    const dispatch = (frame) => {
      if (!frame.data) return;
      let payload;
      try {
        payload = JSON.parse(frame.data);
      } catch {
        return;
      }
      if (!payload || typeof payload !== "object") return;
      payload.id = frame.id ? Number(frame.id) : undefined;
      if (frame.event === "connected") onState("live");
      if (V1_EVENT_TYPES.includes(frame.event)) onEvent(payload);
    };
    const read = async () => {
      controller = new AbortController();
      const headers = { Accept: "text/event-stream", ...credentialHeaders(code) };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(`${roomPath(code)}/events`, { headers, cache: "no-store", signal: controller.signal });
      if (!response.ok || !response.body) return response.status >= 400 && response.status < 500 ? "refused" : "dropped";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let frame = { event: "message", data: "", id: null };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return "dropped";
        buffer += value;
        let newline;
        while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
          if (line === "") {
            if (frame.id !== null) lastId = frame.id;
            dispatch(frame);
            frame = { event: "message", data: "", id: null };
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") frame.event = text;
          else if (field === "data") frame.data = frame.data ? `${frame.data}\n${text}` : text;
          else if (field === "id") frame.id = text;
        }
      }
    };
    const open = async () => {
      if (stopped) return;
      onState(lastId ? "reconnecting" : "connecting");
      let outcome;
      try {
        outcome = await read();
      } catch {
        outcome = "dropped";
      }
      if (stopped) return;
      if (outcome === "refused") {
        lastId = null;
        onState("closed");
        retry = setTimeout(open, 3000);
      } else {
        onState("reconnecting");
        retry = setTimeout(open, 1000);
      }
    };
    open();
    return () => {
      stopped = true;
      clearTimeout(retry);
      if (controller) controller.abort();
    };
  },
  async shareStatus() {
    return { state: "off" };
  },
  async localModels() {
    throw new BackendError("Only the Gambi desktop app can see this computer's model server.");
  },
  async startShare() {
    throw new BackendError("Sharing needs the Gambi desktop app.", {
      hint: "Or run gambi participant join on the computer whose model you want to share.",
    });
  },
  async openHelp() {},
  async shareNow() {
    throw new BackendError("Sharing needs the Gambi desktop app.", {
      hint: "Or run gambi participant join on the computer whose model you want to share.",
    });
  },
  async stopShare() {
    return { state: "off" };
  },
  onShareStatus() {
    return () => {};
  },
  async discoveredHubs() {
    return [];
  },
  async getSettings() {
    throw new BackendError("Settings belong to the Gambi desktop app.");
  },
  async saveSettings() {
    throw new BackendError("Settings belong to the Gambi desktop app.");
  },
};

const impl = kind === "tauri" ? tauri : http;

/** What this backend can do: `{ share, discovery, settings }` (all false in a browser). */
export async function capabilities() {
  try {
    const caps = await impl.capabilities();
    return { share: Boolean(caps && caps.share), discovery: Boolean(caps && caps.discovery), settings: Boolean(caps && caps.settings) };
  } catch {
    return { share: false, discovery: false, settings: false };
  }
}

/** Where this hub is, for the addresses the UI hands out: `{ url, state, version? }`. */
export const hubInfo = () => impl.hubInfo();
/** `{ status: "ok", timestamp, version? }`, or a BackendError when the hub isn't answering. */
export const health = () => impl.health();
/** The rooms on this hub: RoomSummary[]. */
export const listRooms = () => impl.listRooms();
/** `{ room, hostId, hostToken }`. */
export const createRoom = (args) => impl.createRoom(args);
export const getRoom = (code) => impl.getRoom(normalizeCode(code));
export const listParticipants = (code) => impl.listParticipants(normalizeCode(code));
/** An image URL of the QR code of room `code`'s invite link, or null when there is none to show. */
export const inviteQr = (code) => impl.inviteQr(normalizeCode(code)).catch(() => null);
export const deleteRoom = (code, hostToken) => impl.deleteRoom(normalizeCode(code), hostToken);
/**
 * Follows a room's live events. `onEvent({ type, timestamp, roomCode, data, id })` for each event;
 * `onState("connecting" | "live" | "reconnecting" | "closed")` as the link changes. Returns a
 * function that stops following.
 */
export const subscribe = (code, onEvent, onState) => impl.subscribe(normalizeCode(code), onEvent, onState);
export const shareStatus = () => impl.shareStatus();
export const localModels = () => impl.localModels();
export const startShare = (args) => impl.startShare({ ...args, code: normalizeCode(args.code) });
export const stopShare = () => impl.stopShare();
/** Opens where to get a model server ("ollama", "lmstudio") in the system's browser (the app). */
export const openHelp = (page) => impl.openHelp(page);
/** "Share my Ollama" in one click: `{ shared: ShareStatus }` or `{ pick: true }`. */
export const shareNow = (args) => impl.shareNow(args);
/** Calls `handler(ShareStatus)` on every change; returns a function that stops. */
export const onShareStatus = (handler) => impl.onShareStatus(handler);
export const discoveredHubs = () => impl.discoveredHubs();
export const getSettings = () => impl.getSettings();
export const saveSettings = (settings) => impl.saveSettings(settings);

/** A room code as the hub writes it: upper case, no spaces. */
export function normalizeCode(code) {
  return String(code || "").replace(/\s+/g, "").toUpperCase();
}

/** True for something that can be a room code: 6 of letters, digits, `-` and `_` (a TypeScript hub
 * hands out codes like B--JWY or MA_TPG). */
export function isRoomCode(code) {
  return /^[A-Z0-9_-]{6}$/.test(normalizeCode(code));
}

/** Turns anything thrown into a BackendError with a sentence. */
export function asError(err) {
  if (err instanceof BackendError) return err;
  if (err && typeof err.message === "string" && err.message) return new BackendError("Something went wrong in this page.", { hint: "Reload it and try again." });
  return new BackendError("Something went wrong.", { hint: "Reload the page and try again." });
}

// The password of protected rooms opened in this tab, asked once: a protected room's participants
// and events need it (or its host token). Session storage, like the host tokens below.
const ROOM_KEY = (code) => `gambi.roomKey.${normalizeCode(code)}`;

export function rememberRoomKey(code, key) {
  try {
    sessionStorage.setItem(ROOM_KEY(code), key);
  } catch {
    // Storage disabled: the password is asked again next time.
  }
}

export function roomKey(code) {
  try {
    return sessionStorage.getItem(ROOM_KEY(code));
  } catch {
    return null;
  }
}

export function forgetRoomKey(code) {
  try {
    sessionStorage.removeItem(ROOM_KEY(code));
  } catch {
    // Nothing to forget.
  }
}

/** What proves this tab may read a protected room: its password, else its host token. */
function roomCredential(code) {
  return roomKey(code) || hostToken(code) || null;
}

function credentialHeaders(code) {
  const credential = roomCredential(code);
  return credential ? { Authorization: `Bearer ${credential}` } : {};
}

// The host token of rooms created in this tab, so the room page can offer "Delete room". Session
// storage: it dies with the tab and never leaves this browser.
const HOST_TOKEN_KEY = (code) => `gambi.hostToken.${normalizeCode(code)}`;

export function rememberHostToken(code, token) {
  try {
    sessionStorage.setItem(HOST_TOKEN_KEY(code), token);
  } catch {
    // Storage disabled: the token is shown once anyway.
  }
}

export function hostToken(code) {
  try {
    return sessionStorage.getItem(HOST_TOKEN_KEY(code));
  } catch {
    return null;
  }
}

export function forgetHostToken(code) {
  try {
    sessionStorage.removeItem(HOST_TOKEN_KEY(code));
  } catch {
    // Nothing to forget.
  }
}
