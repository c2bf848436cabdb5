"""Plain-text tables for terminals and logs: a header, a rule, right-aligned numbers.

>>> print(render(["coder", "bytes"], [["UTF-8", "52.5"], ["brotli -q11", "47.7"]]))
coder        bytes
-----------  -----
UTF-8         52.5
brotli -q11   47.7
"""

from __future__ import annotations

from collections.abc import Sequence


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` columns are left-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(out).rstrip()

    parts = [line(headers), "  ".join("-" * w for w in widths)]
    parts.extend(line(row) for row in rows)
    return "\n".join(parts)


def num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    """A number for a table cell; ``None`` (not measured) is an empty cell.

    >>> num(3.14159), num(None), num(0.5, 1, signed=True)
    ('3.14', '', '+0.5')
    """
    if value is None:
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
