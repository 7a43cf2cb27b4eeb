// A small Markdown subset for bot replies. Every character of the input is
// HTML-escaped first; the only markup in the output is what this file adds:
// paragraphs, **bold**, *italics*, `code`, ``` code blocks ```, lists,
// [links](https://…) with http(s) targets only, and lines indented by two or more
// spaces kept as they are (a bot's help lines up its commands in columns).

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// Inline markup on already-escaped text. Code spans are cut out first so nothing
// inside them is formatted.
function inline(escaped) {
  const codes = [];
  let text = escaped.replace(/`([^`\n]+)`/g, (_, code) => {
    codes.push(`<code>${code}</code>`);
    return `\u0000${codes.length - 1}\u0000`;
  });
  text = text.replace(
    /\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g,
    (_, label, url) => `<a href="${url}" target="_blank" rel="noopener noreferrer">${label}</a>`,
  );
  text = text.replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>");
  text = text.replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>");
  text = text.replace(/(^|[^_\w])_([^_\n]+)_(?!\w)/g, "$1<em>$2</em>");
  return text.replace(/\u0000(\d+)\u0000/g, (_, i) => codes[Number(i)]);
}

const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*\d+[.)]\s+(.*)$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const INDENTED = /^ {2,}\S/;

// Lines outside code fences: paragraphs, lists and headings.
function blocks(lines) {
  const out = [];
  let paragraph = [];
  let list = null; // { tag, items }
  let aligned = []; // indented lines: monospace, spacing kept
  const flushParagraph = () => {
    if (paragraph.length) out.push(`<p>${paragraph.map(inline).join("<br>")}</p>`);
    paragraph = [];
  };
  const flushList = () => {
    if (list) out.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i)}</li>`).join("")}</${list.tag}>`);
    list = null;
  };
  const flushAligned = () => {
    if (aligned.length) out.push(`<pre class="aligned">${aligned.map(inline).join("\n")}</pre>`);
    aligned = [];
  };
  for (const line of lines) {
    const bullet = line.match(BULLET);
    const numbered = bullet ? null : line.match(NUMBERED);
    const heading = line.match(HEADING);
    if (!(bullet || numbered) && INDENTED.test(line)) {
      flushParagraph();
      flushList();
      aligned.push(line);
      continue;
    }
    flushAligned();
    if (bullet || numbered) {
      flushParagraph();
      const tag = bullet ? "ul" : "ol";
      if (list && list.tag !== tag) flushList();
      list ??= { tag, items: [] };
      list.items.push((bullet || numbered)[1]);
    } else if (heading) {
      flushParagraph();
      flushList();
      out.push(`<p class="md-heading"><strong>${inline(heading[2])}</strong></p>`);
    } else if (!line.trim()) {
      flushParagraph();
      flushList();
    } else {
      flushList();
      paragraph.push(line);
    }
  }
  flushParagraph();
  flushList();
  flushAligned();
  return out.join("");
}

export function renderMarkdown(source) {
  const lines = escapeHtml(source).split(/\r?\n/);
  const out = [];
  let prose = [];
  let code = null; // lines of an open ``` block (an unclosed one runs to the end: streaming)
  for (const line of lines) {
    if (/^\s*```/.test(line)) {
      if (code === null) {
        out.push(blocks(prose));
        prose = [];
        code = [];
      } else {
        out.push(`<pre><code>${code.join("\n")}</code></pre>`);
        code = null;
      }
    } else if (code !== null) {
      code.push(line);
    } else {
      prose.push(line);
    }
  }
  if (code !== null) out.push(`<pre><code>${code.join("\n")}</code></pre>`);
  out.push(blocks(prose));
  return out.join("");
}
