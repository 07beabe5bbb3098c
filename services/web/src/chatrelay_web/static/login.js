// Login page: trades the site password (or, in accounts mode, a username and password) for
// an httpOnly cookie (POST /api/login). The password is only ever sent in that request body;
// nothing is stored in the browser.
import { forgetHistoryCache } from "./cache.js";

const form = document.getElementById("login-form");
const input = document.getElementById("password");
const username = document.getElementById("username");
const usernameField = document.getElementById("username-field");
const intro = document.getElementById("login-intro");
let accounts = false;
const error = document.getElementById("login-error");
const submit = document.getElementById("login-submit");

// Where to go after signing in: ?next=, if it stays on this site. Parsed the way the
// browser will resolve it (tabs and newlines dropped, "\" read as "/"), then the origin
// compared: "/%09/evil.example" is "//evil.example", another site.
function nextUrl() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  let url;
  try {
    url = new URL(next, location.origin);
  } catch {
    return "/";
  }
  if (url.origin !== location.origin) return "/";
  return url.pathname + url.search + url.hash;
}

function showError(text) {
  error.textContent = text;
  error.hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  submit.disabled = true;
  try {
    const res = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(accounts ? { username: username.value.trim(), password: input.value } : { password: input.value }),
      credentials: "same-origin",
    });
    if (res.ok) {
      forgetHistoryCache(); // the list painted early must be this login's
      input.value = "";
      location.replace(nextUrl());
      return;
    }
    if (res.status === 401 || res.status === 403) {
      showError(accounts ? "Wrong username or password." : "Wrong password.");
    } else if (res.status === 429) {
      const wait = Number(res.headers.get("Retry-After"));
      showError(
        wait > 0
          ? `Too many attempts; try again in ${wait} s.`
          : "Too many attempts; wait a moment and try again.",
      );
    } else {
      showError(`Sign-in failed (HTTP ${res.status}).`);
    }
  } catch {
    showError("Cannot reach the server.");
  } finally {
    submit.disabled = false;
  }
  input.select();
});

// GET /api/auth says which sign-in this site has (open to all): in accounts mode it names
// the mode, and the form asks for a username too.
async function learnMode() {
  try {
    const res = await fetch("/api/auth", { credentials: "same-origin" });
    const auth = res.ok ? await res.json() : null;
    accounts = Boolean(auth && (auth.mode === "accounts" || auth.accounts === true));
  } catch {
    accounts = false; // the password alone, as before
  }
  usernameField.hidden = !accounts;
  username.required = accounts;
  if (accounts) intro.textContent = "Sign in with your account.";
  if (window.matchMedia("(pointer: fine)").matches) (accounts ? username : input).focus();
}

if (window.matchMedia("(pointer: fine)").matches) input.focus();
learnMode();
