"""Pillow helpers shared by the backends and the CLI: load, size, convert, serialise.

Pillow is an optional dependency (both extras pull it in), so it is imported inside the
functions: importing this module costs nothing.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

from semcodec.errors import SemInputError, SemLimitError

if TYPE_CHECKING:
    from PIL.Image import Image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
"""File types ``encode DIR`` picks up."""

SIZE_STEP = 64
"""Default header sizes are multiples of this, so they suit every diffusion model."""

DEFAULT_LONG_SIDE = 1024
"""The long side of a default header size; 1024×1024 is free in the header."""

MAX_IMAGE_BYTES = 256 * 1024 * 1024
"""Most bytes of an image file ``encode`` reads (256 MiB); a longer input is refused unread."""

MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Most pixels of an image ``encode`` decodes (64 Mpx, 192 MiB as RGB), checked from the file's
header before any pixel is decoded: stricter than Pillow's decompression-bomb limit (89 Mpx)."""


def pil() -> object:
    """Import Pillow or say how to get it."""
    try:
        import PIL.Image
    except ImportError:  # pragma: no cover - depends on the install
        from semcodec.pipeline.errors import BackendUnavailableError

        raise BackendUnavailableError(
            "the image pipeline needs Pillow: pip install 'semcodec[openai]' or 'semcodec[hf]'"
        ) from None
    return PIL.Image


def load_image(data: bytes, name: str = "input") -> Image:
    """Decode image bytes into an RGB image, honouring EXIF orientation."""
    pil()
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    try:
        opened = PILImage.open(io.BytesIO(data))  # reads the header only
        width, height = opened.size
        if width * height > MAX_IMAGE_PIXELS:
            raise SemLimitError(
                f"{name}: {width}×{height} is more than the {MAX_IMAGE_PIXELS}-pixel image limit"
            )
        opened.load()
    except (UnidentifiedImageError, OSError, ValueError, PILImage.DecompressionBombError) as err:
        raise SemInputError(f"{name}: not a readable image ({err.__class__.__name__})") from None
    return ImageOps.exif_transpose(opened).convert("RGB")


def default_size(image: Image, long_side: int = DEFAULT_LONG_SIDE) -> tuple[int, int]:
    """The header size for ``image``: its aspect ratio, long side ``long_side``, multiples of 64.

    >>> class Fake: size = (4000, 3000)
    >>> default_size(Fake())
    (1024, 768)
    """
    width, height = image.size
    return aspect_fit(width, height, long_side, SIZE_STEP)


def aspect_fit(width: int, height: int, long_side: int, step: int) -> tuple[int, int]:
    """Scale ``width``×``height`` so the long side is ``long_side``; round both to ``step``.

    >>> aspect_fit(640, 480, 512, 16)
    (512, 384)
    >>> aspect_fit(10, 1000, 64, 16)
    (16, 64)
    """
    scale = long_side / max(width, height)

    def snap(x: float) -> int:
        return max(step, round(x * scale / step) * step)

    return snap(width), snap(height)


def complete_size(image: Image, width: int | None, height: int | None) -> tuple[int, int]:
    """Fill in a missing ``--width`` or ``--height`` from the image's aspect ratio."""
    if width and height:
        return width, height
    src_w, src_h = image.size
    if width:
        return width, max(1, round(width * src_h / src_w))
    if height:
        return max(1, round(height * src_w / src_h)), height
    return default_size(image)


def resize(image: Image, width: int, height: int) -> Image:
    """Exactly ``width``×``height`` (the header's size), RGB."""
    image = image.convert("RGB")
    if image.size == (width, height):
        return image
    from PIL import Image as PILImage

    return image.resize((width, height), PILImage.Resampling.LANCZOS)


def to_data_url(image: Image, max_side: int = 1024, quality: int = 90) -> str:
    """A ``data:image/jpeg;base64,...`` URL for chat APIs, downscaled to ``max_side``.

    Vision APIs bill by resolution and rescale anyway; JPEG keeps requests small.
    """
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def from_b64(data: str) -> Image:
    """Decode a base64 image from an API reply."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (ValueError, TypeError) as err:
        from semcodec.pipeline.errors import BackendError

        raise BackendError(f"image reply is not valid base64 ({err})") from None
    try:
        return load_image(raw, "image reply")
    except SemInputError as err:
        from semcodec.pipeline.errors import BackendError

        raise BackendError(str(err)) from None


def image_bytes(image: Image, path: str | Path = "out.png") -> bytes:
    """Serialise ``image`` in the format its output name asks for (PNG for ``-`` or unknown)."""
    suffix = Path(str(path)).suffix.lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
    buf = io.BytesIO()
    image.save(buf, format=fmt.get(suffix, "PNG"))
    return buf.getvalue()
