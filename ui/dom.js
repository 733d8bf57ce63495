// DOM helpers shared by every view. The one rule this file exists for: text that comes from the
// network (room names, nicknames, model names, GPU names, errors, event data) only ever becomes a
// text node or the value of a safe attribute. Nothing in the UI parses HTML from strings.

const SVG_NS = "http://www.w3.org/2000/svg";

// Attributes that could run code or load something when given a string. `el` refuses them.
const FORBIDDEN_ATTRS = new Set(["innerhtml", "outerhtml", "srcdoc", "style"]);

function safeUrl(value) {
  const text = String(value).trim();
  // Relative links, in-app routes and plain web addresses only: no javascript:, data:, vbscript:.
  if (/^[a-z][a-z0-9+.-]*:/i.test(text) && !/^(https?|mailto):/i.test(text)) return "#/";
  return text;
}

function append(parent, child) {
  if (child === null || child === undefined || child === false || child === true) return;
  if (Array.isArray(child)) {
    for (const c of child) append(parent, c);
    return;
  }
  if (child instanceof Node) {
    parent.appendChild(child);
    return;
  }
  parent.appendChild(document.createTextNode(String(child)));
}

function setAttrs(node, attrs) {
  if (!attrs) return;
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    const lower = key.toLowerCase();
    if (FORBIDDEN_ATTRS.has(lower)) throw new Error(`el: the attribute "${key}" is not allowed`);
    if (lower.startsWith("on")) {
      if (typeof value !== "function") throw new Error(`el: "${key}" must be a function`);
      node.addEventListener(lower.slice(2), value);
    } else if (key === "class") {
      node.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : String(value));
    } else if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) if (v !== null && v !== undefined) node.dataset[k] = String(v);
    } else if (key === "value" && "value" in node) {
      node.value = String(value);
    } else if (key === "checked" && "checked" in node) {
      node.checked = Boolean(value);
    } else if (lower === "href" || lower === "src" || lower === "action") {
      node.setAttribute(key, safeUrl(value));
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
}

/**
 * Creates an element. `attrs` sets attributes (functions under `on…` become listeners), and every
 * string or number among `children` becomes a text node: never markup.
 */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

/** Removes every child of `node`, then appends `children` (as `el` would). */
export function replaceChildren(node, ...children) {
  while (node.firstChild) node.removeChild(node.firstChild);
  append(node, children);
  return node;
}

// Icons: fixed path data, drawn with createElementNS. 24×24, stroked with currentColor.
const ICONS = {
  lock: ["M7 11V8a5 5 0 0 1 10 0v3", "M5 11h14v10H5z"],
  users: [
    "M16 21v-2a4 4 0 0 0-4-4H6a4 4 0 0 0-4 4v2",
    "M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8z",
    "M22 21v-2a4 4 0 0 0-3-3.87",
    "M16 3.13a4 4 0 0 1 0 7.75",
  ],
  copy: ["M9 9h11v11H9z", "M5 15H4V4h11v1"],
  check: ["M20 6 9 17l-5-5"],
  plus: ["M12 5v14", "M5 12h14"],
  arrowLeft: ["M19 12H5", "M12 19l-7-7 7-7"],
  refresh: ["M21 12a9 9 0 1 1-3-6.7L21 8", "M21 3v5h-5"],
  share: ["M4 12v8h16v-8", "M12 3v13", "M7 8l5-5 5 5"],
  wifi: ["M5 12.5a10 10 0 0 1 14 0", "M8.5 16a5 5 0 0 1 7 0", "M12 20h.01", "M2 9a15 15 0 0 1 20 0"],
  cpu: ["M6 6h12v12H6z", "M9 9h6v6H9z", "M9 2v4", "M15 2v4", "M9 18v4", "M15 18v4", "M2 9h4", "M2 15h4", "M18 9h4", "M18 15h4"],
  alert: ["M12 9v4", "M12 17h.01", "M10.3 3.9 1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z"],
  trash: ["M3 6h18", "M8 6V4h8v2", "M6 6l1 15h10l1-15"],
  terminal: ["M4 17l6-6-6-6", "M12 19h8"],
  list: ["M8 6h13", "M8 12h13", "M8 18h13", "M3 6h.01", "M3 12h.01", "M3 18h.01"],
  settings: [
    "M12 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6z",
    "M19.4 15a1.7 1.7 0 0 0 .3 1.8l.1.1a2 2 0 1 1-2.8 2.8l-.1-.1a1.7 1.7 0 0 0-1.8-.3 1.7 1.7 0 0 0-1 1.5V21a2 2 0 1 1-4 0v-.1a1.7 1.7 0 0 0-1.1-1.5 1.7 1.7 0 0 0-1.8.3l-.1.1a2 2 0 1 1-2.8-2.8l.1-.1a1.7 1.7 0 0 0 .3-1.8 1.7 1.7 0 0 0-1.5-1H3a2 2 0 1 1 0-4h.1a1.7 1.7 0 0 0 1.5-1.1 1.7 1.7 0 0 0-.3-1.8l-.1-.1a2 2 0 1 1 2.8-2.8l.1.1a1.7 1.7 0 0 0 1.8.3H9a1.7 1.7 0 0 0 1-1.5V3a2 2 0 1 1 4 0v.1a1.7 1.7 0 0 0 1 1.5 1.7 1.7 0 0 0 1.8-.3l.1-.1a2 2 0 1 1 2.8 2.8l-.1.1a1.7 1.7 0 0 0-.3 1.8V9a1.7 1.7 0 0 0 1.5 1H21a2 2 0 1 1 0 4h-.1a1.7 1.7 0 0 0-1.5 1z",
  ],
};

/** A decorative icon (hidden from screen readers: the text beside it says the same). */
export function icon(name, extraClass) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", extraClass ? `icon ${extraClass}` : "icon");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  for (const d of ICONS[name] || []) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.appendChild(path);
  }
  return svg;
}

// ---- Formatting -------------------------------------------------------------------------------

/** "just now", "12 s ago", "3 min ago", "2 h ago", "4 d ago". */
export function relativeTime(ms, now = Date.now()) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** "14:05:09": short and the same width everywhere, for logs and tables. */
export function clockTime(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

/** GiB as the hub reports them: "24 GB", "7.5 GB". */
export function gib(value) {
  if (typeof value !== "number" || !isFinite(value)) return null;
  const rounded = value >= 10 ? Math.round(value) : Math.round(value * 10) / 10;
  return `${rounded} GB`;
}

export function millis(value) {
  if (typeof value !== "number" || !isFinite(value)) return "—";
  if (value >= 10000) return `${(value / 1000).toFixed(1)} s`;
  return `${Math.round(value)} ms`;
}

export function perSecond(value) {
  if (typeof value !== "number" || !isFinite(value)) return "—";
  return `${value >= 100 ? Math.round(value) : value.toFixed(1)} tok/s`;
}

export function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

// ---- Live region and copy ---------------------------------------------------------------------

/** Says `message` to screen readers through the page's polite live region. */
export function announce(message) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A separate task, so the same sentence twice is announced twice.
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}

async function writeClipboard(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Denied (no user gesture, or a policy): fall back below.
    }
  }
  // Plain http on a LAN address is not a secure context; the old way still works there.
  const area = el("textarea", { class: "clipboard-helper", readonly: true, "aria-hidden": "true", tabindex: "-1" });
  area.value = text;
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

/** A button that copies `getText()` and says so. `label` names what is copied, for screen readers. */
export function copyButton(getText, label, options = {}) {
  const text = el("span", { class: "btn-label" }, options.text || "Copy");
  const button = el(
    "button",
    {
      type: "button",
      class: ["btn", options.primary ? "btn-primary" : "btn-ghost", "btn-copy", options.small !== false && "btn-sm"],
      "aria-label": `Copy ${label}`,
      onclick: async () => {
        const ok = await writeClipboard(typeof getText === "function" ? getText() : String(getText));
        button.classList.toggle("copied", ok);
        text.textContent = ok ? "Copied" : "Select and copy";
        announce(ok ? `${label} copied` : `Couldn't copy the ${label}; select it and copy by hand`);
        setTimeout(() => {
          button.classList.remove("copied");
          text.textContent = options.text || "Copy";
        }, 1800);
      },
    },
    icon("copy"),
    text,
  );
  return button;
}

/** A read-only value with a copy button: base URLs, codes, keys. */
export function copyField(label, value, options = {}) {
  const id = `f-${Math.random().toString(36).slice(2, 9)}`;
  const input = el("input", {
    id,
    class: ["input", "mono", options.secret && "secret"],
    type: options.secret ? "password" : "text",
    readonly: true,
    value,
    spellcheck: "false",
    onfocus: (e) => e.target.select(),
  });
  const controls = [input];
  if (options.secret) {
    const reveal = el("button", { type: "button", class: "btn btn-ghost btn-sm", "aria-pressed": "false" }, "Show");
    reveal.addEventListener("click", () => {
      const shown = input.type === "text";
      input.type = shown ? "password" : "text";
      reveal.textContent = shown ? "Show" : "Hide";
      reveal.setAttribute("aria-pressed", String(!shown));
    });
    controls.push(reveal);
  }
  controls.push(copyButton(() => input.value, label.toLowerCase()));
  return el(
    "div",
    { class: "field" },
    el("label", { class: "label", for: id }, label),
    el("div", { class: "copy-row" }, controls),
    options.help ? el("p", { class: "help" }, options.help) : null,
  );
}

/** A block of code with a copy button. */
export function codeBlock(code, label) {
  return el(
    "div",
    { class: "code" },
    el("pre", { tabindex: "0", "aria-label": label }, el("code", null, code)),
    el("div", { class: "code-actions" }, copyButton(() => code, label)),
  );
}

/** A plain-words error box: what happened, and what to do. */
export function errorBox(error, extra) {
  const message = (error && error.message) || "Something went wrong.";
  const hint = error && error.hint;
  return el(
    "div",
    { class: "notice notice-error", role: "alert" },
    icon("alert"),
    el("div", null, el("p", { class: "notice-title" }, message), hint ? el("p", null, hint) : null, extra || null),
  );
}

/** A status badge: a coloured dot and a word (the word is what assistive tech reads). */
export function statusDot(status) {
  const known = ["online", "busy", "paused", "offline"].includes(status) ? status : "offline";
  return el("span", { class: `dot dot-${known}`, "aria-hidden": "true" });
}
