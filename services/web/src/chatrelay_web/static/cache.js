// The one name of the list's early-paint copy in localStorage (history.js), and its removal
// whenever who is signed in changes: one account's titles never show to the next.
export const HISTORY_CACHE_KEY = "chatrelay.history";

export function forgetHistoryCache() {
  try {
    localStorage.removeItem(HISTORY_CACHE_KEY);
  } catch { /* storage disabled: nothing kept */ }
}
