// Loads the web extension's modules in Node without a package.json: web/*.js are ES modules served to the
// browser, which Node 20 would read as CommonJS. They are imported from data: URLs instead; the imports of
// web/sentinel.js ("../../scripts/app.js", "./sentinel_panels.js") are pointed at a fake app and at the real
// panels module.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const WEB = join(ROOT, "web");

const dataURL = (src) => "data:text/javascript;base64," + Buffer.from(src).toString("base64");

export function panelsSource() {
  return readFileSync(join(WEB, "sentinel_panels.js"), "utf8");
}

export async function loadPanels() {
  return import(dataURL(panelsSource()));
}

export function fixtures() {
  return JSON.parse(readFileSync(join(ROOT, "tests", "js", "fixtures.json"), "utf8"));
}

/** web/sentinel.js with `app` = globalThis.__sentinelFakeApp (set it before calling). Each call loads a fresh
 * copy (a unique comment makes a new module URL). */
let n = 0;
export async function loadExtension() {
  const app = dataURL(`export const app = globalThis.__sentinelFakeApp; // ${n}`);
  const panels = dataURL(panelsSource());
  const src = readFileSync(join(WEB, "sentinel.js"), "utf8")
    .replace('"../../scripts/app.js"', JSON.stringify(app))
    .replace('"./sentinel_panels.js"', JSON.stringify(panels));
  if (src.includes("../../scripts/app.js") || src.includes("./sentinel_panels.js")) {
    throw new Error("web/sentinel.js imports changed: update tests/js/_load.mjs");
  }
  return import(dataURL(src + `\n// copy ${n++}\n`));
}
