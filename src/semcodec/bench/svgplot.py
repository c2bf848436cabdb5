"""The rate–quality plot as inline SVG (no plotting library): score against μbpp, log x axis.

The x axis spans decades because the anchors sit thousands of times to the right of
semcodec's points: the point of the plot is that gap, and, among semcodec's points, how
reflection rounds move along the curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from semcodec.bench.imagebench import ImageBench
from semcodec.ubpp import micro_bpp

WIDTH, HEIGHT = 760, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 180, 30, 60
SEM_COLOUR, JPEG_COLOUR, WEBP_COLOUR, PATH_COLOUR = "#1f5fbf", "#d9730d", "#2b8a3e", "#b8c4d6"


@dataclass(frozen=True)
class Point:
    """One plotted point: μbpp, score, series, hover text."""

    ubpp: float
    score: float
    series: str
    tip: str


def _tick_label(decade: int) -> str:
    """``1``, ``10``, ``100``, ``1k`` ... for 10**decade.

    >>> [_tick_label(d) for d in (0, 2, 3, 5, 6)]
    ['1', '100', '1k', '100k', '1M']
    """
    value = 10**decade
    for div, suffix in ((10**6, "M"), (10**3, "k")):
        if value >= div:
            return f"{value // div}{suffix}"
    return str(value) if decade >= 0 else f"{10.0**decade:g}"


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × 10^k) inside ``[lo, hi]``.

    >>> nice_ticks(0.29, 1.04)
    [0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(9.5, 27.3)
    [10.0, 15.0, 20.0, 25.0]
    """
    raw = (hi - lo) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step)
    return [float(round(k * step, 10)) for k in range(first, math.floor(hi / step) + 1)]


def points(bench: ImageBench, key: str) -> list[Point]:
    """Every finite (μbpp, score) of the run for metric ``key``: rounds, then anchors."""
    out: list[Point] = []
    for r in bench.ok:
        for it in r.iterations:
            if key in it.scores and math.isfinite(it.scores[key]) and it.micro_bpp > 0:
                value = it.scores[key]
                tip = f"{r.name} round {it.iteration}: {it.file_bits} bits, {it.micro_bpp:.1f} μbpp, {value:.3f}"
                out.append(Point(it.micro_bpp, it.scores[key], f"round:{r.name}", tip))
        for a in r.anchors:
            score = a.scores.get(key)
            if score is not None and math.isfinite(score):
                ubpp = micro_bpp(a.anchor.bits, r.width, r.height)
                tip = f"{r.name} {a.anchor.name}: {a.anchor.bits} bits, {a.anchor.bpp:.4f} bpp, {score:.3f}"
                out.append(Point(ubpp, score, a.anchor.name, tip))
    return out


def rate_quality_svg(bench: ImageBench) -> str:
    """The plot for the run's primary metric, as an ``<svg>`` element."""
    info = next(m for m in bench.metrics if m.key == bench.primary)
    pts = points(bench, info.key)
    means = [m for m in bench.means() if m.label.startswith("round ")]
    mean_pts = [(m.micro_bpp, m.scores.get(info.key, math.nan), m.label) for m in means]
    mean_pts = [p for p in mean_pts if math.isfinite(p[1]) and p[0] > 0]
    if not pts:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40">'
            '<text x="10" y="25">no points to plot</text></svg>'
        )
    lo = math.floor(math.log10(min(p.ubpp for p in pts)))
    hi = max(lo + 1, math.ceil(math.log10(max(p.ubpp for p in pts))))
    ys = [p.score for p in pts]
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or 0.5
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(ubpp: float) -> float:
        return LEFT + pw * (math.log10(ubpp) - lo) / (hi - lo)

    def sy(score: float) -> float:
        return TOP + ph * (1 - (score - y0) / (y1 - y0))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" '
        'font-family="system-ui, sans-serif" font-size="12" role="img" aria-label="rate–quality plot">',
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fbfcfe" stroke="#c9d1dc"/>',
    ]
    for d in range(lo, hi + 1):
        x = sx(10.0**d)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" stroke="#e3e8ef"/>')
        parts.append(f'<text x="{x:.1f}" y="{TOP + ph + 18}" text-anchor="middle">{_tick_label(d)}</text>')
    for v in nice_ticks(y0, y1):
        y = sy(v)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#eef1f5"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    parts.append(
        f'<text x="{LEFT + pw / 2}" y="{HEIGHT - 18}" text-anchor="middle">'
        "rate: μbpp at the image's resolution (log scale)</text>"
    )
    better = "higher is better" if info.higher_is_better else "lower is better"
    parts.append(
        f'<text transform="translate(16 {TOP + ph / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(info.column.rstrip('↑↓'))} ({better})</text>"
    )
    # Each image's path through its reflection rounds.
    by_image: dict[str, list[Point]] = {}
    for p in pts:
        if p.series.startswith("round:"):
            by_image.setdefault(p.series, []).append(p)
    for series in by_image.values():
        if len(series) > 1:
            path = " ".join(f"{sx(p.ubpp):.1f},{sy(p.score):.1f}" for p in series)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{PATH_COLOUR}" stroke-width="1"/>')
    for p in pts:
        x, y = sx(p.ubpp), sy(p.score)
        tip = f"<title>{escape(p.tip)}</title>"
        if p.series.startswith("round:"):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{SEM_COLOUR}" fill-opacity="0.45">{tip}</circle>'
            )
        elif p.series.startswith("JPEG"):
            parts.append(
                f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" '
                f'fill="{JPEG_COLOUR}" fill-opacity="0.7">{tip}</rect>'
            )
        else:
            parts.append(
                f'<path d="M{x:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 4:.1f} L{x - 5:.1f},{y + 4:.1f} Z" '
                f'fill="{WEBP_COLOUR}" fill-opacity="0.7">{tip}</path>'
            )
    if mean_pts:
        path = " ".join(f"{sx(u):.1f},{sy(s):.1f}" for u, s, _ in mean_pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{SEM_COLOUR}" stroke-width="2.5"/>')
        for u, s, label in mean_pts:
            parts.append(
                f'<circle cx="{sx(u):.1f}" cy="{sy(s):.1f}" r="6" fill="white" '
                f'stroke="{SEM_COLOUR}" stroke-width="2.5">'
                f"<title>mean {escape(label)}: {u:.1f} μbpp, {s:.3f}</title></circle>"
            )
            parts.append(
                f'<text x="{sx(u) + 8:.1f}" y="{sy(s) - 8:.1f}" fill="{SEM_COLOUR}">'
                f"{escape(label.replace('round ', 'r'))}</text>"
            )
    lx, ly = WIDTH - RIGHT + 14, TOP + 10
    legend = [
        (
            f'<circle cx="{lx + 6}" cy="{ly}" r="4" fill="{SEM_COLOUR}" fill-opacity="0.45"/>',
            "semcodec, per image",
        ),
        (
            f'<circle cx="{lx + 6}" cy="{ly}" r="5" fill="white" stroke="{SEM_COLOUR}" stroke-width="2.5"/>',
            "mean per round",
        ),
        (f'<rect x="{lx + 2}" y="{ly - 4}" width="8" height="8" fill="{JPEG_COLOUR}"/>', "JPEG q1"),
        (
            f'<path d="M{lx + 6},{ly - 5} L{lx + 11},{ly + 4} L{lx + 1},{ly + 4} Z" fill="{WEBP_COLOUR}"/>',
            "WebP q1",
        ),
    ]
    for i, (mark, text) in enumerate(legend):
        parts.append(f'<g transform="translate(0 {20 * i})">{mark}<text x="{lx + 18}" y="{ly + 4}">{text}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)
