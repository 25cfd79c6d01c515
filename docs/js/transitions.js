// Animated steps: from the picture on screen to the next frame's SVG, with object constancy.
//
// Frames say what is what: every element with an identity carries `data-k`, the same in every
// frame of a trace (pages/framework/keys.py, notes/site.md "Keys"). A transition
//   1. measures every keyed element of the picture now on screen (once, all reads together),
//   2. puts the new frame's SVG in place, exactly as it is (the picture's markup is the
//      frame's from the first instant: what is exported, embedded and tested never differs),
//   3. measures the new keyed elements, and
//   4. animates with the Web Animations API, on transforms and opacity only, in three stages
//      (Heer and Robertson's staged transitions; D3's keyed exit/update/enter):
//      exits (keys that left fade out where they were, or shrink into the element named by
//      their data-from if it is still there), then moves (keys in both frames go from their
//      old box to their new one; a key whose own look changed cross-fades with a copy of its
//      old look that travels with it), then entries (new keys fade in, or grow out of the
//      box that the first key in their data-from had in the old frame; a new shape with
//      nowhere to come from grows from its left edge, as a budget or a row fills).
// The copies of old looks are drawn in an overlay <svg> laid under the picture (outside it, so
// the picture's markup stays the frame's; under it, so what moves and what fades in is drawn
// over what fades out), which is removed when the transition ends. The host it goes in must
// be a positioned stacking context (docs/css/widgets.css: .vsb-stage).
// Going back runs the same thing from frame i to frame i - 1, which is the forward motion
// played in reverse: what entered exits into where it came from, what moved moves back.
//
// Unkeyed elements (headings, legends, counts) are matched by their look, so they travel
// with the rest when a table above them grows or shrinks, and a count that changes
// cross-fades on its way (pairUnkeyed). finish() ends a transition at once (the picture is
// then the frame at rest, byte for byte); seek(ms) holds it at one instant (tests and
// recordings).

export const DURATION = 700; // ms at speed 1x

// Share of the duration each stage gets when it has something to do; a step with fewer
// stages is shorter, but never under MIN_SHARE of the duration.
const SHARE = { exit: 0.25, move: 0.45, enter: 0.3 };
const MIN_SHARE = 0.65;
const SVG_NS = "http://www.w3.org/2000/svg";
// Shapes that may be stretched from their old size to their new one; text and groups only
// travel (a stretched letter reads worse than a jump in size).
const STRETCH = new Set(["rect", "circle", "ellipse", "polygon"]);
const EPS = 0.5; // user units: less than this is no move
// Shapes drawn by their outline's points: a new shape is a new look (cross-faded in place),
// not a move.
const TRACED = new Set(["path", "line", "polyline"]);
// Where a shape is and how big: left out when comparing two looks (a move is not a change).
const PLACE = / (?:x|y|cx|cy|width|height|r|points)="[^"]*"/g;
// Not drawn: keys and hover texts (a block whose hover text names a new owner looks the same).
const UNSEEN = / data-(?:k|from)="[^"]*"|<title>[^<]*<\/title>/g;

// The keyed elements of an <svg>: key -> {el, box} (box in the SVG's user units), measured
// in one pass (getBoundingClientRect after nothing was written: one layout, no thrashing).
// Unkeyed elements outside every keyed one (headings, legends, counts) get a key of their
// own look ("~" + their markup without their place, numbered in document order), so a
// heading that a shorter table above moves up travels with everything else, and a count
// that changes cross-fades where it is.
// Boxes are in user units, which do not change when the picture is drawn wider or narrower,
// so the measure taken of a new frame serves again when the next step leaves it.
const measured = new WeakMap();

function measure(svg) {
  const view = svg.viewBox.baseVal;
  const frame = svg.getBoundingClientRect();
  const known = measured.get(svg);
  if (known) return { ...known, frame };
  const scale = view && view.width && frame.width ? view.width / frame.width : 1;
  const elements = [...svg.querySelectorAll("[data-k]")].map((el) => [el.getAttribute("data-k"), el]);
  const seen = new Map();
  for (const el of unkeyed(svg)) {
    const look = `~${el.localName}|${el.outerHTML.replace(PLACE, "")}`;
    const n = (seen.get(look) || 0) + 1;
    seen.set(look, n);
    elements.push([`${look}#${n}`, el]);
  }
  const out = new Map();
  for (const [key, el] of elements) {
    const r = el.getBoundingClientRect();
    out.set(key, {
      el,
      box: { x: (r.left - frame.left) * scale, y: (r.top - frame.top) * scale,
             w: r.width * scale, h: r.height * scale },
      // Nothing drawn (an empty text): no place to move from or to.
      empty: r.width === 0 && r.height === 0,
    });
  }
  const result = { items: out, scale, frame, view };
  if (frame.width) measured.set(svg, result); // not while it is hidden
  return result;
}

// The outermost elements that neither are keyed nor hold a keyed one (the picture's title
// left out: it is not drawn).
function unkeyed(root) {
  const out = [];
  for (const child of root.children) {
    if (child.hasAttribute("data-k") || child.localName === "title" || child.localName === "desc") continue;
    if (child.querySelector("[data-k]")) out.push(...unkeyed(child));
    else out.push(child);
  }
  return out;
}

function keyedAncestor(el, root) {
  for (let p = el.parentElement; p && p !== root; p = p.parentElement) {
    if (p.hasAttribute("data-k")) return p;
  }
  return null;
}

// The point of a box that stays put when the element travels without stretching: its
// middle, or for text its anchor's side (a label that grows from "B" to "B✓" keeps its
// start).
function anchor(el, box) {
  const tag = el.localName;
  let fx = 0.5;
  if (tag === "text") {
    const a = el.getAttribute("text-anchor") || "start";
    fx = a === "start" ? 0 : a === "end" ? 1 : 0.5;
  }
  return { x: box.x + fx * box.w, y: box.y + box.h / 2 };
}

function stretches(el) {
  return STRETCH.has(el.localName) && !el.querySelector("[data-k]");
}

// A CSS transform that puts an element drawn at box `to` where box `from` is (user units,
// origin at the SVG's 0 0): stretched for shapes, translated for the rest.
function mapping(el, from, to) {
  if (stretches(el) && to.w > 0.01 && to.h > 0.01) {
    const sx = from.w / to.w;
    const sy = from.h / to.h;
    return { tx: from.x - to.x * sx, ty: from.y - to.y * sy, sx, sy };
  }
  const a = anchor(el, from);
  const b = anchor(el, to);
  return { tx: a.x - b.x, ty: a.y - b.y, sx: 1, sy: 1 };
}

const IDENTITY = { tx: 0, ty: 0, sx: 1, sy: 1 };

function css(m) {
  return `translate(${m.tx.toFixed(3)}px, ${m.ty.toFixed(3)}px) scale(${m.sx.toFixed(5)}, ${m.sy.toFixed(5)})`;
}

function moved(a, b) {
  return Math.abs(a.x - b.x) > EPS || Math.abs(a.y - b.y) > EPS
    || Math.abs(a.w - b.w) > EPS || Math.abs(a.h - b.h) > EPS;
}

// An element's own look: its markup without where it is (PLACE) and without its keyed
// descendants (they animate on their own), so a block whose token moved away, or a chip
// that only moved, has not changed its look.
function ownMarkup(el) {
  return rawMarkup(el).replace(PLACE, "").replace(UNSEEN, "");
}

// How an element looks, wherever it is: the same for two elements that look alike.
function look(el) {
  return el.outerHTML.replace(PLACE, "").replace(UNSEEN, "");
}

function rawMarkup(el) {
  if (!el.querySelector("[data-k]")) return el.outerHTML;
  let text = el.cloneNode(false).outerHTML;
  for (const child of el.children) {
    if (child.hasAttribute("data-k")) text += "[k]";
    else text += rawMarkup(child);
  }
  return text;
}

// The parts of an element that are its own (not inside a keyed descendant), for fading its
// new look in under the copy of its old one.
function ownParts(el) {
  if (!el.querySelector("[data-k]")) return [el];
  const out = [];
  for (const child of el.children) {
    if (child.hasAttribute("data-k") || child.localName === "title") continue;
    if (child.querySelector("[data-k]")) out.push(...ownParts(child));
    else out.push(child);
  }
  return out;
}

// A copy of an old element for the overlay: no keys (the overlay is not the picture), no
// hover texts, without the keyed descendants that `drop` says animate on their own.
function ghostOf(el, drop) {
  const copy = el.cloneNode(true);
  for (const inner of [...copy.querySelectorAll("[data-k]")]) {
    if (drop(inner.getAttribute("data-k"))) inner.remove();
  }
  for (const t of [...copy.querySelectorAll("title")]) t.remove();
  for (const node of [copy, ...copy.querySelectorAll("[data-k], [data-from]")]) {
    node.removeAttribute("data-k");
    node.removeAttribute("data-from");
  }
  return copy;
}

function fromKeys(el) {
  return (el.getAttribute("data-from") || "").split(/\s+/).filter(Boolean);
}

// Where an element sits, for finding one that replaces another in place: a shape's whole
// box; a text's anchor point and height (new words, new width).
function boxKey(el, b) {
  const r = (v) => Math.round(v * 2);
  if (el.localName === "text") {
    const a = anchor(el, b);
    return `text|${r(a.x)}|${r(a.y)}|${r(b.h)}`;
  }
  return `${el.localName}|${r(b.x)}|${r(b.y)}|${r(b.w)}|${r(b.h)}`;
}

// Unkeyed elements whose look changed ("3 used" -> "2 used") have no key in common; pair
// those of the same kind (tag and attributes, words and place left out), top to bottom, so
// a count that changes and moves cross-fades on its way instead of vanishing for the whole
// move. The pairing keeps the top-to-bottom order and costs the distance from where the old
// one would have moved to plus up to WORDS for the words they do not share ("Slots: 12 hold
// tokens" is more like "Slots: 5 hold tokens" than like "0"), or GAP for an element left
// unpaired (a line that wrapping added): the cheapest one wins.
const GAP = 24;
const WORDS = 40;

function likeness(a, b) {
  const x = new Set(a.split(/\s+/).filter(Boolean));
  const y = new Set(b.split(/\s+/).filter(Boolean));
  if (!x.size && !y.size) return 1;
  let shared = 0;
  for (const w of x) if (y.has(w)) shared++;
  return shared / (x.size + y.size - shared);
}

function align(olds, news) {
  const n = olds.length;
  const m = news.length;
  const cost = Array.from({ length: n + 1 }, () => new Float64Array(m + 1));
  for (let i = 1; i <= n; i++) cost[i][0] = i * GAP;
  for (let j = 1; j <= m; j++) cost[0][j] = j * GAP;
  const far = (a, b) => Math.hypot(a.x - b.x, a.y - b.y) + WORDS * (1 - likeness(a.words, b.words));
  for (let i = 1; i <= n; i++) {
    for (let j = 1; j <= m; j++) {
      const d = far(olds[i - 1], news[j - 1]);
      cost[i][j] = Math.min(cost[i - 1][j - 1] + d, cost[i - 1][j] + GAP, cost[i][j - 1] + GAP);
    }
  }
  const pairs = [];
  for (let i = n, j = m; i > 0 && j > 0;) {
    const d = far(olds[i - 1], news[j - 1]);
    if (cost[i][j] === cost[i - 1][j - 1] + d) { pairs.push([i - 1, j - 1]); i--; j--; }
    else if (cost[i][j] === cost[i - 1][j] + GAP) i--;
    else j--;
  }
  return pairs;
}

function pairUnkeyed(exits, entries, updates) {
  const kind = (el) => el.cloneNode(false).outerHTML.replace(PLACE, "");
  const groups = new Map();
  const add = (list, side) => list.forEach(([key, item], i) => {
    if (!key.startsWith("~")) return;
    const k = kind(item.el);
    if (!groups.has(k)) groups.set(k, [[], []]);
    groups.get(k)[side].push(i);
  });
  add(exits, 0);
  add(entries, 1);
  const gone = new Set();
  const came = new Set();
  const spot = (item) => ({ ...anchor(item.el, item.box), words: item.el.textContent });
  // Where an old element would be if it moved as much as the nearest keyed element (by
  // height) moved: a table that shrank above it moves it up with everything else.
  const shifts = updates.filter(([key]) => !key.startsWith("~"))
    .map(([, was, is]) => [was.box.y + was.box.h / 2, is.box.y + is.box.h / 2 - was.box.y - was.box.h / 2])
    .sort((a, b) => a[0] - b[0]);
  const expected = (item) => {
    const p = spot(item);
    let best = null;
    for (const [y, dy] of shifts) if (!best || Math.abs(y - p.y) < Math.abs(best[0] - p.y)) best = [y, dy];
    return best ? { ...p, y: p.y + best[1] } : p;
  };
  for (const [olds, news] of groups.values()) {
    if (!olds.length || !news.length) continue;
    const byY = (list, side) => list.slice().sort((a, b) => spot(side[a][1]).y - spot(side[b][1]).y);
    const o = byY(olds, exits);
    const n = byY(news, entries);
    for (const [i, j] of align(o.map((k) => expected(exits[k][1])), n.map((k) => spot(entries[k][1])))) {
      updates.push([entries[n[j]][0], exits[o[i]][1], entries[n[j]][1]]);
      gone.add(o[i]);
      came.add(n[j]);
    }
  }
  const keep = (list, drop) => list.splice(0, list.length, ...list.filter((_, i) => !drop.has(i)));
  keep(exits, gone);
  keep(entries, came);
}

// Stage timings for the stages that have work: {exit: [start, length], ...}, and the total.
function schedule(duration, present) {
  let sum = 0;
  for (const s of ["exit", "move", "enter"]) if (present[s]) sum += SHARE[s];
  const stretch = sum > 0 && sum < MIN_SHARE ? MIN_SHARE / sum : 1;
  const out = {};
  let t = 0;
  for (const s of ["exit", "move", "enter"]) {
    const len = present[s] ? duration * SHARE[s] * stretch : 0;
    out[s] = [t, len];
    t += len;
  }
  out.total = t;
  return out;
}

class Transition {
  constructor(picture, overlay, animations, total) {
    this.picture = picture;
    this.overlay = overlay;
    this.animations = animations;
    this.total = total;
    this.done = false;
    this.finished = new Promise((resolve) => { this.resolve = resolve; });
    if (!animations.length) {
      this.end();
    } else {
      Promise.all(animations.map((a) => a.finished)).then(() => this.end(), () => {});
    }
  }

  // End now: every animation cancelled (nothing of them stays on the elements), the overlay
  // removed; the picture is the frame at rest.
  finish() {
    this.end();
  }

  end() {
    if (this.done) return;
    this.done = true;
    for (const a of this.animations) a.cancel();
    this.overlay?.remove();
    this.resolve();
  }

  // Hold every animation at `ms` from the start (for tests and frame-by-frame recordings).
  seek(ms) {
    if (this.done) return;
    for (const a of this.animations) {
      a.pause();
      a.currentTime = ms;
    }
  }
}

// Animate the picture (a container holding one <svg>) to `svgText`. The markup is replaced at
// once; the returned Transition says when the motion is over. `host` is the positioned
// element the overlay goes in (it must contain the picture). With no old <svg>, a different
// width, or a duration of 0, it is a jump.
export function transition(picture, svgText, { duration = DURATION, host = picture.parentElement } = {}) {
  const oldSvg = picture.querySelector("svg");
  const old = oldSvg && oldSvg.isConnected ? measure(oldSvg) : null;
  picture.innerHTML = svgText; // Python's output: every reader-supplied string was escaped
  const svg = picture.querySelector("svg");
  if (!old || !svg || duration <= 0 || !old.frame.width) return new Transition(picture, null, [], 0);
  const now = measure(svg);
  if (!now.view || !old.view || Math.abs(now.view.width - old.view.width) > EPS) {
    return new Transition(picture, null, [], 0);
  }
  const before = old.items;
  const after = now.items;

  // Classify. Only the outermost of nested entries and exits animates (it carries the rest).
  const updates = [];
  const exits = [];
  const entries = [];
  for (const [key, item] of after) {
    if (before.has(key)) updates.push([key, before.get(key), item]);
    else {
      const up = keyedAncestor(item.el, svg);
      if (!up || before.has(up.getAttribute("data-k"))) entries.push([key, item]);
    }
  }
  for (const [key, item] of before) {
    if (after.has(key)) continue;
    const up = keyedAncestor(item.el, oldSvg);
    if (!up || after.has(up.getAttribute("data-k"))) exits.push([key, item]);
  }
  pairUnkeyed(exits, entries, updates);
  // An element replaced by another in the same place (a slot that passes from one owner to
  // the next, a candidate ranked the same): a cross-fade, not an exit and an entry.
  const exitsByBox = new Map();
  for (const e of exits) exitsByBox.set(boxKey(e[1].el, e[1].box), e);
  const swaps = [];
  for (let i = entries.length - 1; i >= 0; i--) {
    const [, item] = entries[i];
    const match = exitsByBox.get(boxKey(item.el, item.box));
    if (match && !fromKeys(item.el).some((k) => before.has(k))) {
      exitsByBox.delete(boxKey(item.el, item.box));
      // The same thing drawn in the same place (a token whose owner's key changed): nothing
      // to animate.
      if (look(match[1].el) !== look(item.el)) swaps.push([match[1], item]);
      entries.splice(i, 1);
      exits.splice(exits.indexOf(match), 1);
    }
  }

  // What moves and what changed its look.
  const moving = new Map(); // key -> mapping (new box -> old box)
  const changed = [];
  for (const [key, was, is] of updates) {
    const traced = TRACED.has(is.el.localName);
    if (!traced && !was.empty && !is.empty && moved(was.box, is.box)) {
      moving.set(key, { el: is.el, from: was.box, to: is.box });
    }
    const seen = traced ? (el) => el.outerHTML.replace(UNSEEN, "") : ownMarkup;
    if (seen(was.el) !== seen(is.el)) changed.push([key, was, is]);
  }
  const present = { exit: exits.length > 0, move: moving.size + changed.length + swaps.length > 0,
                    enter: entries.length > 0 };
  const plan = schedule(duration, present);
  const [exitAt, exitLen] = plan.exit;
  const [moveAt, moveLen] = plan.move;
  const [enterAt, enterLen] = plan.enter;

  const overlay = document.createElementNS(SVG_NS, "svg");
  overlay.setAttribute("class", "vsb-svg vsb-ghosts");
  overlay.setAttribute("aria-hidden", "true");
  overlay.setAttribute("viewBox", `${old.view.x} ${old.view.y} ${old.view.width} ${old.view.height}`);
  const hostBox = host.getBoundingClientRect();
  Object.assign(overlay.style, {
    position: "absolute", pointerEvents: "none", overflow: "visible", zIndex: "-1",
    left: `${old.frame.left - hostBox.left + host.scrollLeft - host.clientLeft}px`,
    top: `${old.frame.top - hostBox.top + host.scrollTop - host.clientTop}px`,
    width: `${old.frame.width}px`, height: `${old.frame.height}px`,
  });
  const ghost = (el, drop, into = overlay) => into.appendChild(ghostOf(el, drop));
  // Copies that only fade, all on one timeline, share one animation (each animated element
  // costs the browser a little on every display frame).
  const fadeGroup = () => overlay.appendChild(document.createElementNS(SVG_NS, "g"));
  const fadeInMove = fadeGroup();
  const fadeInExit = fadeGroup();

  const animations = [];
  const run = (el, frames, start, length, fill, easing = "ease-in-out") => {
    if (length <= 0) return;
    animations.push(el.animate(frames, { delay: start, duration: length, fill, easing }));
  };
  const origin = { transformOrigin: "0px 0px", transformBox: "view-box" };
  const at = (m) => ({ ...origin, transform: css(m) });

  // Moves: each from its old box, less what a moving keyed ancestor already carries. A shape
  // that shrinks to nothing (a bar down to 0) cannot be drawn at its old size: a copy of its
  // old look shrinks instead.
  const offsets = new Map();
  for (const [key, { el, from, to }] of moving) {
    if (stretches(el) && (to.w < 0.01 || to.h < 0.01) && from.w >= 0.01 && from.h >= 0.01) {
      moving.delete(key);
      const copy = ghost(before.get(key).el, () => true);
      run(copy, [at(IDENTITY), at(mapping(el, to, from))], moveAt, moveLen, "both");
      continue;
    }
    offsets.set(key, mapping(el, from, to));
  }
  const travelling = new Set(); // keys that move within their keyed ancestor
  for (const [key, { el }] of moving) {
    const m = { ...offsets.get(key) };
    const up = keyedAncestor(el, svg);
    const carried = up && offsets.get(up.getAttribute("data-k"));
    if (carried) {
      m.tx -= carried.tx;
      m.ty -= carried.ty;
    }
    // Carried along by its ancestor and still in its place there: nothing of its own to do.
    if (Math.abs(m.tx) < 0.05 && Math.abs(m.ty) < 0.05 && Math.abs(m.sx - 1) < 1e-3
        && Math.abs(m.sy - 1) < 1e-3) continue;
    travelling.add(key);
    run(el, [at(m), at(IDENTITY)], moveAt, moveLen, "backwards");
  }
  // A changed look: the old one (under the picture) travels with the element and fades out
  // while the new fades in. When nothing keyed inside it travels on its own, the whole
  // element fades in over a copy of all of its old look (what stays the same shows in both);
  // otherwise only its own parts fade, so what travels inside it stays in sight.
  const inside = (el) => [...el.querySelectorAll("[data-k]")].map((d) => d.getAttribute("data-k"));
  for (const [key, was, is] of changed) {
    const whole = !inside(is.el).some((k) => travelling.has(k));
    const copy = ghost(was.el, whole ? (k) => travelling.has(k) || !after.has(k) : () => true);
    const m = moving.get(key);
    if (m) {
      const back = mapping(is.el, m.to, m.from); // old box -> new box, for the copy
      run(copy, [{ ...at(IDENTITY), opacity: 1 }, { ...at(back), opacity: 0 }], moveAt, moveLen,
          "both");
    } else {
      fadeInMove.appendChild(copy);
    }
    for (const part of whole ? [is.el] : ownParts(is.el)) {
      run(part, [{ opacity: 0 }, { opacity: 1 }], moveAt, moveLen, "backwards");
    }
  }
  for (const [was, is] of swaps) {
    ghost(was.el, (k) => after.has(k), fadeInMove);
    run(is.el, [{ opacity: 0 }, { opacity: 1 }], moveAt, moveLen, "backwards");
  }
  // Exits: fade out where they were, or shrink into where they go back to.
  for (const [, item] of exits) {
    const copy = ghost(item.el, (k) => after.has(k));
    const target = fromKeys(item.el).find((k) => after.has(k) && !after.get(k).empty);
    if (target) {
      const m = mapping(item.el, after.get(target).box, item.box); // own box -> target's
      run(copy, [{ ...at(IDENTITY), opacity: 1 }, { ...at(m), opacity: 0 }],
          exitAt, exitLen, "both", "ease-in");
    } else {
      fadeInExit.appendChild(copy);
    }
  }
  // Entries: grow out of where they came from, or fade in.
  for (const [, item] of entries) {
    const source = fromKeys(item.el).find((k) => before.has(k) && !before.get(k).empty);
    if (source) {
      const m = mapping(item.el, before.get(source).box, item.box);
      run(item.el, [{ ...at(m), opacity: 0.35 }, { ...at(IDENTITY), opacity: 1 }],
          enterAt, enterLen, "backwards", "ease-out");
    } else if (stretches(item.el)) {
      // A new bar, cell or chip grows from its left edge, as a budget or a row fills.
      const b = item.box;
      const seed = { x: b.x, y: b.y, w: Math.max(b.w * 0.02, 0.02), h: b.h };
      run(item.el, [{ ...at(mapping(item.el, seed, b)), opacity: 0 }, { ...at(IDENTITY), opacity: 1 }],
          enterAt, enterLen, "backwards", "ease-out");
    } else {
      run(item.el, [{ opacity: 0 }, { opacity: 1 }], enterAt, enterLen, "backwards", "ease-out");
    }
  }
  if (fadeInMove.childNodes.length) run(fadeInMove, [{ opacity: 1 }, { opacity: 0 }], moveAt, moveLen, "both");
  if (fadeInExit.childNodes.length) {
    run(fadeInExit, [{ opacity: 1 }, { opacity: 0 }], exitAt, exitLen, "both", "ease-in");
  }
  if (animations.length) host.appendChild(overlay);
  const t = new Transition(picture, overlay, animations, plan.total);
  t.plan = plan; // {exit, move, enter: [start, length] in ms, total}
  t.counts = { moves: moving.size, changed: changed.length, swaps: swaps.length,
               exits: exits.length, entries: entries.length };
  return t;
}
