"""Contiguous KV memory, as in systems before vLLM: one chunk per request, reserved at
admission (the PagedAttention paper, section 3.1 and Fig. 2-3).

The paper's Orca baselines place each request's chunk with a *buddy allocator* (section
6.1), which we follow:

- The address space is ``total_slots`` token slots. A buddy allocator wants a power of two;
  rather than round the pool, we cut it into its binary decomposition (15,728 slots =
  8192 + 4096 + 2048 + 1024 + 256 + 64 + 32 + 16, in that order from address 0). Each piece
  starts at a multiple of twice its size, so the ordinary buddy rule (the buddy of the
  chunk at ``a`` of size ``s`` is at ``a ^ s``) never merges across pieces: the would-be
  buddy of a whole piece is the start of a smaller piece, never a free chunk of the same
  size. A power-of-two pool is the special case of one piece.
- A request for n slots gets a chunk of ``next_power_of_two(n)`` slots: the smallest free
  chunk that is big enough (lowest address among equals) is split in halves until it fits.
  Freeing merges a chunk with its buddy as long as the buddy is free (coalescing).
- When no free chunk is big enough the allocator refuses (returns None), even if the free
  slots add up to enough: that is external fragmentation.

Where the rounding goes: the slots between what a policy asks for and the power-of-two
chunk it gets are the allocator's waste, known before the request is served, so the
accounting counts them as *external* fragmentation, as the paper does (section 3.1:
"external fragmentation from the memory allocator like the buddy allocator"; its Fig. 2
gives Orca (Oracle), which asks for exactly the true length, 0% internal fragmentation).
Internal fragmentation is only the policy's over-reservation beyond the true length.
For example, Pow2 asks 3 + 8 = 11 slots for a request of 3 + 5 tokens and the buddy
allocator gives it 16: 3 slots are internal (11 - 8), 5 are external (16 - 11).

Policies (section 6.1, "we implement three versions of Orca"):

- Orca (Max) reserves the model's maximum length, 2048 tokens.
- Orca (Pow2) "over-reserves the space for outputs by at most 2x. For example, if the true
  output length is 25, it reserves 32 positions for outputs": prompt + next power of two
  of the output length, capped at the maximum length. (Rounding the *total* length up
  instead would make Pow2 identical to Oracle under a buddy allocator, which rounds the
  same way.)
- Orca (Oracle) reserves exactly the true total length (prompt + output).
"""
from __future__ import annotations

import enum
from typing import NamedTuple

from sim.studies.workload import RequestSpec


def next_power_of_two(n: int) -> int:
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return 1 << (n - 1).bit_length()


class BuddyAllocator:
    """A binary buddy allocator over the slots [0, total_slots)."""

    def __init__(self, total_slots: int) -> None:
        if isinstance(total_slots, bool) or not isinstance(total_slots, int) \
                or total_slots < 1:
            raise ValueError(f"total_slots must be a positive integer, got {total_slots!r}")
        self.total_slots = total_slots
        # size -> starts of the free chunks of that size
        self._free: dict[int, set[int]] = {}
        self._allocated: dict[int, int] = {}     # start -> size
        start = 0
        for bit in reversed(range(total_slots.bit_length())):
            size = 1 << bit
            if total_slots & size:
                self._free.setdefault(size, set()).add(start)
                start += size
        # The largest piece bounds every chunk, however empty the pool.
        self.max_chunk = 1 << (total_slots.bit_length() - 1)

    @staticmethod
    def chunk_size(num_slots: int) -> int:
        return next_power_of_two(num_slots)

    def can_allocate(self, num_slots: int) -> bool:
        size = self.chunk_size(num_slots)
        return any(s >= size and starts for s, starts in self._free.items())

    def allocate(self, num_slots: int) -> int | None:
        """The start of a chunk of ``chunk_size(num_slots)`` slots, or None when no free
        chunk is big enough."""
        size = self.chunk_size(num_slots)
        fitting = [s for s, starts in self._free.items() if s >= size and starts]
        if not fitting:
            return None
        have = min(fitting)
        start = min(self._free[have])
        self._free[have].discard(start)
        while have > size:        # split, keeping the lower half, freeing the upper
            have //= 2
            self._free.setdefault(have, set()).add(start + have)
        self._allocated[start] = size
        return start

    def free(self, start: int) -> None:
        size = self._allocated.pop(start, None)
        if size is None:
            raise ValueError(f"no chunk is allocated at slot {start}")
        while True:
            buddy = start ^ size
            buddies = self._free.get(size)
            if not buddies or buddy not in buddies:
                break
            buddies.discard(buddy)
            start = min(start, buddy)
            size *= 2
        self._free.setdefault(size, set()).add(start)

    def free_chunks(self) -> list[tuple[int, int]]:
        """(start, size) of every free chunk, by address."""
        return sorted((start, size) for size, starts in self._free.items() for start in starts)

    def free_chunk_counts(self) -> list[tuple[int, int]]:
        """(size, how many free chunks of that size)."""
        return [(size, len(starts)) for size, starts in self._free.items() if starts]

    def allocated_chunks(self) -> list[tuple[int, int]]:
        return sorted(self._allocated.items())

    def num_free_slots(self) -> int:
        return sum(size * len(starts) for size, starts in self._free.items())

    def largest_free_chunk(self) -> int:
        return max((s for s, starts in self._free.items() if starts), default=0)


class OrcaPolicy(enum.Enum):
    MAX = "max"
    POW2 = "pow2"
    ORACLE = "oracle"

    @property
    def label(self) -> str:
        return {"max": "Orca (Max)", "pow2": "Orca (Pow2)", "oracle": "Orca (Oracle)"}[self.value]

    def reservation(self, request: RequestSpec, max_model_len: int) -> int:
        """Slots this policy asks for when it admits ``request``."""
        if self is OrcaPolicy.MAX:
            return max_model_len
        if self is OrcaPolicy.POW2:
            return min(max_model_len,
                       request.prompt_len + next_power_of_two(request.output_len))
        return request.total_len


class AdmissionRefused(NamedTuple):
    """The head of the waiting queue could not be admitted this step.

    reason: "fragmented" when the free slots add up to what it asked for but no single
    free chunk is big enough (external fragmentation); "full" when they do not; "watermark"
    (paged) when the blocks exist but vLLM keeps them back as its watermark.
    """
    request_id: str
    asked_slots: int         # what the policy asks for
    chunk_slots: int         # the single piece the allocator must find
    free_slots: int
    largest_free_chunk: int
    reason: str


class ChunkAllocated(NamedTuple):
    request_id: str
    start: int
    size: int
    asked: int               # what the policy asked for; size - asked is buddy rounding


class ChunkFreed(NamedTuple):
    request_id: str
    start: int
    size: int


class ContiguousMemory:
    """KV memory for the serving loop (`sim.studies.fragmentation`): each request one buddy chunk
    sized by an Orca policy."""

    def __init__(self, policy: OrcaPolicy, total_slots: int, max_model_len: int = 2048) -> None:
        self.policy = OrcaPolicy(policy)
        self.label = self.policy.label
        self.total_slots = total_slots
        self.max_model_len = max_model_len
        self.allocator = BuddyAllocator(total_slots)
        self._chunks: dict[str, tuple[int, int, int]] = {}   # id -> start, size, asked

    def check_fits(self, request: RequestSpec) -> None:
        if request.total_len > self.max_model_len:
            raise ValueError(f"request {request.request_id}: prompt + output = "
                             f"{request.total_len} exceeds max_model_len {self.max_model_len}")
        chunk = self.allocator.chunk_size(self.policy.reservation(request, self.max_model_len))
        if chunk > self.allocator.max_chunk:
            raise ValueError(f"request {request.request_id} needs a chunk of {chunk} slots; "
                             f"the largest a pool of {self.total_slots} slots has is "
                             f"{self.allocator.max_chunk}")

    def try_admit(self, request: RequestSpec, num_tokens: int,
                  events: list) -> AdmissionRefused | None:
        asked = self.policy.reservation(request, self.max_model_len)
        start = self.allocator.allocate(asked)
        if start is None:
            free = self.allocator.num_free_slots()
            return AdmissionRefused(request.request_id, asked, self.allocator.chunk_size(asked),
                                    free, self.allocator.largest_free_chunk(),
                                    "fragmented" if free >= asked else "full")
        size = self.allocator.chunk_size(asked)
        self._chunks[request.request_id] = (start, size, asked)
        events.append(ChunkAllocated(request.request_id, start, size, asked))
        return None

    def can_append(self, request_id: str) -> bool:
        return True    # the chunk was sized for the true length at admission

    def append(self, request_id: str) -> None:
        pass

    def release(self, request_id: str, events: list) -> None:
        start, size, _ = self._chunks.pop(request_id)
        self.allocator.free(start)
        events.append(ChunkFreed(request_id, start, size))

    def allocated_slots(self, request_id: str) -> int:
        return self._chunks[request_id][1]

    def regions(self, request_id: str) -> list[tuple[int, int]]:
        start, size, _ = self._chunks[request_id]
        return [(start, size)]

    def split_unfilled(self, request_id: str, filled: int, true_len: int) -> tuple[int, int, int]:
        """(reserved, internal, rounding) of the chunk's slots after the ``filled`` ones:
        reserved up to the true length, the policy's over-reservation beyond it (internal
        fragmentation), and the buddy allocator's rounding up of what it asked for (external
        fragmentation)."""
        _, size, asked = self._chunks[request_id]
        if asked < true_len:
            raise AssertionError(f"{self.label} asked {asked} slots for request {request_id}, "
                                 f"which will hold {true_len}")
        return true_len - filled, asked - true_len, size - asked

    def _need(self, next_in_line: tuple[RequestSpec, int] | None) -> int:
        if next_in_line is None:
            return 0
        return self.allocator.chunk_size(
            self.policy.reservation(next_in_line[0], self.max_model_len))

    def free_slots(self, next_in_line: tuple[RequestSpec, int] | None) -> tuple[int, int]:
        """(free, external): free slots in chunks big enough for the next request in line,
        and those in smaller chunks. With nobody in line, all of them are free."""
        need = self._need(next_in_line)
        free = external = 0
        for size, starts in self.allocator.free_chunk_counts():
            if size >= need:
                free += size * starts
            else:
                external += size * starts
        return free, external

    def free_regions(self, next_in_line: tuple[RequestSpec, int] | None
                     ) -> list[tuple[int, int, bool]]:
        """(start, size, usable) of every free chunk, by address."""
        need = self._need(next_in_line)
        return [(start, size, size >= need) for start, size in self.allocator.free_chunks()]
