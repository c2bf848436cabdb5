"""Pillow helpers shared by the backends and the CLI: load, size, convert, serialise.

Sizes, in one place: a ``.sem`` header stores the **source** image's width × height
(:func:`source_size`), rates count over it (:mod:`semcodec.ubpp`), and a decode gives
back an image of that size. Generators paint at a size they support — OpenAI's fixed
sizes, or a diffusion model's native area in its aspect ratio (:func:`paint_size`) —
and :func:`resize` brings the painting to the header's size.

Pillow is an optional dependency (both extras pull it in), so it is imported inside the
functions: importing this module costs nothing.

    >>> from PIL import Image
    >>> photo = Image.new("RGB", (768, 512))
    >>> source_size(photo)
    (768, 512)
    >>> paint_size(768, 512, 512 * 512, 8)  # what SD-Turbo paints for it
    (624, 416)
    >>> resize(Image.new("RGB", (624, 416)), 768, 512).size
    (768, 512)
"""

from __future__ import annotations

import base64
import io
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from semcodec.errors import SemInputError, SemLimitError

if TYPE_CHECKING:
    from PIL.Image import Image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
"""File types ``encode DIR`` picks up."""

OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
"""What ``decode -o NAME`` can write, by NAME's extension (``-``, stdout, is PNG)."""

_SAVE_OPTIONS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
# A decoded image is the codec's output, not a place to save more bytes: near-transparent
# lossy settings, so the format costs nothing visible on top of the repaint.

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


def source_size(image: Image) -> tuple[int, int]:
    """The header size for ``image``: its own (SPEC §2), scaled down only past the format's limit.

    >>> class Huge: size = (40000, 30000)
    >>> source_size(Huge())
    (16384, 12288)
    """
    from semcodec.container import MAX_DIMENSION

    width, height = image.size
    if max(width, height) <= MAX_DIMENSION:
        return width, height
    return aspect_fit(width, height, MAX_DIMENSION, 1)


def paint_size(width: int, height: int, native_area: int, step: int) -> tuple[int, int]:
    """The size to paint a ``width``×``height`` header at: its aspect ratio, about
    ``native_area`` pixels (what the model was trained at), sides multiples of ``step``.

    Distilled models paint poorly far from their training area (SD-Turbo at 1024² tiles
    and repeats; SDXL was trained on buckets of about 1024² in many aspect ratios), so
    the area is kept and the shape follows the header; the ratio is clamped to 4:1.

    >>> paint_size(1024, 1024, 512 * 512, 8)
    (512, 512)
    >>> paint_size(1920, 1080, 1024 * 1024, 64)  # SDXL's 16:9 bucket is 1344×768
    (1344, 768)
    >>> paint_size(10, 1000, 512 * 512, 16)
    (256, 1024)
    """
    ratio = min(4.0, max(0.25, width / height))
    return snap((native_area * ratio) ** 0.5, step), snap((native_area / ratio) ** 0.5, step)


def snap(side: float, step: int) -> int:
    """``side`` rounded to the nearest positive multiple of ``step``.

    >>> snap(300, 64), snap(10, 16)
    (320, 16)
    """
    return max(step, round(side / step) * step)


def aspect_fit(width: int, height: int, long_side: int, step: int) -> tuple[int, int]:
    """Scale ``width``×``height`` so the long side is ``long_side``; round both to ``step``.

    >>> aspect_fit(640, 480, 512, 16)
    (512, 384)
    >>> aspect_fit(10, 1000, 64, 16)
    (16, 64)
    """
    scale = long_side / max(width, height)
    return snap(width * scale, step), snap(height * scale, step)


def complete_size(image: Image, width: int | None, height: int | None) -> tuple[int, int]:
    """The header size: ``--width``/``--height`` if given (a missing one from the image's
    aspect ratio), else the source's size."""
    if width and height:
        return width, height
    src_w, src_h = image.size
    if width:
        return width, max(1, round(width * src_h / src_w))
    if height:
        return max(1, round(height * src_w / src_h)), height
    return source_size(image)


def resize(image: Image, width: int, height: int) -> Image:
    """Exactly ``width``×``height`` (the header's size), RGB.

    Shrinking uses Lanczos (a = 3): Pillow's sharpest filter, and it low-passes first, so
    no aliasing. Enlarging uses bicubic: Lanczos' ringing shows as halos around the
    hard edges a painting has, and a larger output gains no detail from a sharper kernel.
    A side that shrinks while the other grows counts as a shrink (aliasing is worse).
    """
    image = image.convert("RGB")
    if image.size == (width, height):
        return image
    from PIL import Image as PILImage

    shrinks = width < image.width or height < image.height
    method = PILImage.Resampling.LANCZOS if shrinks else PILImage.Resampling.BICUBIC
    return image.resize((width, height), method)


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


def output_format(path: str | Path) -> str:
    """The Pillow format an output name asks for: by extension (:data:`OUTPUT_FORMATS`); PNG for ``-``
    and for an existing device or pipe (``-o /dev/null`` works as it does for every command).

    >>> output_format("cat.JPG"), output_format("-"), output_format("cat.webp")
    ('JPEG', 'PNG', 'WEBP')
    >>> output_format("cat.gif")
    Traceback (most recent call last):
    ...
    semcodec.errors.SemInputError: cat.gif: cannot write '.gif' images (use .png, .jpg, .jpeg or .webp)
    """
    if str(path) == "-" or _is_stream(path):
        return "PNG"
    suffix = Path(str(path)).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        known = known[: known.rfind(", ")] + " or" + known[known.rfind(", ") + 1 :]
        what = f"{suffix!r} images" if suffix else "an image without an extension"
        raise SemInputError(f"{path}: cannot write {what} (use {known})")
    return OUTPUT_FORMATS[suffix]


def _is_stream(path: str | Path) -> bool:
    """An existing file that is neither regular nor a folder: a device, a FIFO, a socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def image_bytes(image: Image, path: str | Path = "out.png") -> bytes:
    """Serialise ``image`` in the format its output name asks for (:func:`output_format`)."""
    fmt = output_format(path)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    return buf.getvalue()
