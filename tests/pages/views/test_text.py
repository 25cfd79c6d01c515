from pages.views.text import f2, plural, span, wrap


def test_f2_never_prints_minus_zero():
    assert [f2(x) for x in (1.005, -0.001, 0.0, -1.236)] == ["1.00", "0.00", "0.00", "-1.24"]


def test_plural_and_span():
    assert plural(1, "block") == "1 block" and plural(3, "block") == "3 blocks"
    assert span([]) == "none" and span([4]) == "4" and span(range(3, 8)) == "3-7"


def test_wrap_keeps_words_whole_and_lines_short():
    lines = wrap("the quick brown fox jumps over the lazy dog", 10)
    assert lines == ["the quick", "brown fox", "jumps over", "the lazy", "dog"]
    assert wrap("", 10) == [] and wrap("averyveryverylongword", 5) == ["averyveryverylongword"]
