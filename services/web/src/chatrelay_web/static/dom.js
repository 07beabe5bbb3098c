// The page's fixed elements, and small DOM helpers every module uses.

const $ = (id) => document.getElementById(id);

export const el = {
  sidebar: $("sidebar"), scrim: $("scrim"), menu: $("menu"), closeDrawer: $("close-drawer"),
  newChat: $("new-chat"), recentList: $("recent-list"), recentEmpty: $("recent-empty"),
  recentMore: $("recent-more"), search: $("history-search"), account: $("account"),
  whoami: $("whoami"), logout: $("logout"), modelLabel: $("model-label"), demoBadge: $("demo-badge"),
  liveBadge: $("live-badge"), readonlyBadge: $("readonly-badge"), shareBtn: $("share-btn"),
  share: $("share"), shareCreate: $("share-create"), shareLink: $("share-link"),
  shareUrl: $("share-url"), shareCopy: $("share-copy"), shareRevoke: $("share-revoke"),
  shareStatus: $("share-status"), shareClose: $("share-close"), composerWrap: $("composer-wrap"),
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

/** Copies text to the clipboard (`navigator.clipboard`, else a selected textarea and
 * `execCommand`, which works without a secure context or a permission); true when done. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    area.remove();
    return ok;
  }
}

/** "Copied" (or "Copy failed") on the button for a moment. */
export function flashCopied(buttonEl, ok) {
  const old = buttonEl.dataset.label || buttonEl.textContent;
  buttonEl.dataset.label = old;
  buttonEl.textContent = ok ? "Copied" : "Copy failed";
  setTimeout(() => { buttonEl.textContent = old; }, 1500);
}
