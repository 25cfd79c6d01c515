// Predict mode (issue 25): before the player shows a frame that carries a question, it asks
// the question; the reader answers (buttons, so the keyboard and screen readers work as
// they do for any button), then the frame is shown and the answer marked, with the
// explanation and where the rule lives in vLLM. Frames without a question play as usual.
//
// Contract with the player (docs/js/player.js), kept narrow so the player can change around
// it: `new Predict(player)` once per widget; the player asks `allow(step)` before it shows
// a frame one step ahead (false: the question is up, the predictor shows the frame itself
// once it is answered), calls `shown(step)` after every frame it shows and `adopted()` when
// it takes new frames (a Run, a preset); `on` and `set(on)` are the toggle; `hash()` is
// what the permalink adds. The player owns the frames, the step and the hash.
//
// A frame's question is {kind, prompt, options, answer, explanation, code}, written by
// Python (pages/framework/question.py) and set here as text only. Nothing is sent anywhere:
// the score is kept for the visit, and the answers in the browser's local storage (one
// click clears them) so that a question already answered is not asked again.

const STORE = "vsb-predict-v1";

function load() {
  try {
    return JSON.parse(localStorage.getItem(STORE) || "{}") || {};
  } catch {
    return {}; // storage blocked (a sandboxed frame, private mode): answers last the visit
  }
}

function save(all) {
  try {
    localStorage.setItem(STORE, JSON.stringify(all));
  } catch {
    // as above
  }
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class Predict {
  constructor(player) {
    this.player = player;
    const q = player.q;
    this.toggle = q('[data-act="predict"]');
    this.panel = q(".vsb-predict");
    this.picture = player.picture;
    if (!this.toggle || !this.panel) return;
    this.prompt = this.panel.querySelector(".vsb-predict-prompt");
    this.options = this.panel.querySelector(".vsb-predict-options");
    this.result = this.panel.querySelector(".vsb-predict-result");
    this.scoreText = this.panel.querySelector(".vsb-predict-score-text");
    this.skip = this.panel.querySelector('[data-act="predict-skip"]');
    this.clear = this.panel.querySelector('[data-act="predict-clear"]');
    this.on = false;
    this.pending = null; // {step, question} while a question waits for its answer
    this.score = { right: 0, asked: 0 }; // this visit
    this.toggle.addEventListener("click", () => this.set(!this.on, true));
    this.skip.addEventListener("click", () => this.pass());
    this.clear.addEventListener("click", () => this.forget());
    this.showScore();
  }

  get ready() {
    return Boolean(this.toggle && this.panel);
  }

  // The answers kept for this widget: {"<settings>|<step>": 1 right, 0 wrong, -1 skipped}.
  stored() {
    return load()[this.player.id] || {};
  }

  key(step) {
    const values = this.player.values || {};
    const settings = Object.keys(values).sort().map((k) => `${k}=${values[k]}`).join("&");
    return `${settings}|${step}`;
  }

  set(on, byHand = false) {
    if (!this.ready) return;
    this.on = on;
    this.toggle.setAttribute("aria-pressed", on ? "true" : "false");
    this.player.root.classList.toggle("vsb-predicting", on);
    this.panel.hidden = !on;
    this.player.root.dataset.predict = on ? "on" : "off";
    if (!on) {
      this.pending = null;
      this.uncover();
      this.clearQuestion();
    } else {
      this.player.pause?.();
      this.clearQuestion();
      this.askFirst();
    }
    if (byHand) this.player.touched = true;
    this.player.writeHash?.();
  }

  hash() {
    return this.on ? "1" : null;
  }

  // A frame's question before it is shown: false when the reader must answer first.
  allow(step) {
    if (!this.on) return true;
    const frame = this.player.frames[step];
    const question = frame && frame.question;
    if (!question || Object.hasOwn(this.stored(), this.key(step))) return true;
    if (this.pending && this.pending.step === step) {
      this.focusFirst();
      return false;
    }
    this.player.pause?.();
    this.ask(step, question);
    return false;
  }

  // The first frame's own question (a calculator has no step before it): its picture is
  // covered until the reader answers.
  askFirst() {
    const step = this.player.step;
    const frame = this.player.frames[step];
    if (step !== 0 || !frame || !frame.question || Object.hasOwn(this.stored(), this.key(0))) return;
    this.cover();
    this.ask(0, frame.question);
  }

  ask(step, question) {
    this.pending = { step, question };
    this.player.root.dataset.question = "asked";
    this.prompt.textContent = question.prompt;
    this.result.replaceChildren();
    this.options.replaceChildren(...question.options.map((text, i) => {
      const button = el("button", "vsb-predict-option", text);
      button.type = "button";
      button.dataset.option = String(i);
      button.addEventListener("click", () => this.answer(i));
      return button;
    }));
    this.skip.hidden = false;
    this.focusFirst();
  }

  // The first option takes the focus (a keyboard or screen reader user answers at once);
  // the page scrolls only as far as the question needs, so the picture stays in view.
  focusFirst() {
    this.options.querySelector("button")?.focus({ preventScroll: true });
    this.panel.scrollIntoView({ block: "nearest" });
  }

  answer(i) {
    const pending = this.pending;
    if (!pending) return;
    const { step, question } = pending;
    const right = i === question.answer;
    this.record(step, right ? 1 : 0);
    this.score.asked += 1;
    if (right) this.score.right += 1;
    this.mark(question, i);
    this.reveal(step);
  }

  // Show the step without answering (nothing is counted).
  pass() {
    const pending = this.pending;
    if (!pending) return;
    this.record(pending.step, -1);
    this.mark(pending.question, null);
    this.reveal(pending.step);
  }

  record(step, value) {
    const all = load();
    all[this.player.id] = { ...(all[this.player.id] || {}), [this.key(step)]: value };
    save(all);
  }

  reveal(step) {
    this.pending = null;
    this.revealed = step;
    this.skip.hidden = true;
    this.player.root.dataset.question = "answered";
    this.uncover();
    // The step is revealed as a press of Step shows it (animated, where the player animates).
    if (this.player.step !== step) this.player.go(step, { animate: true });
    this.showScore();
  }

  // Mark the options (the reader's choice and the right one), and say why.
  mark(question, chosen) {
    for (const button of this.options.querySelectorAll("button")) {
      const i = Number(button.dataset.option);
      button.setAttribute("aria-disabled", "true");
      button.classList.toggle("vsb-right", i === question.answer);
      button.classList.toggle("vsb-wrong", i === chosen && chosen !== question.answer);
      const note = i === question.answer ? " (the answer)" : i === chosen ? " (your answer)" : "";
      if (note) button.append(el("span", "vsb-visually-hidden", note));
    }
    const right = chosen === question.answer;
    const verdict = chosen === null ? `Skipped. The answer: ${question.options[question.answer]}.`
      : right ? `Right: ${question.options[question.answer]}.`
        : `Not this one. The answer: ${question.options[question.answer]}.`;
    const head = el("p", `vsb-predict-verdict ${right ? "vsb-right" : "vsb-wrong"}`, verdict);
    const why = el("p", "vsb-predict-why", question.explanation);
    const where = el("p", "vsb-predict-code");
    where.append("In vLLM: ", el("code", "", question.code));
    this.result.replaceChildren(head, why, where);
  }

  showScore() {
    if (!this.scoreText) return;
    const kept = Object.values(this.stored()).filter((v) => v >= 0);
    const right = kept.filter((v) => v === 1).length;
    const visit = this.score.asked
      ? `${this.score.right} of ${this.score.asked} right this visit`
      : "No answers yet this visit";
    this.scoreText.textContent = kept.length
      ? `${visit}; ${right} of ${kept.length} kept in this browser.`
      : `${visit}.`;
    this.clear.hidden = kept.length === 0 && Object.keys(this.stored()).length === 0;
    this.player.root.dataset.score = `${this.score.right}/${this.score.asked}`;
  }

  // One click: forget this widget's kept answers and the visit's score.
  forget() {
    const all = load();
    delete all[this.player.id];
    save(all);
    this.score = { right: 0, asked: 0 };
    this.showScore();
    this.scoreText.textContent = "Your answers here are cleared.";
  }

  clearQuestion() {
    this.prompt.textContent = this.on
      ? "Step forward: before a step with a question, you predict what it does."
      : "";
    this.options.replaceChildren();
    this.result.replaceChildren();
    this.skip.hidden = true;
    delete this.player.root.dataset.question;
  }

  cover() {
    this.picture.classList.add("vsb-covered");
    this.picture.setAttribute("aria-hidden", "true");
  }

  uncover() {
    this.picture.classList.remove("vsb-covered");
    this.picture.removeAttribute("aria-hidden");
  }

  // After the player shows a frame: a question for another step is dropped (the reader
  // moved away with the scrubber, Back or a link), and an answer stays up only beside the
  // frame it was about.
  shown(step) {
    if (this.pending) {
      if (this.pending.step !== step + 1 && !(this.pending.step === 0 && step === 0)) {
        this.pending = null;
        this.uncover();
        this.clearQuestion();
      }
      return;
    }
    if (this.revealed !== undefined && this.revealed !== step) {
      this.revealed = undefined;
      if (this.on) this.clearQuestion();
    }
  }

  // New frames (a Run, a preset, the defaults again): start over, asking about the first
  // frame when it has a question.
  adopted() {
    if (!this.on) return;
    this.pending = null;
    this.uncover();
    this.clearQuestion();
    queueMicrotask(() => this.askFirst());
  }
}
