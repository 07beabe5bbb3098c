// Login page: trades the site password for an httpOnly cookie (POST /api/login). The
// password is only ever sent in that request body; nothing is stored in the browser.
"use strict";
(function () {
  const form = document.getElementById("login-form");
  const input = document.getElementById("password");
  const error = document.getElementById("login-error");
  const submit = document.getElementById("login-submit");

  function nextUrl() {
    const next = new URLSearchParams(location.search).get("next") || "/";
    // Same-origin paths only: "/s/abc" yes, "//evil.example" or "https://..." no.
    return /^\/(?![/\\])/.test(next) ? next : "/";
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
        body: JSON.stringify({ password: input.value }),
        credentials: "same-origin",
      });
      if (res.ok) {
        input.value = "";
        location.replace(nextUrl());
        return;
      }
      if (res.status === 401 || res.status === 403) {
        showError("Wrong password.");
      } else if (res.status === 429) {
        showError("Too many attempts; wait a moment and try again.");
      } else {
        showError(`Sign-in failed (HTTP ${res.status}).`);
      }
    } catch (_err) {
      showError("Cannot reach the server.");
    } finally {
      submit.disabled = false;
    }
    input.select();
  });

  if (window.matchMedia("(pointer: fine)").matches) input.focus();
})();
