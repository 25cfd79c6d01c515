// Reuse of a widget (the player's Download, Copy embed code and ?embed=<id>): the current
// frame as a standalone SVG file with its attribution, the <iframe> code, and the widget alone
// on the page for an iframe, telling the host page its height. Each function takes the
// player (docs/js/player.js) whose widget it serves.

export const LICENCE = "CC BY 4.0";
export const LICENCE_URL = "https://creativecommons.org/licenses/by/4.0/";
const SITE = new URL("../", import.meta.url); // this file is <site>/js/reuse.js

function escapeAttr(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function pageTitle() {
  return document.title.replace(/ - vLLM, step by step$/, "");
}

// The current frame as a standalone SVG file that reads the same wherever it is opened:
// the colours the page shows now (CSS variables replaced), a background of the same
// palette, the font stack, and the attribution (title, page, licence) in its metadata.
export function standaloneSvg(p) {
  const style = getComputedStyle(p.root);
  const colour = (name) => style.getPropertyValue(name).trim() || "currentColor";
  const svg = p.frames[p.step].svg.replace(/var\((--[\w-]+)\)/g, (_, name) => colour(name));
  const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
  const root = doc.documentElement;
  const ns = "http://www.w3.org/2000/svg";
  const font = getComputedStyle(p.picture.querySelector("text") || p.root).fontFamily || "monospace";
  root.setAttribute("style", `font-family:${font};background:${colour("--vsb-bg")}`);
  const [x, y, w, h] = (root.getAttribute("viewBox") || "0 0 0 0").split(/\s+/);
  const back = doc.createElementNS(ns, "rect");
  for (const [k, v] of Object.entries({ x, y, width: w, height: h, fill: colour("--vsb-bg") })) back.setAttribute(k, v);
  const title = root.querySelector("title");
  root.insertBefore(back, title ? title.nextSibling : root.firstChild);
  const page = pageTitle();
  const widgetTitle = p.q(".vsb-title").textContent;
  const credit = `“${widgetTitle}”, step ${p.step + 1}, from “${page}”, ` +
    `vLLM, step by step, ${p.pageUrl()}. Licensed under ${LICENCE} (${LICENCE_URL}).`;
  const desc = doc.createElementNS(ns, "desc");
  desc.textContent = credit;
  root.insertBefore(desc, back);
  const meta = doc.createElementNS(ns, "metadata");
  meta.textContent = JSON.stringify({ title: widgetTitle, page, url: p.pageUrl(),
    step: p.step + 1, licence: LICENCE, licence_url: LICENCE_URL });
  root.insertBefore(meta, back);
  return new XMLSerializer().serializeToString(doc);
}

export function download(p) {
  const blob = new Blob([standaloneSvg(p)], { type: "image/svg+xml" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${p.id}-step-${p.step + 1}.svg`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

export function embedCode(p) {
  const url = new URL(location.href);
  url.search = `?embed=${encodeURIComponent(p.id)}`;
  url.hash = p.ownHash();
  const title = p.q(".vsb-title").textContent;
  const height = Math.ceil(p.root.getBoundingClientRect().height) + 60;
  const script = new URL("js/embed.js", SITE); // <site>/js/embed.js, from any page
  // The iframe works alone at a fixed height; with embed.js it follows the widget's height.
  return `<iframe src="${escapeAttr(url.href)}" title="${escapeAttr(title)}" ` +
    `width="100%" height="${height}" style="border:0;width:100%" loading="lazy" ` +
    `data-vsb-embed allow="clipboard-write" ` +
    `sandbox="allow-scripts allow-same-origin allow-forms allow-popups allow-downloads"></iframe>` +
    `<script src="${escapeAttr(script.href)}" async></script>`;
}

export async function copyEmbed(p) {
  const box = p.q(".vsb-embed-code");
  box.value = embedCode(p);
  box.hidden = false;
  box.select();
  const button = p.q('[data-act="embed"]');
  try {
    await navigator.clipboard.writeText(box.value);
    button.textContent = "Embed code copied";
  } catch {
    button.textContent = "Copy the embed code below";
  }
}

// ?embed=<id>: this widget alone on the page, for an iframe.
export function embed(p, options) {
  document.documentElement.classList.add("vsb-embed");
  if (options.theme === "light" || options.theme === "dark") {
    // Material sets the scheme from the reader's saved choice or the system once its own
    // script runs, possibly after this: the embed's option wins, whenever that happens.
    const scheme = options.theme === "dark" ? "slate" : "default";
    const apply = () => {
      if (document.body.getAttribute("data-md-color-scheme") !== scheme) {
        document.body.setAttribute("data-md-color-scheme", scheme);
      }
    };
    apply();
    new MutationObserver(apply).observe(document.body,
      { attributes: true, attributeFilter: ["data-md-color-scheme"] });
  }
  if (options.controls === "minimal") p.root.classList.add("vsb-minimal");
  const holder = document.createElement("div");
  holder.className = "vsb-embed-root";
  holder.append(p.root);
  const source = document.createElement("p");
  source.className = "vsb-source";
  const link = document.createElement("a");
  link.href = p.pageUrl();
  link.target = "_blank";
  link.rel = "noopener";
  link.textContent = "Open on the site";
  const licence = document.createElement("a");
  licence.href = LICENCE_URL;
  licence.target = "_blank";
  licence.rel = "noopener license";
  licence.textContent = LICENCE;
  source.append(link, ` · From “${pageTitle()}”, vLLM, step by step · `, licence);
  holder.append(source);
  document.body.append(holder);
  reportHeight(p, holder);
}

// Tell the host page our height whenever it changes: the site's own message (embed.js)
// and the LTI form that Canvas and other course platforms listen for.
function reportHeight(p, holder) {
  if (window.parent === window) return;
  let last = 0;
  const post = () => {
    const height = Math.ceil(holder.getBoundingClientRect().height);
    if (!height || height === last) return;
    last = height;
    window.parent.postMessage({ type: "vsb:resize", widget: p.id, href: location.href, height }, "*");
    window.parent.postMessage({ subject: "lti.frameResize", height }, "*");
  };
  new ResizeObserver(post).observe(holder);
  post();
}
