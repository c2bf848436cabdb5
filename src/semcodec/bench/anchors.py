"""The classic anchors: the smallest JPEG and WebP Pillow writes for an image (quality 1).

They show what conventional coding costs at its very lowest quality — typically tens of
kilobits for a photo, against semcodec's tens to hundreds of bits. Each is coded at the
image's own resolution; the bytes are kept so the report can show the real decoded
picture.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass
class Anchor:
    """One anchor coding of one image."""

    name: str
    mime: str
    data: bytes = field(repr=False)
    pixels: int
    image: Image = field(repr=False)

    @property
    def bits(self) -> int:
        return 8 * len(self.data)

    @property
    def bpp(self) -> float:
        return self.bits / self.pixels


def _encode(image: Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _decoded(data: bytes) -> Image:
    from PIL import Image as PILImage

    out = PILImage.open(io.BytesIO(data))
    out.load()
    return out.convert("RGB")


def smallest_jpeg(image: Image) -> Anchor:
    """Quality 1, optimised Huffman tables, 4:2:0; baseline or progressive, whichever is smaller.

    >>> from PIL import Image
    >>> a = smallest_jpeg(Image.new("RGB", (64, 48), "red"))
    >>> a.name, a.mime, a.image.size, a.bpp < 1
    ('JPEG q1', 'image/jpeg', (64, 48), True)
    """
    rgb = image.convert("RGB")
    candidates = [
        _encode(rgb, "JPEG", quality=1, optimize=True, progressive=progressive, subsampling=2)
        for progressive in (False, True)
    ]
    data = min(candidates, key=len)
    return Anchor("JPEG q1", "image/jpeg", data, rgb.width * rgb.height, _decoded(data))


def smallest_webp(image: Image) -> Anchor:
    """Lossy WebP at quality 1 with the slowest, most thorough method (6)."""
    rgb = image.convert("RGB")
    data = _encode(rgb, "WEBP", quality=1, method=6)
    return Anchor("WebP q1", "image/webp", data, rgb.width * rgb.height, _decoded(data))


def anchors_for(image: Image) -> tuple[list[Anchor], list[str]]:
    """Every anchor Pillow can write here, and a note for each it cannot."""
    from PIL import features

    out = [smallest_jpeg(image)]
    notes = []
    if features.check("webp"):
        out.append(smallest_webp(image))
    else:
        notes.append("WebP anchor skipped: this Pillow was built without WebP support")
    return out, notes
