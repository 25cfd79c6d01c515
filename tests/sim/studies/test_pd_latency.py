"""Colocated V1 against P/D on long prompts and short answers (sim/studies/pd_latency.py):
the numbers the page quotes, and how they move with the link and the load."""
import pytest

from sim.perf.cost import Roofline
from sim.perf.models import get_model
from sim.studies import pd_latency

MODEL = get_model("llama-3-8b")
H200 = Roofline(785832482732577.4, 4099502913721.2954, "H200")


def mean(xs):
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def default():
    return pd_latency.compare(pd_latency.workload(0.25), MODEL, H200, link="ib-ndr")


def test_workload():
    w = pd_latency.workload(0.1)
    assert [r.request_id for r in w] == list("ABCDEFGHIJKL")
    assert (w[3].prompt_len, w[3].output_len, w[3].arrival_s) == (7000, 100, 0.3)
    with pytest.raises(ValueError):
        pd_latency.workload(-1)


def test_disaggregation_keeps_the_gaps_between_tokens_steady(default):
    assert max(default.stat("disaggregated", "max_tbt")) * 1e3 == pytest.approx(4.2, abs=0.05)
    assert max(default.stat("colocated-2", "max_tbt")) * 1e3 == pytest.approx(131.8, abs=0.05)
    assert max(default.stat("colocated-1", "max_tbt")) * 1e3 == pytest.approx(140.7, abs=0.05)


def test_and_pays_in_time_to_first_token(default):
    pd, two = mean(default.stat("disaggregated", "ttft")), mean(default.stat("colocated-2",
                                                                             "ttft"))
    assert (pd * 1e3, two * 1e3) == (pytest.approx(116.1, abs=0.05),
                                     pytest.approx(96.4, abs=0.05))
    # Every request's first token waits at least for its transfer.
    for lat, transfer, prefill in zip(default.runs["disaggregated"], default.transfer_s,
                                      default.prefill_done_s):
        assert lat.ttft_s > prefill + transfer


def test_slow_links_and_load_make_it_lose():
    slow = pd_latency.compare(pd_latency.workload(0.25), MODEL, H200, link="ethernet-25g")
    assert mean(slow.stat("disaggregated", "ttft")) * 1e3 == pytest.approx(334.5, abs=0.05)
    busy = pd_latency.compare(pd_latency.workload(0.05), MODEL, H200, link="ib-ndr")
    assert mean(busy.stat("disaggregated", "ttft")) > 3 * mean(busy.stat("colocated-2",
                                                                         "ttft"))


def test_no_overlap_nothing_to_win():
    calm = pd_latency.compare(pd_latency.workload(1.0), MODEL, H200, link="ib-ndr")
    gaps = {round(max(calm.stat(c, "max_tbt")) * 1e3, 1) for c in pd_latency.CONFIGS}
    assert gaps == {3.9}
