"""Image batch coders: rows of images in, ``.sem`` bytes out (and back), for datasets and folders.

The same search as ``semcodec encode`` (describe, optionally reflect, pack with the real
coder), with the same options (:class:`ImageOptions` mirrors the command line). A coder
builds its backends once, in its constructor; as the callable class of a Ray actor pool
that is once per worker. Within a batch, up to ``jobs`` images are in flight at once (API
captioners wait on the network), and the backend bounds its own requests in flight, so a
job never has more than ``workers × jobs`` requests outstanding.

A bad row never stops a batch: its outputs are null and its ``error`` cell says why.
Image cells are encoded image bytes (PNG, JPEG, ...; e.g. ``ray.data.read_binary_files``)
or ``H×W×3`` uint8 arrays (``ray.data.read_images``).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from semcodec.container import Header
from semcodec.data.coders import (
    ERROR_COLUMN,
    SEM_COLUMN,
    TEXT_COLUMN,
    error_message,
    require_column,
    with_column,
)
from semcodec.errors import SemError
from semcodec.pipeline.prompts import DESCRIBER_MODEL_ID

if TYPE_CHECKING:
    import pyarrow as pa
    from PIL.Image import Image

    from semcodec.pipeline.interfaces import Generator

IMAGE_COLUMN = "image"

_CARRIED = ("OPENAI_", "SEMCODEC_", "HF_", "HUGGINGFACE_", "HUGGING_FACE_")
_NODE_LOCAL = ("SEMCODEC_CACHE_DIR", "SEMCODEC_MODEL_FILE", "HF_HOME")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASS|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)


def _is_secret(name: str, value: str) -> bool:
    """Every ``OPENAI_*`` setting (a base URL can hold ``user:password@`` or ``?api-key=``), any
    name that sounds like a credential, and any value that is a URL."""
    return name.startswith("OPENAI_") or bool(_SECRET_NAME.search(name)) or "://" in value


def worker_settings() -> dict[str, str]:
    """This process's backend settings that workers need and that may be logged: the
    ``SEMCODEC_*``/``HF_*`` variables that are neither secrets nor node-local paths.

    Ray's ``runtime_env`` carries these (its agent logs them, world-readable); secrets go
    with :class:`Secrets` instead.
    """
    return {k: v for k, v in os.environ.items()
            if k.startswith(_CARRIED) and k not in _NODE_LOCAL and not _is_secret(k, v)}


class Secrets:
    """Credentials from the driver's environment (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
    ``HF_TOKEN``, ...) on their way to workers inside the coder's options: an actor's
    constructor arguments, which Ray keeps in memory and never logs, unlike a
    ``runtime_env``. Its ``repr`` names the variables, never their values.

    >>> Secrets({"OPENAI_API_KEY": "sk-123"})
    Secrets(OPENAI_API_KEY)
    """

    def __init__(self, values: dict[str, str]) -> None:
        self._values = dict(values)

    @classmethod
    def from_env(cls) -> Secrets:
        return cls({k: v for k, v in os.environ.items()
                    if k.startswith(_CARRIED) and k not in _NODE_LOCAL and _is_secret(k, v)})

    def install(self) -> None:
        """Put the credentials into this (worker) process's environment, where backends read them."""
        os.environ.update(self._values)

    def names(self) -> list[str]:
        return sorted(self._values)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(self.names())})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secrets) and other._values == self._values

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ImageOptions:
    """``semcodec encode``/``decode`` options, picklable so Ray can ship them to workers.

    ``None`` means the command line's default (e.g. the captioner from ``OPENAI_API_KEY``).
    ``secrets`` (see :meth:`with_secrets`) go into the environment of the process that
    builds a coder from these options.
    """

    captioner: str | None = None
    generator: str | None = None
    critic: str | None = None
    reflect: int = 0
    seeds: int = 1
    words: int = 30
    lam: float = 0.001
    max_bits: int | None = None
    target_ubpp: float | None = None
    width: int | None = None
    height: int | None = None
    model: str = str(DESCRIBER_MODEL_ID)  # what encode codes: the describer's paired profile
    check: bool = False
    score: str = "auto"
    jobs: int = 4
    timeout: float | None = None
    retries: int | None = None
    device: str | None = None
    steps: int | None = None
    guidance: float | None = None
    image_format: str = "png"
    max_tokens: int | None = None  # decode: each file's token budget (None: the codec's default)
    secrets: Secrets | None = field(default=None, repr=False, compare=False)

    def with_secrets(self) -> ImageOptions:
        """These options carrying this process's credentials (:class:`Secrets`) to a worker."""
        return replace(self, secrets=Secrets.from_env())

    def install_secrets(self) -> None:
        if self.secrets is not None:
            self.secrets.install()

    @classmethod
    def from_args(cls, args: Any) -> ImageOptions:
        """The options of a parsed ``encode``/``decode`` command line (attributes it lacks keep defaults)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        return cls(**values)

    def backend_options(self) -> Any:
        from semcodec.pipeline.backends import BackendOptions

        return BackendOptions.from_env(
            timeout=self.timeout, retries=self.retries, device=self.device, steps=self.steps,
            guidance=self.guidance, concurrency=self.jobs,
        )


def to_image(cell: Any, name: str = "image") -> Image:
    """An RGB image from encoded bytes or an ``H×W×3`` uint8 array."""
    from semcodec.pipeline import imaging

    if isinstance(cell, (bytes, bytearray, memoryview)):
        return imaging.load_image(bytes(cell), name)
    if cell is None:
        raise SemError("no image (null)")
    import numpy as np

    array = np.asarray(cell)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise SemError(f"{name}: not an image array (dtype {array.dtype}, shape {array.shape})")
    imaging.pil()
    from PIL import Image as PILImage

    return PILImage.fromarray(array).convert("RGB")


class ImageEncoder:
    """Image → ``.sem`` bytes with the options of ``semcodec encode``; backends built once."""

    def __init__(self, options: ImageOptions | None = None) -> None:
        from semcodec.pipeline.backends import BackendPool
        from semcodec.pipeline.encoding import load_encode_backends
        from semcodec.pipeline.reflect import ReflectSettings
        from semcodec.registry import model_id_by_name

        o = self.options = options or ImageOptions()
        o.install_secrets()
        self.model_id = model_id_by_name(str(o.model))
        self.settings = ReflectSettings(reflect=o.reflect, seeds=o.seeds, words=o.words, lam=o.lam)
        backends = load_encode_backends(
            BackendPool(o.backend_options()), self.settings,
            captioner=o.captioner, generator=o.generator, critic=o.critic, score=o.score,
        )
        self.generator_id = backends.generator_id or 0
        self.captioner = backends.captioner
        self.generator: Generator | None = backends.generator
        self.critic: Any = backends.critic
        self.metric: Any = backends.metric
        self.judge_mode = backends.judge_mode

    def encode(self, image: Image) -> tuple[bytes, str]:
        """The ``.sem`` file for ``image`` and the description it holds."""
        from semcodec.pipeline import imaging
        from semcodec.pipeline.image_codec import encode_image
        from semcodec.pipeline.ratecontrol import budget_from
        from semcodec.pipeline.reflect import Judge

        o = self.options
        width, height = imaging.complete_size(image, o.width, o.height)
        header = Header(self.model_id, self.generator_id, 0, width, height, o.check)
        budget = budget_from(o.max_bits, o.target_ubpp, width, height)
        judge = Judge(image, self.judge_mode, self.metric, self.critic) if self.settings.paints else None
        encoded = encode_image(
            image, captioner=self.captioner, generator=self.generator, judge=judge, header=header,
            settings=replace(self.settings, max_bits=budget),
        )
        return encoded.data, encoded.best.text

    def encode_cell(self, cell: Any, name: str = "image") -> tuple[bytes | None, str | None, str | None]:
        """``(sem, text, error)`` for one image cell; errors become the message."""
        try:
            data, text = self.encode(to_image(cell, name))
            return data, text, None
        except Exception as err:
            return None, None, error_message(err)

    def map_cells(self, cells: list[Any], names: list[str]) -> list[tuple[bytes | None, str | None, str | None]]:
        """:meth:`encode_cell` over a batch, ``jobs`` at a time, in order."""
        if self.options.jobs <= 1 or len(cells) <= 1:
            return [self.encode_cell(c, n) for c, n in zip(cells, names, strict=True)]
        with ThreadPoolExecutor(max_workers=self.options.jobs, thread_name_prefix="semcodec-encode") as pool:
            return list(pool.map(self.encode_cell, cells, names))


class ImageDatasetEncoder(ImageEncoder):
    """Callable class for ``map_batches``: adds ``sem``, ``text`` and ``error`` columns."""

    def __init__(
        self,
        options: ImageOptions | None = None,
        image_column: str = IMAGE_COLUMN,
        sem_column: str = SEM_COLUMN,
        text_column: str = TEXT_COLUMN,
        error_column: str = ERROR_COLUMN,
    ) -> None:
        super().__init__(options)
        self.columns = (image_column, sem_column, text_column, error_column)

    def __call__(self, table: pa.Table) -> pa.Table:
        image_column, sem_column, text_column, error_column = self.columns
        require_column(table, image_column)
        cells = _cells(table[image_column])
        out = self.map_cells(cells, ["image"] * len(cells))
        return _with_results(table, out, sem_column, text_column, error_column)


def _with_results(
    table: pa.Table, rows: list[tuple[bytes | None, str | None, str | None]], data_column: str, text_column: str,
    error_column: str,
) -> pa.Table:
    """``table`` plus the ``(data, text, error)`` rows as a binary and two string columns."""
    import pyarrow as pa

    table = with_column(table, data_column, pa.array([r[0] for r in rows], pa.binary()))
    table = with_column(table, text_column, pa.array([r[1] for r in rows], pa.string()))
    return with_column(table, error_column, pa.array([r[2] for r in rows], pa.string()))


def _cells(column: Any) -> list[Any]:
    """Python values of an Arrow column; tensor columns (``read_images``) become numpy arrays."""
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    cells: list[Any] = []
    for chunk in chunks:
        if hasattr(chunk, "to_numpy_ndarray"):  # Ray's ArrowTensorArray
            cells.extend(chunk.to_numpy_ndarray())
        else:
            cells.extend(chunk.to_pylist())
    return cells


class ImageDecoder:
    """``.sem`` bytes → repainted image with the header's (or the given) generator.

    The texts of a batch decode in lockstep (:func:`semcodec.codec.unpack_many`), then
    each row is painted.
    """

    def __init__(self, options: ImageOptions | None = None) -> None:
        from semcodec.pipeline.backends import BackendPool

        self.options = options or ImageOptions()
        self.options.install_secrets()
        self.pool = BackendPool(self.options.backend_options())
        self._generators: dict[str, Generator] = {}

    def generator_for(self, header: Header) -> Generator:
        from semcodec.pipeline.backends import generator_spec_for_id, parse_spec

        chosen = self.options.generator
        spec = parse_spec(chosen) if chosen else generator_spec_for_id(header.generator_id)
        key = str(spec)
        if key not in self._generators:
            self._generators[key] = self.pool.generator(spec)
        return self._generators[key]

    def decode_cells(self, cells: list[Any]) -> list[tuple[bytes | None, str | None, str | None]]:
        """``(image bytes, text, error)`` per ``.sem`` cell, in order."""
        from semcodec.codec import unpack_many
        from semcodec.pipeline import imaging

        results: list[tuple[bytes | None, str | None, str | None]] = [(None, None, None)] * len(cells)
        todo = []
        for i, cell in enumerate(cells):
            if isinstance(cell, (bytes, bytearray)):
                todo.append(i)
            else:
                results[i] = (None, None, "no .sem data (null)" if cell is None else "not .sem bytes")
        try:
            outcomes: list[Any] = unpack_many([bytes(cells[i]) for i in todo], max_tokens=self.options.max_tokens)
        except Exception as err:
            outcomes = [err] * len(todo)

        def paint(outcome: Any) -> tuple[bytes | None, str | None, str | None]:
            if isinstance(outcome, BaseException):
                return None, None, error_message(outcome)
            try:
                header = outcome.header
                image = self.generator_for(header).generate(outcome.text, header.width, header.height, header.seed)
                return imaging.image_bytes(image, f"out.{self.options.image_format}"), outcome.text, None
            except Exception as err:
                return None, outcome.text, error_message(err)

        jobs = max(1, self.options.jobs)
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="semcodec-decode") as pool:
            for i, result in zip(todo, pool.map(paint, outcomes), strict=True):
                results[i] = result
        return results


class ImageDatasetDecoder(ImageDecoder):
    """Callable class for ``map_batches``: adds ``image`` (encoded bytes), ``text`` and ``error``."""

    def __init__(
        self,
        options: ImageOptions | None = None,
        sem_column: str = SEM_COLUMN,
        image_column: str = IMAGE_COLUMN,
        text_column: str = TEXT_COLUMN,
        error_column: str = ERROR_COLUMN,
    ) -> None:
        super().__init__(options)
        self.columns = (sem_column, image_column, text_column, error_column)

    def __call__(self, table: pa.Table) -> pa.Table:
        sem_column, image_column, text_column, error_column = self.columns
        require_column(table, sem_column)
        out = self.decode_cells(table[sem_column].to_pylist())
        return _with_results(table, out, image_column, text_column, error_column)
