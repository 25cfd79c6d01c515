import re

from pages.views.chart import Axis, Marker, Series, chart, log_ticks, nice_ticks, plot, si


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0, 0.95) == [0, 0.2, 0.4, 0.6, 0.8]
    assert nice_ticks(3, 3) == [3]


def test_log_ticks():
    assert log_ticks(1, 1000, 10) == [1, 10, 100, 1000]
    assert log_ticks(1, 256, 2) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert log_ticks(1, 1024, 2) == [1, 4, 16, 64, 256, 1024]   # thinned


def test_si_labels():
    assert [si(x) for x in (0, 0.5, 12, 1500, 2e6, 7.86e14)] == \
        ["0", "0.5", "12", "1.5K", "2M", "786T"]


def test_chart_is_escaped_scaled_and_has_tips():
    doc = chart([Series("<b>a</b>", [(1, 1), (10, 100)], kind="both", tips=["p1", "p2"]),
                 Series("b", [(2, 3)], kind="points", color="seq-1", marker="square")],
                x=Axis("x <i>", log=True), y=Axis("y", log=True),
                markers=[Marker(x=5, label="ridge")], title="T & t")
    assert "<b>" not in doc and "&lt;b&gt;" in doc and "T &amp; t" in doc
    assert "<title>p1</title>" in doc and "ridge" in doc
    assert doc.startswith("<svg") and 'viewBox="0 0 640 360"' in doc
    # Every coordinate lies inside the view box.
    for cx, cy in re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', doc):
        assert 0 <= float(cx) <= 640 and 0 <= float(cy) <= 360


def test_points_map_monotonically():
    body = "".join(plot(0, 0, 400, 300, [Series("s", [(0, 0), (5, 5), (10, 10)],
                                                 kind="points")],
                        x=Axis("x"), y=Axis("y")))
    cs = [(float(a), float(b)) for a, b in re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', body)]
    assert cs[0][0] < cs[1][0] < cs[2][0] and cs[0][1] > cs[1][1] > cs[2][1]


def test_font_scale_enlarges_labels_and_marker_labels_can_sit_at_the_foot():
    series = [Series("s", [(1, 1), (10, 10)])]
    small = chart(series, x=Axis("x"), y=Axis("y"), markers=[Marker(x=5, label="m")])
    big = chart(series, x=Axis("x"), y=Axis("y"), font_scale=1.5,
                markers=[Marker(x=5, label="m", label_at="end")])
    assert 'font-size="10"' in small and 'font-size="15"' in big
    top_y = float(re.search(r'y="([\d.]+)" font-size="10"[^>]*>m<', small).group(1))
    foot_y = float(re.search(r'y="([\d.]+)" font-size="15"[^>]*>m<', big).group(1))
    assert foot_y > top_y + 200
