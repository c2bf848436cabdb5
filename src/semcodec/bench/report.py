"""``--html REPORT.html``: one self-contained page (every image a data URI, no scripts, no fetches).

Originals and reconstructions are shown as 512-pixel JPEG previews (the metrics were
computed on the full-size images); the JPEG and WebP anchors are shown as their actual
quality-1 bytes, so what you see is what those bits buy.
"""

from __future__ import annotations

import base64
import io
import math
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from semcodec.bench.imagebench import ImageBench, ImageResult, MeanRow
from semcodec.bench.svgplot import rate_quality_svg
from semcodec.ubpp import micro_bpp

if TYPE_CHECKING:
    from PIL.Image import Image

PREVIEW_SIDE = 512

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2430; margin: 24px auto; max-width: 1180px;
       padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #dde3ea; }
.sub { color: #5b6675; }
table { border-collapse: collapse; margin: 10px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e6eaf0; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f6fa; font-weight: 600; }
tr.chosen td { background: #eef5ff; font-weight: 600; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; width: 256px; }
figure img { width: 256px; height: auto; border: 1px solid #d5dbe3; display: block; background: #eee; }
figcaption { font-size: 12px; color: #3b4552; margin-top: 4px; }
figcaption q { display: block; color: #1d2430; font-style: italic; margin-top: 3px; }
.notes li { color: #5b6675; }
"""


def data_uri(data: bytes, mime: str) -> str:
    """``data:MIME;base64,...``.

    >>> data_uri(b"hi", "text/plain")
    'data:text/plain;base64,aGk='
    """
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def preview(image: Image) -> str:
    """A JPEG data URI of ``image`` no larger than :data:`PREVIEW_SIDE` on its long side."""
    small = image.convert("RGB")
    if max(small.size) > PREVIEW_SIDE:
        small = small.copy()
        small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=85)
    return data_uri(buf.getvalue(), "image/jpeg")


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.{digits}f}"


def _scores_text(bench: ImageBench, scores: dict[str, float]) -> str:
    return ", ".join(f"{m.column} {_fmt(scores.get(m.key))}" for m in bench.metrics if m.key in scores)


def _means_table(bench: ImageBench, rows: list[MeanRow]) -> str:
    head = ["", "images", "words", "payload bits", "file bits", "bpp", "μbpp", "μbpp@1024²"] + [
        escape(m.column) for m in bench.metrics
    ]
    out = ['<table class="means"><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for m in rows:
        cells = [
            escape(m.label),
            str(m.images),
            _fmt(m.words, 1),
            _fmt(m.payload_bits, 1),
            _fmt(m.file_bits, 1),
            f"{m.micro_bpp / 1e6:.3g}",
            _fmt(m.micro_bpp, 1),
            _fmt(m.micro_bpp_at_1024, 1),
        ] + [_fmt(m.scores.get(k.key)) for k in bench.metrics]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _image_section(bench: ImageBench, r: ImageResult) -> str:
    if r.error is not None or r.original is None:
        return f"<h2>{escape(r.name)}</h2><p>failed: {escape(r.error or 'no image')}</p>"
    figs = [
        f'<figure><img src="{preview(r.original)}" alt="original {escape(r.name)}">'
        f"<figcaption><b>original</b> {r.width}×{r.height}</figcaption></figure>"
    ]
    for it in r.iterations:
        if it.image is None:
            continue
        star = " ★ stored" if it.chosen else ""
        figs.append(
            f'<figure><img src="{preview(it.image)}" alt="round {it.iteration}">'
            f"<figcaption><b>round {it.iteration}{star}</b> — "
            f"{it.file_bits} bits ({it.payload_bits} payload), "
            f"{it.micro_bpp:.1f} μbpp; {escape(_scores_text(bench, it.scores))}"
            f"<q>{escape(it.text)}</q></figcaption></figure>"
        )
    stored_bits = r.chosen.file_bits if r.chosen else 0
    for a in r.anchors:
        times = f"{a.anchor.bits / stored_bits:,.0f}" if stored_bits else "?"
        figs.append(
            f'<figure><img src="{data_uri(a.anchor.data, a.anchor.mime)}" alt="{escape(a.anchor.name)}">'
            f"<figcaption><b>{escape(a.anchor.name)}</b> — "
            f"{len(a.anchor.data):,} bytes, {a.anchor.bpp:.4f} bpp ({times}× the stored .sem); "
            f"{escape(_scores_text(bench, a.scores))}</figcaption></figure>"
        )
    head = ["", "words", "payload bits", "file bits", "μbpp", "μbpp@1024²"] + [escape(m.column) for m in bench.metrics]
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for it in r.iterations:
        cells = [
            f"round {it.iteration}",
            str(it.words),
            str(it.payload_bits),
            str(it.file_bits),
            _fmt(it.micro_bpp, 1),
            _fmt(it.micro_bpp_at_1024, 1),
        ] + [_fmt(it.scores.get(m.key)) for m in bench.metrics]
        cls = ' class="chosen"' if it.chosen else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    for a in r.anchors:
        cells = [
            escape(a.anchor.name),
            "",
            "",
            f"{a.anchor.bits:,}",
            f"{micro_bpp(a.anchor.bits, r.width, r.height):,.0f}",
            f"{micro_bpp(a.anchor.bits, 1024, 1024):,.0f}",
        ] + [_fmt(a.scores.get(m.key)) for m in bench.metrics]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return (
        f'<h2>{escape(r.name)}</h2><p class="sub">{r.width}×{r.height}, repainted at '
        f"{r.decode_width}×{r.decode_height}</p>\n"
        + "\n".join(rows)
        + '\n<div class="grid">'
        + "".join(figs)
        + "</div>"
    )


def render_html(bench: ImageBench, title: str = "semcodec image bench") -> str:
    """The whole page as a string."""
    s = bench.settings
    summary = (
        f"{len(bench.ok)} of {len(bench.images)} images · captioner <b>{escape(str(s['captioner']))}</b> · "
        f"generator <b>{escape(str(s['generator']))}</b> · critic {escape(str(s['critic']))} · "
        f"reflection rounds {s['reflect']} · seeds {s['seeds']} · model {s['model_id']}"
    )
    metric_notes = [f"<li><b>{escape(m.column)}</b>: {escape(m.label)}</li>" for m in bench.metrics]
    notes = [f"<li>{escape(n)}</li>" for n in bench.notes]
    sections = "\n".join(_image_section(bench, r) for r in bench.images)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="sub">{summary}</p>
<h2>Rate–quality</h2>
{rate_quality_svg(bench)}
<h2>Means</h2>
{_means_table(bench, bench.means())}
<ul class="notes">
<li>Bits are whole <code>.sem</code> files (header + payload) that were packed, unpacked and checked;
μbpp = bits per pixel × 10⁶ at the original's resolution; ★ = the round <code>semcodec encode</code> stores
(best J = score − λ·bits).</li>
{"".join(metric_notes)}
{"".join(notes)}
<li>Previews are 512-pixel JPEGs; the JPEG/WebP anchors are shown as their actual quality-1 bytes.</li>
</ul>
{sections}
</body></html>
"""


def write_html(bench: ImageBench, path: str | Path, force: bool = True) -> None:
    """Write the report atomically."""
    from semcodec.fileio import write_output

    write_output(str(path), render_html(bench).encode("utf-8"), force=force)
