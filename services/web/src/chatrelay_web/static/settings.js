// The session's settings panel (system prompt, model, temperature): shared by every tab.
import { api, explain, sessionPath } from "./api.js";
import { el, touch } from "./dom.js";
import { state } from "./state.js";
import { renderModel } from "./views.js";

export function renderSettingsForm(force) {
  if (state.settingsDirty && !force) {
    el.settingsStatus.textContent = "Changed in another tab; saving will overwrite it.";
    return;
  }
  state.settingsDirty = false;
  const s = state.settings;
  const system = s.system || "";
  const model = s.model || "";
  const temperature = s.temperature === null || s.temperature === undefined ? "" : String(s.temperature);
  // Our own save comes back as a `settings` event too (before or after the PATCH answer):
  // it changes nothing, so it must not wipe "Saved.".
  const changed = el.setSystem.value !== system || el.setModel.value !== model ||
    el.setTemperature.value !== temperature;
  el.setSystem.value = system;
  el.setModel.value = model;
  el.setTemperature.value = temperature;
  if (changed) el.settingsStatus.textContent = "";
}

/** New settings, from a `settings` event or our own save's answer. */
export function applySettings(settings) {
  state.settings = { ...state.settings, ...(settings || {}) };
  renderModel();
  renderSettingsForm(false);
}

export function toggleSettings(open) {
  const show = open === undefined ? el.settings.hidden : open;
  el.settings.hidden = !show;
  el.settingsBtn.setAttribute("aria-expanded", String(show));
  if (show && !touch) el.setSystem.focus();
}

export function initSettings() {
  el.settingsBtn.addEventListener("click", () => toggleSettings());
  el.settingsCancel.addEventListener("click", () => {
    state.settingsDirty = false;
    renderSettingsForm(true);
    toggleSettings(false);
  });
  el.settingsForm.addEventListener("input", () => {
    state.settingsDirty = true;
    el.settingsStatus.textContent = "Unsaved changes";
  });
  el.settingsForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { system: el.setSystem.value.trim() ? el.setSystem.value : null };
    const model = el.setModel.value.trim();
    if (model) body.model = model;
    const t = el.setTemperature.value.trim();
    if (t === "") {
      body.temperature = null;
    } else {
      const value = Number(t);
      if (!Number.isFinite(value) || value < 0 || value > 2) {
        el.settingsStatus.textContent = "Temperature must be between 0 and 2.";
        return;
      }
      body.temperature = value;
    }
    el.settingsStatus.textContent = "Saving…";
    try {
      const res = await api("PATCH", sessionPath(""), body);
      state.settingsDirty = false;
      if (res && res.settings) applySettings(res.settings);
      el.settingsStatus.textContent = "Saved.";
    } catch (err) {
      el.settingsStatus.textContent = explain(err, "Saving");
    }
  });
}
