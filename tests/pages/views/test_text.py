from pages.views.text import f2, plural, span, wrap, wrap_items


def test_f2_never_prints_minus_zero():
    assert [f2(x) for x in (1.005, -0.001, 0.0, -1.236)] == ["1.00", "0.00", "0.00", "-1.24"]


def test_plural_and_span():
    assert plural(1, "block") == "1 block" and plural(3, "block") == "3 blocks"
    assert span([]) == "none" and span([4]) == "4" and span(range(3, 8)) == "3-7"


def test_wrap_keeps_words_whole_and_lines_short():
    lines = wrap("the quick brown fox jumps over the lazy dog", 10)
    assert lines == ["the quick", "brown fox", "jumps over", "the lazy", "dog"]
    assert wrap("", 10) == [] and wrap("averyveryverylongword", 5) == ["averyveryverylongword"]


def test_agreement_helpers():
    from pages.views.text import commas, join, noun, verb
    assert plural(2, "copy", "copies") == "2 copies" and plural(1, "copy", "copies") == "1 copy"
    assert noun(1, "block") == "block" and noun(["a", "b"], "block") == "blocks"
    assert verb(["A"], "is", "are") == "is" and verb(2, "waits", "wait") == "wait"
    assert join([]) == "" and join(["A"]) == "A" and join(["A", "B", "C"]) == "A, B and C"
    assert commas(1234567) == "1,234,567"


def test_a_or_an_follows_how_the_word_is_spoken():
    from pages.views.text import a
    spoken = {"8-token prompt": "an", "7-token prompt": "a", "11-block table": "an",
              "18-token": "an", "80-token": "an", "800-token": "an", "1-token": "a",
              "110-token": "a", "11000-token": "an", "empty pool": "an", "block": "a",
              "ordinary": "an", "uniform": "a", "unused slot": "an"}
    for word, article in spoken.items():
        assert a(word) == f"{article} {word}", word


def test_wrap_items_breaks_between_items_only():
    items = ["A 61%", "B 7%", "C 100%", "D 0%"]
    assert wrap_items(items, 13, " · ") == ["A 61% · B 7%", "C 100% · D 0%"]
    assert wrap_items(items, 200, " · ") == ["A 61% · B 7% · C 100% · D 0%"]
    # An item longer than the width gets a line of its own rather than being cut.
    assert wrap_items(["x" * 20, "y"], 5) == ["x" * 20, "y"]
    assert wrap_items([], 10) == []
