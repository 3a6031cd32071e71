// ESLint flat config: the labeling page's browser script (alft/human/page/static) and this file.
"use strict";

const js = require("@eslint/js");
const globals = require("globals");

module.exports = [
  js.configs.recommended,
  {
    // inlined into a classic <script> element by alft/human/page/render.py: not a module
    files: ["alft/human/page/static/**/*.js"],
    languageOptions: {
      sourceType: "script",
      globals: { ...globals.browser },
    },
  },
  {
    files: ["eslint.config.js"],
    languageOptions: {
      sourceType: "commonjs",
      globals: { ...globals.node },
    },
  },
];
