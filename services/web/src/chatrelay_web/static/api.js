// The JSON API (served by the gateway behind the same origin).
import { state } from "./state.js";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

function goLogin() {
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
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
    } catch { /* not JSON */ }
    throw new ApiError(res.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const sessionPath = (suffix) => `/api/sessions/${encodeURIComponent(state.sessionId)}${suffix}`;

/** The conversation this tab shows: its session, or (read-only) the share link's copy. */
export const conversationPath = (suffix) => (state.shareToken === null
  ? sessionPath(suffix)
  : `/api/shared/${encodeURIComponent(state.shareToken)}${suffix}`);

export function explain(err, action) {
  if (err.status === 409) {
    return `${action}: ${(err.message || "a reply is still streaming").replace(/\.$/, "")}.`;
  }
  if (err.status === 0) return `${action}: cannot reach the server.`;
  if (err.status === 401) return `${action}: sign-in required.`;
  return `${action} failed: ${err.message}`;
}
