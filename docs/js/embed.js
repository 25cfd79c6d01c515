// embed.js: put this script on a page that embeds widgets of "vLLM, step by step" in
// iframes; each iframe then takes the height of the widget inside it, after it loads and
// whenever the widget changes size (a new scenario, the details opened, a narrower window).
//
//   <iframe src="<site>/paged-attention/?embed=paged-attention" data-vsb-embed
//           width="100%" height="700" style="border:0;width:100%"></iframe>
//   <script src="<site>/js/embed.js" async></script>   (<site>: where the site is served)
//
// The embedded widget posts {type: "vsb:resize", height} to its parent; only iframes that
// carry data-vsb-embed and sent the message are resized. Without this script the iframe
// keeps the height it was given.
(() => {
  if (window.vsbEmbedHost) return;
  window.vsbEmbedHost = true;
  window.addEventListener("message", (event) => {
    const data = event.data;
    if (!data || typeof data !== "object" || data.type !== "vsb:resize") return;
    const height = Number(data.height);
    if (!Number.isFinite(height) || height <= 0 || height > 20000) return;
    for (const frame of document.querySelectorAll("iframe[data-vsb-embed]")) {
      if (frame.contentWindow === event.source) frame.style.height = `${Math.ceil(height)}px`;
    }
  });
})();
