// The Share panel: a read-only link to this chat that anyone can open (POST
// /api/sessions/{id}/share), copied with one click, and Revoke (DELETE …/share), which ends
// every viewer's stream.
import { api, explain, sessionPath } from "./api.js";
import { copyText, el, flashCopied, touch } from "./dom.js";

function showLink(url) {
  el.shareUrl.value = url ? new URL(url, location.origin).href : "";
  el.shareLink.hidden = !url;
  el.shareCreate.hidden = Boolean(url);
}

function say(text) {
  el.shareStatus.textContent = text;
}

export function toggleShare(open) {
  const show = open === undefined ? el.share.hidden : open;
  el.share.hidden = !show;
  el.shareBtn.setAttribute("aria-expanded", String(show));
  if (show && !touch) (el.shareLink.hidden ? el.shareCreate : el.shareCopy).focus();
}

async function createLink() {
  el.shareCreate.disabled = true;
  say("Creating a link…");
  try {
    const shared = await api("POST", sessionPath("/share"));
    showLink(shared.url);
    say("Anyone with this link can watch this chat, live, without signing in. They cannot write.");
    el.shareCopy.focus();
  } catch (err) {
    say(explain(err, "Sharing"));
  } finally {
    el.shareCreate.disabled = false;
  }
}

async function revokeLink() {
  el.shareRevoke.disabled = true;
  try {
    await api("DELETE", sessionPath("/share"));
    showLink(null);
    say("Link revoked: it no longer opens, and its viewers were disconnected.");
  } catch (err) {
    say(explain(err, "Revoking"));
  } finally {
    el.shareRevoke.disabled = false;
  }
}

export function initShare() {
  el.shareBtn.addEventListener("click", () => toggleShare());
  el.shareClose.addEventListener("click", () => toggleShare(false));
  el.shareCreate.addEventListener("click", createLink);
  el.shareRevoke.addEventListener("click", revokeLink);
  el.shareCopy.addEventListener("click", async () => {
    flashCopied(el.shareCopy, await copyText(el.shareUrl.value));
  });
  // A click in the field selects the whole link, for copying by hand.
  el.shareUrl.addEventListener("focus", () => el.shareUrl.select());
}
