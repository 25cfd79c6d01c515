"""pages.framework.request_list: the "7/3, 3/6, 5/3@4" syntax every request list shares."""

import pytest

from pages.framework.request_list import Request, RequestList

RL = RequestList(max_requests=4, max_len=40, max_arrival=10, max_n=2)


def test_a_list_parses_and_formats_back():
    text = "7/3, 3/6x2, 5/3@4"
    parsed = RL.parse(text)
    assert parsed == (Request(7, 3), Request(3, 6, 0, 2), Request(5, 3, 4))
    assert RL.format(parsed) == text
    assert RL.parse(" 7 / 3 ,3/6 x 2,5/3 @ 4 ") == parsed
    assert RL.parse("7/3, 3/6x2, 5/3@4,") == parsed       # a comma at the end is harmless


@pytest.mark.parametrize("text, message", [
    ("6/8,,5/8", "request 2 is empty (an extra comma?); write each request as "
                 "prompt/output[xN][@step], e.g. 6/12, 5/12x2, 3/3@8"),
    ("6/8, ,5/8", "request 2 is empty"),
    ("6/8,,", "request 2 is empty"),
    (",6/8", "request 1 is empty"),
    ("", "1 to 4 requests"),
    ("1/1, 1/1, 1/1, 1/1, 1/1", "1 to 4 requests"),
    ("6-8", "request 1 should look like"),
    ("6/41", "request 1: prompt and output lengths must be from 1 to 40"),
    ("6/8x3", "request 1: from 1 to 2 parallel samples"),
    ("6/8@11", "request 1: the arrival step must be at most 10"),
])
def test_bad_lists_are_refused_by_position(text, message):
    with pytest.raises(ValueError) as err:
        RL.parse(text)
    assert message in str(err.value)


def test_a_total_bound_is_prompt_plus_output():
    rl = RequestList(max_requests=2, max_len=40, max_arrival=5, max_total=64)
    assert rl.parse("40/24") == (Request(40, 24),)
    with pytest.raises(ValueError, match=r"request 1: prompt \+ output must be at most 64"):
        rl.parse("40/25")


def test_the_extremes_are_what_the_list_allows_at_its_edges():
    rl = RequestList(max_requests=2, max_len=40, max_arrival=5, max_total=64)
    assert dict(rl.extremes()) == {
        "the longest prompt": "40/1", "the longest output": "1/40",
        "the longest request": "40/24", "the most requests": "1/1, 1/1",
        "the latest arrival": "1/1@5"}
    assert dict(RL.extremes())["the most samples"] == "1/1x2"
    for lists in (rl, RL):
        assert all(lists.parse(raw) for _, raw in lists.extremes())
    assert RL.param("requests", "7/3").bounds() == list(RL.extremes())
