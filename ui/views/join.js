// Join / Share: put this computer's model server into a room. It works inside the desktop app; in
// a plain browser it explains that, and builds the `gambi participant join` command instead.

import * as backend from "../backend.js";
import { announce, codeBlock, el, errorBox, gib, icon, replaceChildren } from "../dom.js";
import { hubLabel, retryNowButton, shareInOneClick, shareInto } from "./home.js";

// A hub picked on Home ("Join" on a room found on the LAN), for the next render of this screen.
let pendingHub = null;

export function preselectHub(url) {
  pendingHub = url;
}

/** Quotes `value` for a POSIX shell when it needs it. */
function shellWord(value) {
  if (/^[A-Za-z0-9_./:@%+=,-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, "'\\''")}'`;
}

function field(id, label, input, help) {
  return el("div", { class: "field" }, el("label", { class: "label", for: id }, label), input, help ? el("p", { class: "help", id: `${id}-help` }, help) : null);
}

function wide(node) {
  node.classList.add("field-wide");
  return node;
}

function codeInput(initial) {
  return el("input", {
    id: "join-code",
    name: "code",
    class: "input mono code-input",
    autocomplete: "off",
    autocapitalize: "characters",
    spellcheck: "false",
    maxlength: "6",
    placeholder: "K7QX2M",
    value: initial || "",
    required: true,
  });
}

function renderBrowser(root, ctx) {
  const hub = (ctx.hub.url || window.location.origin).replace(/\/+$/, "");
  const code = codeInput(backend.normalizeCode(ctx.params[0] || ""));
  const model = el("input", { id: "join-model", class: "input mono", value: "llama3", autocomplete: "off", spellcheck: "false" });
  const nickname = el("input", { id: "join-nickname", class: "input", autocomplete: "nickname", placeholder: "Your name" });
  const roomInfo = el("p", { class: "help", id: "join-room-info", "aria-live": "polite" });
  const commandSlot = el("div");
  let protectedRoom = false;
  let lookup = 0;

  const update = () => {
    const c = backend.normalizeCode(code.value) || "CODE";
    const parts = ["gambi", "participant", "join", "--hub", hub, "--room", c, "--model", shellWord(model.value.trim() || "llama3")];
    if (nickname.value.trim()) parts.push("--nickname", shellWord(nickname.value.trim()));
    if (protectedRoom) parts.push("--password", "'<room password>'");
    replaceChildren(commandSlot, codeBlock(parts.join(" "), "share command"));
  };

  const checkRoom = async () => {
    const c = backend.normalizeCode(code.value);
    const mine = ++lookup;
    protectedRoom = false;
    if (!backend.isRoomCode(c)) {
      roomInfo.textContent = c ? "A room code is 6 letters, digits, - or _." : "";
      update();
      return;
    }
    try {
      const room = await backend.getRoom(c);
      if (mine !== lookup) return;
      protectedRoom = Boolean(room.passwordProtected);
      roomInfo.textContent = `Room “${room.name}”${protectedRoom ? " — it needs the password" : ""}.`;
    } catch (err) {
      if (mine !== lookup) return;
      roomInfo.textContent = backend.asError(err).message;
    }
    update();
  };

  code.addEventListener("input", checkRoom);
  model.addEventListener("input", update);
  nickname.addEventListener("input", update);

  replaceChildren(
    root,
    el(
      "div",
      { class: "narrow" },
      pageHead("Share a model"),
      el(
        "div",
        { class: "notice notice-info" },
        icon("share"),
        el(
          "div",
          null,
          el("p", { class: "notice-title" }, "Sharing needs the Gambi desktop app or the gambi command."),
          el("p", null, "A web page can't reach the model server on your computer. Open the Gambi app and click “Share my Ollama”, or run the command below on the computer whose model you want to share."),
        ),
      ),
      el(
        "section",
        { class: "panel form", "aria-labelledby": "cmd-title" },
        el("h2", { id: "cmd-title", class: "panel-title" }, icon("terminal"), "Share from a terminal"),
        el(
          "div",
          { class: "form-grid" },
          field("join-code", "Room code", code),
          field("join-model", "Model", model, "As your model server names it (ollama list)."),
          field("join-nickname", "Nickname", nickname, "Optional: what others see."),
        ),
        roomInfo,
        commandSlot,
        el("p", { class: "help" }, "It finds Ollama on localhost:11434 or LM Studio on localhost:1234 by itself; add --endpoint URL for another server. Stop sharing with Ctrl-C."),
      ),
    ),
  );
  checkRoom();
  return null;
}

function renderApp(root, ctx) {
  const hubSelect = el("select", { id: "join-hub", class: "input" }, el("option", { value: "" }, "This computer"));
  const shortUrl = (url) => url.replace(/^https?:\/\//, "");
  const code = codeInput(backend.normalizeCode(ctx.params[0] || ""));
  const password = el("input", { id: "join-password", class: "input", type: "password", autocomplete: "current-password" });
  const nickname = el("input", { id: "join-nickname", class: "input", autocomplete: "nickname", required: true });
  const model = el("select", { id: "join-model", class: "input", required: true, disabled: true }, el("option", { value: "" }, "Looking for your model server…"));
  const modelSlot = el("div", { class: "error-slot" });
  const errorSlot = el("div", { class: "error-slot" });
  const statusSlot = el("div", { class: "share-status", role: "status" });
  const submit = el("button", { class: "btn btn-primary", type: "submit" }, icon("share"), "Start sharing");
  const wantedHub = pendingHub;
  pendingHub = null;
  // Until a model server answers, it is looked for again every few seconds: one started after
  // the window opened is noticed without a click.
  let modelRetry = null;
  const pickerSlot = el("div", { class: "error-slot" });
  const picker = el("section", { class: "panel", "aria-labelledby": "pick-title", hidden: true });

  const loadModels = async () => {
    clearTimeout(modelRetry);
    modelRetry = null;
    const quiet = model.options.length === 1 && model.options[0].textContent === "Model server not found";
    if (!quiet) replaceChildren(modelSlot);
    model.disabled = true;
    try {
      const found = await backend.localModels();
      const models = (found && found.models) || [];
      if (!models.length) {
        replaceChildren(model, el("option", { value: "" }, "No models found"));
        modelSlot.appendChild(errorBox({ message: "Your model server has no models yet.", hint: "Pull one first (for example: ollama pull llama3), then try again." }));
        return;
      }
      replaceChildren(
        model,
        models.map((m) => {
          const bits = [m.name];
          if (m.loaded) bits.push("loaded");
          const vram = gib(m.vram);
          if (vram) bits.push(`${vram} VRAM`);
          else if (gib(m.size)) bits.push(gib(m.size));
          return el("option", { value: m.name }, bits.join(" · "));
        }),
      );
      const loaded = models.find((m) => m.loaded);
      if (loaded) model.value = loaded.name;
      model.disabled = false;
    } catch (err) {
      replaceChildren(model, el("option", { value: "" }, "Model server not found"));
      const e = backend.asError(err);
      replaceChildren(
        modelSlot,
        errorBox(
          e,
          el(
            "p",
            { class: "help" },
            el("button", { class: "btn btn-sm", type: "button", onclick: () => backend.openHelp("ollama") }, "Get Ollama"),
            " ",
            el("button", { class: "btn btn-sm", type: "button", onclick: () => backend.openHelp("lmstudio") }, "Or LM Studio"),
            " — this screen notices it as soon as it runs.",
          ),
        ),
      );
      modelRetry = setTimeout(loadModels, 3000);
    }
  };

  // One click: a room found on the LAN, or a new room on this computer.
  let pickerKey = null;
  const loadPicker = async () => {
    let hubs = [];
    let share = { state: "off" };
    try {
      [hubs, share] = await Promise.all([backend.discoveredHubs(), backend.shareStatus().catch(() => ({ state: "off" }))]);
    } catch (_) {
      hubs = [];
    }
    const sharing = ["starting", "live", "paused", "reconnecting"].includes(share && share.state);
    const choices = [];
    for (const hub of hubs) {
      for (const room of hub.rooms || []) {
        // Not the room this computer already shares into.
        if (!(sharing && share.code === room.code && share.hub === hub.url)) choices.push({ hub, room });
      }
    }
    // Drawn again only when what it offers changes.
    const key = JSON.stringify([sharing, choices.map(({ hub, room }) => [hub.url, room.code, room.name])]);
    if (key === pickerKey) return;
    pickerKey = key;
    replaceChildren(
      picker,
      el("h2", { id: "pick-title", class: "panel-title" }, icon("share"), "Share in one click"),
      choices.length
        ? el(
            "ul",
            { class: "lan-rooms pick-list" },
            choices.map(({ hub, room }) =>
              el(
                "li",
                null,
                el(
                  "button",
                  {
                    class: "btn btn-primary pick-room",
                    type: "button",
                    onclick: (e) => {
                      e.currentTarget.disabled = true;
                      shareInto(ctx, hub, room, pickerSlot);
                    },
                  },
                  icon("share"),
                  sharing ? `Move my share to ${room.name} on ${hubLabel(hub)}` : `Share into ${room.name} on ${hubLabel(hub)}`,
                  room.passwordProtected ? el("span", { class: "sr-only" }, " (needs its password)") : null,
                ),
              ),
            ),
          )
        : null,
      el(
        "button",
        {
          class: choices.length ? "btn" : "btn btn-primary",
          type: "button",
          id: "share-new-room",
          onclick: async (e) => {
            e.currentTarget.disabled = true;
            await shareInOneClick(ctx, pickerSlot, { newRoom: true });
            e.currentTarget.disabled = false;
          },
        },
        icon("plus"),
        "Share into a new room on this computer",
      ),
      pickerSlot,
      el("p", { class: "help" }, "Or type a room code below."),
    );
    picker.hidden = false;
  };

  const showStatus = (s) => {
    if (!s || s.state === "off") {
      replaceChildren(statusSlot);
      submit.hidden = false;
      return;
    }
    const words = { starting: "Starting…", live: "Sharing", paused: "Paused", reconnecting: "Reconnecting…", error: "Stopped" };
    const dot = s.state === "live" ? "online" : s.state === "error" ? "offline" : "busy";
    submit.hidden = s.state !== "error";
    replaceChildren(
      statusSlot,
      el(
        "div",
        { class: "panel" },
        el("p", { class: "share-state" }, el("span", { class: `dot dot-${dot}`, "aria-hidden": "true" }), words[s.state] || s.state, s.code ? ` · ${s.roomName || `room ${s.code}`}` : "", s.model ? ` · ${s.model}` : ""),
        s.message ? el("p", { class: "muted share-message", title: s.detail || null }, s.message) : null,
        s.state === "reconnecting" ? retryNowButton(statusSlot) : null,
        s.state !== "error"
          ? el(
              "button",
              {
                class: "btn",
                type: "button",
                onclick: async () => {
                  try {
                    showStatus(await backend.stopShare());
                    announce("Sharing stopped");
                  } catch (err) {
                    statusSlot.appendChild(errorBox(backend.asError(err)));
                  }
                },
              },
              "Stop sharing",
            )
          : null,
      ),
    );
  };

  const form = el(
    "form",
    {
      class: "panel form",
      novalidate: true,
      onsubmit: async (e) => {
        e.preventDefault();
        replaceChildren(errorSlot);
        const c = backend.normalizeCode(code.value);
        if (!backend.isRoomCode(c)) {
          errorSlot.appendChild(errorBox({ message: "A room code is 6 letters, digits, - or _, like K7QX2M." }));
          code.focus();
          return;
        }
        if (!nickname.value.trim()) {
          errorSlot.appendChild(errorBox({ message: "Give yourself a nickname, so others know whose model it is." }));
          nickname.focus();
          return;
        }
        if (!model.value) {
          errorSlot.appendChild(errorBox({ message: "Pick a model to share." }));
          return;
        }
        submit.disabled = true;
        try {
          const status = await backend.startShare({
            hub: hubSelect.value || null,
            code: c,
            password: password.value || null,
            nickname: nickname.value.trim(),
            model: model.value,
          });
          showStatus(status);
          announce(`Sharing ${model.value} into room ${c}`);
        } catch (err) {
          errorSlot.appendChild(errorBox(backend.asError(err)));
        } finally {
          submit.disabled = false;
        }
      },
    },
    el(
      "div",
      { class: "form-grid" },
      wide(field("join-hub", "Where the room is", hubSelect, "Other computers running Gambi on your network appear here.")),
      field("join-code", "Room code", code),
      field("join-password", "Password", password, "Only if the room has one."),
      field("join-nickname", "Nickname", nickname),
    ),
    field("join-model", "Model", model, "From the model server on this computer; “loaded” models answer fastest."),
    modelSlot,
    errorSlot,
    el("div", { class: "actions" }, submit),
  );

  replaceChildren(
    root,
    el(
      "div",
      { class: "narrow" },
      pageHead("Share my model"),
      statusSlot,
      picker,
      form,
    ),
  );

  backend
    .discoveredHubs()
    .then((hubs) => {
      for (const hub of hubs) hubSelect.appendChild(el("option", { value: hub.url, title: hub.url }, hub.name ? `${hub.name} · ${shortUrl(hub.url)}` : shortUrl(hub.url)));
      if (wantedHub) hubSelect.value = wantedHub;
    })
    .catch(() => {});
  backend
    .getSettings()
    .then((s) => {
      if (s && s.nickname && !nickname.value) nickname.value = s.nickname;
    })
    .catch(() => {});
  backend.shareStatus().then(showStatus, () => {});
  const offerPicker = !backend.normalizeCode(ctx.params[0] || "");
  const stop = backend.onShareStatus((s) => {
    showStatus(s);
    if (offerPicker) loadPicker();
  });
  loadModels();
  if (offerPicker) loadPicker();
  return () => {
    clearTimeout(modelRetry);
    stop();
  };
}

export function renderJoin(root, ctx) {
  return ctx.caps.share ? renderApp(root, ctx) : renderBrowser(root, ctx);
}

/** The screen's title over its one-line purpose. */
function pageHead(title) {
  return el(
    "div",
    { class: "page-head" },
    el("div", null, el("h1", { class: "page-title" }, title), el("p", { class: "page-sub" }, "Lend this computer's Ollama or LM Studio to a room.")),
  );
}
