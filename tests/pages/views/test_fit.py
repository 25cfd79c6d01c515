"""pages/views/fit.py: sizes that read on a phone, wrapped text, legends."""
import xml.etree.ElementTree as ET

from pages.views import fit, svg

SVG = "{http://www.w3.org/2000/svg}"


def test_min_size_gives_11_px_on_a_phone_column():
    for width in (330, 360, 380, 400, 480):
        size = fit.min_size(width)
        assert size * fit.PHONE_PX / width >= 11
        assert size * 2 == int(size * 2)              # half units
    assert fit.min_size(400) == 13.5 and fit.min_size(360) == 12.5


def test_paragraph_wraps_to_the_room_and_indents_continuations():
    text = "the quick brown fox jumps over the lazy dog " * 3
    lines, height = fit.paragraph(10, 0, text, size=13.5, room=200, indent="  ")
    doc = ET.fromstring(svg.document(220, height, lines, label="t"))
    texts = list(doc.iter(f"{SVG}text"))
    assert len(texts) > 1 and abs(height - len(texts) * 13.5 * 1.3) < 1e-9
    assert all(fit.text_width(t.text, 13.5) <= 200 for t in texts)
    assert float(texts[0].get("x")) == 10 and float(texts[1].get("x")) > 10
    assert " ".join(t.text for t in texts) == " ".join(text.split())
    # Leading spaces indent the whole paragraph (SVG would drop them).
    lines, _ = fit.paragraph(10, 0, "  indented", size=13.5, room=200)
    assert 'x="26.47"' in lines[0] and ">indented<" in lines[0]


def test_legend_wraps_before_the_right_edge_and_escapes_labels():
    items = [("chip", "seq-0", "first label"), ("outline", "highlight", "second label"),
             ("dot", "seq-1", "<third>"), ("line", "accent", "fourth"),
             ("dash", "muted", "fifth"), ("text:+V", "seq-2", "sixth")]
    body, height = fit.legend(0, 0, 200, items, size=13.5)
    doc = ET.fromstring(svg.document(200, height, body, label="legend"))
    labels = [t for t in doc.iter(f"{SVG}text") if t.text != "+V"]
    assert [t.text for t in labels] == ["first label", "second label", "<third>", "fourth",
                                        "fifth", "sixth"]
    for t in labels:
        assert float(t.get("x")) + fit.text_width(t.text, 13.5) <= 200 + 1
    rows = {float(t.get("y")) for t in labels}
    assert len(rows) > 1 and max(rows) < height
