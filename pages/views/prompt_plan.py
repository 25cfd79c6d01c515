"""A prompt laid out in blocks before it runs: the first frame of the parallel sampling and
beam search pages, so the reader sees, before any block is allocated, how the prompt will
fill its blocks and whether its last block is partly empty (where copy-on-write will
happen). Text is kv_view.FONT, so a phone draws it at 11 px or more."""
from __future__ import annotations

from pages.views import kv_view, svg
from pages.views.text import plural

SLOT = 20           # one slot with its position written in it
SLOT_SMALL = 8      # slots of big blocks lose their text
BODY = 24


def plan(x: float, y: float, prompt_len: int, block_size: int, note: str = "",
         right: float = kv_view.WIDTH - kv_view.MARGIN) -> tuple[list[str], float]:
    """The prompt's token positions in blocks of `block_size` (its own colour, the shared
    accent), empty slots pale, then `note` wrapped under it. Returns (elements, height)."""
    blocks = -(-prompt_len // block_size)
    out, dy = kv_view.lines(x, y, f"The prompt's {plural(prompt_len, 'token')} in "
                                  f"{plural(blocks, 'block')} of {block_size}:",
                            fill="fg", right=right)
    top = y + dy + 2
    slot_w = SLOT if block_size <= 8 else SLOT_SMALL
    block_w = block_size * slot_w + 4
    per_row = max(1, int((right - x + 8) // (block_w + 8)))
    for b in range(blocks):
        bx = x + (b % per_row) * (block_w + 8)
        by = top + (b // per_row) * (BODY + 6)
        filled = min(block_size, prompt_len - b * block_size)
        parts = [svg.rect(bx, by, block_w, BODY, fill="panel", stroke="line")]
        for i in range(block_size):
            sx = bx + 2 + i * slot_w
            pos = b * block_size + i
            if i < filled:
                parts.append(svg.rect(sx, by + 2, slot_w - 1, BODY - 4, fill="accent", rx=1))
                if slot_w >= SLOT and kv_view.fits(str(pos), slot_w - 1):
                    parts.append(svg.text(sx + slot_w / 2 - 0.5, by + BODY / 2 + 5, pos,
                                          size=kv_view.FONT, anchor="middle", fill="bg"))
            else:
                parts.append(svg.rect(sx, by + 2, slot_w - 1, BODY - 4, fill="free", rx=1))
        out.append(svg.group(parts, tip=f"prompt block {b}: positions {b * block_size} to "
                                        f"{b * block_size + filled - 1}, {filled} of "
                                        f"{plural(block_size, 'slot')} filled",
                             data_k=f"plan:{b}"))
    rows = (blocks - 1) // per_row + 1
    yy = top + rows * (BODY + 6)
    if note:
        elements, dy = kv_view.lines(x, yy, note, right=right)
        out += elements
        yy += dy
    return out, yy - y
