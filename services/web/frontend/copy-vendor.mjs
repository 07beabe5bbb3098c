// Copies the browser builds of the pinned libraries (package-lock.json) into
// ../src/chatrelay_web/static/vendor/. The copies are committed: the web service and its
// Docker image serve them as plain files and never need node. Run via `make assets`.
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const out = join(here, "..", "src", "chatrelay_web", "static", "vendor");

// [package, file inside the package, destination inside vendor/]
const files = [
  ["markdown-it", "dist/browser/markdown-it.umd.min.js", "markdown-it/markdown-it.min.js"],
  ["markdown-it", "LICENSE", "markdown-it/LICENSE"],
  ["dompurify", "dist/purify.min.js", "dompurify/purify.min.js"],
  ["dompurify", "LICENSE", "dompurify/LICENSE"],
  ["@highlightjs/cdn-assets", "highlight.min.js", "highlight/highlight.min.js"],
  ["@highlightjs/cdn-assets", "styles/github.min.css", "highlight/github.min.css"],
  ["@highlightjs/cdn-assets", "styles/github-dark.min.css", "highlight/github-dark.min.css"],
  ["@highlightjs/cdn-assets", "LICENSE", "highlight/LICENSE"],
  ["katex", "dist/katex.min.js", "katex/katex.min.js"],
  ["katex", "dist/katex.min.css", "katex/katex.min.css"],
  ["katex", "LICENSE", "katex/LICENSE"],
];

rmSync(out, { recursive: true, force: true });
const versions = {};
for (const [pkg, src, dest] of files) {
  const target = join(out, dest);
  mkdirSync(dirname(target), { recursive: true });
  cpSync(join(modules, pkg, src), target);
  versions[pkg] = JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8")).version;
}
// KaTeX's CSS lists woff2 first; every browser that runs this page takes it, so the
// woff/ttf fallbacks are never fetched and are not copied.
const fonts = join(modules, "katex", "dist", "fonts");
mkdirSync(join(out, "katex", "fonts"), { recursive: true });
for (const name of readdirSync(fonts).filter((n) => n.endsWith(".woff2"))) {
  cpSync(join(fonts, name), join(out, "katex", "fonts", name));
}
const lines = Object.entries(versions).map(([pkg, v]) => `${pkg} ${v}`);
writeFileSync(join(out, "VERSIONS.txt"), lines.join("\n") + "\n");
console.log(`vendor/: ${lines.join(", ")}`);
