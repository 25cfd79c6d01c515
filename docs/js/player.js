// The trace player: shows frame i of a list of frames. It knows nothing about vLLM.
//
// Contract with pages/framework/markup.py (the HTML) and pages/framework/worker.py (the Python side):
// - each .vsb-widget has data-widget (id), data-module, data-frames (URL of the default
//   frames, written at build time) and the first frame inline;
// - a frame is {svg, narration, ...}; the SVG comes from Python, which escaped every text
//   it placed, and narration is always set with textContent;
// - the worker's build(module, id, rawJSON) answers {errors} or {values, frames} as JSON.
//
// The URL hash holds "<widget id>.step" (1-based) and "<widget id>.<param>" per widget, so
// one link restores several widgets on a page. "?embed=<widget id>" shows that widget alone.

const WORKER_NAME = "vsb-sim";
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

let workerPromise = null;

// The PyScript worker, once Python in it has started and answered a ping.
function pythonWorker() {
  if (!workerPromise) {
    workerPromise = new Promise((resolve, reject) => {
      document.addEventListener("vsb:python-failed", (e) => reject(new Error(e.detail)));
      const poll = () => {
        const tag = document.querySelector(`script[type="py"][name="${WORKER_NAME}"]`);
        if (tag && tag.xworker) {
          tag.xworker.ready
            .then(() => tag.xworker.sync.ping())
            .then(() => resolve(tag.xworker.sync), reject);
        } else {
          setTimeout(poll, 50);
        }
      };
      poll();
    });
  }
  return workerPromise;
}

function readHash() {
  return new URLSearchParams(location.hash.replace(/^#/, ""));
}

function escapeAttr(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

class Player {
  constructor(root) {
    this.root = root;
    this.id = root.dataset.widget;
    this.module = root.dataset.module;
    this.q = (sel) => root.querySelector(sel);
    this.picture = this.q(".vsb-picture");
    this.narration = this.q(".vsb-narration");
    this.scrub = this.q(".vsb-scrub");
    this.counter = this.q(".vsb-counter");
    this.status = this.q(".vsb-status");
    this.notice = this.q(".vsb-notice");
    this.form = this.q(".vsb-form");
    this.frames = [{ svg: this.picture.innerHTML, narration: this.narration.textContent }];
    this.step = 0;
    this.timer = null;
    this.touched = false; // the hash is written only once the reader has done something
    this.defaults = this.formValues();
    this.values = { ...this.defaults };
    this.lastAnswer = null; // the worker's last JSON text, for the tests' byte comparison
    root.vsbPlayer = this;
    this.bind();
    this.ready = this.start();
  }

  async start() {
    this.setPython("starting", "Starting Python in the background… the default steps work now.");
    const link = this.linkState();
    try {
      const response = await fetch(this.root.dataset.frames);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      this.defaultFrames = await response.json();
      this.frames = this.defaultFrames;
    } catch (err) {
      this.showNotice(`The default steps could not be loaded (${err.message}).`);
    }
    this.root.dataset.stepping = "ready";
    performance.mark(`vsb:stepping:${this.id}`); // read by bench/page_load.py
    await this.applyLink(link);
    let py;
    try {
      py = await pythonWorker();
    } catch (err) {
      this.setPython("failed", "Python could not start here; the default steps still work.");
      return;
    }
    this.py = py;
    if (!performance.getEntriesByName("vsb:python-ready").length) performance.mark("vsb:python-ready");
    this.setPython("ready", "Python is ready: change the settings and press Run.");
    if (this.pendingLink) {
      const pending = this.pendingLink;
      this.pendingLink = null;
      await this.restoreLink(pending);
    }
    if (this.pendingSubmit) {
      this.pendingSubmit = false;
      await this.submit();
    }
  }

  // Show what a link asks for: a step of the default scenario, or (with settings) a new
  // trace from Python, now or as soon as Python is ready.
  async applyLink(link) {
    if (link.bad) this.showNotice(link.bad);
    if (!link.params) {
      if (this.defaultFrames && this.frames !== this.defaultFrames) this.adoptDefaults();
      this.show(link.step !== null ? this.clampLinkStep(link.step) : 0);
      return;
    }
    this.fillForm(link.params);
    if (!this.py) {
      this.pendingLink = link;
      this.setPython("starting", "Starting Python to restore the settings in this link…");
      this.show(0);
      return;
    }
    await this.restoreLink(link);
  }

  // A link on the page itself (e.g. "see step 3") changes only the hash.
  onHashChange() {
    const link = this.linkState();
    if (!link.any || this.root.dataset.stepping !== "ready") return;
    this.pause();
    this.touched = true;
    this.hideNotice();
    this.root.scrollIntoView({ block: "start" });
    this.applyLink(link);
  }

  adoptDefaults() {
    this.frames = this.defaultFrames;
    this.values = { ...this.defaults };
    this.fillForm(this.defaults);
    this.showErrors({});
  }

  // Back to the page's default scenario at step 1, as if freshly loaded.
  useDefaults() {
    this.pause();
    if (this.defaultFrames) this.adoptDefaults();
    this.hideNotice();
    this.lastAnswer = null;
    this.touched = false;
    this.show(0);
  }

  // What the hash says for this widget: {step, params, bad}. Params equal to the defaults
  // need no Python, so such a link steps at once.
  linkState() {
    const hash = readHash();
    const prefix = `${this.id}.`;
    const params = {};
    let step = null;
    let bad = null;
    let any = false;
    for (const [key, value] of hash) {
      if (!key.startsWith(prefix)) continue;
      any = true;
      const name = key.slice(prefix.length);
      if (name === "step") {
        step = /^\d+$/.test(value) ? Number(value) - 1 : NaN;
      } else {
        params[name] = value;
      }
    }
    if (Number.isNaN(step)) {
      bad = "This link's step is not a step number; showing the first step.";
      step = 0;
    }
    const same = Object.keys(params).every((k) => this.defaults[k] === params[k]) &&
      Object.keys(params).length > 0;
    return { step, bad, any, params: Object.keys(params).length && !same ? params : null };
  }

  clampLinkStep(step) {
    if (step < 0 || step >= this.frames.length) {
      this.showNotice(`This link's step is past the end (${this.frames.length} steps); showing the first step.`);
      return 0;
    }
    return step;
  }

  async restoreLink(link) {
    const answer = await this.callWorker(link.params);
    if (!answer || answer.errors) {
      const why = answer ? Object.values(answer.errors).join("; ") : "the simulation failed";
      if (this.defaultFrames) this.adoptDefaults();
      this.showNotice(`This link's settings were not valid (${why}); showing the default scenario.`);
      this.show(0);
      return;
    }
    this.adopt(answer);
    this.show(link.step !== null ? this.clampLinkStep(link.step) : 0);
  }

  bind() {
    const act = (name, fn) => this.root.querySelectorAll(`[data-act="${name}"]`).forEach((el) =>
      el.addEventListener(el.tagName === "SELECT" ? "change" : "click", fn));
    act("reset", () => { this.pause(); this.go(0); });
    act("back", () => { this.pause(); this.go(this.step - 1); });
    act("step", () => { this.pause(); this.go(this.step + 1); });
    act("play", () => (this.timer ? this.pause() : this.play()));
    act("speed", () => { if (this.timer) { this.pause(); this.play(); } });
    act("download", () => this.download());
    act("embed", () => this.copyEmbed());
    this.scrub.addEventListener("input", () => { this.pause(); this.go(Number(this.scrub.value)); });
    this.root.addEventListener("keydown", (e) => this.onKey(e));
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.submit(); });
    window.addEventListener("hashchange", () => this.onHashChange());
    reducedMotion.addEventListener?.("change", () => reducedMotion.matches && this.pause());
  }

  onKey(e) {
    const tag = e.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    if (e.key === "ArrowRight") { this.pause(); this.go(this.step + 1); }
    else if (e.key === "ArrowLeft") { this.pause(); this.go(this.step - 1); }
    else if (e.key === " " && tag !== "BUTTON") { this.timer ? this.pause() : this.play(); }
    else return;
    e.preventDefault();
  }

  go(step) {
    if (this.root.dataset.stepping !== "ready") return;
    this.touched = true;
    this.show(Math.max(0, Math.min(step, this.frames.length - 1)));
  }

  show(step) {
    this.step = step;
    const frame = this.frames[step];
    // Frame SVG is Python's output, where every reader-supplied string was escaped.
    this.picture.innerHTML = frame.svg;
    this.narration.textContent = frame.narration;
    const n = this.frames.length;
    this.root.classList.toggle("vsb-single", n === 1);
    this.scrub.max = String(n - 1);
    this.scrub.value = String(step);
    this.counter.textContent = `${step + 1} / ${n}`;
    this.q('[data-act="back"]').disabled = step === 0;
    this.q('[data-act="reset"]').disabled = step === 0;
    this.q('[data-act="step"]').disabled = step === n - 1;
    this.root.dataset.step = String(step);
    this.writeHash();
  }

  play() {
    if (this.root.dataset.stepping !== "ready" || this.frames.length < 2) return;
    if (this.step >= this.frames.length - 1) this.go(0);
    const speed = Number(this.q('[data-act="speed"]').value) || 1;
    const button = this.q('[data-act="play"]');
    button.textContent = "❚❚ Pause";
    button.setAttribute("aria-pressed", "true");
    this.timer = setInterval(() => {
      if (this.step >= this.frames.length - 1) this.pause();
      else this.go(this.step + 1);
    }, 1000 / speed);
  }

  pause() {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
    const button = this.q('[data-act="play"]');
    button.textContent = "▶ Play";
    button.setAttribute("aria-pressed", "false");
  }

  formValues() {
    const out = {};
    for (const field of this.form.querySelectorAll("[name]")) {
      out[field.name] = field.type === "checkbox" ? (field.checked ? "true" : "false") : field.value;
    }
    return out;
  }

  fillForm(values) {
    for (const field of this.form.querySelectorAll("[name]")) {
      if (!(field.name in values)) continue;
      const value = String(values[field.name]);
      if (field.type === "checkbox") field.checked = ["true", "1", "yes", "on"].includes(value.toLowerCase());
      else field.value = value; // a property, never markup
    }
  }

  async submit() {
    if (!this.py) {
      this.pendingSubmit = true;
      this.setPython("starting", "Python is still starting; your settings will run as soon as it is ready.");
      return;
    }
    const raw = this.formValues();
    this.root.dataset.busy = "true";
    const answer = await this.callWorker(raw);
    delete this.root.dataset.busy;
    if (!answer) return;
    this.showErrors(answer.errors || {});
    if (answer.errors) return; // keep the last good trace
    this.touched = true;
    this.adopt(answer);
    this.show(0);
  }

  async callWorker(raw) {
    try {
      const text = await this.py.build(this.module, this.id, JSON.stringify(raw));
      this.lastAnswer = text;
      return JSON.parse(text);
    } catch (err) {
      this.showNotice(`The simulation failed: ${err.message}`);
      return null;
    }
  }

  adopt(answer) {
    this.pause();
    this.frames = answer.frames;
    this.values = answer.values;
    this.fillForm(answer.values);
    this.hideNotice();
  }

  showErrors(errors) {
    for (const slot of this.root.querySelectorAll(".vsb-error")) {
      const name = slot.dataset.for;
      slot.textContent = errors[name] || "";
      slot.closest(".vsb-field")?.classList.toggle("vsb-invalid", Boolean(errors[name]));
    }
  }

  showNotice(text) {
    this.notice.textContent = text;
    this.notice.hidden = false;
  }

  hideNotice() {
    this.notice.hidden = true;
    this.notice.textContent = "";
  }

  setPython(state, text) {
    this.root.dataset.python = state;
    this.status.textContent = text;
  }

  // This widget's part of the hash: step, plus the settings when they are not the defaults.
  ownHash() {
    const out = new URLSearchParams();
    out.set(`${this.id}.step`, String(this.step + 1));
    const custom = Object.keys(this.values).some((k) => this.values[k] !== this.defaults[k]);
    if (custom) for (const [k, v] of Object.entries(this.values)) out.set(`${this.id}.${k}`, v);
    return out;
  }

  writeHash() {
    const own = this.ownHash();
    this.q(".vsb-permalink").href = `${location.pathname}#${own}`;
    if (!this.touched) return;
    const merged = new URLSearchParams();
    for (const [k, v] of readHash()) if (!k.startsWith(`${this.id}.`)) merged.append(k, v);
    for (const [k, v] of own) merged.append(k, v);
    history.replaceState(history.state, "", `${location.pathname}${location.search}#${merged}`);
  }

  // The current frame as a standalone SVG file: CSS variables are replaced by the colours
  // the page shows right now, since the file has no stylesheet.
  standaloneSvg() {
    const style = getComputedStyle(this.root);
    return this.frames[this.step].svg.replace(/var\((--[\w-]+)\)/g,
      (_, name) => style.getPropertyValue(name).trim() || "currentColor");
  }

  download() {
    const blob = new Blob([this.standaloneSvg()], { type: "image/svg+xml" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${this.id}-step-${this.step + 1}.svg`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  embedCode() {
    const url = new URL(location.href);
    url.search = `?embed=${encodeURIComponent(this.id)}`;
    url.hash = this.ownHash().toString();
    const title = this.q(".vsb-title").textContent;
    return `<iframe src="${escapeAttr(url.href)}" title="${escapeAttr(title)}" ` +
      `width="100%" height="760" style="border:0" loading="lazy"></iframe>`;
  }

  async copyEmbed() {
    const box = this.q(".vsb-embed-code");
    box.value = this.embedCode();
    box.hidden = false;
    box.select();
    const button = this.q('[data-act="embed"]');
    try {
      await navigator.clipboard.writeText(box.value);
      button.textContent = "Embed code copied";
    } catch {
      button.textContent = "Copy the embed code below";
    }
  }

  // ?embed=<id>: this widget alone on the page, for an iframe.
  embed() {
    document.documentElement.classList.add("vsb-embed");
    const holder = document.createElement("div");
    holder.className = "vsb-embed-root";
    holder.append(this.root);
    const source = document.createElement("p");
    source.className = "vsb-source";
    const link = document.createElement("a");
    link.href = location.pathname;
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = `From “${document.title}”`;
    source.append(link);
    holder.append(source);
    document.body.append(holder);
  }
}

function init() {
  const embedId = new URLSearchParams(location.search).get("embed");
  const players = [...document.querySelectorAll(".vsb-widget")].map((el) => new Player(el));
  window.vsbPlayers = Object.fromEntries(players.map((p) => [p.id, p]));
  if (embedId !== null) {
    const target = players.find((p) => p.id === embedId);
    if (target) target.embed();
    else players[0]?.showNotice(`There is no widget “${embedId}” on this page to embed.`);
  }
}

init();
