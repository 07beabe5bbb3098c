// Who is signed in (GET /api/auth, open to all): "Log out" only when a login is in force
// (SITE_PASSWORD or accounts; open mode has nothing to log out of), and the account's name.
import { forgetHistoryCache } from "./cache.js";
import { el } from "./dom.js";

export async function initAccount() {
  el.logout.addEventListener("click", async () => {
    forgetHistoryCache();
    try {
      await fetch("/api/logout", { method: "POST", credentials: "same-origin" });
    } catch { /* going to the login page anyway */ }
    location.assign("/login");
  });
  let auth;
  try {
    const res = await fetch("/api/auth", { credentials: "same-origin" });
    if (!res.ok) return;
    auth = await res.json();
  } catch {
    return; // unknown: nothing to offer
  }
  const signedIn = Boolean(auth && auth.required && auth.authenticated);
  el.whoami.textContent = signedIn && typeof auth.user === "string" ? auth.user : "";
  el.whoami.hidden = el.whoami.textContent === "";
  el.logout.hidden = !signedIn;
  el.account.hidden = !signedIn;
}
