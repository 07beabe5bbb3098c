// The live stream: one EventSource per tab on /api/sessions/{id}/events.
//
// Every event (except `reset`) carries an increasing id; the page applies each exactly once
// (ids <= the last applied one are ignored), so a reconnect with Last-Event-ID never doubles
// or drops text. After `reset` everything is ignored until the snapshot that follows it.
import { api, conversationPath } from "./api.js";
import { dropSession, retitle, scheduleHistoryRefresh } from "./history.js";
import { applySettings, renderSettingsForm } from "./settings.js";
import { normalizeMessage, readOnly, state } from "./state.js";
import {
  appendMessage, finish, foldThinking, removeViews, renderAll, renderChrome, renderControls, renderModel,
  renderTitle, rerender, scheduleRender, setConn, showFatal,
} from "./views.js";
// REVOKED: a share link's viewers only, not one of the session's logged events (EVENTS).
import { EVENTS, REVOKED } from "/wire.js";

function revoke() {
  stopStream("revoked");
  showFatal("This share link was revoked: the conversation is no longer shared.");
}

function applySnapshot(data) {
  state.settings = { system: null, model: null, temperature: null, ...(data.settings || {}) };
  state.messages = (data.messages || []).map(normalizeMessage).filter((m) => m.role !== "system");
  state.byId = new Map(state.messages.map((m) => [m.id, m]));
  for (let i = state.messages.length - 1; i >= 0; i -= 1) {
    if (state.messages[i].model) { state.lastReplyModel = state.messages[i].model; break; }
  }
  if (typeof data.title === "string") state.title = data.title;
  state.loaded = true;
  renderAll();
  renderTitle();
  if (!readOnly()) renderSettingsForm(true);
}

function replyFor(replyId) {
  let msg = state.byId.get(replyId);
  if (!msg) {
    msg = normalizeMessage({ id: replyId, role: "assistant", content: "", status: "streaming" });
    appendMessage(msg);
  }
  return msg;
}

// By event name; `snapshot` and `reset` are handled in onEvent (they change how the rest
// are applied).
const handlers = {
  [EVENTS.MessageAdded](data) {
    const msg = normalizeMessage(data.message);
    const existing = state.byId.get(msg.id);
    if (existing) {
      Object.assign(existing, msg);
      rerender(existing);
    } else {
      appendMessage(msg);
    }
    // The list's order (newest activity first) and, after the first message, the title.
    if (!readOnly()) scheduleHistoryRefresh();
  },
  [EVENTS.Start](data) {
    const msg = replyFor(data.reply_id);
    msg.status = "streaming";
    msg.model = data.model || msg.model;
    if (data.model) state.lastReplyModel = data.model;
    renderChrome(msg);
    renderControls();
    renderModel();
  },
  [EVENTS.Delta](data) {
    const msg = replyFor(data.reply_id);
    if (msg.content === "" && data.text) foldThinking(msg);
    msg.content += data.text || "";
    scheduleRender(msg);
  },
  [EVENTS.Reasoning](data) {
    const msg = replyFor(data.reply_id);
    msg.reasoning += data.text || "";
    scheduleRender(msg);
  },
  [EVENTS.Done](data) {
    const msg = replyFor(data.reply_id);
    msg.finish = data.finish_reason || null;
    msg.usage = data.usage || null;
    msg.timing = data.timing || null;
    msg.status = data.finish_reason === "stopped" ? "stopped" : "complete";
    finish(msg);
  },
  [EVENTS.ErrorEvent](data) {
    const msg = replyFor(data.reply_id);
    msg.status = "error";
    msg.error = { code: data.code || null, message: data.message || "" };
    finish(msg);
  },
  [EVENTS.SettingsChanged](data) {
    if (!readOnly()) applySettings(data.settings);
  },
  [EVENTS.TitleChanged](data) {
    state.title = typeof data.title === "string" ? data.title : null;
    renderTitle();
    if (!readOnly()) retitle(state.sessionId, state.title);
  },
  [EVENTS.Deleted]() {
    stopStream("deleted");
    dropSession(state.sessionId);
    showFatal("This chat was deleted.");
  },

  [EVENTS.Truncate](data) {
    const from = data.from_message_id;
    let index = 0;
    if (from !== null && from !== undefined) {
      index = state.messages.findIndex((m) => m.id === String(from));
      if (index < 0) return; // already gone
    }
    const removed = state.messages.splice(index);
    for (const msg of removed) state.byId.delete(msg.id);
    removeViews(removed);
  },
};

function onEvent(type, event) {
  if (type === EVENTS.Reset) {
    state.awaitingSnapshot = true;
    return;
  }
  // No id of its own (the browser repeats the last one seen): never taken for a replay.
  if (type === REVOKED) {
    revoke();
    return;
  }
  const id = event.lastEventId === "" ? NaN : Number(event.lastEventId);
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    return;
  }
  if (type === EVENTS.Snapshot) {
    state.awaitingSnapshot = false;
    applySnapshot(data);
    state.lastId = Number.isFinite(id) ? id : Number(data.seq);
    return;
  }
  if (state.awaitingSnapshot) return;
  if (Number.isFinite(id)) {
    if (id <= state.lastId) return; // already applied (replayed after a reconnect)
    state.lastId = id;
  }
  const handler = handlers[type];
  if (handler) handler(data);
}

let source = null;
let retryTimer = 0;
let retryDelay = 1000;

/** The conversation is gone for this tab (deleted, or its share revoked): close the stream,
 * take the messages off the page, and never reconnect. */
function stopStream(label) {
  state.ended = true;
  clearTimeout(retryTimer);
  if (source) source.close();
  source = null;
  setConn("offline", label);
  state.messages = [];
  state.byId = new Map();
  renderAll();
}

export function connect() {
  if (state.ended) return;
  clearTimeout(retryTimer);
  retryTimer = 0;
  if (source) source.close();
  let url = conversationPath("/events");
  // A new EventSource has no Last-Event-ID of its own: pass it as a query parameter.
  if (state.lastId >= 0) url += `?last_event_id=${state.lastId}`;
  const es = new EventSource(url);
  source = es;
  setConn(state.loaded ? "reconnecting" : "connecting", state.loaded ? "reconnecting" : "connecting");
  es.onopen = () => {
    if (es !== source) return;
    retryDelay = 1000;
    setConn("live", "live");
  };
  es.onerror = (event) => {
    // The API names one of its events `error`: that one is a MessageEvent with data and
    // is handled below like every other event. A connection error is a plain Event.
    if (es !== source || event instanceof MessageEvent) return;
    if (es.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself and sends Last-Event-ID.
      setConn(navigator.onLine ? "reconnecting" : "offline", navigator.onLine ? "reconnecting" : "offline");
      return;
    }
    // CLOSED: the browser gave up (an HTTP error such as 401/404/502). Find out why.
    es.close();
    source = null;
    setConn(navigator.onLine ? "reconnecting" : "offline", navigator.onLine ? "reconnecting" : "offline");
    diagnoseAndRetry();
  };
  // Every event the server defines (wire.js comes from its event structs), and on a share
  // link `revoked`, which only its viewers get (it is not in the session's log).
  const types = new Set(Object.values(EVENTS));
  if (readOnly()) types.add(REVOKED);
  for (const type of types) {
    es.addEventListener(type, (event) => {
      if (es === source) onEvent(type, event);
    });
  }
}

async function diagnoseAndRetry() {
  try {
    await api("GET", conversationPath(""));
  } catch (err) {
    if (source || state.ended) return; // reconnected meanwhile (the `online` event), or over
    if (err.status === 401) return; // api() is taking the page to /login
    if (err.status === 404) {
      state.ended = true;
      setConn("offline", "not found");
      if (readOnly()) {
        showFatal("This share link does not exist or was revoked.");
      } else {
        dropSession(state.sessionId);
        showFatal("This chat does not exist (or has expired).");
      }
      return;
    }
  }
  if (source || state.ended) return;
  if (!navigator.onLine) setConn("offline", "offline");
  // Jitter: after a web process or Redis restart, every tab must not come back at once.
  retryTimer = setTimeout(connect, retryDelay * (0.5 + Math.random()));
  retryDelay = Math.min(retryDelay * 2, 15000);
}

export function initStream() {
  window.addEventListener("online", () => {
    if (state.ended) return;
    if (!source) connect();
    else setConn(...(source.readyState === EventSource.OPEN ? ["live"] : ["reconnecting"]));
  });
  window.addEventListener("offline", () => setConn("offline", "offline"));
}
