"""The `kv-growth` widget: one sequence generating with a tiny model. scenario: the empty
cache, then sim/studies/kv_growth.py's steps; view: each step's K and V appended per layer
and KV head, and the attention work with the cache against recomputing the whole prefix
(sim/perf/cost.py), as a chart that grows with the steps; narrate: the step's numbers."""
from __future__ import annotations

from dataclasses import dataclass

from pages.framework.widget import Context, Param, Widget
from pages.questions import Asker, memory
from pages.views import chart, fit, svg
from pages.views.text import a, commas, plural
from sim.perf.models import ModelConfig, dtype_bytes, kv_bytes_per_token
from sim.studies.kv_growth import (
    CacheAppended,
    GrowthStep,
    KVWritten,
    TokenSampled,
    generate,
    tiny_model,
)

GROWTH_WIDTH = 400   # the growth widget
GROWTH_SMALL = fit.min_size(GROWTH_WIDTH)      # 13.5: 11 px on a phone


GROWTH_DTYPES = (("fp16", "fp16 (2 bytes)"), ("fp32", "fp32 (4 bytes)"), ("fp8", "fp8 (1 byte)"))


def growth_model(v: dict) -> ModelConfig:
    return tiny_model(v["layers"], v["kv_heads"], v["group"], v["head_size"])


def growth_scenario(v: dict) -> list[GrowthStep | None]:
    """None (the empty cache, before the prefill), then one GrowthStep per model step."""
    return [None, *generate(growth_model(v), v["prompt_len"], v["new_tokens"], v["dtype"])]


@dataclass(frozen=True)
class GrowthContext(Context):
    model: ModelConfig
    steps: tuple                 # the GrowthSteps: the trace after its empty first step
    positions: int               # prompt + new tokens: the width of the token row
    ymax: int                    # the chart's top: the most attention FLOPs of a recompute


def growth_context(v: dict, trace: list) -> GrowthContext:
    steps = tuple(trace[1:])
    return GrowthContext(v, trace, growth_model(v), steps, v["prompt_len"] + v["new_tokens"],
                         max(s.recompute.flops_attention for s in steps))


def growth_label(step: GrowthStep | None, ctx: GrowthContext | None = None) -> str:
    """The step's name: the counter, the picture's heading and the narration use it."""
    if step is None:
        return "start"
    return "prefill" if step.phase == "prefill" else f"decode step {step.step}"


def model_words(model: ModelConfig, v: dict) -> str:
    """"2 layers, 4 query heads sharing 2 KV heads, 16 numbers per head"."""
    heads = model.num_attention_heads
    share = (f"{plural(heads, 'query head')} sharing {plural(model.num_kv_heads, 'KV head')}"
             if v["group"] > 1 else f"{plural(heads, 'head')}, each with its own K and V")
    return (f"{plural(model.num_layers, 'layer')}, {share}, "
            f"{plural(model.head_size, 'number')} per head")


def growth_narrate(step: GrowthStep | None, ctx: GrowthContext) -> str:
    """Cause, effect, consequence, in at most three sentences."""
    model, v = ctx.model, ctx.values
    if step is None:
        prompt = a(f"{v['prompt_len']}-token prompt")
        return (f"Start: {prompt} arrives, and the request "
                f"will generate {plural(v['new_tokens'], 'token')}. The model is tiny: "
                f"{model_words(model, v)}. Nothing is cached yet, so the prefill must compute "
                f"K and V for every prompt position.")
    n, first = step.num_new, step.first_pos
    layers = plural(model.num_layers, "layer")
    if step.phase == "prefill":
        return (f"Prefill: the {plural(n, 'prompt token')} go through the model together, "
                f"so each of the {layers} writes a K and a V for "
                f"{_positions(first, n)} in each of its {plural(model.num_kv_heads, 'KV head')}"
                f": {commas(step.bytes_appended)} bytes. The model samples token "
                f"{step.sampled_position}, whose K and V wait for the next step.")
    ratio = step.recompute.flops / step.with_cache.flops
    return (f"Decode step {step.step}: token {first}, sampled in the step before, goes in "
            f"alone, so each layer appends one K and one V per KV head: "
            f"{commas(step.bytes_appended)} bytes, the same every step. Its query reads all "
            f"{step.cached_after} cached keys: {step.pairs_with_cache} pairs per head and "
            f"layer. Without the cache the model would rerun all {step.cached_after} tokens: "
            f"{step.pairs_recompute} pairs, and {ratio:.1f}x the work of the whole step.")


def _positions(first: int, n: int) -> str:
    return f"position {first}" if n == 1 else f"positions {first}-{first + n - 1}"


def growth_details(step: GrowthStep | None, ctx: GrowthContext) -> list[str]:
    """The step's whole account, from its events and its two costs."""
    model, v = ctx.model, ctx.values
    per_token = kv_bytes_per_token(model, v["dtype"])
    if step is None:
        q, kvh = model.num_attention_heads, model.num_kv_heads
        gqa = (f"{plural(q, 'query head')} share {plural(kvh, 'KV head')} ({v['group']} per "
               f"KV head: grouped-query attention), so only {plural(kvh, 'head')}' keys and "
               f"values are cached." if v["group"] > 1 else
               f"Each of the {plural(q, 'query head')} has its own KV head (multi-head "
               f"attention).")
        return [f"Prompt: {plural(v['prompt_len'], 'token')} (positions "
                f"0-{v['prompt_len'] - 1}); the request will generate "
                f"{plural(v['new_tokens'], 'token')}: one prefill step, then "
                f"{plural(v['new_tokens'] - 1, 'decode step')}.",
                f"Model: {model_words(model, v)}; hidden size {model.hidden_size}.",
                gqa,
                f"One token caches 2 (K and V) x {plural(model.num_layers, 'layer')} x "
                f"{plural(model.num_kv_heads, 'KV head')} x {model.head_size} numbers x "
                f"{dtype_bytes(v['dtype'])} bytes ({v['dtype']}) = {commas(per_token)} bytes.",
                "The KV cache is empty."]
    written = next(e for e in step.events if isinstance(e, KVWritten))
    layers = [e for e in step.events if isinstance(e, CacheAppended)]
    sampled = next(e for e in step.events if isinstance(e, TokenSampled))
    kvh, hs = layers[0].num_kv_heads, layers[0].head_size
    numbers = written.num_tokens * 2 * len(layers) * kvh * hs
    out = [f"Fed: {_positions(written.first_pos, written.num_tokens)} "
           + ("(the whole prompt)." if step.phase == "prefill"
              else "(the token sampled in the step before).")]
    for e in layers:
        out.append(f"Layer {e.layer} writes K and V for {_positions(e.first_pos, e.num_tokens)}"
                   f" in each of its {plural(e.num_kv_heads, 'KV head')} "
                   f"({plural(e.head_size, 'number')} each).")
    out.append(f"Written: {commas(numbers)} numbers, {commas(step.bytes_appended)} bytes in "
               f"{v['dtype']}; the cache now holds {plural(step.cached_after, 'token')}, "
               f"{commas(step.cache_bytes)} bytes.")
    out.append(f"Attention with the cache: {plural(step.num_new, 'query', 'queries')} against "
               f"{plural(step.cached_after, 'key')}: {step.pairs_with_cache} query-key pairs "
               f"per head and layer, {commas(step.with_cache.flops_attention)} attention "
               f"FLOPs, {commas(step.with_cache.flops)} FLOPs for the whole step.")
    out.append(f"Without a cache: the whole prefix of {plural(step.cached_after, 'token')} "
               f"again, {step.pairs_recompute} pairs per head and layer, "
               f"{commas(step.recompute.flops_attention)} attention FLOPs, "
               f"{commas(step.recompute.flops)} FLOPs for the whole step "
               f"({step.recompute.flops / step.with_cache.flops:.1f}x).")
    last = step.step == len(ctx.steps) - 1
    out.append(f"Sampled: token {sampled.position}; its K and V are written in the next step"
               + (" (this is the last step, so they never are)." if last else "."))
    return out


def growth_view(cur: GrowthStep | None, ctx: GrowthContext) -> svg.Figure:
    model, v, steps, total_positions = ctx.model, ctx.values, ctx.steps, ctx.positions
    W, s = GROWTH_WIDTH, GROWTH_SMALL
    cached = cur.cached_after if cur else 0
    new_from = cur.cached_before if cur else 0
    sampled = cur.sampled_position if cur else None
    prompt_len = v["prompt_len"]
    L, H = model.num_layers, model.num_kv_heads
    left, right = 50, W - 8
    cw = (right - left) / total_positions
    rh = 17
    body: list[str] = []

    # Heading: the step's name, what is cached, and what this step added.
    body.append(svg.text(8, 19, growth_label(cur), size=16))
    if cur:
        body.append(svg.text(right, 19, f"+{commas(cur.bytes_appended)} B this step", size=s,
                             anchor="end", fill="highlight"))
    nbytes = cur.cache_bytes if cur else 0
    body.append(svg.text(8, 40, f"cache: {plural(cached, 'token')}, {commas(nbytes)} B",
                         size=s))

    # Token positions: prompt and generated, the sampled one marked.
    y = 50
    inside = cw >= fit.text_width("00", s) + 3
    every = 1 if inside else next(k for k in (2, 4, 5, 10) if k * cw >= 26)
    for p in range(total_positions):
        x = left + p * cw
        if p == sampled:
            fill, tip = "highlight", f"token {p}: just sampled, its K and V not computed yet"
        elif p < cached:
            fill, tip = ("used", f"token {p} (prompt): K and V cached" if p < prompt_len
                         else f"token {p} (generated): K and V cached")
        elif p < prompt_len:
            fill, tip = "panel", f"token {p} (prompt): not fed yet"
        else:
            fill, tip = "panel", f"token {p}: not generated yet"
        body.append(svg.rect(x + 1, y, cw - 2, 20, fill=fill, stroke="line", tip=tip, rx=2,
                             data_k=f"tok:0:{p}"))
        if inside:
            body.append(svg.text(x + cw / 2, y + 15, p, size=s, anchor="middle",
                                 fill="bg" if p == sampled else "fg", data_k=f"tok:0:{p}/t"))
        elif p % every == 0:
            body.append(svg.text(x + cw / 2, y + 36, p, size=s, anchor="middle",
                                 fill="muted", data_k=f"tok:0:{p}/t"))
    body.append(svg.text(left - 6, y + 15, "tok", size=s, anchor="end", fill="muted"))
    # Brackets: prompt / generated.
    by = y + (26 if inside else 42)
    px = left + prompt_len * cw

    def bracket(x0: float, x1: float, word: str) -> None:
        body.append(svg.line(x0 + 1, by, x1 - 1, by, stroke="muted"))
        half = fit.text_width(word, s) / 2
        cx = min(max((x0 + x1) / 2, 8 + half), W - 4 - half)
        body.append(svg.text(cx, by + 16, word, size=s, anchor="middle", fill="muted"))

    bracket(left, px, "prompt")
    if total_positions > prompt_len:
        bracket(px, right, "generated")

    # The cache: per layer, per KV head, a K row and a V row; one cell per position.
    y = by + 26
    for layer in range(L):
        body.append(svg.text(8, y + s, f"layer {layer}", size=s))
        y += s + 5
        top = y
        for h in range(H):
            for kind, color in (("K", "seq-0"), ("V", "seq-2")):
                cells = []
                row = f"kv:{layer}:{h}:{kind}"
                for p in range(cached):
                    # A new K or V comes out of its token, above.
                    cells.append(svg.rect(left + p * cw + 1, y + 1, cw - 2, rh - 2, fill=color,
                                          stroke="highlight" if p >= new_from else None,
                                          stroke_width=2 if p >= new_from else None, rx=1,
                                          data_k=f"{row}:{p}", data_from=f"tok:0:{p}"))
                tip = (f"layer {layer}, KV head {h}, {kind}: " +
                       (f"tokens 0-{cached - 1} cached, {model.head_size} numbers each"
                        if cached else "empty"))
                body.append(svg.group([svg.rect(left, y, right - left, rh, fill="free", rx=1),
                                       *cells], tip=tip, data_k=row))
                body.append(svg.text(left - 6, y + rh - 4, f"{kind}{h}", size=s,
                                     anchor="end", fill="muted"))
                y += rh
        if not cached and layer == 0:
            body.append(svg.text((left + right) / 2, (top + y) / 2 + s / 2 - 1,
                                 "empty: nothing cached yet", size=s, anchor="middle",
                                 fill="muted"))
        y += 6

    # Legend: every colour and outline above.
    items = [("chip", "seq-0", "K (key)"), ("chip", "seq-2", "V (value)"),
             ("outline", "highlight", "written this step"), ("chip", "used", "token cached"),
             ("chip", "highlight", "sampled, no K and V yet"),
             ("outline", "line", "not fed yet")]
    chips, h = fit.legend(8, y + 2, W - 4, items, size=s)
    body += chips
    body.append(svg.text(8, y + h + s + 6, "K0, V0: the K and V rows of KV head 0",
                         size=s, fill="muted"))
    y += h + s + 16

    # The chart: attention FLOPs per step, with the cache and recomputing the prefix.
    shown = steps[: cur.step + 1] if cur else []
    xs = [st.cached_after for st in steps]
    series = [
        chart.Series("recompute the prefix", [(st.cached_after, st.recompute.flops_attention)
                                              for st in shown], color="waste", kind="both",
                     tips=[f"{growth_label(st)}: recompute {st.cached_after} tokens, "
                           f"{st.pairs_recompute} pairs, "
                           f"{commas(st.recompute.flops_attention)} attention FLOPs"
                           for st in shown]),
        chart.Series("with the KV cache", [(st.cached_after, st.with_cache.flops_attention)
                                           for st in shown], color="accent", kind="both",
                     tips=[f"{growth_label(st)}: {plural(st.num_new, 'new token')} against "
                           f"{st.cached_after} keys, {st.pairs_with_cache} pairs, "
                           f"{commas(st.with_cache.flops_attention)} attention FLOPs"
                           for st in shown]),
    ]
    height = 226
    body += chart.plot(0, y, W, height, series,
                       x=chart.Axis("tokens cached after the step", lo=0, hi=max(xs)),
                       y=chart.Axis("attention FLOPs", lo=0, hi=ctx.ymax),
                       title="Attention work per step", legend=False, font_scale=s / 10)
    plot_mid = y + (chart.PAD_TOP + (height / (s / 10) - chart.PAD_BOTTOM)) * s / 20
    if not shown:
        body.append(svg.text(W / 2 + 30, plot_mid, "the prefill comes next", size=s,
                             anchor="middle", fill="muted"))
    y += height
    chips, h = fit.legend(8, y, W - 4, [("line", "accent", "with the KV cache"),
                                        ("line", "waste", "recomputing the prefix")], size=s)
    body += chips
    y += h + 6
    label = (f"KV cache of one sequence, {growth_label(cur)}: {plural(cached, 'token')} cached")
    return svg.Figure(W, y, body, label)


GROWTH_QUESTIONS = Asker(("kv-bytes", memory.growth_bytes(growth_model, dtype_bytes)))

GROWTH = Widget(
    id="kv-growth",
    keys=("tok", "kv", "pt", "line"),
    goal=('Explain why each new token adds one key and one value per layer and KV head, and what '
          'the cache saves against recomputing the prefix.'),
    title="One sequence filling its KV cache",
    summary="Each step appends one token's K and V in every layer and KV head; the chart "
            "compares the attention work with the cache and without it.",
    scenario=growth_scenario, context=growth_context, view=growth_view,
    narrate=growth_narrate, label=growth_label, details=growth_details,
    questions=GROWTH_QUESTIONS, question_kinds=GROWTH_QUESTIONS.kinds,
    params=(
        Param("prompt_len", "prompt tokens", "int", 4, min=1, max=12,
              help="Tokens in the prompt (1 to 12): all written in the prefill step."),
        Param("new_tokens", "new tokens", "int", 12, min=1, max=16,
              help="Tokens to generate (1 to 16): one prefill, then one decode step each."),
        Param("layers", "layers", "int", 2, min=1, max=4, help="Decoder layers (1 to 4)."),
        Param("kv_heads", "KV heads", "int", 2, min=1, max=4,
              help="Key/value heads per layer (1 to 4): what the cache stores."),
        Param("group", "query heads per KV head", "int", 2, min=1, max=4,
              help="1 is multi-head attention; more is grouped-query attention (1 to 4)."),
        Param("head_size", "head size", "int", 16, min=1, max=256,
              help="Numbers in one K or V vector (1 to 256; real models use 64-128)."),
        Param("dtype", "dtype", "choice", "fp16", choices=GROWTH_DTYPES,
              help="Bytes per cached number."),
    ),
)

