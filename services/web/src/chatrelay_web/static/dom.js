// The page's fixed elements, and small DOM helpers every module uses.

const $ = (id) => document.getElementById(id);

export const el = {
  sidebar: $("sidebar"), scrim: $("scrim"), menu: $("menu"), closeDrawer: $("close-drawer"),
  newChat: $("new-chat"), recentList: $("recent-list"), recentEmpty: $("recent-empty"),
  logout: $("logout"), modelLabel: $("model-label"), demoBadge: $("demo-badge"),
  conn: $("conn"), connLabel: $("conn-label"), settingsBtn: $("settings-btn"),
  clearBtn: $("clear-btn"), settings: $("settings"), settingsForm: $("settings-form"),
  setSystem: $("set-system"), setModel: $("set-model"), setTemperature: $("set-temperature"),
  modelOptions: $("model-options"),
  settingsStatus: $("settings-status"), settingsCancel: $("settings-cancel"),
  scroller: $("scroller"), messages: $("messages"), empty: $("empty"), fatal: $("fatal"),
  composer: $("composer"), input: $("input"), send: $("send"), stop: $("stop"),
  toast: $("toast"),
};

// Touch devices get no auto-focus: the on-screen keyboard would cover the conversation.
export const touch = window.matchMedia("(pointer: coarse)").matches || navigator.maxTouchPoints > 0;

export function button(label, action, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `btn tiny ${cls === "primary" ? "" : "ghost"} ${cls || ""}`.replace(/\s+/g, " ").trim();
  b.dataset.action = action;
  b.textContent = label;
  return b;
}

// Only touch the DOM when something changes (fewer mutations, no needless style work).
export function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

let toastTimer = null;
export function toast(text) {
  el.toast.textContent = text;
  el.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.toast.hidden = true; }, 4000);
}
