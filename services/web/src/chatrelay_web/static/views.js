// Messages → DOM, and the page chrome that follows the state (model label, controls,
// connection badge). Only what changed is touched: a streaming reply re-renders at most
// once per frame, and the other messages keep their elements.
import { button, el, setHidden } from "./dom.js";
// The gateway's built-in demo model (chatrelay_common's, served in /wire.js): the page badges
// it so that nobody mistakes its answers for a real LLM's.
import { DEMO_MODEL } from "/wire.js";
import { render } from "./render.js";
import { readOnly, state, streamingMessage } from "./state.js";

const views = new Map(); // message id -> {root, body, note, errorCard, actions, …}

export const viewOf = (id) => views.get(id);

export function setConn(kind, label) {
  el.conn.dataset.state = kind;
  // A viewer's "live" is the badge of a streaming reply; its open stream is "connected".
  el.connLabel.textContent = readOnly() && kind === "live" ? "connected" : label || kind;
}

export function renderModel() {
  const model = state.settings.model || state.lastReplyModel || "";
  el.modelLabel.textContent = model || "default model";
  el.demoBadge.hidden = model !== DEMO_MODEL;
  if (document.activeElement !== el.setModel && !state.settingsDirty) {
    el.setModel.placeholder = state.lastReplyModel || "server default";
  }
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
  // A share link's viewer did not write these.
  who.textContent = msg.role === "user" ? (readOnly() ? "User" : "You") : "Assistant";
  const model = document.createElement("span");
  model.className = "msg-model";
  const demo = document.createElement("span");
  demo.className = "badge demo tiny-badge";
  demo.textContent = "demo";
  demo.hidden = true;
  meta.append(who, model, demo);
  // The model's "thinking" (assistant replies only), shown as plain text above the answer.
  const thinking = document.createElement("details");
  thinking.className = "thinking";
  thinking.hidden = true;
  const summary = document.createElement("summary");
  summary.textContent = "Thinking";
  const thought = document.createElement("div");
  thought.className = "thinking-text";
  thinking.append(summary, thought);
  // Open while the model thinks; a reply that already answers shows it collapsed.
  thinking.open = msg.status === "streaming" && msg.content === "";
  const body = document.createElement("div");
  body.className = msg.role === "user" ? "body plain" : "body md";
  const note = document.createElement("div");
  note.className = "note muted small";
  note.hidden = true;
  const usage = document.createElement("div");
  usage.className = "usage muted small";
  usage.hidden = true;
  const errorCard = document.createElement("div");
  errorCard.className = "error-card";
  errorCard.setAttribute("role", "alert");
  errorCard.hidden = true;
  const actions = document.createElement("div");
  actions.className = "actions";
  if (readOnly()) {
    actions.append(button("Copy", "copy")); // a share link never writes
  } else if (msg.role === "user") {
    actions.append(button("Edit", "edit"), button("Copy", "copy"));
  } else {
    actions.append(button("Copy", "copy"), button("Regenerate", "regenerate", "regen"));
  }
  if (msg.role === "user") root.append(meta, body, note, errorCard, actions);
  else root.append(meta, thinking, body, note, usage, errorCard, actions);
  const view = {
    root, thinking, thought, body, note, usage, errorCard, actions, model, demo,
    rendered: null, renderedThought: "", editing: false,
  };
  views.set(msg.id, view);
  return view;
}

export function renderBody(msg) {
  const view = views.get(msg.id);
  if (!view) return;
  if (view.renderedThought !== msg.reasoning) {
    view.renderedThought = msg.reasoning;
    view.thought.textContent = msg.reasoning;
    setHidden(view.thinking, msg.reasoning === "");
  }
  if (view.editing || view.rendered === msg.content) return;
  view.rendered = msg.content;
  if (msg.role === "user") {
    view.body.textContent = msg.content;
  } else {
    render(view.body, msg.content);
  }
}

export function renderChrome(msg) {
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
  const figures = msg.status === "streaming" ? "" : usageText(msg);
  if (view.usage.textContent !== figures) view.usage.textContent = figures;
  setHidden(view.usage, figures === "");
  if (msg.status === "error") {
    errorCard.replaceChildren();
    const title = document.createElement("strong");
    const code = msg.error && msg.error.code ? ` (${msg.error.code})` : "";
    title.textContent = `The reply failed${code}.`;
    const detail = document.createElement("span");
    detail.className = "error-detail";
    detail.textContent = (msg.error && msg.error.message) || "The upstream model did not finish this answer.";
    errorCard.append(title, detail);
    if (!readOnly()) errorCard.append(button("Retry", "regenerate", "retry"));
    errorCard.hidden = false;
  } else {
    errorCard.hidden = true;
  }
}

// "12 tokens in · 40 out · first token 0.21 s · 35.2 tokens/s": what the server measured.
function usageText({ usage, timing }) {
  const parts = [];
  if (usage) parts.push(`${usage.prompt_tokens} tokens in`, `${usage.completion_tokens} out`);
  if (timing) {
    parts.push(
      `first token ${(timing.first_token_ms / 1000).toFixed(2)} s`,
      `${timing.tokens_per_s.toFixed(1)} tokens/s`,
    );
  }
  return parts.join(" · ");
}

export function renderControls() {
  const streaming = streamingMessage();
  document.body.dataset.streaming = streaming ? "true" : "false";
  // The read-only view says "live" while a reply streams to it.
  setHidden(el.liveBadge, !(readOnly() && streaming && !state.ended));
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
export function scheduleRender(msg) {
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

export function renderAll() {
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

export function appendMessage(msg) {
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

/** A message replaced by the server's copy: render it afresh. */
export function rerender(msg) {
  views.get(msg.id).rendered = null;
  renderBody(msg);
  renderChrome(msg);
  renderControls();
}

/** The answer has begun: the thinking above it folds away (the user may open it again). */
export function foldThinking(msg) {
  const view = views.get(msg.id);
  if (view) view.thinking.open = false;
}

/** A reply that ended: render what is pending now, not at the next frame. */
export function finish(msg) {
  const stick = nearBottom();
  dirty.delete(msg.id);
  renderBody(msg);
  renderChrome(msg);
  renderControls();
  if (stick) scrollToBottom();
}

/** Messages already taken out of the state leave the page. */
export function removeViews(messages) {
  for (const msg of messages) {
    dirty.delete(msg.id);
    const view = views.get(msg.id);
    if (view) view.root.remove();
    views.delete(msg.id);
  }
  renderControls();
}

/** The chat's title (the server's, from the snapshot and `title` events) in the tab's name. */
export function renderTitle() {
  document.title = state.title ? `${state.title} · chatrelay` : "chatrelay";
}

export function showFatal(text) {
  el.fatal.replaceChildren();
  const p = document.createElement("p");
  p.textContent = text;
  el.fatal.append(p);
  if (!readOnly()) { // a share link's viewer may have nothing to sign in to
    const a = document.createElement("a");
    a.href = "/";
    a.className = "btn primary";
    a.textContent = "Start a new chat";
    el.fatal.append(a);
  }
  el.fatal.hidden = false;
  el.empty.hidden = true;
  el.composer.hidden = true;
  // Nothing left to share, set or clear.
  for (const node of [el.shareBtn, el.share, el.settingsBtn, el.settings, el.clearBtn]) node.hidden = true;
}
