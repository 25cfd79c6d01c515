"""The home page's live picture (pages/framework/markup.py: showcase_html, telling_frame)."""
from pages.framework import markup, registry, widget
from pages.framework.keys import elements


def frames_of(wid):
    item = registry.collect()[0][wid].item
    return item, widget.run(item, item.defaults())


def test_the_telling_frame_is_the_busiest_one():
    _, frames = frames_of("paged-attention")
    still = markup.telling_frame(frames)
    counts = [len(elements(f["svg"])) for f in frames]
    assert counts[still] == max(counts) and still == counts.index(max(counts))
    assert 0 < still < len(frames) - 1  # not the empty start, for this trace


def test_the_showcase_shows_the_still_frame_links_its_page_and_loads_its_player():
    item, frames = frames_of("paged-attention")
    html = markup.showcase_html(item, frames, "paged-attention/paged-attention.frames.json",
                                "paged-attention/", "PagedAttention", "js/showcase.js")
    still = markup.telling_frame(frames)
    assert frames[still]["svg"] in html
    assert f'data-still="{still}"' in html
    assert 'data-frames="paged-attention/paged-attention.frames.json"' in html
    assert html.count('href="paged-attention/"') == 2
    assert '<script type="module" async src="js/showcase.js"></script>' in html
    assert 'class="vsb-showcase-play" aria-pressed="false"' in html
    assert markup.counter_text(frames[still], still, len(frames)) in html


def test_the_showcase_escapes_what_it_writes():
    item, frames = frames_of("paged-attention")
    html = markup.showcase_html(item, frames, 'x"><b>', "p/", "<i>Page</i>", "js/showcase.js")
    assert "<i>Page</i>" not in html and "&lt;i&gt;Page&lt;/i&gt;" in html
    assert 'x"><b>' not in html
