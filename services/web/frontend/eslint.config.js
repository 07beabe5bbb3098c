// eslint (flat config) for the page's own scripts. `npm run lint` (which `make lint` runs)
// lints from services/web with this file as its config, so that patterns below are relative
// to services/web: the page lives outside this folder.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["frontend/node_modules/", "src/chatrelay_web/static/vendor/"] },
  {
    files: ["src/chatrelay_web/static/**/*.js"],
    ...js.configs.recommended,
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.browser },
  },
  {
    files: ["frontend/*.js", "frontend/*.mjs"],
    ...js.configs.recommended,
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.node },
  },
];
