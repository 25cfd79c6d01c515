"""The Question record and `ask`, which draws a question's options (pages/framework/
question.py), and how frames carry a widget's first question (widget.frames_of)."""
import pytest

from pages.framework import widget
from pages.framework.question import Question, ask
from pages.framework.widget import Param, Widget
from pages.views import svg


def words(n):
    return f"block {n}"


def test_ask_keeps_three_or_four_distinct_options_and_marks_the_correct_one():
    q = ask("next-block", "Which block?", 7, [7, 3, None, 3, 5, 9, 11], words, "why", "f: g (v)")
    assert q.values == (3, 5, 7, 9)           # the first three distinct distractors, sorted
    assert q.options[q.answer] == "block 7" and q.correct == 7
    assert q.to_json() == {"kind": "next-block", "prompt": "Which block?",
                           "options": ["block 3", "block 5", "block 7", "block 9"],
                           "answer": 2, "explanation": "why", "code": "f: g (v)"}


def test_ask_asks_nothing_without_two_distractors():
    assert ask("next-block", "Which?", 7, [7, None, 4], words, "why", "code") is None


def test_ask_asks_nothing_when_two_options_read_the_same():
    assert ask("next-block", "Which?", 7, [1, 2], lambda n: "same", "why", "code") is None


def test_mixed_order_is_a_function_of_the_prompt_only():
    a = ask("admit", "Who is admitted?", ("A",), [(), ("A", "B"), ("B",)], str, "w", "c",
            order="mixed")
    b = ask("admit", "Who is admitted?", ("A",), [(), ("A", "B"), ("B",)], str, "w", "c",
            order="mixed")
    assert a == b
    positions = {ask("admit", f"Who is admitted in iteration {i}?", ("A",),
                     [(), ("A", "B"), ("B",)], str, "w", "c", order="mixed").answer
                 for i in range(12)}
    assert len(positions) > 1                 # the correct option is not always first


def test_a_tuple_order_fixes_the_display_order():
    q = ask("new-block", "New block?", "cow", ["none", "new"], str, "w", "c",
            order=("none", "new", "cow"))
    assert q.values == ("none", "new", "cow") and q.answer == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"options": ("a", "b")}, "3 or 4"),
    ({"options": ("a", "a", "b"), "values": (1, 2, 3)}, "read the same"),
    ({"values": (1, 1, 2)}, "distinct value"),
    ({"answer": 3}, "not an option"),
    ({"code": ""}, "required"),
])
def test_a_bad_question_is_refused(kwargs, message):
    fields = {"kind": "k", "prompt": "p", "options": ("a", "b", "c"), "answer": 0,
              "explanation": "e", "code": "c", "values": (1, 2, 3)}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Question(**fields)


def _counter(kinds=("next-block",)):
    def view(n, ctx):
        return svg.Figure(40, 20, [svg.text(4, 14, n)], label=str(n))

    def questions(before, n, ctx):
        if before is None:
            return []
        return [ask("next-block", f"After {before}?", n, [n + 1, n + 2], str, "w", "c"),
                ask("next-block", "second", n, [n + 3, n + 4], str, "w", "c")]

    return Widget(id="counter", title="Counter", params=(Param("n", "n", "int", 3, min=1),),
                  scenario=lambda v: list(range(v["n"])), view=view,
                  narrate=lambda n, ctx: f"step {n}", questions=questions,
                  question_kinds=kinds)


def test_a_frame_carries_the_first_question_asked_before_it():
    frames = widget.run(_counter(), {"n": 3})
    assert "question" not in frames[0]
    assert frames[1]["question"]["prompt"] == "After 0?"
    assert frames[2]["question"]["options"] == ["2", "3", "4"]


def test_questions_and_their_kinds_go_together():
    with pytest.raises(ValueError, match="go together"):
        _counter(kinds=())
