"""Legend chips and a topic's own swatches, wrapped to the picture (pages/views/legend.py)."""
import re

from pages.views import fit, legend


def swatch(kind, x, y):
    return [f'<rect data-kind="{kind}" x="{x}" y="{y}"/>']


def test_swatch_items_wrap_before_the_right_edge():
    out: list[str] = []
    cx, cy = 10.0, 0.0
    for kind, text in [("a", "prefill"), ("b", "decode"), ("c", "a much longer label")]:
        cx, cy = legend.swatch_item(out, cx, cy, 10, 200, 12, swatch, kind, text)
    xs = [float(x) for x in re.findall(r'data-kind="\w" x="([0-9.]+)"', "".join(out))]
    ys = [float(y) for y in re.findall(r'data-kind="\w" x="[0-9.]+" y="([0-9.]+)"', "".join(out))]
    first_w = legend.SWATCH + 5 + fit.text_width("prefill", 12)
    assert xs[:2] == [10.0, 10.0 + first_w + 12]
    assert xs[2] == 10.0 and ys[2] == ys[0] + 12 * 1.6   # the long one starts a new row
    assert cy == 12 * 1.6


def test_an_item_wider_than_the_row_stays_on_the_first_row():
    out: list[str] = []
    cx, cy = legend.swatch_item(out, 10, 0, 10, 50, 12, swatch, "a", "x" * 40)
    assert cy == 0 and cx > 50
