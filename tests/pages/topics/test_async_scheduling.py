"""The async scheduling widget and chart (pages/topics/async_scheduling.py) and the numbers
docs/v1-scheduler.md quotes about V1's default engine loop."""
import re
from pathlib import Path

from pages.framework.widget import run, validate
from pages.topics import async_scheduling as A
from sim.events import TokenDiscarded

W = A.WIDGETS[0]
ROOT = Path(__file__).resolve().parents[3]
DOC = " ".join((ROOT / "docs" / "v1-scheduler.md").read_text(encoding="utf-8").split())


def values(**raw):
    v, errors = validate(W, {k: str(x) for k, x in raw.items()})
    assert not errors, errors
    return v


def trace_and_ctx(**raw):
    v = values(**raw)
    trace = W.scenario(v)
    return trace, A.context(v, trace)


def test_default_trace_shows_placeholders_a_length_stop_and_an_eos_stop():
    trace, ctx = trace_and_ctx()
    assert ctx.is_async and [s.processed for s in trace] == [None, None, 0, 1, 2, 3]
    assert not any(s.problems for s in trace)
    text = [W.narrate(s, ctx) for s in trace]
    assert "The queue has room for a second batch" in text[1]
    assert "a decode for A and B of the token their previous step is still sampling" in text[2]
    # B's EOS comes back in call 3; the decode step 3 computed for B is thrown away in call 4.
    assert "B finishes and its blocks are freed, after this call's batch was chosen" in text[4]
    assert "A's block 1, filled by a decoded token, is cached now" in text[4]
    (discarded,) = trace[5].of_type(TokenDiscarded)
    assert (discarded.request_id, discarded.reason) == ("B", "finished_stopped")
    assert "A is left out: the token in flight is its last (max_tokens)" in text[5]
    assert "B's token is thrown away (it had stopped with EOS" in text[5]
    frames = run(W, values())
    # Placeholders are drawn as dashed "?" cells; the thrown-away token is crossed out.
    assert frames[1]["svg"].count("a placeholder; a step in flight is sampling") == 2
    assert "was sampled by a step in flight and thrown away" in frames[5]["svg"]
    for f in frames:
        keys = re.findall(r'data-k="([^"]+)"', f["svg"])
        assert len(keys) == len(set(keys)), keys
        assert W.details and f["details"]


def test_the_synchronous_loop_and_an_abort():
    trace, ctx = trace_and_ctx(async_scheduling="false")
    assert not ctx.is_async and [s.processed for s in trace] == [None, 0, 1, 2, 3]
    assert not any(s.of_type(TokenDiscarded) for s in trace)
    assert "A's block 1, filled by a decoded token, is cached now." in W.narrate(trace[3], ctx)
    trace, ctx = trace_and_ctx(ending="abort")
    text = W.narrate(trace[3], ctx)
    assert text.startswith("Before call 2 the client aborts B")
    assert "B's token is thrown away (it had been aborted" in text
    trace, ctx = trace_and_ctx(ending="length")
    assert not any(s.of_type(TokenDiscarded) for s in trace)
    assert "B is left out: the token in flight is its last" in W.narrate(trace[4], ctx)


def test_check_and_bad_values():
    _, errors = validate(W, {"num_blocks": "2", "requests": "16/16"})
    # The last request may run 8 tokens past its EOS (max_tokens = output + 8): 40 tokens.
    assert errors == {"num_blocks": "KV blocks: at least 10, so the longest request fits "
                                    "alone"}
    _, errors = validate(W, {"num_blocks": "8", "requests": "16/16", "ending": "length"})
    assert not errors
    _, errors = validate(W, {"ending": "never"})
    assert "ending" in errors


def test_the_doc_links_land_where_the_text_says():
    trace, ctx = trace_and_ctx()
    text = [W.narrate(s, ctx) for s in trace]
    assert "[Call 0](#v1-async.step=2) schedules A's and B's prompts" in DOC
    assert text[1].startswith("Call 0 schedules step 0: A's 6 prompt tokens")
    assert "[call 4](#v1-async.step=6) A is not scheduled" in DOC
    assert "A is left out" in text[5]
    assert "[call 3](#v1-async.step=5), after step 3 was scheduled" in DOC
    assert "B finishes" in text[4]
    sync, sctx = trace_and_ctx(async_scheduling="false")
    assert "A's block 1" in W.narrate(sync[3], sctx)       # step=4 of the sync permalink


def test_the_chart_and_the_numbers_the_page_quotes():
    runs = A.overlap_runs()
    sync, asyn = runs[False], runs[True]
    one = A.CPU_TIMES_MS.index(1.0)
    assert f"{A.chat_gap_ms(sync[one]):.1f}" == "5.1" and f"{A.chat_gap_ms(asyn[one]):.1f}" == "4.1"
    assert round(100 * A.gpu_busy(sync[one])) == 80 and round(100 * A.gpu_busy(asyn[one])) == 100
    assert (f"{sync[one].makespan_s * 1e3:,.0f}", f"{asyn[one].makespan_s * 1e3:,.0f}") == (
        "1,635", "1,316")
    assert "a chat a token every 5.1 ms, keeps the GPU busy 80% of the time and finishes the " \
           "workload in 1,635 ms" in DOC
    five = A.CPU_TIMES_MS.index(5.0)
    assert (f"{A.chat_gap_ms(asyn[five]):.1f}", f"{A.chat_gap_ms(sync[five]):.1f}") == (
        "5.3", "9.1")
    zero = A.CPU_TIMES_MS.index(0.0)
    g = [round(r.by_id()["G"].ttft_s * 1e3, 1) for r in (sync[zero], asyn[zero])]
    assert g == [40.9, 44.6]
    assert [round(r.by_id()["G"].ttft_s * 1e3, 1) for r in (asyn[one], sync[one])] == [41.9,
                                                                                         43.3]
    assert "44.6 ms instead of 40.9 ms" in DOC and "(41.9 ms against 43.3 ms)" in DOC
    svg = A.CHARTS[0].render()
    assert svg.startswith("<svg") and "async scheduling" in svg
