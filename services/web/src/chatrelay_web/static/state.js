// What the page knows about its chat: changed only by events from the server (and the
// settings form's own save), never optimistically.

export const state = {
  sessionId: null,
  // A share link's read-only view (/r/{token}): no writes, the stream under /api/shared/.
  shareToken: null,
  title: null,
  ended: false, // deleted, revoked or not found: the stream stays closed
  settings: { system: null, model: null, temperature: null },
  messages: [], // [{id, role, content, reasoning, status, model, error, finish, usage, timing}]
  byId: new Map(),
  lastId: -1, // id of the last event applied
  awaitingSnapshot: false, // after `reset`, ignore everything until the snapshot
  loaded: false,
  lastReplyModel: null,
  settingsDirty: false,
};

export const readOnly = () => state.shareToken !== null;

export function streamingMessage() {
  for (let i = state.messages.length - 1; i >= 0; i -= 1) {
    if (state.messages[i].status === "streaming") return state.messages[i];
  }
  return null;
}

export function normalizeMessage(raw) {
  return {
    id: String(raw.id),
    role: raw.role === "user" ? "user" : raw.role === "system" ? "system" : "assistant",
    content: typeof raw.content === "string" ? raw.content : "",
    reasoning: typeof raw.reasoning === "string" ? raw.reasoning : "", // the "thinking"
    status: raw.status || "complete",
    model: raw.model || null,
    error: raw.error && typeof raw.error === "object" ? raw.error : null,
    finish: raw.finish_reason || null,
    usage: raw.usage && typeof raw.usage === "object" ? raw.usage : null,
    timing: raw.timing && typeof raw.timing === "object" ? raw.timing : null,
  };
}
