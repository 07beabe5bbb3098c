// What the user does to the conversation: send, stop, regenerate, edit, copy, clear. Each
// goes to the API only; the result comes back as events, like in every other tab.
import { api, explain, sessionPath } from "./api.js";
import { button, copyText, el, flashCopied, toast } from "./dom.js";
import { state, streamingMessage } from "./state.js";
import { renderBody, renderControls, viewOf } from "./views.js";

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

export async function stopReply() {
  el.stop.disabled = true;
  try {
    await api("POST", sessionPath("/stop"));
  } catch (err) {
    toast(explain(err, "Stopping"));
  } finally {
    el.stop.disabled = false;
  }
}

async function regenerate() {
  try {
    await api("POST", sessionPath("/regenerate"));
  } catch (err) {
    toast(explain(err, "Regenerating"));
  }
}

async function copyInto(text, buttonEl) {
  flashCopied(buttonEl, await copyText(text));
}

function startEdit(msg) {
  const view = viewOf(msg.id);
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
  const view = viewOf(msg.id);
  if (!view) return;
  view.editing = false;
  view.rendered = null;
  renderBody(msg);
  renderControls();
}

async function onMessageClick(event) {
  const target = event.target.closest("button");
  if (!target) return;
  const root = target.closest(".msg");
  const msg = root && state.byId.get(root.dataset.id);
  if (target.classList.contains("copy-code")) {
    const code = target.closest(".codeblock").querySelector("pre code");
    copyInto(code ? code.textContent : "", target);
    return;
  }
  if (!msg) return;
  switch (target.dataset.action) {
    case "copy":
      copyInto(msg.content, target);
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
      const area = viewOf(msg.id).body.querySelector("textarea");
      const content = area ? area.value : "";
      if (!content.trim()) return;
      target.disabled = true;
      try {
        await sendMessage(content, msg.id);
        const view = viewOf(msg.id);
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
}

// Clear asks twice: the first click arms it for 4 s.
let clearArmed = 0;
function disarmClear() {
  clearTimeout(clearArmed);
  clearArmed = 0;
  el.clearBtn.textContent = "Clear";
  el.clearBtn.classList.remove("armed");
}

async function onClearClick() {
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
}

/** The buttons on the messages (the read-only view has only Copy among them). */
export function initMessageActions() {
  el.messages.addEventListener("click", onMessageClick);
}

export function initComposer() {
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
  el.stop.addEventListener("click", stopReply);
  el.clearBtn.addEventListener("click", onClearClick);
}
