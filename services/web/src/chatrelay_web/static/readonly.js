// The read-only view of a share link (/r/{token}): the conversation, live, and nothing that
// writes. What it must not offer is taken off the page, not merely hidden.
import { el } from "./dom.js";
import { state } from "./state.js";

export function enterReadOnly(token) {
  state.shareToken = token;
  document.body.classList.add("readonly");
  for (const node of [
    el.sidebar, el.scrim, el.menu, el.composerWrap, el.settings, el.settingsBtn, el.clearBtn,
    el.shareBtn, el.share,
  ]) {
    node.remove();
  }
  el.readonlyBadge.hidden = false;
  el.empty.replaceChildren();
  const note = document.createElement("p");
  note.textContent = "A shared chat, read-only. Nothing has been said yet.";
  el.empty.append(note);
}
