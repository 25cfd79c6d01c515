"""Small builders shared by the simulation tests."""
from sim.core.config import CacheConfig, SchedulerConfig
from sim.core.engine import LLMEngine
from sim.core.invariants import check_engine
from sim.core.sequence import SamplingParams, Sequence, SequenceGroup


def make_group(request_id, prompt_len, block_size=4, first_seq_id=0, **sp):
    seq = Sequence(first_seq_id, list(range(10, 10 + prompt_len)), block_size, eos_token_id=2)
    return SequenceGroup(request_id, [seq], SamplingParams(**sp))


def engine(block_size=4, gpu=16, cpu=16, watermark=0.0, free_order="stack", seed=0, **sched):
    return LLMEngine(CacheConfig(block_size=block_size, num_gpu_blocks=gpu, num_cpu_blocks=cpu,
                                 watermark=watermark, free_order=free_order, seed=seed),
                     SchedulerConfig(**sched), seed=seed)


def run_checked(eng, max_steps=10_000):
    """Step to the end, checking every invariant after every step."""
    outs = []
    while eng.has_unfinished_requests():
        outs.append(eng.step())
        problems = check_engine(eng)
        assert not problems, (outs[-1].step, problems)
        assert len(outs) < max_steps
    return outs


def tables(eng):
    return {sid: [b.block_number for b in t] for sid, t in eng.block_manager.block_tables.items()}


def events_of(outs, cls):
    return [(o.step, e) for o in outs for e in o.events if isinstance(e, cls)]
