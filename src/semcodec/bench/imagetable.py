"""The image bench as terminal tables: per image and round, then means, then descriptions."""

from __future__ import annotations

from semcodec.bench import tables
from semcodec.bench.imagebench import ImageBench, MeanRow
from semcodec.ubpp import micro_bpp


def _g(value: float) -> str:
    return f"{value:.3g}" if value < 0.01 else f"{value:.4f}"


def render_image_bench(bench: ImageBench) -> str:
    """Per-image rows (each reflection round, ``*`` = the one ``encode`` would store, and the
    anchors), the means, the skipped metrics, and every description."""
    metric_cols = [m.column for m in bench.metrics]
    headers = [
        "image",
        "row",
        "words",
        "chars",
        "payload b",
        "file b",
        "bpp",
        "μbpp",
        "μbpp@1024²",
        *metric_cols,
    ]
    keys = [m.key for m in bench.metrics]

    def scores(values: dict[str, float]) -> list[str]:
        return [tables.num(values.get(k), 3) for k in keys]

    rows: list[list[str]] = []
    for r in bench.images:
        if r.error is not None:
            rows.append([r.name, "failed", "", "", "", "", "", "", "", *["" for _ in keys]])
            continue
        for it in r.iterations:
            rows.append(
                [
                    r.name,
                    f"round {it.iteration}{'*' if it.chosen else ''}",
                    str(it.words),
                    str(it.chars),
                    str(it.payload_bits),
                    str(it.file_bits),
                    _g(it.micro_bpp / 1e6),
                    f"{it.micro_bpp:.1f}",
                    f"{it.micro_bpp_at_1024:.1f}",
                    *scores(it.scores),
                ]
            )
        for a in r.anchors:
            rows.append(
                [
                    r.name,
                    a.anchor.name,
                    "",
                    "",
                    "",
                    str(a.anchor.bits),
                    _g(a.anchor.bpp),
                    f"{micro_bpp(a.anchor.bits, r.width, r.height):.0f}",
                    f"{micro_bpp(a.anchor.bits, 1024, 1024):.0f}",
                    *scores(a.scores),
                ]
            )
    mean_rows = [_mean_row(m, keys) for m in bench.means()]
    ok = len(bench.ok)
    lines = [
        f"{ok} of {len(bench.images)} images; captioner {bench.settings['captioner']}, generator "
        f"{bench.settings['generator']}, reflection rounds {bench.settings['reflect']}",
        "",
        tables.render(headers, rows, left=2),
        "",
        f"means over {ok} images:",
        tables.render(["row", "images", *headers[2:]], mean_rows),
        "",
        "  * = the round `semcodec encode` would store (best J = score − λ·bits)",
        "  bits are whole .sem files (header + payload), each packed, unpacked and checked",
        "  μbpp over the original's pixels (the size its header stores, as `info` reports);"
        " μbpp@1024² as if the image were 1024×1024",
    ]
    lines += [f"  {m.column}: {m.label}" for m in bench.metrics]
    lines += [f"  note: {n}" for n in bench.notes]
    lines.append("")
    lines.append("descriptions:")
    for r in bench.images:
        if r.error is not None:
            lines.append(f"  {r.name}: failed: {r.error}")
            continue
        for it in r.iterations:
            lines.append(f"  {r.name} round {it.iteration}{'*' if it.chosen else ''}: {it.text}")
    return "\n".join(lines)


def _mean_row(m: MeanRow, keys: list[str]) -> list[str]:
    anchor = m.words is None
    return [
        m.label,
        str(m.images),
        tables.num(m.words, 1),
        tables.num(m.chars, 1),
        tables.num(m.payload_bits, 1),
        f"{m.file_bits:.0f}" if anchor else f"{m.file_bits:.1f}",
        _g(m.micro_bpp / 1e6),
        f"{m.micro_bpp:.0f}" if anchor else f"{m.micro_bpp:.1f}",
        f"{m.micro_bpp_at_1024:.0f}" if anchor else f"{m.micro_bpp_at_1024:.1f}",
        *[tables.num(m.scores.get(k), 3) for k in keys],
    ]
