// chatrelay chat page.
//
// One EventSource per tab on /api/sessions/{id}/events. Every event (except `reset`)
// carries an increasing id; the page applies each exactly once (ids <= the last applied
// one are ignored), so a reconnect with Last-Event-ID never doubles or drops text. The
// page never changes its conversation optimistically: what the user does goes to the API
// and comes back as events, which is how every tab (this one included) stays identical.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const el = {
    sidebar: $("sidebar"), scrim: $("scrim"), menu: $("menu"), closeDrawer: $("close-drawer"),
    newChat: $("new-chat"), recentList: $("recent-list"), recentEmpty: $("recent-empty"),
    logout: $("logout"), modelLabel: $("model-label"), demoBadge: $("demo-badge"),
    conn: $("conn"), connLabel: $("conn-label"), settingsBtn: $("settings-btn"),
    clearBtn: $("clear-btn"), settings: $("settings"), settingsForm: $("settings-form"),
    setSystem: $("set-system"), setModel: $("set-model"), setTemperature: $("set-temperature"),
    settingsStatus: $("settings-status"), settingsCancel: $("settings-cancel"),
    scroller: $("scroller"), messages: $("messages"), empty: $("empty"), fatal: $("fatal"),
    composer: $("composer"), input: $("input"), send: $("send"), stop: $("stop"),
    toast: $("toast"),
  };
  const DEMO_MODEL = "chatrelay-demo";
  const RECENT_KEY = "chatrelay.recent";
  const RECENT_MAX = 30;
  // Touch devices get no auto-focus: the on-screen keyboard would cover the conversation.
  const touch = window.matchMedia("(pointer: coarse)").matches || navigator.maxTouchPoints > 0;

  const state = {
    sessionId: null,
    settings: { system: null, model: null, temperature: null },
    messages: [], // [{id, role, content, status, model, error, finish}]
    byId: new Map(),
    lastId: -1, // id of the last event applied
    awaitingSnapshot: false, // after `reset`, ignore everything until the snapshot
    loaded: false,
    lastReplyModel: null,
    settingsDirty: false,
  };

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, detail) {
      super(detail || `HTTP ${status}`);
      this.status = status;
    }
  }

  function goLogin() {
    const next = location.pathname + location.search;
    location.assign(`/login?next=${encodeURIComponent(next)}`);
  }

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (_err) {
      throw new ApiError(0, "Cannot reach the server.");
    }
    if (res.status === 401) {
      goLogin();
      throw new ApiError(401, "Sign-in required.");
    }
    if (!res.ok) {
      let detail = "";
      try {
        detail = (await res.json()).detail || "";
      } catch (_err) { /* not JSON */ }
      throw new ApiError(res.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    if (res.status === 204) return null;
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  const sessionPath = (suffix) => `/api/sessions/${encodeURIComponent(state.sessionId)}${suffix}`;

  function explain(err, action) {
    if (err.status === 409) {
      return `${action}: ${(err.message || "a reply is still streaming").replace(/\.$/, "")}.`;
    }
    if (err.status === 0) return `${action}: cannot reach the server.`;
    if (err.status === 401) return `${action}: sign-in required.`;
    return `${action} failed: ${err.message}`;
  }

  // ------------------------------------------------------------------ toast
  let toastTimer = null;
  function toast(text) {
    el.toast.textContent = text;
    el.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.toast.hidden = true; }, 4000);
  }

  // ------------------------------------------------------------------ recent sessions
  function loadRecent() {
    try {
      const list = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
      return Array.isArray(list) ? list.filter((r) => r && typeof r.id === "string") : [];
    } catch (_err) {
      return [];
    }
  }

  function saveRecent(list) {
    try {
      localStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, RECENT_MAX)));
    } catch (_err) { /* storage full or disabled: the list is a convenience */ }
    renderRecent();
  }

  function rememberSession() {
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

  function forgetSession(id) {
    saveRecent(loadRecent().filter((r) => r.id !== id));
  }

  function renderRecent() {
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

  // ------------------------------------------------------------------ connection state
  function setConn(kind, label) {
    el.conn.dataset.state = kind;
    el.connLabel.textContent = label || kind;
  }

  // ------------------------------------------------------------------ model label
  function renderModel() {
    const model = state.settings.model || state.lastReplyModel || "";
    el.modelLabel.textContent = model || "default model";
    el.demoBadge.hidden = model !== DEMO_MODEL;
    if (document.activeElement !== el.setModel && !state.settingsDirty) {
      el.setModel.placeholder = state.lastReplyModel || "server default";
    }
  }

  // ------------------------------------------------------------------ messages → DOM
  const views = new Map(); // message id -> {root, body, note, errorCard, actions}

  function streamingMessage() {
    for (let i = state.messages.length - 1; i >= 0; i -= 1) {
      if (state.messages[i].status === "streaming") return state.messages[i];
    }
    return null;
  }

  function button(label, action, cls) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `btn tiny ${cls === "primary" ? "" : "ghost"} ${cls || ""}`.replace(/\s+/g, " ").trim();
    b.dataset.action = action;
    b.textContent = label;
    return b;
  }

  function createView(msg) {
    const root = document.createElement("article");
    root.className = `msg ${msg.role === "user" ? "user" : "assistant"}`;
    root.dataset.id = msg.id;
    root.dataset.role = msg.role;
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = msg.role === "user" ? "You" : "Assistant";
    const model = document.createElement("span");
    model.className = "msg-model";
    const demo = document.createElement("span");
    demo.className = "badge demo tiny-badge";
    demo.textContent = "demo";
    demo.hidden = true;
    meta.append(who, model, demo);
    const body = document.createElement("div");
    body.className = msg.role === "user" ? "body plain" : "body md";
    const note = document.createElement("div");
    note.className = "note muted small";
    note.hidden = true;
    const errorCard = document.createElement("div");
    errorCard.className = "error-card";
    errorCard.setAttribute("role", "alert");
    errorCard.hidden = true;
    const actions = document.createElement("div");
    actions.className = "actions";
    if (msg.role === "user") {
      actions.append(button("Edit", "edit"), button("Copy", "copy"));
    } else {
      actions.append(button("Copy", "copy"), button("Regenerate", "regenerate", "regen"));
    }
    root.append(meta, body, note, errorCard, actions);
    const view = { root, body, note, errorCard, actions, model, demo, rendered: null, editing: false };
    views.set(msg.id, view);
    return view;
  }

  function renderBody(msg) {
    const view = views.get(msg.id);
    if (!view || view.editing || view.rendered === msg.content) return;
    view.rendered = msg.content;
    if (msg.role === "user") {
      view.body.textContent = msg.content;
    } else {
      window.ChatRender.render(view.body, msg.content);
    }
  }

  function renderChrome(msg) {
    const view = views.get(msg.id);
    if (!view) return;
    const { root, note, errorCard } = view;
    root.dataset.status = msg.status || "complete";
    view.model.textContent = msg.model || "";
    view.demo.hidden = msg.model !== DEMO_MODEL;
    if (msg.status === "stopped") {
      note.textContent = "Stopped.";
      note.hidden = false;
    } else if (msg.finish === "length") {
      note.textContent = "Cut off: the model reached its length limit.";
      note.hidden = false;
    } else {
      note.hidden = true;
    }
    if (msg.status === "error") {
      errorCard.replaceChildren();
      const title = document.createElement("strong");
      const code = msg.error && msg.error.code ? ` (${msg.error.code})` : "";
      title.textContent = `The reply failed${code}.`;
      const detail = document.createElement("span");
      detail.className = "error-detail";
      detail.textContent = (msg.error && msg.error.message) || "The upstream model did not finish this answer.";
      const retry = button("Retry", "regenerate", "retry");
      errorCard.append(title, detail, retry);
      errorCard.hidden = false;
    } else {
      errorCard.hidden = true;
    }
  }

  // Only touch the DOM when something changes (fewer mutations, no needless style work).
  function setHidden(node, hidden) {
    if (node.hidden !== hidden) node.hidden = hidden;
  }

  function renderControls() {
    const streaming = streamingMessage();
    document.body.dataset.streaming = streaming ? "true" : "false";
    setHidden(el.send, Boolean(streaming));
    setHidden(el.stop, !streaming);
    setHidden(el.empty, state.messages.length > 0 || !state.loaded);
    const last = state.messages[state.messages.length - 1];
    for (const msg of state.messages) {
      const view = views.get(msg.id);
      if (!view) continue;
      const isLast = msg === last;
      for (const b of view.actions.querySelectorAll("[data-action=regenerate]")) {
        // An error card brings its own Retry button.
        setHidden(b, !(isLast && msg.role === "assistant" && !streaming && msg.status !== "error"));
      }
      for (const b of view.actions.querySelectorAll("[data-action=edit]")) {
        setHidden(b, Boolean(streaming));
      }
      for (const b of view.actions.querySelectorAll("[data-action=copy]")) {
        setHidden(b, msg.content === "");
      }
      const retry = view.errorCard.querySelector("[data-action=regenerate]");
      if (retry) setHidden(retry, !(isLast && !streaming));
      setHidden(view.actions, msg.status === "streaming");
    }
    el.clearBtn.disabled = Boolean(streaming) || state.messages.length === 0;
  }

  // Re-render only the messages that changed, at most once per frame (the streaming one
  // while tokens arrive). A timer backs the frame up: hidden tabs get no frames.
  const dirty = new Set();
  let frame = 0;
  let frameTimer = 0;
  function scheduleRender(msg) {
    dirty.add(msg.id);
    if (frame || frameTimer) return;
    frame = requestAnimationFrame(flushRender);
    frameTimer = setTimeout(flushRender, 150);
  }

  function flushRender() {
    cancelAnimationFrame(frame);
    clearTimeout(frameTimer);
    frame = 0;
    frameTimer = 0;
    if (dirty.size === 0) return;
    const stick = nearBottom();
    for (const id of dirty) {
      const msg = state.byId.get(id);
      if (msg) renderBody(msg);
    }
    dirty.clear();
    if (stick) scrollToBottom();
  }

  function nearBottom() {
    const s = el.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  }

  function scrollToBottom() {
    el.scroller.scrollTop = el.scroller.scrollHeight;
  }

  function renderAll() {
    dirty.clear();
    views.clear();
    const frag = document.createDocumentFragment();
    for (const msg of state.messages) {
      const view = createView(msg);
      renderBody(msg);
      renderChrome(msg);
      frag.append(view.root);
    }
    el.messages.replaceChildren(frag);
    renderControls();
    renderModel();
    scrollToBottom();
  }

  function appendMessage(msg) {
    const stick = nearBottom();
    state.messages.push(msg);
    state.byId.set(msg.id, msg);
    const view = createView(msg);
    renderBody(msg);
    renderChrome(msg);
    el.messages.append(view.root);
    renderControls();
    if (stick || msg.role === "user") scrollToBottom();
  }

  function normalizeMessage(raw) {
    return {
      id: String(raw.id),
      role: raw.role === "user" ? "user" : raw.role === "system" ? "system" : "assistant",
      content: typeof raw.content === "string" ? raw.content : "",
      status: raw.status || "complete",
      model: raw.model || null,
      error: raw.error && typeof raw.error === "object" ? raw.error : null,
      finish: raw.finish_reason || null,
    };
  }

  // ------------------------------------------------------------------ events
  function applySnapshot(data) {
    state.settings = { system: null, model: null, temperature: null, ...(data.settings || {}) };
    state.messages = (data.messages || []).map(normalizeMessage).filter((m) => m.role !== "system");
    state.byId = new Map(state.messages.map((m) => [m.id, m]));
    for (let i = state.messages.length - 1; i >= 0; i -= 1) {
      if (state.messages[i].model) { state.lastReplyModel = state.messages[i].model; break; }
    }
    state.loaded = true;
    renderAll();
    renderSettingsForm(true);
    rememberSession();
  }

  function replyFor(replyId) {
    let msg = state.byId.get(replyId);
    if (!msg) {
      msg = normalizeMessage({ id: replyId, role: "assistant", content: "", status: "streaming" });
      appendMessage(msg);
    }
    return msg;
  }

  const handlers = {
    message(data) {
      const msg = normalizeMessage(data.message);
      const existing = state.byId.get(msg.id);
      if (existing) {
        Object.assign(existing, msg);
        views.get(msg.id).rendered = null;
        renderBody(existing);
        renderChrome(existing);
        renderControls();
      } else {
        appendMessage(msg);
      }
      rememberSession();
    },
    start(data) {
      const msg = replyFor(data.reply_id);
      msg.status = "streaming";
      msg.model = data.model || msg.model;
      if (data.model) state.lastReplyModel = data.model;
      renderChrome(msg);
      renderControls();
      renderModel();
    },
    delta(data) {
      const msg = replyFor(data.reply_id);
      msg.content += data.text || "";
      scheduleRender(msg);
    },
    done(data) {
      const msg = replyFor(data.reply_id);
      msg.finish = data.finish_reason || null;
      msg.status = data.finish_reason === "stopped" ? "stopped" : "complete";
      finish(msg);
    },
    error(data) {
      const msg = replyFor(data.reply_id);
      msg.status = "error";
      msg.error = { code: data.code || null, message: data.message || "" };
      finish(msg);
    },
    settings(data) {
      state.settings = { ...state.settings, ...(data.settings || {}) };
      renderModel();
      renderSettingsForm(false);
    },
    truncate(data) {
      const from = data.from_message_id;
      let index = 0;
      if (from !== null && from !== undefined) {
        index = state.messages.findIndex((m) => m.id === String(from));
        if (index < 0) return; // already gone
      }
      for (const msg of state.messages.splice(index)) {
        state.byId.delete(msg.id);
        dirty.delete(msg.id);
        const view = views.get(msg.id);
        if (view) view.root.remove();
        views.delete(msg.id);
      }
      renderControls();
    },
  };

  function finish(msg) {
    const stick = nearBottom();
    dirty.delete(msg.id);
    renderBody(msg);
    renderChrome(msg);
    renderControls();
    if (stick) scrollToBottom();
  }

  function onEvent(type, event) {
    if (type === "reset") {
      state.awaitingSnapshot = true;
      return;
    }
    const id = event.lastEventId === "" ? NaN : Number(event.lastEventId);
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (_err) {
      return;
    }
    if (type === "snapshot") {
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

  // ------------------------------------------------------------------ the live stream
  let source = null;
  let retryTimer = 0;
  let retryDelay = 1000;

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    if (source) source.close();
    let url = sessionPath("/events");
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
    for (const type of ["snapshot", "message", "start", "delta", "done", "error", "reset", "settings", "truncate"]) {
      es.addEventListener(type, (event) => {
        if (es === source) onEvent(type, event);
      });
    }
  }

  async function diagnoseAndRetry() {
    try {
      await api("GET", sessionPath(""));
    } catch (err) {
      if (source) return; // reconnected meanwhile (the `online` event)
      if (err.status === 401) return; // api() is taking the page to /login
      if (err.status === 404) {
        forgetSession(state.sessionId);
        setConn("offline", "not found");
        showFatal("This chat does not exist (or has expired).");
        return;
      }
    }
    if (source) return;
    if (!navigator.onLine) setConn("offline", "offline");
    // Jitter: after a web process or Redis restart, every tab must not come back at once.
    retryTimer = setTimeout(connect, retryDelay * (0.5 + Math.random()));
    retryDelay = Math.min(retryDelay * 2, 15000);
  }

  window.addEventListener("online", () => {
    if (!source) connect();
    else setConn(...(source.readyState === EventSource.OPEN ? ["live"] : ["reconnecting"]));
  });
  window.addEventListener("offline", () => setConn("offline", "offline"));

  function showFatal(text) {
    el.fatal.replaceChildren();
    const p = document.createElement("p");
    p.textContent = text;
    const a = document.createElement("a");
    a.href = "/";
    a.className = "btn primary";
    a.textContent = "Start a new chat";
    el.fatal.append(p, a);
    el.fatal.hidden = false;
    el.empty.hidden = true;
    el.composer.hidden = true;
  }

  // ------------------------------------------------------------------ composer
  function autosize() {
    el.input.style.height = "auto"; // CSSOM, allowed by the CSP
    el.input.style.height = `${Math.min(el.input.scrollHeight + 2, window.innerHeight * 0.4)}px`;
  }

  async function sendMessage(content, replaceFrom) {
    const body = { content };
    if (replaceFrom) body.replace_from = replaceFrom;
    await api("POST", sessionPath("/messages"), body);
  }

  async function submitComposer() {
    const content = el.input.value;
    if (!content.trim() || !state.sessionId) return;
    if (streamingMessage()) {
      toast("A reply is still streaming. Stop it or wait for it to finish.");
      return;
    }
    el.send.disabled = true;
    try {
      await sendMessage(content);
      el.input.value = "";
      autosize();
    } catch (err) {
      toast(explain(err, "Sending"));
    } finally {
      el.send.disabled = false;
    }
  }

  el.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submitComposer();
  });
  el.input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey || event.altKey || event.ctrlKey || event.metaKey) return;
    // IME: Enter that confirms a composition (Chinese, Japanese, …) must not send.
    if (event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    submitComposer();
  });
  el.input.addEventListener("input", autosize);

  el.stop.addEventListener("click", async () => {
    el.stop.disabled = true;
    try {
      await api("POST", sessionPath("/stop"));
    } catch (err) {
      toast(explain(err, "Stopping"));
    } finally {
      el.stop.disabled = false;
    }
  });

  async function regenerate() {
    try {
      await api("POST", sessionPath("/regenerate"));
    } catch (err) {
      toast(explain(err, "Regenerating"));
    }
  }

  // ------------------------------------------------------------------ message actions
  async function copyText(text, buttonEl) {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (_err) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.append(area);
      area.select();
      try { ok = document.execCommand("copy"); } catch (_e) { ok = false; }
      area.remove();
    }
    if (buttonEl) {
      const old = buttonEl.dataset.label || buttonEl.textContent;
      buttonEl.dataset.label = old;
      buttonEl.textContent = ok ? "Copied" : "Copy failed";
      setTimeout(() => { buttonEl.textContent = old; }, 1500);
    }
  }

  function startEdit(msg) {
    const view = views.get(msg.id);
    if (!view || view.editing) return;
    view.editing = true;
    const area = document.createElement("textarea");
    area.className = "edit-area";
    area.value = msg.content;
    area.rows = Math.min(12, Math.max(2, msg.content.split("\n").length));
    const row = document.createElement("div");
    row.className = "edit-actions";
    const cancel = button("Cancel", "edit-cancel");
    const save = button("Send", "edit-send", "primary");
    row.append(cancel, save);
    view.body.replaceChildren(area, row);
    view.actions.hidden = true;
    area.focus();
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") stopEdit(msg);
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        save.click();
      }
    });
  }

  function stopEdit(msg) {
    const view = views.get(msg.id);
    if (!view) return;
    view.editing = false;
    view.rendered = null;
    renderBody(msg);
    renderControls();
  }

  el.messages.addEventListener("click", async (event) => {
    const target = event.target.closest("button");
    if (!target) return;
    const root = target.closest(".msg");
    const msg = root && state.byId.get(root.dataset.id);
    if (target.classList.contains("copy-code")) {
      const code = target.closest(".codeblock").querySelector("pre code");
      copyText(code ? code.textContent : "", target);
      return;
    }
    if (!msg) return;
    switch (target.dataset.action) {
      case "copy":
        copyText(msg.content, target);
        break;
      case "regenerate":
        regenerate();
        break;
      case "edit":
        startEdit(msg);
        break;
      case "edit-cancel":
        stopEdit(msg);
        break;
      case "edit-send": {
        const area = views.get(msg.id).body.querySelector("textarea");
        const content = area ? area.value : "";
        if (!content.trim()) return;
        target.disabled = true;
        try {
          await sendMessage(content, msg.id);
          const view = views.get(msg.id);
          if (view) stopEdit(msg); // normally the truncate event has removed it already
        } catch (err) {
          target.disabled = false;
          toast(explain(err, "Resending"));
        }
        break;
      }
      default:
        break;
    }
  });

  // ------------------------------------------------------------------ header: clear, settings
  let clearArmed = 0;
  el.clearBtn.addEventListener("click", async () => {
    if (!clearArmed) {
      el.clearBtn.textContent = "Clear everything?";
      el.clearBtn.classList.add("armed");
      clearArmed = setTimeout(disarmClear, 4000);
      return;
    }
    disarmClear();
    try {
      await api("DELETE", sessionPath("/messages"));
    } catch (err) {
      toast(explain(err, "Clearing"));
    }
  });
  function disarmClear() {
    clearTimeout(clearArmed);
    clearArmed = 0;
    el.clearBtn.textContent = "Clear";
    el.clearBtn.classList.remove("armed");
  }

  function renderSettingsForm(force) {
    if (state.settingsDirty && !force) {
      el.settingsStatus.textContent = "Changed in another tab; saving will overwrite it.";
      return;
    }
    state.settingsDirty = false;
    const s = state.settings;
    const system = s.system || "";
    const model = s.model || "";
    const temperature = s.temperature === null || s.temperature === undefined ? "" : String(s.temperature);
    // Our own save comes back as a `settings` event too (before or after the PATCH answer):
    // it changes nothing, so it must not wipe "Saved.".
    const changed = el.setSystem.value !== system || el.setModel.value !== model ||
      el.setTemperature.value !== temperature;
    el.setSystem.value = system;
    el.setModel.value = model;
    el.setTemperature.value = temperature;
    if (changed) el.settingsStatus.textContent = "";
  }

  function toggleSettings(open) {
    const show = open === undefined ? el.settings.hidden : open;
    el.settings.hidden = !show;
    el.settingsBtn.setAttribute("aria-expanded", String(show));
    if (show && !touch) el.setSystem.focus();
  }

  el.settingsBtn.addEventListener("click", () => toggleSettings());
  el.settingsCancel.addEventListener("click", () => {
    state.settingsDirty = false;
    renderSettingsForm(true);
    toggleSettings(false);
  });
  el.settingsForm.addEventListener("input", () => {
    state.settingsDirty = true;
    el.settingsStatus.textContent = "Unsaved changes";
  });
  el.settingsForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { system: el.setSystem.value.trim() ? el.setSystem.value : null };
    const model = el.setModel.value.trim();
    if (model) body.model = model;
    const t = el.setTemperature.value.trim();
    if (t === "") {
      body.temperature = null;
    } else {
      const value = Number(t);
      if (!Number.isFinite(value) || value < 0 || value > 2) {
        el.settingsStatus.textContent = "Temperature must be between 0 and 2.";
        return;
      }
      body.temperature = value;
    }
    el.settingsStatus.textContent = "Saving…";
    try {
      const res = await api("PATCH", sessionPath(""), body);
      state.settingsDirty = false;
      if (res && res.settings) handlers.settings({ settings: res.settings });
      el.settingsStatus.textContent = "Saved.";
    } catch (err) {
      el.settingsStatus.textContent = explain(err, "Saving");
    }
  });

  // ------------------------------------------------------------------ sidebar / drawer
  function setDrawer(open) {
    document.body.classList.toggle("drawer-open", open);
    el.scrim.hidden = !open;
  }
  el.menu.addEventListener("click", () => setDrawer(true));
  el.closeDrawer.addEventListener("click", () => setDrawer(false));
  el.scrim.addEventListener("click", () => setDrawer(false));
  el.newChat.addEventListener("click", () => location.assign("/"));
  el.recentList.addEventListener("click", (event) => {
    const forget = event.target.closest("button[data-forget]");
    if (forget) forgetSession(forget.dataset.forget);
  });
  window.addEventListener("storage", (event) => {
    if (event.key === RECENT_KEY) renderRecent();
  });
  el.logout.addEventListener("click", async () => {
    try {
      await fetch("/api/logout", { method: "POST", credentials: "same-origin" });
    } catch (_err) { /* going to the login page anyway */ }
    location.assign("/login");
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    setDrawer(false);
    if (!el.settings.hidden && !state.settingsDirty) toggleSettings(false);
  });

  // ------------------------------------------------------------------ boot
  // Creating a session is safe to repeat (at worst an unused empty session), so a network
  // blip (Chrome fails in-flight requests when the machine's interfaces change) is retried.
  async function createSession() {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await api("POST", "/api/sessions", {});
      } catch (err) {
        if (err.status !== 0 || attempt >= 4) throw err;
        await new Promise((resolve) => setTimeout(resolve, 400 * attempt));
      }
    }
  }

  // The models the gateway allows (OPENAI_MODELS), offered in the settings' model field.
  async function loadModelOptions() {
    let listed;
    try {
      listed = await api("GET", "/api/models");
    } catch (_err) {
      return; // the field still takes free text; the server names the allowed ones on a 422
    }
    const list = $("model-options");
    list.replaceChildren(...listed.models.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      return option;
    }));
  }

  async function boot() {
    loadModelOptions();
    renderRecent();
    renderControls();
    const match = location.pathname.match(/^\/s\/([A-Za-z0-9_-]+)\/?$/);
    if (match) {
      state.sessionId = match[1];
    } else {
      setConn("connecting", "creating chat");
      try {
        const created = await createSession();
        state.sessionId = created.id;
        history.replaceState(null, "", `/s/${encodeURIComponent(created.id)}`);
      } catch (err) {
        if (err.status === 401) return;
        setConn("offline", "offline");
        showFatal(`Could not create a chat: ${err.message}`);
        return;
      }
    }
    renderRecent();
    connect();
    if (!touch) el.input.focus();
  }

  window.chatrelay = { state }; // for debugging from the console
  boot();
})();
