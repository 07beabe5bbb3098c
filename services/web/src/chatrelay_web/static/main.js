// chatrelay chat page: wires the modules up and opens the chat in the address bar (or
// creates one). The page never changes its conversation optimistically: what the user does
// goes to the API and comes back as events (stream.js), which is how every tab (this one
// included) stays identical.
import { api } from "./api.js";
import { initComposer, stopReply } from "./composer.js";
import { el, touch } from "./dom.js";
import { loadModelOptions } from "./models.js";
import { initRecent, renderRecent } from "./recent.js";
import { initSettings, toggleSettings } from "./settings.js";
import { state, streamingMessage } from "./state.js";
import { connect, initStream } from "./stream.js";
import { renderControls, setConn, showFatal } from "./views.js";

function setDrawer(open) {
  document.body.classList.toggle("drawer-open", open);
  el.scrim.hidden = !open;
}

function initChrome() {
  el.menu.addEventListener("click", () => setDrawer(true));
  el.closeDrawer.addEventListener("click", () => setDrawer(false));
  el.scrim.addEventListener("click", () => setDrawer(false));
  el.newChat.addEventListener("click", () => location.assign("/"));
  el.logout.addEventListener("click", async () => {
    try {
      await fetch("/api/logout", { method: "POST", credentials: "same-origin" });
    } catch { /* going to the login page anyway */ }
    location.assign("/login");
  });
  // Esc closes what is open (the drawer, the settings); with nothing open, it stops the
  // streaming reply. Its default action is left alone.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.isComposing) return;
    const drawerOpen = document.body.classList.contains("drawer-open");
    const settingsOpen = !el.settings.hidden;
    setDrawer(false);
    if (settingsOpen && !state.settingsDirty) toggleSettings(false);
    if (drawerOpen || settingsOpen || event.target.closest(".edit-area")) return;
    if (streamingMessage()) stopReply();
  });
}

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

initChrome();
initRecent();
initStream();
initSettings();
initComposer();
boot();
