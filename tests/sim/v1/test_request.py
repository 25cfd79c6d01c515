"""Request and RequestStatus (sim/v1/request.py), as vLLM v0.25.1's `vllm/v1/request.py`."""
from sim.core.sequence import SamplingParams
from sim.v1.kv_cache_utils import get_request_block_hasher, sha256
from sim.v1.request import Request, RequestStatus


def make(rid="r", tokens=(1, 2, 3, 4, 5), **kw):
    hasher = kw.pop("block_hasher", get_request_block_hasher(2, sha256))
    return Request(rid, list(tokens), SamplingParams(max_tokens=kw.pop("max_tokens", 4)),
                   eos_token_id=2, block_hasher=hasher, block_size=2, **kw)


def test_statuses_after_preempted_are_finished():
    order = list(RequestStatus)
    assert order.index(RequestStatus.PREEMPTED) < order.index(RequestStatus.FINISHED_STOPPED)
    assert not RequestStatus.is_finished(RequestStatus.PREEMPTED)
    assert not RequestStatus.is_finished(RequestStatus.RUNNING)
    for s in order[order.index(RequestStatus.FINISHED_STOPPED):]:
        assert RequestStatus.is_finished(s)
    assert RequestStatus.FINISHED_LENGTH_CAPPED.label == "finished_length_capped"
    assert RequestStatus.get_finished_reason(RequestStatus.FINISHED_STOPPED) == "stop"
    assert RequestStatus.get_finished_reason(RequestStatus.RUNNING) is None
    assert str(RequestStatus.WAITING) == "WAITING"


def test_new_request_state():
    r = make()
    assert (r.num_prompt_tokens, r.num_tokens, r.num_computed_tokens) == (5, 5, 0)
    assert r.status is RequestStatus.WAITING and r.max_tokens == 4
    assert r.num_preemptions == 0 and r.spec_token_ids == [] and r.num_output_tokens == 0
    assert len(r.block_hashes) == 2            # 5 tokens in blocks of 2
    assert r.num_output_placeholders == 0 and r.num_cached_tokens == -1


def test_outputs_extend_tokens_and_hashes():
    r = make()
    r.append_output_token_ids(7)
    assert r.all_token_ids == [1, 2, 3, 4, 5, 7] and r.output_token_ids == [7]
    assert r.num_tokens == 6 and len(r.block_hashes) == 3
    r.append_output_token_ids([8, 9])
    assert r.num_tokens == 8 and r.get_output_len() == 3 and len(r.block_hashes) == 4


def test_num_tokens_with_spec_counts_drafts():
    r = make()
    r.spec_token_ids = [11, 12]
    assert r.num_tokens_with_spec == 7


def test_no_hasher_no_hashes():
    r = make(block_hasher=None)
    r.append_output_token_ids([7, 8, 9])
    assert r.block_hashes == []


def test_priority_order_is_priority_then_arrival_then_id():
    a = make("a", priority=1, arrival_time=0)
    b = make("b", priority=0, arrival_time=5)
    c = make("c", priority=0, arrival_time=5)
    d = make("d", priority=0, arrival_time=1)
    assert sorted([a, b, c, d]) == [d, b, c, a]
    assert not (b < b)


def test_finished_and_repr():
    r = make()
    r.status = RequestStatus.FINISHED_ABORTED
    assert r.is_finished() and r.get_finished_reason() == "abort"
    assert "finished_aborted" in repr(r)
