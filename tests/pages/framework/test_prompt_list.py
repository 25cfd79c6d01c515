"""pages.framework.prompt_list: prompts written as shared parts + own tokens, their
messages, the canonical text that round-trips through a URL, and the token ids."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pages.framework.prompt_list import Part, Prompt, PromptList, shared_with_earlier, token_ids
from pages.framework.widget import Widget, validate

DOCS = "x:10+y:2+3/3, x+4/1@3, x+y+17/2@4"
PL = PromptList()


def test_the_design_docs_example():
    r0, r1, r2 = PL.parse(DOCS)
    assert r0 == Prompt((Part("x", 10), Part("y", 2), Part(None, 3)), 3, 1)
    assert r1 == Prompt((Part("x", 10), Part(None, 4)), 1, 3)
    assert r2 == Prompt((Part("x", 10), Part("y", 2), Part(None, 17)), 2, 4)
    assert [p.length for p in (r0, r1, r2)] == [15, 14, 29]
    ids = token_ids((r0, r1, r2))
    assert ids[0] == list(range(100, 115))            # the token lists of sim/v1's tests
    assert ids[1] == list(range(100, 110)) + list(range(115, 119))
    assert ids[2] == list(range(100, 112)) + list(range(119, 136))
    assert shared_with_earlier((r0, r1, r2)) == [0, 10, 12]


def test_format_is_canonical_and_round_trips():
    text = "x:10 + y:2 + 3 / 3 ,x:10+4/1@3, x+ y +17/2@4,"
    prompts = PL.parse(text)
    assert PL.format(prompts) == DOCS
    assert PL.parse(PL.format(prompts)) == prompts
    assert PL.format(PL.parse("a:4/1@1")) == "a:4/1"


@pytest.mark.parametrize("text,message", [
    ("", "1 to 5 requests separated by commas"),
    (" , ", "1 to 5 requests separated by commas"),
    ("4/1, 4/1, 4/1, 4/1, 4/1, 4/1", "1 to 5 requests"),
    ("x:4", "request 1 should look like x:8+4/2"),
    ("x:4/1@", "request 1 should look like"),
    ("x:4/a", "request 1 should look like"),
    ("x:4/1, y/1", "request 2, part 1: y is not defined yet; give its length the first "
                   "time, as y:8"),
    ("x:4/1, x:5/1", "request 2, part 1: x is 4 tokens already; write x alone to reuse it"),
    ("x:4+/1", "request 1, part 2: 'nothing' is not name:N"),
    ("x:4/1,,x/1", "request 2 is empty (an extra comma?)"),
    (", x:4/1", "request 1 is empty"),
    ("x:4+1a/1", "request 1, part 2: '1a' is not name:N"),
    ("<b>/1", "request 1, part 1: '<b>' is not name:N"),
    ("x:0/1", "request 1, part 1: x needs at least 1 token"),
    ("0/1", "request 1, part 1: at least 1 token"),
    ("x:40+9/1", "request 1: the prompt is 49 tokens; at most 48"),
    ("4/0", "request 1: from 1 to 8 output tokens"),
    ("4/9", "request 1: from 1 to 8 output tokens"),
    ("4/1@0", "request 1: the arrival step must be from 1 to 12 (steps count from 1)"),
    ("4/1@13", "request 1: the arrival step must be from 1 to 12"),
    ("x\u0663:4/1", "is not name:N"),                   # not an ASCII name
    ("\u0664/1", "part 1: '\u0664' is not name:N"),     # not an ASCII digit
])
def test_messages_say_what_is_wrong(text, message):
    with pytest.raises(ValueError) as err:
        PL.parse(text)
    assert message in str(err.value)


def test_the_field_goes_through_the_widget_validation():
    widget = Widget(id="t", title="T", params=(PL.param("prompts", DOCS),),
                    scenario=lambda v: [v], view=lambda s, c: "<svg/>",
                    narrate=lambda s, c: "")
    values, errors = validate(widget, {"prompts": "x:4/1, y/1"})
    assert errors == {"prompts": "prompts: request 2, part 1: y is not defined yet; give its "
                                 "length the first time, as y:8"}
    values, errors = validate(widget, {"prompts": DOCS})
    assert not errors and values["prompts"] == PL.parse(DOCS)
    assert "name:N is N tokens shared" in widget.params[0].help


def test_the_same_name_is_the_same_tokens_and_own_parts_never_repeat():
    a, b, c = token_ids(PL.parse("s:3+2/1, s+2/1, 2+s/1"))
    assert a[:3] == b[:3] == c[2:]
    assert len({*a[3:], *b[3:], *c[:2]}) == 6
    assert set(a[3:]).isdisjoint(a[:3])


names = st.sampled_from(["a", "b", "sys", "q1"])


@given(st.lists(st.tuples(st.lists(st.one_of(names, st.integers(1, 6)), min_size=1,
                                   max_size=4),
                          st.integers(1, 8), st.integers(1, 12)), min_size=1, max_size=5))
def test_any_valid_list_round_trips(spec):
    lengths = {"a": 2, "b": 3, "sys": 5, "q1": 1}
    prompts = tuple(Prompt(tuple(Part(p, lengths[p]) if isinstance(p, str) else Part(None, p)
                                 for p in parts), out, at) for parts, out, at in spec)
    if any(p.length > PL.max_prompt for p in prompts):
        return
    assert PL.parse(PL.format(prompts)) == prompts
    ids = token_ids(prompts)
    assert [len(i) for i in ids] == [p.length for p in prompts]
