"""The sharing pages' usage bars, heading and sentences (pages/views/usage.py)."""
from pages.views import usage


def test_averaged_sentence_only_once_there_is_an_average():
    assert usage.averaged_sentence(None) == []
    assert usage.averaged_sentence(0.374) == [
        "Time-averaged saving so far (the paper's measure, summed over the iterations): 37%."]


def test_request_heading_names_the_request_and_gives_the_next_y():
    parts, y = usage.request_heading(8, "Iteration 2 (decode)", "k = 4",
                                     {"prompt_len": 6, "output_len": 8})
    text = "".join(parts)
    assert "Iteration 2 (decode)" in text and ">v0.5.5<" in text
    assert "Request A: k = 4, 6-token prompt, max_tokens 8" in text
    assert y > 24
