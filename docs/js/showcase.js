// The home page's live picture (pages/framework/markup.py: showcase_html): a widget's default
// trace, pre-rendered at build time, playing by itself in a loop with the widgets' own
// transitions (transitions.js). No Python: the frames are the widget's frames.json.
//
// It plays while it is on screen, from the still frame the page shows, and stops for good
// when the reader interacts with it (a press, a key, the focus on its link or button); its
// button plays and pauses it. With reduced motion it stands still on that frame until the
// reader presses Play, and then steps without motion.
import { DURATION, transition } from "./transitions.js";

const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
const REST = 900; // ms a frame stays at rest between two transitions (the motion is DURATION)
const LOOP_REST = 2000; // on the last frame, before it starts again

function counterText(frame, index, count) {
  const position = `${index + 1} / ${count}`;
  return frame && frame.label ? `${frame.label} · ${position}` : position;
}

class Showcase {
  constructor(root) {
    this.root = root;
    root.vsbShowcase = this;
    this.picture = root.querySelector(".vsb-picture");
    this.host = root.querySelector(".vsb-stage");
    this.button = root.querySelector(".vsb-showcase-play");
    this.counter = root.querySelector(".vsb-counter");
    this.step = Number(root.dataset.still) || 0;
    this.frames = null;
    this.playing = false; // the loop runs (while on screen)
    this.stopped = false; // the reader took over: it plays again only on Play
    this.visible = false;
    this.timer = null;
    this.motion = null;
    this.button.addEventListener("click", () => (this.playing ? this.stop() : this.play()));
    // Anything the reader does to the picture or its caption (not the button, which says
    // what it does itself) stops the loop for good.
    const interact = (e) => { if (!this.button.contains(e.target)) this.stop(); };
    for (const type of ["pointerdown", "keydown", "focusin"]) root.addEventListener(type, interact);
    this.ready = this.load();
  }

  async load() {
    try {
      const response = await fetch(this.root.dataset.frames);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      this.frames = await response.json();
    } catch {
      this.button.hidden = true; // the still frame stays, and its link
      return;
    }
    this.root.dataset.ready = "true";
    if (!reducedMotion.matches) this.playing = true;
    this.render();
    new IntersectionObserver(([entry]) => {
      this.visible = entry.isIntersecting;
      this.schedule();
    }, { threshold: 0.25 }).observe(this.root);
  }

  play() {
    this.stopped = false;
    this.playing = true;
    this.render();
    this.schedule();
  }

  stop() {
    if (!this.playing && this.stopped) return;
    this.stopped = true;
    this.playing = false;
    clearTimeout(this.timer);
    this.timer = null;
    this.motion?.finish();
    this.render();
  }

  render() {
    this.button.textContent = this.playing ? "❚❚ Pause" : "▶ Play";
    this.button.setAttribute("aria-pressed", String(this.playing));
    this.root.dataset.playing = String(this.playing);
  }

  // The next step, after a rest, while playing and on screen.
  schedule() {
    clearTimeout(this.timer);
    this.timer = null;
    if (!this.playing || !this.visible || !this.frames || !this.root.isConnected) return;
    const last = this.step >= this.frames.length - 1;
    this.timer = setTimeout(() => this.advance(), last ? LOOP_REST : REST);
  }

  advance() {
    this.timer = null;
    if (!this.playing || !this.root.isConnected) return;
    const next = (this.step + 1) % this.frames.length;
    const animate = next !== 0 && !reducedMotion.matches;
    this.motion?.finish();
    this.motion = transition(this.picture, this.frames[next].svg,
                             { duration: animate ? DURATION : 0, host: this.host });
    this.step = next;
    this.counter.textContent = counterText(this.frames[next], next, this.frames.length);
    this.root.dataset.step = String(next);
    this.motion.finished.then(() => this.schedule());
  }
}

reducedMotion.addEventListener?.("change", () => {
  if (reducedMotion.matches) for (const el of document.querySelectorAll(".vsb-showcase")) el.vsbShowcase?.stop();
});

function bind() {
  for (const root of document.querySelectorAll(".vsb-showcase")) {
    if (!root.vsbShowcase) new Showcase(root);
  }
}

bind();
// Material's instant navigation replaces the page without loading this module again.
const material = () => window.document$?.subscribe(() => bind());
if (window.document$) material();
else document.addEventListener("DOMContentLoaded", material, { once: true });
