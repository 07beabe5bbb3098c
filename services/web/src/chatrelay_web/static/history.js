// The sidebar's conversations, kept on the server per owner (GET /api/sessions): newest
// activity first, the next page fetched when the list's end scrolls into view, a search box,
// and per chat: rename, export, delete. The first page is also kept in localStorage, only to
// paint the list at once on the next load (and in this browser's other tabs).
import { api, explain } from "./api.js";
import { HISTORY_CACHE_KEY } from "./cache.js";
import { el, toast } from "./dom.js";
import { state } from "./state.js";
import { renderTitle } from "./views.js";

const LEGACY_RECENT_KEY = "chatrelay.recent"; // the list before it moved to the server
const PAGE_SIZE = 30;
const SEARCH_DELAY_MS = 250;
const UNTITLED = "New chat";
const ARM_MS = 4000;

const list = {
  items: [], // [{id, title, updated_at, message_count, model}]
  next: null, // the cursor of the page after the last one shown
  pages: 0,
  query: "",
  loading: null, // the request in flight, if any
  generation: 0, // bumps when the list starts over: older answers are dropped
};

const titleOf = (item) => (item && item.title) || UNTITLED;
const sessionHref = (id) => `/s/${encodeURIComponent(id)}`;
const exportHref = (id, format) =>
  `/api/sessions/${encodeURIComponent(id)}/export?format=${format}`;

function readCache() {
  try {
    const cached = JSON.parse(localStorage.getItem(HISTORY_CACHE_KEY) || "null");
    if (cached && Array.isArray(cached.items)) {
      return cached.items.filter((item) => item && typeof item.id === "string");
    }
  } catch { /* unreadable: the server's answer follows */ }
  return [];
}

function writeCache() {
  if (list.query) return; // only the unfiltered first page is worth painting early
  try {
    localStorage.setItem(HISTORY_CACHE_KEY, JSON.stringify({ items: list.items.slice(0, PAGE_SIZE) }));
    localStorage.removeItem(LEGACY_RECENT_KEY);
  } catch { /* storage full or disabled: the cache is a convenience */ }
}

function actionButton(label, action, extra) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `btn tiny ghost ${extra || ""}`.trim();
  b.dataset.action = action;
  b.textContent = label;
  return b;
}

function exportLink(label, id, format) {
  const a = document.createElement("a");
  a.className = "btn tiny ghost";
  a.href = exportHref(id, format);
  a.dataset.action = `export-${format}`;
  a.setAttribute("download", "");
  a.textContent = label;
  return a;
}

function renderItem(item) {
  const li = document.createElement("li");
  const current = item.id === state.sessionId;
  li.className = "recent-item" + (current ? " current" : "");
  li.dataset.id = item.id;
  const row = document.createElement("div");
  row.className = "recent-row";
  const a = document.createElement("a");
  a.href = sessionHref(item.id);
  a.textContent = titleOf(item);
  a.title = titleOf(item);
  if (current) a.setAttribute("aria-current", "page");
  const more = document.createElement("button");
  more.type = "button";
  more.className = "icon-btn more";
  more.dataset.action = "more";
  more.setAttribute("aria-label", `Actions for “${titleOf(item)}”`);
  more.setAttribute("aria-expanded", "false");
  more.title = "Rename, export, delete";
  more.textContent = "⋯";
  row.append(a, more);
  li.append(row);
  return li;
}

// Made when first opened: a long list keeps one row per chat.
function itemActions(li, item) {
  let actions = li.querySelector(".recent-actions");
  if (!actions) {
    actions = document.createElement("div");
    actions.className = "recent-actions";
    actions.hidden = true;
    actions.append(
      actionButton("Rename", "rename"),
      exportLink("Markdown", item.id, "markdown"),
      exportLink("JSON", item.id, "json"),
      actionButton("Delete", "delete", "danger-text"),
    );
    li.append(actions);
  }
  return actions;
}

let endObserver = null;

// Every page load at "/" makes a chat: those never written in are not worth a line.
const worthListing = (item) => item.message_count !== 0;

let renaming = false; // the list waits: redrawing it would take the rename box away

function render() {
  if (renaming) return; // drawn when the rename ends
  const shown = list.items.filter(worthListing);
  el.recentList.replaceChildren(...shown.map(renderItem));
  el.recentEmpty.textContent = list.query ? "No chats match." : "Your chats appear here.";
  el.recentEmpty.hidden = shown.length > 0 || list.loading !== null;
  el.recentMore.hidden = list.next === null;
  if (endObserver && list.next !== null) {
    // Observing afresh reports where the sentinel is now: a page too short to fill the
    // sidebar leaves it in view, which no intersection change would announce.
    endObserver.unobserve(el.recentMore);
    endObserver.observe(el.recentMore);
  }
}

async function fetchPage(cursor) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (list.query) params.set("q", list.query);
  if (cursor) params.set("cursor", cursor);
  return api("GET", `/api/sessions?${params}`);
}

/** Starts the list over from its first page (a new search, or news of a change). A refresh
 * while several pages are shown keeps the later pages after the fresh first one. */
export async function refreshHistory() {
  list.generation += 1;
  const generation = list.generation;
  const request = fetchPage(null);
  list.loading = request;
  let page;
  try {
    page = await request;
  } catch (err) {
    if (generation === list.generation) list.loading = null;
    if (err.status !== 401) render(); // keep what is shown (the cache) on a failure
    return;
  }
  if (generation !== list.generation) return;
  list.loading = null;
  const fresh = Array.isArray(page.sessions) ? page.sessions : [];
  // A first message names the chat without an event (only renames send `title`): the list
  // is where this tab learns its chat's name.
  const mine = fresh.find((item) => item.id === state.sessionId);
  if (mine && mine.title && state.title === null) {
    state.title = mine.title;
    renderTitle();
  }
  if (list.pages > 1) {
    const seen = new Set(fresh.map((item) => item.id));
    list.items = [...fresh, ...list.items.filter((item) => !seen.has(item.id))];
  } else {
    list.items = fresh;
    list.next = page.next || null;
    list.pages = 1;
  }
  writeCache();
  render();
}

async function loadMore() {
  if (list.next === null || list.loading !== null) return;
  const generation = list.generation;
  const request = fetchPage(list.next);
  list.loading = request;
  try {
    const page = await request;
    if (generation !== list.generation) return;
    const seen = new Set(list.items.map((item) => item.id));
    const sessions = Array.isArray(page.sessions) ? page.sessions : [];
    list.items.push(...sessions.filter((item) => !seen.has(item.id)));
    list.next = page.next || null;
    list.pages += 1;
  } catch (err) {
    if (generation === list.generation && err.status !== 401) toast(explain(err, "Loading more chats"));
    return;
  } finally {
    if (generation === list.generation) list.loading = null;
  }
  render();
}

// Other tabs' and devices' activity reaches this list when it is refetched: on a change this
// tab saw, and whenever the page comes back into view.
let refreshTimer = 0;
export function scheduleHistoryRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshHistory, 400);
}

/** A `title` event: the chat's new name, in place. */
export function retitle(id, title) {
  const item = list.items.find((candidate) => candidate.id === id);
  if (!item) {
    scheduleHistoryRefresh();
    return;
  }
  item.title = title;
  writeCache();
  render();
}

/** The chat is gone (deleted here or elsewhere, or expired). */
export function dropSession(id) {
  const before = list.items.length;
  list.items = list.items.filter((item) => item.id !== id);
  if (list.items.length !== before) {
    writeCache();
    render();
  }
}

function startRename(li, item) {
  const row = li.querySelector(".recent-row");
  const input = document.createElement("input");
  input.type = "text";
  input.className = "rename-input";
  input.value = item.title || "";
  input.setAttribute("aria-label", "New title");
  row.replaceChildren(input);
  itemActions(li, item).hidden = true;
  renaming = true;
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    renaming = false;
    const title = input.value.trim();
    if (save && title && title !== item.title) {
      try {
        await api("PATCH", `/api/sessions/${encodeURIComponent(item.id)}`, { title });
        // In the list as it is now (it may have been fetched again meanwhile); the `title`
        // event says the same to the tabs showing that chat.
        const current = list.items.find((candidate) => candidate.id === item.id);
        if (current) current.title = title;
        writeCache();
      } catch (err) {
        toast(explain(err, "Renaming"));
      }
    }
    render();
  };
  input.addEventListener("keydown", (event) => {
    if (event.isComposing || event.keyCode === 229) return;
    if (event.key === "Enter") {
      event.preventDefault();
      finish(true);
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation(); // Esc here cancels the rename, nothing else
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
}

// Delete asks twice, like Clear: the first click arms the button for a few seconds.
async function onDelete(button, item) {
  if (!button.classList.contains("armed")) {
    button.classList.add("armed");
    button.textContent = "Delete for good?";
    setTimeout(() => {
      button.classList.remove("armed");
      button.textContent = "Delete";
    }, ARM_MS);
    return;
  }
  button.disabled = true;
  try {
    await api("DELETE", `/api/sessions/${encodeURIComponent(item.id)}`);
  } catch (err) {
    button.disabled = false;
    if (err.status !== 404) {
      toast(explain(err, "Deleting"));
      return;
    }
  }
  // This tab, if it shows that chat, hears `deleted` on its stream and says so.
  dropSession(item.id);
}

function onListClick(event) {
  const target = event.target.closest("[data-action]");
  if (!target) return;
  const li = target.closest(".recent-item");
  const item = li && list.items.find((candidate) => candidate.id === li.dataset.id);
  if (!item) return;
  switch (target.dataset.action) {
    case "more": {
      const actions = itemActions(li, item);
      actions.hidden = !actions.hidden;
      target.setAttribute("aria-expanded", String(!actions.hidden));
      break;
    }
    case "rename":
      startRename(li, item);
      break;
    case "delete":
      onDelete(target, item);
      break;
    default:
      break; // export links download by themselves
  }
}

let searchTimer = 0;
function onSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => {
    const query = el.search.value.trim();
    if (query === list.query) return;
    list.query = query;
    list.items = [];
    list.next = null;
    list.pages = 0;
    render();
    refreshHistory();
  }, SEARCH_DELAY_MS);
}

export function initHistory() {
  list.items = readCache();
  render();
  el.recentList.addEventListener("click", onListClick);
  el.search.addEventListener("input", onSearch);
  el.search.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && el.search.value) {
      event.stopPropagation();
      el.search.value = "";
      onSearch();
    }
  });
  // The sentinel after the list: in view means the user reached its end.
  endObserver = new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadMore();
  }, { root: el.recentList.closest(".recent") });
  endObserver.observe(el.recentMore);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") scheduleHistoryRefresh();
  });
  window.addEventListener("storage", (event) => {
    if (event.key === HISTORY_CACHE_KEY && !list.query && list.pages <= 1) {
      list.items = readCache();
      render();
    }
  });
  refreshHistory();
}

/** The current chat changed (a new one was created): mark it in the list. */
export function markCurrent() {
  render();
}
