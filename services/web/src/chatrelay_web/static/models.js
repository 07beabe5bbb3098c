// The models a session may use, as the gateway lists them (GET /api/models).
import { api } from "./api.js";
import { el } from "./dom.js";

// The models the gateway allows (OPENAI_MODELS), offered in the settings' model field.
export async function loadModelOptions() {
  let listed;
  try {
    listed = await api("GET", "/api/models");
  } catch {
    return; // the field still takes free text; the server names the allowed ones on a 422
  }
  el.modelOptions.replaceChildren(...listed.models.map((model) => {
    const option = document.createElement("option");
    // A name, or (issue 10's listing) an object naming it.
    option.value = typeof model === "string" ? model : model.id;
    return option;
  }));
}
