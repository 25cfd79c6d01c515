// The trace player: shows frame i of a list of frames. It knows nothing about vLLM.
//
// Contract with pages/framework/markup.py (the HTML), pages/framework/hook.py (what the build
// adds to it) and pages/framework/worker.js + worker.py (Python):
// - each .vsb-widget has data-widget (id), data-module, data-frames (URL of the default
//   frames, written at build time), data-presets (optional: the frames of the permalinks
//   the site links to, each {fields, values, href}) and the first frame inline;
// - a frame is {svg, narration, label?, details?, ...}; the SVG comes from Python, which
//   escaped every text it placed; narration, label and details are always set as text;
// - the worker's build(module, id, rawJSON) answers {errors} or {values, frames} as JSON;
// - the player's own <script> carries data-runtime: the runtime manifest (where the
//   worker and the files it loads are, from the site's root, with content hashes).
//
// The URL hash holds "<widget id>.step" (1-based) and "<widget id>.<param>" per widget, so
// one link restores several widgets on a page. "?embed=<widget id>" shows that widget alone
// (options: theme=light|dark|auto, controls=full|minimal, predict=1), and tells the host page
// its height.
//
// Predict mode (docs/js/predict.js): "<widget id>.predict=1" in the hash, or predict=1 beside
// ?embed=, starts a widget asking, before each step that has a question, what it will do.
//
// One Python per visit: with Material's instant navigation this module runs once, and the
// worker it starts lives as long as the tab; each new page's widgets are bound on
// Material's document$ and use the same worker. Python starts on the first sign that it
// will be needed (a pointer or the focus on a widget's settings, a link with settings of
// its own) or when the page is idle after its first picture and default steps are ready;
// a reader who asked the browser to save data gets it only on those signs.
//
// Step, Back, the arrow keys and Play animate from one frame to the next (transitions.js);
// the slider, links, Reset and a new run jump. Download, the embed code and ?embed mode are
// in reuse.js.

import * as reuse from "./reuse.js";
import { DURATION, transition } from "./transitions.js";
import { Predict } from "./predict.js";

const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
const SITE = new URL("../", import.meta.url); // this file is <site>/js/player.js

// Python: one worker for the visit. `python.ready` resolves, once Python in it is ready, with
// {build(module, id, rawJSON) -> Promise of JSON text, ping, boot, ms, steps, why}.
const python = { started: false, ready: null, resolve: null, reject: null };
python.ready = new Promise((resolve, reject) => Object.assign(python, { resolve, reject }));
python.ready.catch(() => {}); // players report a failure themselves

function runtimeManifest() {
  const tag = document.querySelector("script[data-runtime]");
  if (!tag) return null;
  const manifest = JSON.parse(tag.getAttribute("data-runtime"));
  const abs = (path) => (path ? new URL(path, SITE).href : path);
  const files = Object.fromEntries(Object.entries(manifest.files).map(([k, v]) => [k, abs(v)]));
  const urls = ["worker", "pyodide", "python", "snapshot", "app", "delta"];
  return { ...manifest, files, ...Object.fromEntries(urls.map((k) => [k, abs(manifest[k])])) };
}

// Start Python (once); `why` says what asked (for the benchmark and the curious).
function startPython(why) {
  if (python.started) return python.ready;
  const config = runtimeManifest();
  if (!config) return python.ready; // no widget page yet
  python.started = true;
  python.why = why;
  python.page = pageCount; // the page of the visit where it started
  // ?vsb-boot=fresh starts without the snapshot (bench/page_load.py compares the two).
  if (new URLSearchParams(location.search).get("vsb-boot") === "fresh") {
    Object.assign(config, { noSnapshot: true, why: "the address asked for it (vsb-boot=fresh)" });
  }
  performance.mark("vsb:python-start");
  for (const p of players) {
    if (!p.py && !p.disposed) p.setPython("starting", "The default steps work now; Python is starting in the background for new settings…");
  }
  spawnWorker(config, null);
  return python.ready;
}

function spawnWorker(config, snapshotFailure) {
  let worker;
  try {
    worker = new Worker(config.worker, { type: "module", name: "vsb-python" });
  } catch (err) {
    failPython(err);
    return;
  }
  const calls = new Map();
  let next = 0;
  worker.onerror = (event) => {
    event.preventDefault?.();
    failPython(new Error(event.message || "the Python worker did not load"));
  };
  worker.onmessage = ({ data }) => {
    if (data.type === "answer") {
      const call = calls.get(data.id);
      calls.delete(data.id);
      if (data.error !== undefined) call?.reject(new Error(data.error));
      else call?.resolve(data.text);
    } else if (data.type === "ready") {
      const why = snapshotFailure ? `the snapshot did not restore: ${snapshotFailure}` : data.why;
      python.resolve({
        boot: data.boot, ms: data.ms, steps: data.steps, why,
        build: (...args) => new Promise((resolve, reject) => {
          const id = ++next;
          calls.set(id, { resolve, reject });
          worker.postMessage({ type: "call", id, args });
        }),
        ping: () => Promise.resolve("pong"),
      });
    } else if (data.type === "failed" && data.stage === "snapshot" && !snapshotFailure) {
      worker.terminate(); // and start afresh, without it
      spawnWorker({ ...config, noSnapshot: true }, data.error);
    } else if (data.type === "failed") {
      failPython(new Error(data.error));
    }
  };
  worker.postMessage({ type: "boot", config });
}

function failPython(err) {
  python.reject(err);
  document.dispatchEvent(new CustomEvent("vsb:python-failed", { detail: String(err) }));
}

// What the status line says once Python answers, with how it started.
function readyText(py, ownBoot) {
  const secs = `${(py.ms / 1000).toFixed(1)} s`;
  let how = py.boot === "snapshot" ? `restored from the build's snapshot in ${secs}`
    : `started from scratch in ${secs}${py.why ? `: ${py.why}` : ""}`;
  if (!ownBoot) how = `already running, ${how.replace(/ in [0-9.]+ s/, "")} on an earlier page`;
  return `Python is ready (${how}): change the settings and press Run.`;
}

// The hash as [key, value] pairs. Each part is percent-decoded and nothing else: a "+" is a
// plus, as a person typing "x:4+2/2" into a link means it (URLSearchParams would read form
// encoding, where "+" is a space). The player writes spaces as %20 and pluses as %2B
// (formatHash), as the site's own links do; pages/framework/link_hash.py reads and writes the
// same way at build time.
function readHash() {
  const pairs = [];
  for (const part of location.hash.replace(/^#/, "").split("&")) {
    if (!part) continue;
    const at = part.indexOf("=");
    const [key, value] = at < 0 ? [part, ""] : [part.slice(0, at), part.slice(at + 1)];
    pairs.push([decodePart(key), decodePart(value)]);
  }
  return pairs;
}

// Percent-decoding that never throws: a run of escapes that is not UTF-8 stays as typed.
function decodePart(text) {
  return text.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run);
    } catch { // not UTF-8: ASCII escapes decoded, the rest left as typed
      return run.replace(/%([0-7][0-9A-Fa-f])/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
    }
  });
}

function formatHash(pairs) {
  // A lone surrogate (text a reader pasted) becomes U+FFFD: encodeURIComponent throws on it.
  const enc = (text) => encodeURIComponent(String(text).replace(
    /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD"));
  return pairs.map(([k, v]) => `${enc(k)}=${enc(v)}`).join("&");
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// What the counter says; pages/framework/markup.py: counter_text writes the same.
function counterText(frame, index, count) {
  const position = `${index + 1} / ${count}`;
  return frame && frame.label ? `${frame.label} · ${position}` : position;
}

class Player {
  constructor(root) {
    this.root = root;
    this.id = root.dataset.widget;
    this.module = root.dataset.module;
    this.q = (sel) => root.querySelector(sel);
    this.picture = this.q(".vsb-picture");
    this.narration = this.q(".vsb-narration");
    this.details = this.q(".vsb-details");
    this.scrub = this.q(".vsb-scrub");
    this.stage = this.q(".vsb-stage");
    this.motion = null; // the transition on screen (transitions.js), null at rest
    this.counter = this.q(".vsb-counter");
    this.status = this.q(".vsb-status");
    this.notice = this.q(".vsb-notice");
    this.form = this.q(".vsb-form");
    this.runButton = this.q(".vsb-run");
    const detailItems = [...this.details.querySelectorAll("li")].map((li) => li.textContent);
    this.frames = [{ svg: this.picture.innerHTML, narration: this.narration.textContent,
                     details: detailItems }];
    this.step = 0;
    this.timer = null;
    this.touched = false; // the hash is written only once the reader has done something
    this.defaults = this.formValues();
    this.values = { ...this.defaults };
    this.lastAnswer = null; // the worker's last JSON text, for the tests' byte comparison
    // The reader's last action wins: see supersede().
    this.request = 0; // the newest action's ticket; an answer is shown only under its own
    this.loadTicket = 0; // the ticket start() applies the address's link under
    this.pending = null; // what waits for Python to start: {run: true} or {link}
    this.presets = JSON.parse(root.dataset.presets || "[]");
    this.page = location.pathname;
    this.pageCount = pageCount;
    root.vsbPlayer = this;
    this.predictor = new Predict(this);
    this.bind();
    this.steppingReady = new Promise((resolve) => { this.markStepping = resolve; });
    this.ready = this.start();
  }

  async start() {
    this.setPython("starting", this.idleText());
    const first = this.linkState();
    const firstPreset = first.params && this.findPreset(first.params);
    const firstText = firstPreset ? this.fetchPreset(firstPreset) : null; // at once, beside the defaults
    firstText?.catch(() => {}); // showPreset reports it
    try {
      const response = await fetch(this.root.dataset.frames);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      this.defaultFrames = await response.json();
      if (this.current(this.loadTicket)) this.frames = this.defaultFrames;
      this.predictor.adopted();
    } catch (err) {
      this.showNotice(`The default steps could not be loaded (${err.message}).`);
    }
    if (this.disposed) return;
    this.root.dataset.stepping = "ready";
    performance.mark(`vsb:stepping:${this.id}`); // read by bench/page_load.py
    this.markStepping();
    // The address's link, as it is now (a link followed meanwhile replaced it), unless the
    // reader pressed Run meanwhile.
    if (this.current(this.loadTicket)) {
      const link = this.linkState();
      const preset = link.params && this.findPreset(link.params);
      await this.applyLink(link, preset && preset === firstPreset ? firstText : null, this.loadTicket);
    }
    let py;
    try {
      py = await python.ready;
    } catch (err) {
      if (!this.disposed) this.pythonFailed(this.pending?.link);
      return;
    }
    if (this.disposed) return;
    this.py = py;
    if (!performance.getEntriesByName("vsb:python-ready").length) performance.mark("vsb:python-ready");
    performance.mark(`vsb:python-ready:${this.id}`);
    this.root.dataset.boot = py.boot;
    this.readyText = readyText(py, python.page === this.pageCount);
    this.setPython("ready", this.readyText);
    const pending = this.pending;
    this.pending = null;
    if (pending?.link) await this.restoreLink(pending.link, this.request);
    else if (pending?.run) await this.submit();
  }

  // Python could not start: nothing waits for it any more (a link that needed it shows the
  // default scenario instead), and the status line says why Run does nothing.
  pythonFailed(link) {
    this.pending = null;
    this.root.dataset.python = "failed";
    this.setBusy(false, this.idleText());
    if (link && this.defaultFrames) {
      this.adoptDefaults();
      this.show(this.linkStep(link));
      this.showNotice("This link's settings need Python, which could not start here; showing the default scenario.");
    }
  }

  // The reader's last action wins. Each action that asks for a trace (Run, a link followed
  // on the page: a step, a preset, the engine switch; the defaults again; leaving the page)
  // takes a new ticket, and an answer is shown only while its ticket is the newest, so a
  // late answer to a superseded action is dropped. Taking a ticket also ends whatever the
  // superseded action left behind: nothing waits for Python any more, Run is on again and
  // the status line says what Python is doing, until the new action says otherwise.
  supersede() {
    this.pending = null;
    this.setBusy(false, this.idleText());
    return ++this.request;
  }

  current(ticket) {
    return ticket === this.request && !this.disposed;
  }

  // What the status line says while nothing is asked of Python.
  idleText() {
    if (this.py) return this.readyText;
    if (this.root.dataset.python === "failed") {
      return "Python could not start here, so new settings cannot run; the default steps still work.";
    }
    return python.started
      ? "The default steps work now; Python is starting in the background for new settings…"
      : "The default steps work now; Python starts when you reach for the settings.";
  }

  // Show what a link asks for, under `ticket`: a step of the default scenario (a link without
  // settings describes it: the form shows its settings too), a trace the build rendered for
  // a link the site has (a preset), or (with settings of the reader's own) a new trace from
  // Python, now or as soon as Python is ready.
  async applyLink(link, presetText, ticket) {
    if (link.predict !== null) this.predictor.set(link.predict === "1");
    if (!link.params) {
      if (this.defaultFrames) this.adoptDefaults();
      this.show(this.linkStep(link));
      return;
    }
    this.fillForm(link.params);
    this.showErrors({});
    const preset = this.findPreset(link.params);
    if (preset && (await this.showPreset(preset, link, presetText, ticket))) return;
    if (!this.current(ticket)) return;
    if (!this.py) {
      if (this.root.dataset.python === "failed") {
        this.pythonFailed(link);
        return;
      }
      this.pending = { link };
      startPython("link");
      this.setPython("starting", "Starting Python to restore the settings in this link…");
      if (link.bad) this.showNotice(link.bad);
      this.show(0);
      return;
    }
    await this.restoreLink(link, ticket);
  }

  // The preset whose settings are exactly the link's (as the page writes them, or as the
  // player writes them back: every setting), or undefined.
  findPreset(params) {
    const same = (a, b) => Object.keys(a).length === Object.keys(b).length
      && Object.keys(a).every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
    return this.presets.find((p) => same(p.fields, params) || same(p.values, params));
  }

  async fetchPreset(preset) {
    const response = await fetch(new URL(preset.href, new URL(this.root.dataset.frames, location.href)));
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.text();
  }

  // A preset's frames, fetched when its link is followed: the same JSON text Python would
  // answer, so the page shows exactly what it would show after a call. False if it failed.
  async showPreset(preset, link, pending, ticket) {
    let text;
    try {
      text = await (pending || this.fetchPreset(preset));
    } catch {
      return false;
    }
    if (!this.current(ticket)) return true; // a newer action took over
    this.lastAnswer = text;
    this.adopt(JSON.parse(text));
    this.show(this.linkStep(link));
    performance.mark(`vsb:preset:${this.id}`); // read by bench/page_load.py
    return true;
  }

  // A link on the page itself (e.g. "see step 3") changes only the hash.
  // It supersedes whatever was under way; before the default steps are in, start() applies
  // it once they are.
  onHashChange() {
    const link = this.linkState();
    if (!link.any) return;
    const ticket = this.supersede();
    this.pause();
    this.touched = true;
    this.hideNotice();
    this.root.scrollIntoView({ block: "start" });
    if (this.root.dataset.stepping !== "ready") {
      this.loadTicket = ticket;
      return;
    }
    this.applyLink(link, null, ticket);
  }

  adoptDefaults() {
    this.frames = this.defaultFrames;
    this.values = { ...this.defaults };
    this.fillForm(this.defaults);
    this.showErrors({});
    this.predictor.adopted();
  }

  // Back to the page's default scenario at step 1, as if freshly loaded.
  useDefaults() {
    this.supersede();
    this.pause();
    if (this.defaultFrames) this.adoptDefaults();
    this.hideNotice();
    this.lastAnswer = null;
    this.touched = false;
    this.show(0);
  }

  // What the hash says for this widget: {step, params, bad, any, predict}. Params equal to the
  // defaults need no Python, so such a link steps at once. `params` has no prototype, so a
  // key such as "__proto__" is an ordinary (unknown) setting that Python names.
  linkState() {
    const hash = readHash();
    const prefix = `${this.id}.`;
    const params = Object.create(null);
    let step = null;
    let rawStep = null;
    let predict = null;
    let any = false;
    for (const [key, value] of hash) {
      if (!key.startsWith(prefix)) continue;
      any = true;
      const name = key.slice(prefix.length);
      if (name === "step") rawStep = value;
      else if (name === "predict") predict = value;
      else params[name] = value;
    }
    let bad = null;
    if (rawStep !== null) {
      if (/^[0-9]{1,9}$/.test(rawStep) && Number(rawStep) >= 1) {
        step = Number(rawStep) - 1;
      } else if (/^0+$/.test(rawStep)) {
        bad = "This link asks for step 0, but steps are numbered from 1; showing the first step.";
      } else {
        bad = "This link's step is not a step number (steps are numbered from 1); showing the first step.";
      }
    }
    const keys = Object.keys(params);
    const same = keys.length > 0 && keys.every((k) => Object.hasOwn(this.defaults, k) && this.defaults[k] === params[k]);
    return { step, bad, any, predict, params: keys.length && !same ? params : null };
  }

  // The frame a link's step points at in the current trace, with a notice when it cannot.
  linkStep(link) {
    if (link.bad) this.showNotice(link.bad);
    if (link.step === null) return 0;
    const n = this.frames.length;
    if (link.step >= n) {
      this.showNotice(`This link asks for step ${link.step + 1}, but this scenario has ${plural(n, "step")}; showing the first step.`);
      return 0;
    }
    return link.step;
  }

  async restoreLink(link, ticket) {
    const answer = await this.callWorker(link.params, ticket);
    if (!this.current(ticket)) return; // a newer action took over
    if (!answer || answer.errors) {
      const why = answer ? Object.values(answer.errors).join("; ") : "the simulation failed";
      if (this.defaultFrames) this.adoptDefaults();
      this.showNotice(`This link's settings were not valid (${why}); showing the default scenario.`);
      this.show(0);
      return;
    }
    this.adopt(answer);
    this.show(this.linkStep(link));
  }

  bind() {
    const act = (name, fn) => this.root.querySelectorAll(`[data-act="${name}"]`).forEach((el) =>
      el.addEventListener(el.tagName === "SELECT" ? "change" : "click", fn));
    act("reset", () => { this.pause(); this.go(0); });
    act("back", () => { this.pause(); this.go(this.step - 1, { animate: true }); });
    act("step", () => { this.pause(); this.go(this.step + 1, { animate: true }); });
    act("play", () => (this.timer ? this.pause() : this.play()));
    act("speed", () => { if (this.timer) { this.pause(); this.play(); } });
    act("download", () => this.download());
    act("embed", () => this.copyEmbed());
    this.scrub.addEventListener("input", () => { this.pause(); this.go(Number(this.scrub.value)); });
    this.root.addEventListener("keydown", (e) => this.onKey(e));
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.submit(); });
    // The first sign that new settings are coming starts Python.
    const intent = () => startPython("intent");
    for (const type of ["focusin", "pointerover", "pointerdown", "touchstart"]) {
      this.form.addEventListener(type, intent, { once: true, passive: true });
    }
  }

  // The page was replaced (instant navigation): stop, and ignore answers still on the way.
  dispose() {
    this.pause();
    this.endMotion();
    this.disposed = true;
    this.pending = null;
    this.request++;
  }

  onKey(e) {
    const tag = e.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    if (e.key === "ArrowRight") { this.pause(); this.go(this.step + 1, { animate: true }); }
    else if (e.key === "ArrowLeft") { this.pause(); this.go(this.step - 1, { animate: true }); }
    else if (e.key === " " && tag !== "BUTTON") { this.timer ? this.pause() : this.play(); }
    else return;
    e.preventDefault();
  }

  // Step, Back, the arrow keys and Play animate (`animate`); the slider, links, Reset and a
  // new run jump.
  go(step, { animate = false } = {}) {
    if (this.root.dataset.stepping !== "ready") return;
    this.touched = true;
    const target = Math.max(0, Math.min(step, this.frames.length - 1));
    // In predict mode a step forward may first ask its question (docs/js/predict.js).
    if (target === this.step + 1 && !this.predictor.allow(target)) return;
    this.show(target, { animate });
  }

  show(step, { animate = false } = {}) {
    const from = this.step;
    this.step = step;
    const frame = this.frames[step];
    // A press during a motion ends it at once; the next starts from the frame at rest.
    this.endMotion();
    if (animate && step !== from && !reducedMotion.matches) {
      // Frame SVG is Python's output, where every reader-supplied string was escaped.
      const motion = transition(this.picture, frame.svg,
                                { duration: DURATION / this.speed(), host: this.stage });
      if (!motion.done) {
        this.motion = motion;
        this.root.dataset.moving = "true";
        motion.finished.then(() => { if (this.motion === motion) this.endMotion(); });
      }
    } else {
      this.picture.innerHTML = frame.svg;
    }
    this.narration.textContent = frame.narration;
    this.showDetails(frame.details || []);
    const n = this.frames.length;
    const counter = counterText(frame, step, n);
    this.root.classList.toggle("vsb-single", n === 1);
    this.scrub.max = String(n - 1);
    this.scrub.value = String(step);
    this.scrub.setAttribute("aria-valuetext", counter);
    this.counter.textContent = counter;
    this.setDisabled({ back: step === 0, reset: step === 0, step: step === n - 1 });
    this.root.dataset.step = String(step);
    this.writeHash();
    this.predictor.shown(step);
  }

  showDetails(items) {
    const list = this.details.querySelector("ul");
    list.replaceChildren(...items.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
    this.details.hidden = items.length === 0;
  }

  // Enable or disable the stepping buttons; if the focused one becomes disabled, hand the
  // focus to the button a keyboard user wants next (Step at the start, Back at the end)
  // instead of letting it fall to <body>.
  setDisabled(states) {
    const focused = document.activeElement;
    for (const [act, disabled] of Object.entries(states)) this.q(`[data-act="${act}"]`).disabled = disabled;
    if (focused && focused.disabled && this.root.contains(focused)) {
      const next = ["step", "back", "play"].map((a) => this.q(`[data-act="${a}"]`)).find((b) => !b.disabled);
      (next || this.root).focus();
    }
  }

  endMotion() {
    const motion = this.motion;
    this.motion = null;
    delete this.root.dataset.moving;
    motion?.finish();
  }

  speed() {
    return Number(this.q('[data-act="speed"]').value) || 1;
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
      else this.go(this.step + 1, { animate: true });
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
      if (!Object.hasOwn(values, field.name)) continue;
      const value = String(values[field.name]);
      if (field.type === "checkbox") field.checked = ["true", "1", "yes", "on"].includes(value.toLowerCase());
      else field.value = value; // a property, never markup
    }
  }

  async submit() {
    const ticket = this.supersede();
    if (!this.py) {
      if (this.root.dataset.python === "failed") return; // the status line says why
      startPython("run");
      this.pending = { run: true };
      this.setBusy(true, "Python is still starting; your settings will run as soon as it is ready…");
      return;
    }
    const raw = this.formValues();
    this.setBusy(true, "Running the simulation with your settings…");
    const answer = await this.callWorker(raw, ticket);
    if (!this.current(ticket)) return; // a newer action took over
    this.setBusy(false, this.readyText);
    if (!answer) return;
    this.showErrors(answer.errors ? this.besideChanges(answer.errors, raw) : {});
    if (answer.errors) return; // keep the last good trace
    this.touched = true;
    this.adopt(answer);
    this.show(0);
  }

  // While Python works the Run button is off and the status line says so; the picture
  // keeps the last good trace until the answer comes.
  setBusy(busy, text) {
    this.runButton.disabled = busy;
    if (busy) this.root.dataset.busy = "true";
    else delete this.root.dataset.busy;
    this.root.setAttribute("aria-busy", busy ? "true" : "false");
    if (text) this.status.textContent = text;
  }

  // The worker's answer as an object; null when the call failed; undefined when a newer
  // action took over meanwhile (this answer is dropped).
  async callWorker(raw, ticket) {
    try {
      const text = await this.py.build(this.module, this.id, JSON.stringify(raw));
      if (!this.current(ticket)) return undefined;
      this.lastAnswer = text;
      return JSON.parse(text);
    } catch (err) {
      if (!this.current(ticket)) return undefined;
      this.setBusy(false, this.idleText());
      this.showNotice(`The simulation failed: ${err.message}`);
      return null;
    }
  }

  adopt(answer) {
    this.pause();
    this.frames = answer.frames;
    this.values = answer.values;
    this.fillForm(answer.values);
    this.showErrors({});
    this.hideNotice();
    this.predictor.adopted();
  }

  // A check across fields puts its message beside one of them; when the reader changed
  // another (the block size, and the message is about n), it shows beside each field they
  // changed that has no message of its own too, so they see why where they made the change.
  besideChanges(errors, raw) {
    const changed = Object.keys(raw).filter((k) => raw[k] !== this.values[k]);
    const elsewhere = Object.entries(errors).filter(([k]) => k && !changed.includes(k));
    if (!elsewhere.length) return errors;
    const out = { ...errors };
    for (const k of changed) if (!Object.hasOwn(out, k)) out[k] = elsewhere.map(([, m]) => m).join(" ");
    return out;
  }

  // Each message beside its field, tied to it for screen readers (aria-describedby,
  // aria-invalid) while it is shown.
  showErrors(errors) {
    for (const slot of this.root.querySelectorAll(".vsb-error")) {
      const name = slot.dataset.for;
      const message = Object.hasOwn(errors, name) ? errors[name] : "";
      slot.textContent = message;
      const field = slot.closest(".vsb-field");
      if (!field) continue;
      field.classList.toggle("vsb-invalid", Boolean(message));
      const control = field.querySelector("[name]");
      const ids = (control.getAttribute("aria-describedby") || "").split(/\s+/).filter((id) => id && id !== slot.id);
      if (message) {
        ids.push(slot.id);
        control.setAttribute("aria-invalid", "true");
      } else {
        control.removeAttribute("aria-invalid");
      }
      control.setAttribute("aria-describedby", ids.join(" "));
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

  // This widget's part of the hash as [key, value] pairs: step, plus the settings when they
  // are not the defaults.
  ownPairs() {
    const out = [[`${this.id}.step`, String(this.step + 1)]];
    const custom = Object.keys(this.values).some((k) => this.values[k] !== this.defaults[k]);
    if (custom) for (const [k, v] of Object.entries(this.values)) out.push([`${this.id}.${k}`, v]);
    const predict = this.predictor.hash();
    if (predict) out.push([`${this.id}.predict`, predict]);
    return out;
  }

  ownHash() {
    return formatHash(this.ownPairs());
  }

  writeHash() {
    const own = this.ownPairs();
    this.q(".vsb-permalink").href = `${location.pathname}#${formatHash(own)}`;
    if (!this.touched) return;
    const merged = readHash().filter(([k]) => !k.startsWith(`${this.id}.`));
    history.replaceState(history.state, "", `${location.pathname}${location.search}#${formatHash([...merged, ...own])}`);
    seenHash = location.hash; // our own change, not a link to follow
  }

  pageUrl() {
    const url = new URL(location.href);
    url.search = "";
    url.hash = this.ownHash();
    return url.href;
  }

  // Reuse (docs/js/reuse.js): the frame as a file, the embed code, this widget alone.
  standaloneSvg() { return reuse.standaloneSvg(this); }

  download() { reuse.download(this); }

  embedCode() { return reuse.embedCode(this); }

  copyEmbed() { return reuse.copyEmbed(this); }

  embed(options) {
    reuse.embed(this, options);
    if (options.predict === "1") this.predictor.set(true);
  }
}

// The players of the page now shown; Material's instant navigation replaces the page's
// content without reloading this module, so every new document binds again.
let players = [];
let embedded = false;
let seenHash = location.hash;
let pageCount = 0; // pages of this visit that had widgets

function bindPage() {
  // Material fetches and injects the page it already shows once, on the first hash change
  // of a visit (its location stream starts empty): put the live widgets back in place of
  // their fresh copies, so the reader's step, settings and Python's answers stay.
  for (const p of players) {
    const copy = !p.root.isConnected && p.page === location.pathname && document.getElementById(p.id);
    if (copy && copy.classList.contains("vsb-widget") && !copy.vsbPlayer) copy.replaceWith(p.root);
  }
  for (const p of players) if (!p.root.isConnected) p.dispose();
  players = players.filter((p) => !p.disposed);
  const unbound = [...document.querySelectorAll(".vsb-widget")].filter((el) => !el.vsbPlayer);
  if (unbound.length) pageCount++;
  const fresh = unbound.map((el) => new Player(el));
  players.push(...fresh);
  window.vsbPlayers = Object.fromEntries(players.map((p) => [p.id, p]));
  seenHash = location.hash;
  if (!embedded) {
    embedded = true;
    const query = new URLSearchParams(location.search);
    const embedId = query.get("embed");
    if (embedId !== null) {
      const target = players.find((p) => p.id === embedId);
      if (target) {
        target.embed({ theme: query.get("theme") || "auto", controls: query.get("controls") || "full",
                       predict: query.get("predict") });
      }
      else players[0]?.showNotice(`There is no widget “${embedId}” on this page to embed.`);
    }
  }
  if (fresh.length) bootWhenIdle(fresh);
}

// Python starts by itself once the page has shown its first picture and its default steps
// work, when the browser is idle; not at all (until a sign of intent) when the reader asked
// to save data.
function bootWhenIdle(fresh) {
  const connection = navigator.connection || {};
  if (python.started || connection.saveData || /2g$/.test(connection.effectiveType || "")) return;
  Promise.all(fresh.map((p) => p.steppingReady)).then(() => requestAnimationFrame(() => {
    const idle = window.requestIdleCallback || ((fn) => setTimeout(fn, 50));
    idle(() => startPython("idle"), { timeout: 300 });
  }));
}

// A link followed on the same page changes only the hash: by a hashchange event, or (with
// instant navigation, which pushes the URL itself) through Material's location$; back and
// forward buttons come the same two ways.
function hashMaybeChanged() {
  if (location.hash === seenHash) return;
  seenHash = location.hash;
  for (const p of players) if (p.page === location.pathname && !p.disposed) p.onHashChange();
}

function init() {
  bindPage();
  window.addEventListener("hashchange", hashMaybeChanged);
  reducedMotion.addEventListener?.("change", () => reducedMotion.matches && players.forEach((p) => {
    p.pause();
    p.endMotion();
  }));
  const material = () => {
    window.document$?.subscribe(() => bindPage());
    window.location$?.subscribe(() => queueMicrotask(hashMaybeChanged));
  };
  // Material's bundle comes after the content, so it may not have run yet.
  if (window.document$) material();
  else document.addEventListener("DOMContentLoaded", material, { once: true });
}

init();
