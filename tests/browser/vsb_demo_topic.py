"""A test-only topic module: two tiny widgets and a chart that exercise the framework.

It is registered only in the test build (extra.topic_modules), so no placeholder page
appears on the real site. `demo-fill` steps through frames and has every kind of field;
`demo-sum` is a one-frame calculator.
"""

from pages.framework.registry import Chart
from pages.framework.widget import Param, Widget
from pages.views import svg


def parse_sizes(text):
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError("whole numbers from 1 to 9, separated by commas") from None
    if not sizes or len(sizes) > 4 or any(not 1 <= s <= 9 for s in sizes):
        raise ValueError("one to four whole numbers from 1 to 9, separated by commas")
    return sizes


def format_sizes(sizes):
    return ", ".join(str(s) for s in sizes)


def fill_view(step, ctx):
    v = ctx.values
    total = v["boxes"]
    body = [svg.text(8, 16, f"{v['label']}: {step} of {total}", size=12)]
    for i in range(total):
        fill = svg.seq(i) if i < step else "free"
        body.append(svg.rect(8 + i * 26, 26, 22, 22, fill=fill, stroke="line",
                             tip=f"box {i}: {'filled' if i < step else 'empty'}",
                             data_k=f"box:{i}"))
    # A marker under the box filled last: it moves along as the boxes fill (transitions).
    body.append(svg.rect(8 + max(step - 1, 0) * 26, 50, 22, 3, fill="highlight",
                         data_k="cursor"))
    for j, size in enumerate(v["sizes"]):
        body.append(svg.rect(8 + j * 26, 56, 22, 4 * size, fill="accent"))
    if v["mark"]:
        body.append(svg.text(8, 110, v["shape"], size=10, fill="muted"))
    return svg.Figure(8 + total * 26, 120, body, f"{v['label']} boxes")


def fill_narrate(step, ctx):
    return f"Step {step}: {step} of {ctx.values['boxes']} boxes filled ({ctx.values['label']})."


def check_fill(v):
    if len(v["sizes"]) > v["boxes"]:
        return {"sizes": "sizes: no more sizes than boxes"}
    return {}


def sum_view(total, ctx):
    body = [svg.text(10, 30, f"{ctx.values['a']} + {ctx.values['b']} = {total}", size=20)]
    return svg.Figure(200, 50, body, "a sum")


WIDGETS = (
    Widget(
        id="demo-fill",
        keys=("box", "cursor"),
        title="Demo: filling boxes",
        summary="A test-only widget.",
        params=(
            Param("boxes", "boxes", "int", 5, min=1, max=12, help="How many boxes to fill."),
            Param("scale", "scale", "float", 1.5, min=0.5, max=4.0),
            Param("shape", "shape", "choice", "square",
                  choices=(("square", "square"), ("round", "round"))),
            Param("mark", "show the shape", "bool", True),
            Param("label", "label", "text", "demo", parse=lambda s: s or "demo", format=str,
                  help="Any text; it is drawn in the picture."),
            Param("sizes", "sizes", "text", (2, 3), parse=parse_sizes, format=format_sizes),
        ),
        scenario=lambda v: list(range(v["boxes"] + 1)),
        view=fill_view,
        narrate=fill_narrate,
        meta=lambda step, ctx: {"step": step},
        check=check_fill,
    ),
    Widget(
        id="demo-sum",
        title="Demo: a calculator",
        params=(
            Param("a", "a", "int", 2, min=0, max=100),
            Param("b", "b", "int", 3, min=0, max=100),
        ),
        scenario=lambda v: [v["a"] + v["b"]],
        view=sum_view,
        narrate=lambda total, ctx: f"The sum is {total}.",
    ),
)

CHARTS = (
    Chart("demo-chart", "Demo chart",
          lambda: svg.document(100, 30, [svg.rect(0, 0, 50, 30, fill="accent", tip="half")],
                               label="half a bar"),
          caption="A test-only chart."),
)
