// Message bodies as the page shows them.
//
// Bot replies are Markdown, rendered by two well-kept libraries vendored in
// static/vendor/ (classic scripts loaded before this module; they set the globals
// `marked` and `DOMPurify`): marked, with GitHub's flavour (tables, headings, nested
// lists, fenced code, autolinks), turns the text into HTML, and DOMPurify keeps only
// the tags and attributes listed below. On top of that:
// - raw HTML in a reply is shown as the text it is, never parsed (a bot that repeats
//   an <img> tag with an error handler shows those characters);
// - links go to http(s) and mailto only (a link with any other scheme, a script's
//   among them, is plain text), open in a new tab, and send no referrer;
// - images become links to them (the page's CSP loads no image from elsewhere);
// - lines indented by two spaces or more (a bot's help lining its commands up in
//   columns) stay as written, in `pre.aligned`;
// - each code block gets a copy button (its clicks are the page's, see app.js).
// People's messages are plain text, with their http(s) and mailto links made clickable.

const { Marked } = globalThis.marked;
const DOMPurify = globalThis.DOMPurify;

// The schemes a link may have, in Markdown and in plain text alike.
const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);
const SAFE_URL = /^(?:https?|mailto):/i;
const PURIFY = {
  ALLOWED_TAGS: [
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol",
    "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
  ],
  ALLOWED_ATTR: ["href", "title", "class", "align", "start"],
  ALLOWED_URI_REGEXP: SAFE_URL,
  RETURN_DOM_FRAGMENT: true,
};
// A URL in plain text; what it ends with that is rather the sentence's is cut off after.
const URL_IN_TEXT = /\b(?:https?:\/\/|mailto:)[^\s<>"]+/gi;
const TRAILING_PUNCTUATION = /[.,;:!?'")\]]+$/;

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// Lines indented by two spaces or more, up to a line that is something else in
// Markdown: a list item, a code fence, a quote.
const INDENTED_LINES = /^(?: {2,}\S[^\n]*(?:\n|$))+/;
const NOT_ALIGNED = /^\s*(?:[-*+]\s|\d+[.)]\s|```|~~~|>)/;

const aligned = {
  name: "aligned",
  level: "block",
  // Where such lines may start, so a paragraph stops before them (marked asks this).
  start(src) {
    const found = /(^|\n) {2,}\S/.exec(src);
    return found ? found.index + found[1].length : undefined;
  },
  tokenizer(src) {
    const found = INDENTED_LINES.exec(src);
    if (!found) return undefined;
    const lines = [];
    for (const line of found[0].replace(/\n$/, "").split("\n")) {
      if (NOT_ALIGNED.test(line)) break;
      lines.push(line);
    }
    if (!lines.length) return undefined;
    const text = lines.join("\n");
    const raw = src.startsWith(`${text}\n`) ? `${text}\n` : text;
    return { type: "aligned", raw, text, tokens: this.lexer.inlineTokens(text) };
  },
  renderer(token) {
    return `<pre class="aligned">${this.parser.parseInline(token.tokens)}</pre>`;
  },
};

const markdown = new Marked({
  gfm: true,
  extensions: [aligned],
  renderer: {
    html({ text }) {
      return escapeHtml(text);
    },
    image({ href, text }) {
      const label = escapeHtml(text || href);
      return SAFE_URL.test(href) ? `<a href="${escapeHtml(href)}">${label}</a>` : label;
    },
  },
});

// A bot's reply (or the part of it streamed so far) as a fragment to put in its bubble.
export function renderMarkdown(source) {
  const fragment = DOMPurify.sanitize(markdown.parse(String(source)), PURIFY);
  for (const link of fragment.querySelectorAll("a[href]")) safeLink(link);
  for (const dropped of fragment.querySelectorAll("a:not([href])")) dropped.replaceWith(...dropped.childNodes); // its href was unsafe: text
  for (const pre of fragment.querySelectorAll("pre:not(.aligned)")) {
    const block = document.createElement("div");
    block.className = "code-block";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.textContent = "Copy";
    copy.title = "Copy this code";
    pre.replaceWith(block);
    block.append(copy, pre);
  }
  return fragment;
}

// A person's message: text, with its links clickable.
export function renderText(source) {
  const text = String(source);
  const fragment = document.createDocumentFragment();
  let from = 0;
  for (const found of text.matchAll(URL_IN_TEXT)) {
    const url = found[0].replace(TRAILING_PUNCTUATION, "");
    if (!isSafeUrl(url)) continue;
    fragment.append(text.slice(from, found.index));
    const link = document.createElement("a");
    link.href = url;
    link.textContent = url;
    safeLink(link);
    fragment.append(link);
    from = found.index + url.length;
  }
  fragment.append(text.slice(from));
  return fragment;
}

function isSafeUrl(url) {
  try {
    return SAFE_SCHEMES.has(new URL(url).protocol);
  } catch {
    return false;
  }
}

function safeLink(link) {
  link.target = "_blank";
  link.rel = "noopener noreferrer";
}
