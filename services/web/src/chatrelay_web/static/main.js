// chatrelay chat page: wires the modules up and opens the chat in the address bar (or
// creates one), or, at /r/{token}, a share link's read-only view. The page never changes its
// conversation optimistically: what the user does goes to the API and comes back as events
// (stream.js), which is how every tab (this one included) stays identical.
import { initAccount } from "./account.js";
import { api } from "./api.js";
import { initComposer, initMessageActions, stopReply } from "./composer.js";
import { el, touch } from "./dom.js";
import { initHistory, markCurrent } from "./history.js";
import { loadModelOptions } from "./models.js";
import { enterReadOnly } from "./readonly.js";
import { initSettings, toggleSettings } from "./settings.js";
import { initShare, toggleShare } from "./share.js";
import { state, streamingMessage } from "./state.js";
import { connect, initStream } from "./stream.js";
import { renderControls, setConn, showFatal } from "./views.js";

const SHARE_PATH = /^\/r\/([A-Za-z0-9_-]+)\/?$/;
const SESSION_PATH = /^\/s\/([A-Za-z0-9_-]+)\/?$/;

function setDrawer(open) {
  document.body.classList.toggle("drawer-open", open);
  el.scrim.hidden = !open;
}

function initChrome() {
  el.menu.addEventListener("click", () => setDrawer(true));
  el.closeDrawer.addEventListener("click", () => setDrawer(false));
  el.scrim.addEventListener("click", () => setDrawer(false));
  el.newChat.addEventListener("click", () => location.assign("/"));
  // Esc closes what is open (the drawer, the settings, the share panel); with nothing open,
  // it stops the streaming reply. Its default action is left alone.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.isComposing) return;
    const drawerOpen = document.body.classList.contains("drawer-open");
    const settingsOpen = !el.settings.hidden;
    const shareOpen = !el.share.hidden;
    setDrawer(false);
    if (settingsOpen && !state.settingsDirty) toggleSettings(false);
    if (shareOpen) toggleShare(false);
    if (drawerOpen || settingsOpen || shareOpen || event.target.closest(".edit-area")) return;
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
  renderControls();
  const match = location.pathname.match(SESSION_PATH);
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
  markCurrent();
  connect();
  if (!touch) el.input.focus();
}

// A share link's viewer: no login, no list, no writes; the same stream and rendering.
function bootReadOnly(token) {
  enterReadOnly(token);
  initStream();
  initMessageActions();
  renderControls();
  connect();
}

const shared = location.pathname.match(SHARE_PATH);
if (shared) {
  bootReadOnly(shared[1]);
} else {
  initChrome();
  initAccount();
  initHistory();
  initStream();
  initSettings();
  initShare();
  initComposer();
  initMessageActions();
  boot();
}
