"""The simulation's stand-in for GPU and CPU KV memory (vLLM's `CacheEngine`).

Each slot holds a payload `(token_id, position)` instead of key and value tensors. The
engine carries out the scheduler's swap and copy lists here exactly as vLLM's worker does
(`swap_in`, `swap_out`, then `copy`, before the model runs), so a wrong pair shows up as a
corrupted token when a sequence's cache is read back through its block table.
"""
from __future__ import annotations

Slot = tuple[int, int] | None   # (token_id, position) or empty


class CacheEngine:
    def __init__(self, block_size: int, num_gpu_blocks: int, num_cpu_blocks: int) -> None:
        self.block_size = block_size
        self.gpu_cache: list[list[Slot]] = [[None] * block_size for _ in range(num_gpu_blocks)]
        self.cpu_cache: list[list[Slot]] = [[None] * block_size for _ in range(num_cpu_blocks)]

    def swap_in(self, blocks_to_swap_in: list[tuple[int, int]]) -> None:
        for cpu_block, gpu_block in blocks_to_swap_in:
            self.gpu_cache[gpu_block] = self.cpu_cache[cpu_block][:]

    def swap_out(self, blocks_to_swap_out: list[tuple[int, int]]) -> None:
        for gpu_block, cpu_block in blocks_to_swap_out:
            self.cpu_cache[cpu_block] = self.gpu_cache[gpu_block][:]

    def copy(self, blocks_to_copy: list[tuple[int, int]]) -> None:
        for src, dst in blocks_to_copy:
            self.gpu_cache[dst] = self.gpu_cache[src][:]

    # The model's KV writes (vLLM's reshape_and_cache): the token at position `pos` goes to
    # slot pos % block_size of block block_table[pos // block_size].
    def write_slot(self, block_number: int, pos: int, token_id: int) -> None:
        """One token's KV (a decode step writes one per running sequence)."""
        self.gpu_cache[block_number][pos % self.block_size] = (token_id, pos)

    def write_tokens(self, block_numbers: list[int], first_pos: int,
                     token_ids: list[int]) -> None:
        """The KV of positions first_pos, first_pos + 1, ... (a prompt or a chunk of it);
        `block_numbers` is the sequence's block table."""
        bs = self.block_size
        cache = self.gpu_cache
        for pos in range(first_pos, first_pos + len(token_ids)):
            cache[block_numbers[pos // bs]][pos % bs] = (token_ids[pos - first_pos], pos)

    def read(self, block_table: list[int], num_tokens: int, on_gpu: bool = True) -> list[Slot]:
        cache = self.gpu_cache if on_gpu else self.cpu_cache
        bs = self.block_size
        return [cache[block_table[p // bs]][p % bs] for p in range(num_tokens)]
