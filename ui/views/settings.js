// Settings: only the desktop app has any (nickname, model server, hub exposure, notifications). In a
// plain browser this screen says so.

import * as backend from "../backend.js";
import { announce, el, errorBox, icon, replaceChildren } from "../dom.js";

function browserNote(root) {
  replaceChildren(
    root,
    el(
      "div",
      { class: "narrow" },
      el("div", { class: "page-head" }, el("div", null, el("h1", { class: "page-title" }, "Settings"))),
      el(
        "div",
        { class: "notice notice-info" },
        icon("settings"),
        el(
          "div",
          null,
          el("p", { class: "notice-title" }, "Settings belong to the Gambi desktop app."),
          el("p", null, "This page is served by a hub; the hub's own options are set where it runs (see gambi hub serve --help)."),
        ),
      ),
    ),
  );
  return null;
}

function check(id, label, checked, help) {
  const input = el("input", { id, type: "checkbox", checked });
  return {
    input,
    node: el("div", { class: "field check" }, input, el("label", { for: id }, label), help ? el("p", { class: "help" }, help) : null),
  };
}

function renderApp(root) {
  const body = el("div", null, el("p", { class: "muted" }, "Loading settings…"));
  replaceChildren(root, el("div", { class: "narrow" }, el("div", { class: "page-head" }, el("div", null, el("h1", { class: "page-title" }, "Settings"))), body));

  backend.getSettings().then(
    (s) => {
      const nickname = el("input", { id: "set-nickname", class: "input", value: s.nickname || "" });
      const endpoint = el("input", { id: "set-endpoint", class: "input mono", value: s.providerEndpoint || "", placeholder: "http://localhost:11434" });
      const model = el("input", { id: "set-model", class: "input mono", value: s.preferredModel || "" });
      const exposure = el(
        "select",
        { id: "set-exposure", class: "input" },
        el("option", { value: "lan" }, "On my network (others can find and use it)"),
        el("option", { value: "loopback" }, "Only this computer"),
        el("option", { value: "off" }, "Off"),
      );
      exposure.value = s.hubExposure || "lan";
      const port = el("input", { id: "set-port", class: "input mono", type: "number", min: "1", max: "65535", value: String(s.hubPort || 3000) });
      const list = (values) => (Array.isArray(values) ? values.join(", ") : "");
      const split = (text) => text.split(/[\s,]+/).map((v) => v.trim()).filter(Boolean);
      const hosts = el("input", { id: "set-hosts", class: "input mono", value: list(s.allowedHosts), placeholder: "gambi.example.org" });
      const origins = el("input", { id: "set-origins", class: "input mono", value: list(s.corsOrigins), placeholder: "http://localhost:5173" });
      const notifications = check("set-notifications", "Notifications", Boolean(s.notifications), "When a participant goes offline or comes back, and when your share drops or recovers.");
      const shareOnStart = check("set-share-on-start", "Share my model when Gambi starts", Boolean(s.shareOnStart));
      const ownerFirst = check("set-owner-first", "Pause sharing while I use Ollama myself", Boolean(s.pauseWhileOwnerBusy));
      const slot = el("div", { class: "error-slot", role: "status" });
      const field = (id, label, input, help) =>
        el("div", { class: "field" }, el("label", { class: "label", for: id }, label), input, help ? el("p", { class: "help" }, help) : null);
      replaceChildren(
        body,
        el(
          "form",
          {
            class: "panel form",
            onsubmit: async (e) => {
              e.preventDefault();
              replaceChildren(slot);
              const portNumber = Number(port.value);
              if (!Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65535) {
                slot.appendChild(errorBox({ message: "The port is a number from 1 to 65535." }));
                port.focus();
                return;
              }
              try {
                await backend.saveSettings({
                  ...s,
                  nickname: nickname.value.trim(),
                  providerEndpoint: endpoint.value.trim() || null,
                  preferredModel: model.value.trim() || null,
                  hubExposure: exposure.value,
                  hubPort: portNumber,
                  notifications: notifications.input.checked,
                  shareOnStart: shareOnStart.input.checked,
                  pauseWhileOwnerBusy: ownerFirst.input.checked,
                  allowedHosts: split(hosts.value),
                  corsOrigins: split(origins.value),
                });
                slot.appendChild(el("p", { class: "text-ok" }, "Saved."));
                announce("Settings saved");
              } catch (err) {
                slot.appendChild(errorBox(backend.asError(err)));
              }
            },
          },
          el("h2", { class: "panel-title" }, "Sharing"),
          field("set-nickname", "Nickname", nickname, "What others see next to your model."),
          field("set-endpoint", "Model server", endpoint, "Leave empty to find Ollama or LM Studio by itself."),
          field("set-model", "Preferred model", model),
          shareOnStart.node,
          ownerFirst.node,
          el("h2", { class: "panel-title" }, "Rooms on this computer"),
          field("set-exposure", "Who can use them", exposure, "Where this computer's Gambi can be reached: by others on your network, by this computer only, or not at all."),
          field("set-port", "Port", port, "3000, or the next free one."),
          field(
            "set-hosts",
            "Extra host names",
            hosts,
            "Gambi answers to this computer's addresses, its name and .local names. Add other names people reach it by (comma-separated).",
          ),
          field(
            "set-origins",
            "Web pages allowed to use it",
            origins,
            "Other web pages can't drive this computer's Gambi. Add the origin of a web app you trust, like http://localhost:5173 (comma-separated).",
          ),
          notifications.node,
          slot,
          el("div", { class: "actions" }, el("button", { class: "btn btn-primary", type: "submit" }, "Save")),
        ),
      );
    },
    (err) => replaceChildren(body, errorBox(backend.asError(err))),
  );
  return null;
}

export function renderSettings(root, ctx) {
  return ctx.caps.settings ? renderApp(root) : browserNote(root);
}
