// Markdown → sanitized DOM for model output.
//
// Pipeline: markdown-it (raw HTML disabled, so any HTML in the text shows as text) →
// DOMPurify (second line of defence: drops scripts, event handlers, javascript: URLs,
// style attributes) → innerHTML → enhancements made with DOM APIs only: code-block toolbars
// with a copy button, and KaTeX math rendered with katex.render() (it sets its styles
// through the CSSOM, which the page's CSP `style-src 'self'` allows; inline style
// attributes in markup would be blocked).
//
// The libraries are the vendored classic scripts the page loads before its modules
// (index.html); they leave their globals on `window`.
const { hljs, katex, markdownit, DOMPurify } = window;

// --- math: $…$, $$…$$, \(…\), \[…\] become placeholders; KaTeX fills them after sanitizing.
function mathInline(state, silent) {
  const src = state.src;
  const start = state.pos;
  let open, close, display;
  if (src.startsWith("\\(", start)) {
    [open, close, display] = ["\\(", "\\)", false];
  } else if (src.startsWith("\\[", start)) {
    [open, close, display] = ["\\[", "\\]", true];
  } else if (src.startsWith("$$", start)) {
    [open, close, display] = ["$$", "$$", true];
  } else if (src[start] === "$") {
    [open, close, display] = ["$", "$", false];
  } else {
    return false;
  }
  const from = start + open.length;
  if (open === "$") {
    // Pandoc's rule, so that "costs $5 and $10" stays text: no space after the opening
    // $, no space before the closing one, no digit right after it.
    if (from >= state.posMax || /\s/.test(src[from])) return false;
    let end = from;
    for (;;) {
      end = src.indexOf("$", end);
      if (end < 0 || end >= state.posMax) return false;
      if (src[end - 1] === "\\") { end += 1; continue; }
      break;
    }
    if (end === from) return false;
    if (/\s/.test(src[end - 1]) || /\d/.test(src[end + 1] || "")) return false;
    if (!silent) pushMath(state, src.slice(from, end), false);
    state.pos = end + 1;
    return true;
  }
  const end = src.indexOf(close, from);
  if (end < 0 || end + close.length > state.posMax || end === from) return false;
  if (!silent) pushMath(state, src.slice(from, end), display);
  state.pos = end + close.length;
  return true;
}

function pushMath(state, tex, display) {
  const token = state.push(display ? "math_display_inline" : "math_inline", "", 0);
  token.content = tex;
}

function mathBlock(state, startLine, endLine, silent) {
  const begin = state.bMarks[startLine] + state.tShift[startLine];
  const max = state.eMarks[startLine];
  const first = state.src.slice(begin, max);
  let close;
  if (first.startsWith("$$")) close = "$$";
  else if (first.startsWith("\\[")) close = "\\]";
  else return false;
  if (state.sCount[startLine] - state.blkIndent >= 4) return false;
  let body = first.slice(2);
  let line = startLine;
  let found = false;
  if (body.trimEnd().endsWith(close) && body.trim().length >= close.length) {
    body = body.trimEnd().slice(0, -close.length);
    found = true;
  }
  const lines = [body];
  while (!found) {
    line += 1;
    if (line >= endLine) return false; // unclosed (e.g. still streaming): not math yet
    const text = state.src.slice(state.bMarks[line] + state.tShift[line], state.eMarks[line]);
    const at = text.indexOf(close);
    if (at >= 0) {
      if (text.slice(at + close.length).trim() !== "") return false;
      lines.push(text.slice(0, at));
      found = true;
    } else {
      lines.push(text);
    }
  }
  if (silent) return true;
  const token = state.push("math_block", "div", 0);
  token.block = true;
  token.content = lines.join("\n").trim();
  token.map = [startLine, line + 1];
  state.line = line + 1;
  return true;
}

const escapeHtml = (s) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

const md = markdownit({
  html: false, // raw HTML from the model is shown as text, never parsed
  linkify: true,
  breaks: false,
  highlight(code, lang) {
    const name = (lang || "").trim().split(/\s+/)[0].toLowerCase();
    if (hljs && name && hljs.getLanguage(name)) {
      try {
        return hljs.highlight(code, { language: name, ignoreIllegals: true }).value;
      } catch {
        return "";
      }
    }
    return ""; // markdown-it escapes it
  },
});
md.inline.ruler.before("escape", "math_inline", mathInline);
md.block.ruler.before("fence", "math_block", mathBlock, {
  alt: ["paragraph", "reference", "blockquote", "list"],
});
md.renderer.rules.math_inline = (tokens, i) =>
  `<span class="math-inline">${escapeHtml(tokens[i].content)}</span>`;
md.renderer.rules.math_display_inline = (tokens, i) =>
  `<span class="math-display">${escapeHtml(tokens[i].content)}</span>`;
md.renderer.rules.math_block = (tokens, i) =>
  `<div class="math-display">${escapeHtml(tokens[i].content)}</div>\n`;

// --- sanitizing
const PURIFY = {
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "option",
    "iframe", "frame", "object", "embed", "svg", "math", "link", "meta", "base"],
  FORBID_ATTR: ["style", "id", "name", "srcset", "action", "formaction"],
  ALLOW_DATA_ATTR: false,
};
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

function toSafeHtml(markdown) {
  return DOMPurify.sanitize(md.render(markdown), PURIFY);
}

function enhanceCode(root) {
  for (const pre of root.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (!code) continue;
    code.classList.add("hljs");
    const langClass = [...code.classList].find((c) => c.startsWith("language-"));
    const bar = document.createElement("div");
    bar.className = "codebar";
    const label = document.createElement("span");
    label.className = "codelang";
    label.textContent = langClass ? langClass.slice("language-".length) : "text";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code btn tiny ghost";
    button.textContent = "Copy code";
    bar.append(label, button);
    const wrap = document.createElement("div");
    wrap.className = "codeblock";
    pre.replaceWith(wrap);
    wrap.append(bar, pre);
  }
}

function enhanceMath(root) {
  if (!katex) return;
  for (const el of root.querySelectorAll(".math-inline, .math-display")) {
    const tex = el.textContent;
    try {
      katex.render(tex, el, {
        displayMode: el.classList.contains("math-display"),
        // KaTeX's own error rendering sets a style="" attribute, which the CSP blocks:
        // show bad TeX as text with our class instead.
        throwOnError: true,
        trust: false,
        maxSize: 50,
        maxExpand: 500,
      });
    } catch (err) {
      el.textContent = tex;
      el.classList.add("math-error");
      el.title = err && err.message ? String(err.message) : "Invalid TeX";
    }
  }
}

/** Render `markdown` into `el`, replacing its content. */
export function render(el, markdown) {
  el.innerHTML = toSafeHtml(markdown);
  enhanceCode(el);
  enhanceMath(el);
}
