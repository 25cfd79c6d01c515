"""Seeded synthetic request streams: ShareGPT-like and Alpaca-like lengths, arrivals in steps.

The PagedAttention paper (Kwon et al., SOSP 2023, Fig. 11) draws its workloads from two
datasets and quotes their mean lengths: ShareGPT, input 161.31 and output 337.99 tokens;
Alpaca, input 19.31 and output 58.45. We do not ship the datasets, so we draw lengths from
documented stand-ins with those means:

- Each length is log-normal, ``round(exp(mu + sigma * z))`` with ``z`` standard normal, then
  clipped: the prompt to ``[1, max_model_len - 1]``, the output to
  ``[1, max_model_len - prompt_len]`` so that ``prompt + output <= max_model_len`` (2048 by
  default, OPT's context length, as in the paper).
- ``sigma`` sets the spread. The histograms of Fig. 11 are right-skewed with long tails, and
  ShareGPT's are far wider than Alpaca's: we take sigma = 1.0 for both ShareGPT lengths
  (the 90th percentile is about 2.5x the median), 0.5 for Alpaca's input (short
  instructions of similar size) and 0.8 for Alpaca's output. These spreads are our choice,
  read off the figure's shape, not fitted to the data.
- ``mu`` is solved (by bisection, on the closed form of a clipped log-normal's mean) so that
  the prompt lengths, once clipped, have the quoted mean. Outputs are fitted the same way
  with the clip at ``max_model_len - 1``; the tighter per-request clip
  ``max_model_len - prompt_len`` then lowers the mean of ShareGPT outputs by about 1%.
  Rounding to whole tokens moves the means by well under a token.

Arrivals are counted in engine steps: a Poisson process (exponential gaps with a given
rate per step; a request arrives at the step in which its arrival time falls), everything at
step 0, or an explicit list.

Determinism: everything comes from ``random.Random(seed).random()`` (the Mersenne Twister,
identical in CPython and Pyodide) turned into normals and exponentials by our own formulas,
so a change in the standard library's samplers between Python versions cannot change a
workload. No numpy, no ``hash()``. The formulas use libm (exp, log, cos, erf); a last-bit
difference between two libms could only matter for a value within an ulp of rounding to
the other integer.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

DEFAULT_MAX_MODEL_LEN = 2048


def _check_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; True as a length is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload: what the engine is asked, and the truth an oracle knows.

    ``output_len`` is the number of tokens the request will actually generate; only the
    Oracle policy (and the accounting) may look at it before the request finishes.
    """

    request_id: str
    prompt_len: int
    output_len: int
    arrival_step: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError(f"request_id must be a non-empty string, got {self.request_id!r}")
        _check_int("prompt_len", self.prompt_len, 1)
        _check_int("output_len", self.output_len, 1)
        _check_int("arrival_step", self.arrival_step, 0)

    @property
    def total_len(self) -> int:
        """Prompt plus output: the slots the request fills by the time it finishes."""
        return self.prompt_len + self.output_len


@dataclass(frozen=True, slots=True)
class LogNormalLength:
    """A length distribution: log-normal with this mean (after clipping) and spread."""

    mean: float
    sigma: float

    def __post_init__(self) -> None:
        if not self.mean >= 1.0:
            raise ValueError(f"mean must be at least 1 token, got {self.mean}")
        if not self.sigma > 0.0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")

    def mu(self, high: int) -> float:
        """The log-scale location whose distribution, clipped to [1, high], has `mean`."""
        if not self.mean < high:
            raise ValueError(f"max_model_len is too small: a mean of {self.mean} tokens needs "
                             f"lengths above it, and the cap is {high}")
        lo, hi = -20.0, math.log(high) + 20.0
        for _ in range(200):      # bisection: the clipped mean grows with mu
            mid = (lo + hi) / 2.0
            if _clipped_lognormal_mean(mid, self.sigma, 1.0, float(high)) < self.mean:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2.0


@dataclass(frozen=True, slots=True)
class Dataset:
    """A named pair of length distributions."""

    name: str
    prompt: LogNormalLength
    output: LogNormalLength


# Means from the PagedAttention paper, section 6.1 / Fig. 11; spreads are ours (see above).
SHAREGPT = Dataset("sharegpt", LogNormalLength(161.31, 1.0), LogNormalLength(337.99, 1.0))
ALPACA = Dataset("alpaca", LogNormalLength(19.31, 0.5), LogNormalLength(58.45, 0.8))
DATASETS = {d.name: d for d in (SHAREGPT, ALPACA)}


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _clipped_lognormal_mean(mu: float, sigma: float, low: float, high: float) -> float:
    """E[min(max(X, low), high)] for X = exp(mu + sigma Z): the two clipped tails plus the
    partial expectation of the middle."""
    a, b = math.log(low), math.log(high)
    below = low * _phi((a - mu) / sigma)
    above = high * (1.0 - _phi((b - mu) / sigma))
    middle = math.exp(mu + sigma * sigma / 2.0) * (
        _phi((b - mu - sigma * sigma) / sigma) - _phi((a - mu - sigma * sigma) / sigma))
    return below + middle + above


def _standard_normal(rng: random.Random) -> float:
    # Box-Muller from two uniforms; 1 - u keeps log() away from 0.
    u1, u2 = rng.random(), rng.random()
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


def _draw(mu: float, sigma: float, high: int, rng: random.Random) -> int:
    value = math.exp(mu + sigma * _standard_normal(rng))
    return min(max(1, round(value)), high)


def sample_lengths(dataset: Dataset | str, num_requests: int, rng: random.Random,
                   max_model_len: int = DEFAULT_MAX_MODEL_LEN) -> list[tuple[int, int]]:
    """``num_requests`` (prompt_len, output_len) pairs with prompt + output <= max_model_len."""
    dataset = _dataset(dataset)
    _check_int("num_requests", num_requests, 0)
    _check_int("max_model_len", max_model_len, 2)
    mu_prompt = dataset.prompt.mu(max_model_len - 1)
    mu_output = dataset.output.mu(max_model_len - 1)
    lengths = []
    for _ in range(num_requests):
        prompt_len = _draw(mu_prompt, dataset.prompt.sigma, max_model_len - 1, rng)
        output_len = _draw(mu_output, dataset.output.sigma, max_model_len - prompt_len, rng)
        lengths.append((prompt_len, output_len))
    return lengths


def poisson_arrival_steps(num_requests: int, rate: float, rng: random.Random) -> list[int]:
    """Arrival steps of a Poisson process with ``rate`` requests per step.

    Gaps are exponential with mean 1/rate; a request arriving at time t (in steps, a real
    number) joins at step floor(t), so several requests may share a step.
    """
    _check_int("num_requests", num_requests, 0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0.0 \
            or math.isinf(rate):
        raise ValueError(f"arrival_rate must be a positive, finite number of requests per "
                         f"step, got {rate!r}")
    t = 0.0
    steps = []
    for _ in range(num_requests):
        t += -math.log(1.0 - rng.random()) / rate
        steps.append(math.floor(t))
    return steps


def requests_from_lengths(lengths: list[tuple[int, int]],
                          arrival_steps: list[int] | None = None) -> list[RequestSpec]:
    """Explicit requests: ids "0", "1", ... in list order (vLLM's LLM class numbers its
    requests the same way); every arrival at step 0 unless ``arrival_steps`` is given."""
    if arrival_steps is None:
        arrival_steps = [0] * len(lengths)
    if len(arrival_steps) != len(lengths):
        raise ValueError(f"arrival_steps has {len(arrival_steps)} entries for "
                         f"{len(lengths)} requests")
    return [RequestSpec(str(i), prompt_len, output_len, step)
            for i, ((prompt_len, output_len), step) in enumerate(zip(lengths, arrival_steps))]


def make_workload(dataset: Dataset | str = "sharegpt", num_requests: int = 100, seed: int = 0,
                  arrival_rate: float | None = None, arrival_steps: list[int] | None = None,
                  max_model_len: int = DEFAULT_MAX_MODEL_LEN) -> list[RequestSpec]:
    """A seeded workload. Arrivals: Poisson at ``arrival_rate`` requests per step, or the
    explicit ``arrival_steps``, or (neither given) all at step 0.

    Lengths and arrival times come from two separate streams split off one
    ``random.Random(seed)``, so changing the rate keeps the same requests.
    """
    _check_int("seed", seed, 0)
    if arrival_rate is not None and arrival_steps is not None:
        raise ValueError("give arrival_rate or arrival_steps, not both")
    root = random.Random(seed)
    length_rng = random.Random(root.getrandbits(64))
    arrival_rng = random.Random(root.getrandbits(64))
    lengths = sample_lengths(dataset, num_requests, length_rng, max_model_len)
    if arrival_rate is not None:
        arrival_steps = poisson_arrival_steps(num_requests, arrival_rate, arrival_rng)
    elif arrival_steps is not None:
        for i, step in enumerate(arrival_steps):
            _check_int(f"arrival_steps[{i}]", step, 0)
    return requests_from_lengths(lengths, arrival_steps)


def _dataset(dataset: Dataset | str) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    try:
        return DATASETS[dataset]
    except (KeyError, TypeError):
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}") from None
