// The sidebar's recent chats: kept in this browser's localStorage only, shared by its tabs.
import { el } from "./dom.js";
import { state } from "./state.js";

const RECENT_KEY = "chatrelay.recent";
const RECENT_MAX = 30;

function loadRecent() {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
    return Array.isArray(list) ? list.filter((r) => r && typeof r.id === "string") : [];
  } catch {
    return [];
  }
}

function saveRecent(list) {
  try {
    localStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, RECENT_MAX)));
  } catch { /* storage full or disabled: the list is a convenience */ }
  renderRecent();
}

export function rememberSession() {
  if (!state.sessionId || state.messages.length === 0) return;
  const firstUser = state.messages.find((m) => m.role === "user");
  const title = (firstUser ? firstUser.content : "New chat").replace(/\s+/g, " ").trim().slice(0, 80)
    || "New chat";
  const list = loadRecent();
  const old = list.find((r) => r.id === state.sessionId);
  if (old && old.title === title) return;
  const rest = list.filter((r) => r.id !== state.sessionId);
  saveRecent([{ id: state.sessionId, title, at: old ? old.at : Date.now() }, ...rest]);
}

export function forgetSession(id) {
  saveRecent(loadRecent().filter((r) => r.id !== id));
}

export function renderRecent() {
  const list = loadRecent();
  el.recentList.replaceChildren();
  for (const item of list) {
    const li = document.createElement("li");
    li.className = "recent-item" + (item.id === state.sessionId ? " current" : "");
    const a = document.createElement("a");
    a.href = `/s/${encodeURIComponent(item.id)}`;
    a.textContent = item.title || "New chat";
    a.title = item.title || "";
    if (item.id === state.sessionId) a.setAttribute("aria-current", "page");
    const forget = document.createElement("button");
    forget.type = "button";
    forget.className = "icon-btn forget";
    forget.dataset.forget = item.id;
    forget.setAttribute("aria-label", "Remove from this list");
    forget.title = "Remove from this list";
    forget.textContent = "✕";
    li.append(a, forget);
    el.recentList.append(li);
  }
  el.recentEmpty.hidden = list.length > 0;
}

export function initRecent() {
  el.recentList.addEventListener("click", (event) => {
    const forget = event.target.closest("button[data-forget]");
    if (forget) forgetSession(forget.dataset.forget);
  });
  window.addEventListener("storage", (event) => {
    if (event.key === RECENT_KEY) renderRecent();
  });
}
