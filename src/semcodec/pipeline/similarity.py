"""How alike two images are, as a number in [0, 1]-ish, higher is closer.

Two metrics, chosen by what this machine has:

* ``clip``: cosine similarity of CLIP image embeddings (semantic: same subject, layout,
  style score high even when pixels differ), when ``torch``/``transformers`` are installed
  and a CLIP model is on disk (``SEMCODEC_CLIP_MODEL``, default
  ``openai/clip-vit-base-patch32`` from the local Hugging Face cache).
* ``pixel-fallback``: a cheap deterministic stand-in that needs only Pillow and numpy —
  half mean absolute difference of 32×32 thumbnails, half colour-histogram overlap. It
  sees colour and rough layout, not meaning; results name it so nobody mistakes it for
  a perceptual metric.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from semcodec.pipeline.errors import BackendUnavailableError

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"

ImageScore = Callable[["Image"], float]
"""Similarity of one reconstruction to an original that was bound in advance."""


class Metric(Protocol):
    """An image-image similarity; :meth:`bind` precomputes what depends on the original."""

    name: str
    is_fallback: bool

    def bind(self, original: Image) -> ImageScore: ...


class PixelSimilarity:
    """The labelled fallback: thumbnails and colour histograms, no model.

    >>> from PIL import Image
    >>> red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (40, 30), "blue")
    >>> score = PixelSimilarity().bind(red)
    >>> score(red), round(score(blue), 3)
    (1.0, 0.167)
    """

    name = "pixel-fallback"
    is_fallback = True
    _SIDE = 32
    _BINS = 4  # per channel: 64 colour cells, coarse enough to ignore noise

    def _features(self, image: Image) -> tuple[Any, Any]:
        import numpy as np

        thumb = np.asarray(image.convert("RGB").resize((self._SIDE, self._SIDE)), dtype=np.float64) / 255.0
        cells = np.minimum((thumb * self._BINS).astype(np.int64), self._BINS - 1)
        index = (cells[..., 0] * self._BINS + cells[..., 1]) * self._BINS + cells[..., 2]
        hist = np.bincount(index.ravel(), minlength=self._BINS**3) / index.size
        return thumb, hist

    def bind(self, original: Image) -> ImageScore:
        import numpy as np

        ref_thumb, ref_hist = self._features(original)

        def score(image: Image) -> float:
            thumb, hist = self._features(image)
            pixels = 1.0 - float(np.abs(thumb - ref_thumb).mean())
            colours = float(np.minimum(hist, ref_hist).sum())
            return round(0.5 * pixels + 0.5 * colours, 12)

        return score


class ClipSimilarity:
    """Cosine similarity of CLIP image embeddings (``get_image_features``)."""

    is_fallback = False

    def __init__(self, model_id: str, device: str | None = None) -> None:
        import torch

        from semcodec.pipeline.libraries import import_quietly

        transformers = import_quietly("transformers")
        # transformers' classes are only partly typed; Any keeps mypy --strict honest here.
        auto_processor: Any = transformers.AutoProcessor
        clip_model: Any = transformers.CLIPModel
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.processor = auto_processor.from_pretrained(model_id, local_files_only=True)
            self.model = clip_model.from_pretrained(model_id, local_files_only=True).to(self.device).eval()
        except OSError:
            raise BackendUnavailableError(f"CLIP model {model_id!r} is not on this machine") from None
        self.name = f"clip:{model_id}"

    def _embed(self, image: Image) -> Any:
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        with self.torch.inference_mode():
            features = self.model.get_image_features(**inputs)
        if not isinstance(features, self.torch.Tensor):  # newer transformers return a model output
            features = features.pooler_output
        return self.torch.nn.functional.normalize(features.float(), dim=-1)[0]

    def bind(self, original: Image) -> ImageScore:
        reference = self._embed(original)

        def score(image: Image) -> float:
            return float((self._embed(image) @ reference).clamp(-1.0, 1.0))

        return score


def _clip_on_disk(model_id: str) -> bool:
    """True if ``model_id`` is a local folder or sits in the HF cache (checked without torch)."""
    if Path(model_id).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except ValueError:  # not a valid repo id (e.g. a path that does not exist): not on disk
        return False


def load_metric(kind: str = "auto", clip_model: str | None = None) -> Metric:
    """``clip``, ``pixel``, or ``auto`` (CLIP when available, else the pixel fallback)."""
    if kind == "pixel":
        return PixelSimilarity()
    model_id = clip_model or os.environ.get("SEMCODEC_CLIP_MODEL") or DEFAULT_CLIP_MODEL
    have_libs = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
    if have_libs and _clip_on_disk(model_id):
        try:
            return ClipSimilarity(model_id)
        except BackendUnavailableError:
            if kind == "clip":
                raise
    elif kind == "clip":
        need = "torch and transformers (pip install 'semcodec[hf]')" if not have_libs else f"{model_id!r} on disk"
        raise BackendUnavailableError(f"the clip metric needs {need}")
    return PixelSimilarity()
