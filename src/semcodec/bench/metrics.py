"""Image–image similarity for the bench: every metric this machine can run, and why not the rest.

Perceptual metrics, each used only when its library and weights are already on disk
(the bench never downloads):

* ``clip`` — cosine similarity of CLIP image embeddings (the pipeline's
  :class:`~semcodec.pipeline.similarity.ClipSimilarity`; model from the local Hugging
  Face cache, ``SEMCODEC_CLIP_MODEL`` or ``openai/clip-vit-base-patch32``). Higher is closer.
* ``dreamsim`` — DreamSim distance (``pip install dreamsim``; weights in
  ``SEMCODEC_DREAMSIM_DIR`` or ``~/.cache/dreamsim``). Lower is closer.
* ``lpips`` — LPIPS (AlexNet) distance at 256×256 (``pip install lpips``; the AlexNet
  checkpoint in torch's hub cache). Lower is closer.

Always available, and labelled as what they are — pixel statistics, blind to meaning,
so a faithful repaint of the same scene can score low:

* ``pixel`` — the pipeline's pixel fallback (32×32 thumbnails + colour histogram), 0–1;
* ``psnr64`` — PSNR of 64×64 thumbnails, in dB.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL.Image import Image

    from semcodec.pipeline.similarity import Metric

ImageScore = Callable[["Image"], float]


@dataclass(frozen=True)
class MetricInfo:
    """How to show a metric: column header, description, direction."""

    key: str
    column: str
    label: str
    higher_is_better: bool
    cheap: bool
    """A pixel-level stand-in, not a perceptual metric."""


class ImageMetric(Protocol):
    """A similarity whose :meth:`bind` precomputes what depends on the original."""

    info: MetricInfo

    def bind(self, original: Image) -> ImageScore: ...


class PixelMetric:
    """The pipeline's pixel fallback, under the bench's labelling."""

    info = MetricInfo(
        "pixel",
        "pixel↑",
        "pixel-fallback: 32×32 thumbnails + colour histogram, 0–1 (cheap, not perceptual)",
        True,
        True,
    )

    def __init__(self) -> None:
        from semcodec.pipeline.similarity import PixelSimilarity

        self.similarity = PixelSimilarity()

    def bind(self, original: Image) -> ImageScore:
        return self.similarity.bind(original)


class Psnr64Metric:
    """PSNR of 64×64 RGB thumbnails (box-filtered), capped at 99 dB for identical images.

    >>> from PIL import Image
    >>> score = Psnr64Metric().bind(Image.new("RGB", (80, 60), (100, 100, 100)))
    >>> same, redder = Image.new("RGB", (8, 6), (100, 100, 100)), Image.new("RGB", (8, 6), (110, 100, 100))
    >>> score(same), round(score(redder), 2)
    (99.0, 32.9)
    """

    info = MetricInfo("psnr64", "PSNR64↑", "PSNR of 64×64 thumbnails in dB (cheap, not perceptual)", True, True)
    _SIDE = 64
    _CAP = 99.0

    def _thumb(self, image: Image) -> Any:
        import numpy as np
        from PIL import Image as PILImage

        small = image.convert("RGB").resize((self._SIDE, self._SIDE), PILImage.Resampling.BOX)
        return np.asarray(small, dtype=np.float64)

    def bind(self, original: Image) -> ImageScore:
        import numpy as np

        ref = self._thumb(original)

        def score(image: Image) -> float:
            mse = float(np.mean((self._thumb(image) - ref) ** 2))
            return self._CAP if mse == 0 else min(self._CAP, 10 * math.log10(255.0**2 / mse))

        return score


class ClipMetric:
    """CLIP image–image cosine similarity; also serves as the reflection's judge metric."""

    def __init__(self, similarity: Any) -> None:
        self.similarity = similarity
        model = similarity.name.split(":", 1)[-1]
        self.info = MetricInfo("clip", "CLIP↑", f"CLIP image–image cosine similarity ({model})", True, False)

    def bind(self, original: Image) -> ImageScore:
        score: ImageScore = self.similarity.bind(original)
        return score


DREAMSIM_FILES = (
    "dino_vitb16_pretrain.pth",
    "open_clip_vitb16_pretrain.pth.tar",
    "clip_vitb16_pretrain.pth.tar",
    "dino_vitb16_lora",
    "open_clip_vitb16_lora",
    "clip_vitb16_lora",
)
"""What ``dreamsim.dreamsim()`` needs in its cache dir to load without downloading."""


def dreamsim_dir() -> Path:
    return Path(os.environ.get("SEMCODEC_DREAMSIM_DIR") or Path.home() / ".cache" / "dreamsim")


class DreamSimMetric:
    """DreamSim distance: 1 − cosine of DreamSim embeddings (lower is closer)."""

    info = MetricInfo("dreamsim", "DreamSim↓", "DreamSim distance (ensemble), lower is closer", False, False)

    def __init__(self, cache_dir: Path, device: str) -> None:
        import torch
        from dreamsim import dreamsim

        self.torch = torch
        self.device = device
        # dreamsim prints to stdout while loading; stdout may be carrying --json.
        with contextlib.redirect_stdout(sys.stderr):
            self.model, self.preprocess = dreamsim(pretrained=True, device=device, cache_dir=str(cache_dir))

    def _embed(self, image: Image) -> Any:
        with self.torch.inference_mode():
            return self.model.embed(self.preprocess(image.convert("RGB")).to(self.device))

    def bind(self, original: Image) -> ImageScore:
        ref = self._embed(original)

        def score(image: Image) -> float:
            cos = self.torch.nn.functional.cosine_similarity(self._embed(image), ref, dim=-1)
            return float(1.0 - cos.flatten()[0])

        return score


ALEXNET_CHECKPOINT = "alexnet-owt-7be5be79.pth"
"""The torchvision AlexNet weights LPIPS builds on (torch hub cache, ``checkpoints/``)."""


class LpipsMetric:
    """LPIPS (AlexNet) distance, both images resized to 256×256 (lower is closer)."""

    info = MetricInfo("lpips", "LPIPS↓", "LPIPS (AlexNet) distance at 256×256, lower is closer", False, False)
    _SIDE = 256

    def __init__(self, device: str) -> None:
        import lpips
        import torch

        self.torch = torch
        self.device = device
        with contextlib.redirect_stdout(sys.stderr):
            self.model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()

    def _tensor(self, image: Image) -> Any:
        import numpy as np
        from PIL import Image as PILImage

        small = image.convert("RGB").resize((self._SIDE, self._SIDE), PILImage.Resampling.BICUBIC)
        arr = np.asarray(small, dtype=np.float32) / 127.5 - 1.0
        return self.torch.from_numpy(arr).permute(2, 0, 1)[None].to(self.device)

    def bind(self, original: Image) -> ImageScore:
        ref = self._tensor(original)

        def score(image: Image) -> float:
            with self.torch.inference_mode():
                return float(self.model(self._tensor(image), ref).flatten()[0])

        return score


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_metrics(device: str | None = None, only: set[str] | None = None) -> tuple[list[ImageMetric], list[str]]:
    """The metrics available here (perceptual first), and one note per metric skipped.

    ``only`` restricts to the given keys (e.g. ``{"pixel", "psnr64"}`` for a fast run).
    """
    from semcodec.pipeline.errors import BackendError

    metrics: list[ImageMetric] = []
    notes: list[str] = []

    def wanted(key: str) -> bool:
        return only is None or key in only

    if wanted("clip"):
        from semcodec.pipeline.similarity import load_metric

        try:
            metrics.append(ClipMetric(load_metric("clip")))
        except BackendError as err:
            notes.append(f"CLIP skipped: {err} (the local Hugging Face cache; SEMCODEC_CLIP_MODEL names another)")
    if wanted("dreamsim"):
        folder = dreamsim_dir()
        missing = [f for f in DREAMSIM_FILES if not (folder / f).exists()]
        if not _have("dreamsim", "torch"):
            notes.append("DreamSim skipped: the dreamsim package is not installed (pip install dreamsim)")
        elif missing:
            notes.append(
                f"DreamSim skipped: its weights are not in {folder} (missing {missing[0]}; set SEMCODEC_DREAMSIM_DIR)"
            )
        else:
            try:
                metrics.append(DreamSimMetric(folder, _device(device)))
            except Exception as err:  # a third-party loader: any failure means "not available"
                notes.append(f"DreamSim skipped: loading failed ({type(err).__name__}: {err})")
    if wanted("lpips"):
        if not _have("lpips", "torch", "torchvision"):
            notes.append("LPIPS skipped: the lpips package (with torchvision) is not installed (pip install lpips)")
        else:
            import torch

            checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_CHECKPOINT
            if not checkpoint.exists():
                notes.append(f"LPIPS skipped: the AlexNet weights are not at {checkpoint}")
            else:
                try:
                    metrics.append(LpipsMetric(_device(device)))
                except Exception as err:  # as above
                    notes.append(f"LPIPS skipped: loading failed ({type(err).__name__}: {err})")
    if wanted("pixel"):
        metrics.append(PixelMetric())
    if wanted("psnr64"):
        metrics.append(Psnr64Metric())
    if not metrics:
        raise ValueError(f"no image metric available among {sorted(only or ())}: {'; '.join(notes)}")
    return metrics, notes


def judge_metric(metrics: list[ImageMetric]) -> Metric:
    """The pipeline metric reflection scores with: the loaded CLIP if any, else the pixel fallback."""
    for metric in metrics:
        if isinstance(metric, ClipMetric):
            clip: Metric = metric.similarity
            return clip
    from semcodec.pipeline.similarity import PixelSimilarity

    return PixelSimilarity()


def primary(metrics: list[ImageMetric]) -> ImageMetric:
    """The metric the plot and the summary lead with: the first perceptual one, else the first."""
    return next((m for m in metrics if not m.info.cheap), metrics[0])
