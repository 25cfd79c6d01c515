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
                 eos_prob: float = 0.0) -> None:
        if vocab_size <= FIRST_REGULAR_TOKEN + 1:
            raise ValueError(f"vocab_size must be above {FIRST_REGULAR_TOKEN + 1}")
        if not 0.0 <= eos_prob <= 1.0:
            raise ValueError(f"eos_prob must be in [0, 1], got {eos_prob}")
        self.seed = seed
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        # Chance that a sampled token is EOS (0: sequences end on max_tokens or on the
        # request's scripted output length).
        self.eos_prob = eos_prob
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
        (what vLLM's beam search takes with topk over one sequence's logprobs)."""
        rng = random.Random(mix64(self.seed, 3, seq.seq_id, seq.get_len()))
        tokens = rng.sample(range(FIRST_REGULAR_TOKEN, self.vocab_size), num)
        logprobs = []
        lp = 0.0
        for _ in range(num):
            lp -= 0.05 + 2.0 * rng.random()
            logprobs.append(lp)
        if self._ends_here(seq, output_len, mix64(self.seed, 4, seq.seq_id, seq.get_len())):
            # The model "wants" to stop: EOS becomes one of the candidates.
            tokens[rng.randrange(num)] = self.eos_token_id
        return list(zip(tokens, logprobs))
