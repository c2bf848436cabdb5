"""Image in, ``.sem`` bytes out, and back: the reflection search wrapped around the core codec.

The core codec (:func:`semcodec.pack` / :func:`semcodec.unpack`) only knows text; this
module adds the image side. The bit cost it feeds the search is the size of the real
packed file, so what the search optimises is what lands on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from semcodec.container import Header
from semcodec.pipeline.progress import QUIET, Progress
from semcodec.pipeline.ratecontrol import CostFn
from semcodec.pipeline.reflect import Candidate, Judge, ReflectResult, ReflectSettings, reflect

if TYPE_CHECKING:
    from PIL.Image import Image

    from semcodec.codec import SemFile
    from semcodec.pipeline.interfaces import Captioner, Generator


def pack_text(text: str, header: Header) -> bytes:
    """:func:`semcodec.pack_header`, imported on first use (tests replace this seam)."""
    from semcodec.codec import pack_header

    return pack_header(text, header)


def unpack_file(data: bytes) -> SemFile:
    """:func:`semcodec.unpack` (a seam of its own so tests can swap the coder)."""
    import semcodec

    return semcodec.unpack(data)


class FileCost:
    """Exact cost of a description: bits of the file :func:`semcodec.pack` writes (seed 0).

    Keeps the packed bytes, because the LM coder is the slow part and the chosen
    description's final file is usually one already costed (whenever its seed is 0).
    """

    def __init__(self, header: Header) -> None:
        self.header = replace(header, seed=0)
        self._files: dict[str, bytes] = {}

    def __call__(self, text: str) -> int:
        return 8 * len(self.pack(text, 0))

    def pack(self, text: str, seed: int) -> bytes:
        if seed:
            return pack_text(text, replace(self.header, seed=seed))
        if text not in self._files:
            self._files[text] = pack_text(text, self.header)
        return self._files[text]


@dataclass
class Encoded:
    """A packed file and the search that chose it."""

    data: bytes
    header: Header
    result: ReflectResult

    @property
    def best(self) -> Candidate:
        return self.result.best


def encode_image(
    original: Image,
    *,
    captioner: Captioner,
    generator: Generator | None,
    judge: Judge | None,
    header: Header,
    settings: ReflectSettings,
    cost_bits: CostFn | None = None,
    progress: Progress = QUIET,
    on_candidate: Callable[[Candidate], None] | None = None,
) -> Encoded:
    """Search for the best description of ``original`` and pack it with its seed.

    ``header`` carries model id, generator id, size and check flag; its seed is ignored
    (the search chooses it). ``cost_bits`` defaults to packing for real.
    """
    packer = FileCost(header)
    result = reflect(
        original,
        captioner=captioner,
        generator=generator,
        judge=judge,
        cost_bits=cost_bits or packer,
        header=header,
        settings=settings,
        progress=progress,
        on_candidate=on_candidate,
    )
    final = replace(header, seed=result.best.seed)
    progress.note("packing")
    data = packer.pack(result.best.text, final.seed)
    return Encoded(data, final, result)


def decode_image(
    data: bytes,
    generator_for: Callable[[Header], Generator],
    progress: Progress = QUIET,
) -> tuple[Image, str, Header]:
    """Unpack ``data`` and repaint it at the header's size and seed.

    ``generator_for`` picks the generator for the header (its generator id, or the
    user's override). Returns the image, the description and the header.
    """
    sem = unpack_file(data)
    header = sem.header
    generator = generator_for(header)
    if header.seed and not generator.honours_seed:
        progress.note(f"{generator.name} ignores seeds; the stored seed {header.seed} has no effect")
    bar = progress.steps(f"painting {header.width}×{header.height} with {generator.name}", 1)

    def on_step(done: int, total: int) -> None:
        bar.total = max(1, total)
        bar(done)

    image = generator.generate(sem.text, header.width, header.height, header.seed, on_step=on_step)
    return image, sem.text, header
