"""pages.framework.link_hash: a widget link's hash as the player reads and writes it."""

from hypothesis import given
from hypothesis import strategies as st

from pages.framework.link_hash import format_hash, parse_hash


def test_a_plus_is_a_plus_and_escapes_are_decoded():
    assert parse_hash("#prefix-caching.prompts=x:4+2/2") == [("prefix-caching.prompts",
                                                              "x:4+2/2")]
    assert parse_hash("preemption.requests=6%2F12%2C%205%2F12&preemption.step=3") == [
        ("preemption.requests", "6/12, 5/12"), ("preemption.step", "3")]


def test_empty_parts_are_skipped_and_a_key_alone_has_an_empty_value():
    assert parse_hash("#&a.step=2&&a.x&a.=5") == [("a.step", "2"), ("a.x", ""), ("a.", "5")]


def test_spaces_and_pluses_are_written_unambiguously():
    assert format_hash([("p.prompts", "sys:8+4/2, sys+6/2@2")]) == (
        "p.prompts=sys%3A8%2B4%2F2%2C%20sys%2B6%2F2%402")


@given(st.lists(st.tuples(st.text(min_size=1), st.text())))
def test_any_pairs_round_trip(pairs):
    assert parse_hash(format_hash(pairs)) == pairs
