"""A deterministic stand-in for the language model.

vLLM's memory decisions do not depend on *which* tokens a model emits, only on how many
and when sequences stop, fork and die. So the model here is a seeded hash: the token at a
position of a sequence is a pure function of (seed, seq_id, position, sample index). It
does not depend on batch composition, so the same request produces the same tokens
whether it ran alone, in a static batch, or was preempted and recomputed.

Floats are built from `random.random()` and additions only (no log/exp), so CPython and
Pyodide produce bit-identical log probabilities.
"""
from __future__ import annotations

import random

from sim.core.sequence import Sequence

_MASK = (1 << 64) - 1
FIRST_REGULAR_TOKEN = 3   # ids 0-2 are special (pad, bos, eos), as in Llama's tokenizer


def _fmix(h: int) -> int:
    """The splitmix64 finaliser: scrambles a 64-bit int."""
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK
    return h ^ (h >> 31)


def mix64(*values: int) -> int:
    """A platform-independent hash of a tuple of non-negative ints (Python's hash() is
    32-bit in Pyodide and salted for strings)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = _fmix((h ^ (v & _MASK)) + 0x9E3779B97F4A7C15 & _MASK)
    return h


class StandInModel:
    def __init__(self, seed: int = 0, vocab_size: int = 32000, eos_token_id: int = 2,
                 eos_prob: float = 0.0, beam_top_margin: float = 0.0) -> None:
        if vocab_size <= FIRST_REGULAR_TOKEN + 1:
            raise ValueError(f"vocab_size must be above {FIRST_REGULAR_TOKEN + 1}")
        if not 0.0 <= eos_prob <= 1.0:
            raise ValueError(f"eos_prob must be in [0, 1], got {eos_prob}")
        if not 0.0 <= beam_top_margin < float("inf"):
            raise ValueError(f"beam_top_margin must be a finite number >= 0, got "
                             f"{beam_top_margin}")
        self.seed = seed
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        # Chance that a sampled token is EOS (0: sequences end on max_tokens or on the
        # request's scripted output length).
        self.eos_prob = eos_prob
        # How peaked each beam's next-token distribution is (beam_candidates only): the extra
        # log-probability, in nats, by which a beam's best next token beats its second best.
        # 0 (the default) leaves the made-up spread alone; sim.studies.sharing calibrates it
        # for the Fig. 15 reproduction (FIG15_BEAM_TOP_MARGIN).
        self.beam_top_margin = beam_top_margin
        self._num_regular = vocab_size - FIRST_REGULAR_TOKEN
        self._salt = mix64(seed, 2)

    def prompt_token_ids(self, request_index: int, length: int) -> list[int]:
        return [FIRST_REGULAR_TOKEN + mix64(self.seed, 1, request_index, p) % self._num_regular
                for p in range(length)]

    def _ends_here(self, seq: Sequence, output_len: int | None, h: int) -> bool:
        if output_len is not None and seq.get_output_len() + 1 >= output_len:
            return True
        return self.eos_prob > 0.0 and (h >> 11) * (1.0 / 9007199254740992.0) < self.eos_prob

    def sample(self, seq: Sequence, output_len: int | None = None,
               sample_index: int = 0) -> tuple[int, float]:
        """One sampled token for the sequence's next position, and its log probability."""
        # One finaliser round over a per-model salt: this runs once per generated token.
        h = _fmix(self._salt + seq.seq_id * 0x9E3779B97F4A7C15
                  + seq.num_tokens * 0xD1B54A32D192ED03 + sample_index & _MASK)
        # A made-up but reproducible log probability in (-4, 0].
        logprob = -((h & 0xFFFF) / 16384.0)
        if (output_len is not None or self.eos_prob) and self._ends_here(seq, output_len, h):
            return self.eos_token_id, logprob
        return FIRST_REGULAR_TOKEN + (h >> 16) % self._num_regular, logprob

    def beam_candidates(self, seq: Sequence, num: int,
                        output_len: int | None = None) -> list[tuple[int, float]]:
        """The `num` most likely next tokens with their log probabilities, best first
        (what vLLM's beam search takes with topk over one sequence's logprobs).

        Memoryless: each call draws the gaps between consecutive candidates (0.05 to 2.05
        nats each) from a generator seeded by (seed, seq_id, length). `beam_top_margin`
        widens the first gap, between the best and the second best: a peaked distribution,
        a model that is confident of its next token. Only the ratios of the gaps matter to
        beam search (scaling every log-probability by one factor selects the same beams), so
        the margin is what changes the beams' shape: with a wide margin, each beam's best
        continuation outranks every other beam's second best, each beam carries itself on,
        and the beams fork less and keep longer histories of their own."""
        rng = random.Random(mix64(self.seed, 3, seq.seq_id, seq.get_len()))
        tokens = rng.sample(range(FIRST_REGULAR_TOKEN, self.vocab_size), num)
        logprobs = []
        lp = 0.0
        margin = self.beam_top_margin
        for i in range(num):
            lp -= 0.05 + 2.0 * rng.random()
            if i == 1 and margin:
                lp -= margin
            logprobs.append(lp)
        if self._ends_here(seq, output_len, mix64(self.seed, 4, seq.seq_id, seq.get_len())):
            # The model "wants" to stop: EOS becomes one of the candidates.
            tokens[rng.randrange(num)] = self.eos_token_id
        return list(zip(tokens, logprobs))

    # -- additions for V1 (sim/v1): requests are not Sequences there ------------------------
    def sample_token(self, seq_id: int, num_tokens: int, num_output_tokens: int,
                     output_len: int | None = None) -> tuple[int, float]:
        """The token at position `num_tokens` of sequence `seq_id` (which has
        `num_output_tokens` outputs so far) and its log probability, for V1's requests.

        A cheaper hash than `sample`'s (this runs once per generated token, and 64-bit
        integer mixing costs about a microsecond in CPython): a 14-bit index from
        (seq_id, position) into a table of 16,384 tokens and log probabilities drawn once
        from the model's seed with `random.Random` (the same in CPython and Pyodide). A
        pure function of (seed, seq_id, position), like `sample`, but not equal to it."""
        try:
            table = self._v1_table
        except AttributeError:
            table = self._build_v1_table()
        h = ((seq_id * 0x9E37 + 0x79B9) ^ (num_tokens * 40503) ^ self._v1_key) & 0x3FFF
        token_id, logprob, u = table[h]
        if output_len is not None and num_output_tokens + 1 >= output_len:
            return self.eos_token_id, logprob
        if self.eos_prob > 0.0 and u < self.eos_prob:
            return self.eos_token_id, logprob
        return token_id, logprob

    def _build_v1_table(self) -> list[tuple[int, float, float]]:
        rng = random.Random(mix64(self.seed, 7))
        self._v1_key = rng.getrandbits(14)
        self._v1_table = [(FIRST_REGULAR_TOKEN + rng.randrange(self._num_regular),
                           -(rng.getrandbits(16) / 16384.0), rng.random())
                          for _ in range(1 << 14)]
        return self._v1_table

    def shared_prefix_token_ids(self, length: int, prefix_index: int = 0) -> list[int]:
        """A prompt prefix (a system prompt, say) that several requests can start with: the
        same ids for the same (seed, prefix_index), unlike any request's own tokens."""
        return [FIRST_REGULAR_TOKEN + mix64(self.seed, 5, prefix_index, p) % self._num_regular
                for p in range(length)]

    def draft_token_ids(self, seq_id: int, num_tokens: int, num_output_tokens: int,
                        num_drafts: int, acceptance_rate: float,
                        output_len: int | None = None) -> list[int]:
        """A stand-in drafter's proposals for positions num_tokens, num_tokens + 1, ...:
        each is the token `sample_token` will produce there with probability
        `acceptance_rate` (a seeded draw per position), else a different token. Verifying
        them against `sample_token` accepts the longest agreeing run, so speculative decoding
        changes how many steps a request takes, never its tokens."""
        drafts = []
        for i in range(num_drafts):
            target, _ = self.sample_token(seq_id, num_tokens + i, num_output_tokens + i,
                                          output_len)
            h = mix64(self.seed, 6, seq_id, num_tokens + i)
            if (h >> 11) * (1.0 / 9007199254740992.0) < acceptance_rate:
                drafts.append(target)
            else:
                # Any other regular token (EOS is never drafted wrongly).
                offset = 1 + (h & 0xFFFF) % (self._num_regular - 1)
                base = target - FIRST_REGULAR_TOKEN if target >= FIRST_REGULAR_TOKEN else 0
                drafts.append(FIRST_REGULAR_TOKEN + (base + offset) % self._num_regular)
        return drafts
