// Create room: a name and an optional password, then everything to hand out — the code, an invite,
// the OpenAI base URL and key — and, once, the host token that deletes the room.

import * as backend from "../backend.js";
import { announce, copyButton, copyField, el, errorBox, icon, replaceChildren } from "../dom.js";

export function baseUrl(hubUrl, code) {
  return `${(hubUrl || window.location.origin).replace(/\/+$/, "")}/rooms/${code}/v1`;
}

function inviteText(room, hubUrl) {
  const hub = (hubUrl || window.location.origin).replace(/\/+$/, "");
  return [
    `Join my Gambi room "${room.name}": ${hub}/join/${room.code}`,
    `Room code: ${room.code}`,
    room.passwordProtected ? "Password: ask me for it" : null,
    "",
    `Share your model: gambi participant join --hub ${hub} --room ${room.code} --model <your model>${room.passwordProtected ? " --password <password>" : ""}`,
    `Use the room from code: OpenAI base URL ${baseUrl(hub, room.code)}, model "*"`,
  ]
    .filter((line) => line !== null)
    .join("\n");
}

/** The room's host token. In the app the person owns the hub, and the app keeps the token for
 * them: nothing to do. In a browser tab it is shown this once, with how to keep it. */
function hostTokenPanel(room, token, ctx) {
  if (ctx.caps.share) {
    return el(
      "section",
      { class: "panel", "aria-labelledby": "token-title", id: "host-token-panel", dataset: { kept: "app" } },
      el("h2", { id: "token-title", class: "panel-title" }, icon("users"), "You host this room"),
      el("p", null, "Gambi keeps the room's host token on this computer for you: the room's page can delete the room whenever you like, and there is nothing to copy or keep."),
      el(
        "details",
        { class: "host-token-details" },
        el("summary", null, "Show the host token"),
        el("p", { class: "help" }, `Only to delete the room from another computer: gambi room delete ${room.code} --host-token <this token>.`),
        copyField("Host token", token, { secret: true }),
      ),
    );
  }
  return el(
    "section",
    { class: "panel panel-warn", "aria-labelledby": "token-title", id: "host-token-panel", dataset: { kept: "tab" } },
    el("h2", { id: "token-title", class: "panel-title" }, icon("alert"), "Host token — keep it to delete the room later"),
    el(
      "p",
      null,
      "Whoever holds this token can delete the room for everyone, and the hub shows it only this once. ",
      "This tab remembers it until you close it, so the room's page offers “Delete room”.",
    ),
    el(
      "p",
      null,
      "To keep it longer, copy it into your password manager (or a note only you can read). With it, ",
      el("code", null, `gambi room delete ${room.code} --host-token <token>`),
      " deletes the room from any computer.",
    ),
    copyField("Host token", token, { secret: true }),
  );
}

function result(root, created, password, ctx) {
  const room = created.room;
  const hub = ctx.hub.url || window.location.origin;
  if (created.hostToken) backend.rememberHostToken(room.code, created.hostToken);
  const invite = inviteText(room, hub);
  const inviteId = "invite-text";
  const view = el(
    "div",
    { class: "stack" },
    el(
      "div",
      { class: "page-head" },
      el(
        "div",
        null,
        el("h1", { class: "page-title", tabindex: "-1" }, "Room created"),
        el("p", { class: "page-sub" }, `“${room.name}” is ready. Hand out its code; people share their models into it and call it like OpenAI.`),
      ),
    ),
    el(
      "section",
      { class: "panel created", "aria-labelledby": "code-title" },
      el("h2", { id: "code-title", class: "label" }, "Room code"),
      el(
        "div",
        { class: "big-code-row" },
        el("span", { class: "big-code mono", id: "created-code", dataset: { code: room.code } }, room.code),
        room.passwordProtected ? el("span", { class: "lock", title: "Password protected" }, icon("lock"), "Password protected") : null,
        copyButton(() => room.code, "room code", { small: false }),
      ),
      el(
        "div",
        { class: "field" },
        el("label", { class: "label", for: inviteId }, "Invite"),
        el("textarea", { id: inviteId, class: "input mono invite", readonly: true, rows: "8", spellcheck: "false", value: invite }),
        el("div", { class: "row-end" }, copyButton(() => invite, "invite", { small: false })),
      ),
    ),
    el(
      "section",
      { class: "panel", "aria-labelledby": "api-title" },
      el("h2", { id: "api-title", class: "panel-title" }, "Call the room like OpenAI"),
      copyField("OpenAI base URL", baseUrl(hub, room.code), { help: 'Use model "*" for any participant, "model:llama3" for a model, or a participant id.' }),
      room.passwordProtected
        ? copyField("API key", password, { secret: true, help: "The API key is the room password." })
        : copyField("API key", "gambi", { help: "This room has no password: any non-empty key works." }),
    ),
    created.hostToken ? hostTokenPanel(room, created.hostToken, ctx) : null,
    el(
      "div",
      { class: "actions" },
      el("a", { class: "btn btn-primary", href: `#/room/${encodeURIComponent(room.code)}`, id: "open-created-room" }, "Open the room"),
      el(
        "button",
        {
          class: "btn",
          type: "button",
          onclick: () => {
            replaceChildren(root);
            renderCreate(root, ctx);
            const first = root.querySelector("input");
            if (first) first.focus();
          },
        },
        "Create another",
      ),
    ),
  );
  replaceChildren(root, view);
  const title = root.querySelector("h1");
  if (title) title.focus();
  announce(`Room ${room.code} created`);
}

export function renderCreate(root, ctx) {
  const nameInput = el("input", {
    id: "room-name",
    name: "name",
    class: "input",
    required: true,
    maxlength: "100",
    autocomplete: "off",
    placeholder: "Friday hack night",
    "aria-describedby": "room-name-help",
  });
  const passwordInput = el("input", {
    id: "room-password",
    name: "password",
    class: "input",
    type: "password",
    autocomplete: "new-password",
    "aria-describedby": "room-password-help",
  });
  const errorSlot = el("div", { class: "error-slot" });
  const submit = el("button", { class: "btn btn-primary", type: "submit", id: "create-submit" }, icon("plus"), "Create room");
  let busy = false;

  const form = el(
    "form",
    {
      class: "panel form",
      id: "create-form",
      novalidate: true,
      onsubmit: async (e) => {
        e.preventDefault();
        if (busy) return;
        replaceChildren(errorSlot);
        const name = nameInput.value.trim();
        if (!name) {
          nameInput.setAttribute("aria-invalid", "true");
          errorSlot.appendChild(errorBox({ message: "Give the room a name.", hint: "Anything people will recognise, like “Team lab”." }));
          nameInput.focus();
          return;
        }
        nameInput.removeAttribute("aria-invalid");
        busy = true;
        submit.disabled = true;
        submit.setAttribute("aria-busy", "true");
        const password = passwordInput.value;
        try {
          const created = await backend.createRoom({ name, password: password || null });
          result(root, created, password, ctx);
        } catch (err) {
          errorSlot.appendChild(errorBox(backend.asError(err)));
          submit.disabled = false;
          submit.removeAttribute("aria-busy");
          busy = false;
        }
      },
    },
    el("div", { class: "field" }, el("label", { class: "label", for: "room-name" }, "Room name"), nameInput, el("p", { id: "room-name-help", class: "help" }, ctx.caps.share ? "Shown to everyone on your network who opens Gambi." : "Shown to everyone who opens this hub.")),
    el(
      "div",
      { class: "field" },
      el("label", { class: "label", for: "room-password" }, "Password ", el("span", { class: "optional" }, "(optional)")),
      passwordInput,
      el("p", { id: "room-password-help", class: "help" }, "With a password, sharing into the room and calling it both need it (it's the room's API key)."),
    ),
    errorSlot,
    el("div", { class: "actions" }, submit, el("a", { class: "btn btn-ghost", href: "#/" }, "Cancel")),
  );

  replaceChildren(
    root,
    el(
      "div",
      { class: "narrow" },
      el("div", { class: "page-head" }, el("div", null, el("h1", { class: "page-title" }, "Create a room"), el("p", { class: "page-sub" }, "A room pools the models people share into it behind one OpenAI-compatible address."))),
      form,
    ),
  );
  // Ready to type the name. (Moving between screens then puts focus on the title, for screen
  // readers; opened straight on this screen, it stays here.)
  nameInput.focus();
  return null;
}
