"""The wire between a prefill and a decode instance: a stand-in for the NIXL agents the
NIXL connector's worker side calls (sim/v1/kv_connector/nixl.py: `make_prepped_xfer`,
`check_xfer_state`, `send_notif`, `get_new_notifs`), over one `sim.perf.links.Link`.

- A READ of k remote blocks posted at time t starts when the link is free (transfers go
  one after another, FIFO, each at the link's full bandwidth) and lands block by block:
  block i at start + latency + (i + 1) x block_bytes / bandwidth. As a block lands its
  payload (the token id and position of each slot, sim/v1/engine.py) is copied from the
  prefill engine's cache into the decode engine's, and the decode engine's `kv_landed`
  counts the request's tokens that arrived (its picture fills as the transfer lands).
- The READ's notification reaches the prefill side when the last block has landed (NIXL
  attaches it to the transfer); other notifications (heartbeats, "free, nothing to read")
  arrive when sent.
- A transfer chosen to fail lands nothing and ends in "ERR" at the time it would have
  finished; its notification never reaches the prefill side (whose lease then runs out).

Time is the caller's clock (`clock()`, seconds), the same one both connectors read. The
payload check (`check_source_held`) records a read from a block the prefill side no longer
held: the invariant tests require there are none.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sim.perf.links import Link


@dataclass(slots=True)
class Transfer:
    handle: int
    request_id: str            # the decode side's request
    dst_engine_id: str
    src_engine_id: str
    local_block_ids: list[int]
    remote_block_ids: list[int]
    posted_s: float
    start_s: float
    land_s: list[float]        # when each block lands
    failed: bool
    notif_msg: str
    num_landed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def end_s(self) -> float:
        return self.land_s[-1] if self.land_s else self.start_s


class KVTransport:
    def __init__(self, link: Link, block_bytes: int, block_size: int,
                 clock: Callable[[], float],
                 fail: Callable[[str], bool] | None = None) -> None:
        if block_bytes < 1:
            raise ValueError("block_bytes must be positive")
        self.link = link
        self.block_bytes = block_bytes
        self.block_size = block_size
        self.clock = clock
        self.fail = fail or (lambda request_id: False)
        self.engines: dict[str, object] = {}
        self.transfers: list[Transfer] = []
        self.link_free_s = 0.0
        # (arrival time, destination engine id, message), in the order sent.
        self.notifs: list[tuple[float, str, str]] = []
        self.problems: list[str] = []

    def register(self, engine_id: str, engine) -> None:
        self.engines[engine_id] = engine

    # -- the calls NIXL's worker makes ------------------------------------------------------
    def make_prepped_xfer(self, op: str, local_engine_id: str, request_id: str,
                          local_block_ids: list[int], remote_engine_id: str,
                          remote_block_ids: list[int], notif_msg: str) -> int:
        assert op == "READ" and len(local_block_ids) == len(remote_block_ids)
        now = self.clock()
        start = max(now, self.link_free_s)
        per_block = self.block_bytes / self.link.bandwidth
        land = [start + self.link.latency_s + (i + 1) * per_block
                for i in range(len(local_block_ids))]
        transfer = Transfer(len(self.transfers), request_id, local_engine_id,
                            remote_engine_id, list(local_block_ids), list(remote_block_ids),
                            now, start, land, bool(self.fail(request_id)), notif_msg)
        self.link_free_s = transfer.end_s
        self.transfers.append(transfer)
        self.engines[local_engine_id].kv_landed[request_id] = 0
        return transfer.handle

    def check_xfer_state(self, handle: int) -> str:
        transfer = self.transfers[handle]
        if self.clock() < transfer.end_s:
            return "PROC"
        self.land(transfer.end_s)
        return "ERR" if transfer.failed else "DONE"

    def send_notif(self, from_engine_id: str, to_engine_id: str, notif_msg: str) -> None:
        self.notifs.append((self.clock(), to_engine_id, notif_msg))

    def get_new_notifs(self, engine_id: str) -> list[str]:
        now = self.clock()
        self.land(now)
        got = [msg for t, dst, msg in self.notifs if dst == engine_id and t <= now]
        if got:
            self.notifs = [n for n in self.notifs if not (n[1] == engine_id and n[0] <= now)]
        return got

    # -- time passing --------------------------------------------------------------------
    def land(self, until_s: float) -> list[tuple[Transfer, list[int]]]:
        """Land every block due by `until_s`: copy its payload and count its tokens.
        Returns (transfer, local block ids landed now) per transfer that moved."""
        moved = []
        for transfer in self.transfers:
            if transfer.failed or transfer.num_landed == len(transfer.land_s):
                continue
            n = transfer.num_landed
            while n < len(transfer.land_s) and transfer.land_s[n] <= until_s:
                n += 1
            if n == transfer.num_landed:
                continue
            src = self.engines[transfer.src_engine_id]
            dst = self.engines[transfer.dst_engine_id]
            for i in range(transfer.num_landed, n):
                self._copy_block(src, dst, transfer, transfer.remote_block_ids[i],
                                 transfer.local_block_ids[i])
            landed_now = transfer.local_block_ids[transfer.num_landed:n]
            transfer.num_landed = n
            if transfer.request_id in dst.kv_landed:
                dst.kv_landed[transfer.request_id] = n * self.block_size
            if n == len(transfer.land_s):
                # The READ's notification reaches the prefill side with its last block.
                self.notifs.append((transfer.end_s, transfer.src_engine_id,
                                    transfer.notif_msg))
            moved.append((transfer, landed_now))
        return moved

    def _copy_block(self, src, dst, transfer: Transfer, src_block: int, dst_block: int) -> None:
        held = src.block_pool.blocks[src_block].ref_cnt > 0
        if not held:
            problem = (f"read of prefill block {src_block} for {transfer.request_id} after "
                       "the prefill side freed it")
            transfer.problems.append(problem)
            self.problems.append(problem)
        dst.gpu_cache[dst_block][:] = list(src.gpu_cache[src_block])

    def next_event_s(self, engine_id: str, after_s: float) -> float | None:
        """The next time something reaches `engine_id` from the wire (a transfer it reads
        ending, a notification to it arriving), after `after_s`; None if nothing will."""
        times = [t.end_s for t in self.transfers
                 if t.dst_engine_id == engine_id and t.end_s > after_s]
        times += [t.end_s for t in self.transfers
                  if t.src_engine_id == engine_id and not t.failed and t.end_s > after_s]
        times += [t for t, dst, _ in self.notifs if dst == engine_id and t > after_s]
        return min(times) if times else None

    def in_flight(self, now_s: float) -> list[Transfer]:
        return [t for t in self.transfers if t.end_s > now_s]

    def snapshot(self, now_s: float) -> dict:
        """The transfers under way or ended since: for pictures."""
        return {
            "link": self.link.name,
            "bandwidth": self.link.bandwidth,
            "block_bytes": self.block_bytes,
            "transfers": [{
                "request_id": t.request_id,
                "local_block_ids": list(t.local_block_ids),
                "remote_block_ids": list(t.remote_block_ids),
                "start_s": t.start_s,
                "end_s": t.end_s,
                "num_landed": t.num_landed,
                "failed": t.failed,
                "done": t.end_s <= now_s,
            } for t in self.transfers],
        }
