"""Image in, ``.sem`` bytes out, and back: the reflection search wrapped around the core codec.

The core codec (:func:`semcodec.pack` / :func:`semcodec.unpack`) only knows text; this
module adds the image side. The bit cost it feeds the search is the size of the real
packed file, so what the search optimises is what lands on disk. :func:`encode_image` is
the one encode path: ``semcodec encode`` and ``semcodec bench images`` both call it, and
its :class:`FileCost` is the one cache of packed files behind every cost and every file.

The header stores the source image's size (SPEC §2); :func:`~.painting.paint` — used by
the search and by :func:`decode_image` alike — paints at a size the generator supports
and resizes to it, so a decode gives back an image of the source's size.

    >>> from PIL import Image
    >>> from semcodec.container import decode_header, encode_header
    >>> class Words:  # a captioner
    ...     name = "words"
    ...     def describe(self, image, word_budget, critique=None):
    ...         return "a red square"
    >>> def fake_pack(text, header):  # the real header, then the text (the LM coder is slow)
    ...     return encode_header(header) + text.encode()
    >>> photo = Image.new("RGB", (768, 512), "red")
    >>> encoded = encode_image(photo, captioner=Words(), generator=None, judge=None,
    ...     header=Header(width=768, height=512), settings=ReflectSettings(), pack=fake_pack)
    >>> decode_header(encoded.data)[0] == Header(width=768, height=512), encoded.file_for(encoded.best) == encoded.data
    (True, True)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from semcodec.container import Header
from semcodec.pipeline.painting import paint
from semcodec.pipeline.progress import QUIET, Progress
from semcodec.pipeline.reflect import Candidate, Judge, ReflectResult, ReflectSettings, reflect

if TYPE_CHECKING:
    from PIL.Image import Image

    from semcodec.codec import SemFile
    from semcodec.pipeline.interfaces import Captioner, Generator


def pack_text(text: str, header: Header) -> bytes:
    """:func:`semcodec.pack_header`, imported on first use (tests replace this seam)."""
    from semcodec.codec import pack_header

    return pack_header(text, header)


def unpack_file(data: bytes, max_tokens: int | None = None) -> SemFile:
    """:func:`semcodec.unpack` with its token budget (a seam of its own so tests can swap the coder)."""
    import semcodec

    return semcodec.unpack(data, max_tokens=max_tokens)


Packer = Callable[[str, Header], bytes]
"""Text and header → ``.sem`` bytes (:func:`pack_text`, or a test's stand-in)."""


class FileCost:
    """Exact cost of a description: bits of the file :func:`semcodec.pack` writes (seed 0).

    The one cache of packed files of an encode: the LM coder is the slow part, a text
    is often costed twice (fitted, then reported), and the chosen description's final
    file — or any round's, which the bench measures — is usually one already packed.
    """

    def __init__(self, header: Header, pack: Packer | None = None) -> None:
        self.header = header.with_fields(seed=0)
        self._pack = pack
        self._files: dict[tuple[str, int], bytes] = {}
        # The LM behind the real coder is not known to be thread-safe, and is CPU-bound
        # anyway: one text at a time.
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        return 8 * len(self.pack(text, 0))

    def pack(self, text: str, seed: int) -> bytes:
        """The file for ``text`` with ``seed`` in the header (packed once, then cached)."""
        with self._lock:
            if (text, seed) not in self._files:
                pack = self._pack or pack_text  # looked up now: tests replace the module's seam
                self._files[(text, seed)] = pack(text, self.header.with_fields(seed=seed))
            return self._files[(text, seed)]


@dataclass
class Encoded:
    """A packed file, the search that chose it, and the cache that packed it."""

    data: bytes
    header: Header
    result: ReflectResult
    files: FileCost

    @property
    def best(self) -> Candidate:
        return self.result.best

    def file_for(self, candidate: Candidate) -> bytes:
        """The file ``candidate`` would be stored as (the chosen one's is :attr:`data`)."""
        return self.files.pack(candidate.text, candidate.seed)


def encode_image(
    original: Image,
    *,
    captioner: Captioner,
    generator: Generator | None,
    judge: Judge | None,
    header: Header,
    settings: ReflectSettings,
    pack: Packer | None = None,
    progress: Progress = QUIET,
    on_candidate: Callable[[Candidate], None] | None = None,
) -> Encoded:
    """Search for the best description of ``original`` and pack it with its seed.

    ``header`` carries model id, generator id, size (the source's, by default) and check
    flag; its seed is ignored (the search chooses it). ``pack`` defaults to the real coder.
    """
    files = FileCost(header, pack)
    result = reflect(
        original,
        captioner=captioner,
        generator=generator,
        judge=judge,
        cost_bits=files,
        header=header,
        settings=settings,
        progress=progress,
        on_candidate=on_candidate,
    )
    final = header.with_fields(seed=result.best.seed)
    progress.note("packing")
    data = files.pack(result.best.text, final.seed)
    return Encoded(data, final, result, files)


def decode_image(
    data: bytes,
    generator_for: Callable[[Header], Generator],
    progress: Progress = QUIET,
    max_tokens: int | None = None,
) -> tuple[Image, str, Header]:
    """Unpack ``data`` and repaint it at the header's size (the source's) and seed.

    ``generator_for`` picks the generator for the header (its generator id, or the
    user's override); ``max_tokens`` is the token budget (:func:`semcodec.unpack`'s default if None).
    Returns the image, the description and the header.
    """
    sem = unpack_file(data, max_tokens)
    header = sem.header
    generator = generator_for(header)
    if header.seed and not generator.honours_seed:
        progress.note(f"{generator.name} ignores seeds; the stored seed {header.seed} has no effect")
    bar = progress.steps(f"painting {header.width}×{header.height} with {generator.name}", 1)

    def on_step(done: int, total: int) -> None:
        bar.total = max(1, total)
        bar(done)

    return paint(generator, sem.text, header, on_step), sem.text, header
