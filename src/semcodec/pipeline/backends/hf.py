"""The ``hf`` backend: local models through ``transformers`` and ``diffusers``.

Describing and critiquing use any image-text-to-text model with a chat template
(SmolVLM, Qwen2-VL, LLaVA, ...); generating uses ``AutoPipelineForText2Image`` (SD-Turbo,
SDXL-Turbo, FLUX.1-schnell, ...). Weights come from a local folder or the local Hugging
Face cache only — an encode must never start a multi-gigabyte download by surprise —
unless ``SEMCODEC_HF_DOWNLOAD=1`` (``HF_HUB_OFFLINE=1`` still wins).

Runs on CUDA when present, else CPU. Seeds drive a CPU ``torch.Generator``, which
diffusers supports on every device, so a seed paints the same latents on any machine.
"""

from __future__ import annotations

import inspect
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcodec.pipeline import imaging, prompts
from semcodec.pipeline.backends import BackendOptions, ModelRole
from semcodec.pipeline.errors import BackendError, BackendUnavailableError
from semcodec.pipeline.libraries import import_quietly

if TYPE_CHECKING:
    from PIL.Image import Image

    from semcodec.pipeline.interfaces import StepCallback

DEFAULT_VLM = "HuggingFaceTB/SmolVLM-256M-Instruct"
DEFAULT_PIPELINE = "stabilityai/sd-turbo"

# Sampling settings the distilled models are made for; a header's generator id pins the
# model, and these pin how it is run, so encode and decode paint alike. "side": the side
# of the square area the model was trained at, where its config says otherwise
# (SDXL-Turbo keeps SDXL's 1024² UNet config but was distilled at 512²).
KNOWN_PIPELINES: dict[str, dict[str, float]] = {
    "stabilityai/sd-turbo": {"steps": 1, "guidance": 0.0},
    "stabilityai/sdxl-turbo": {"steps": 1, "guidance": 0.0, "side": 512},
    "black-forest-labs/FLUX.1-schnell": {"steps": 4, "guidance": 0.0},
}


def split_alias(model_id: str) -> tuple[str | None, str]:
    """``ID=FOLDER`` (a registered generator's weights in a folder of the user's, e.g. from
    ``hf download ID --local-dir FOLDER``) → ``(ID, FOLDER)``; anything else → ``(None, model_id)``.

    >>> split_alias("stabilityai/sd-turbo=/models/sd-turbo")
    ('stabilityai/sd-turbo', '/models/sd-turbo')
    >>> split_alias("/models/a=b")
    (None, '/models/a=b')
    """
    name, sep, folder = model_id.partition("=")
    if sep and folder and name in KNOWN_PIPELINES:
        return name, folder
    return None, model_id


def registered_name(model_id: str) -> str | None:
    """The Hub id of a registered pipeline (:data:`KNOWN_PIPELINES`) that ``model_id`` is: the
    id itself, ``ID=FOLDER`` (the user says the folder holds ID, see :func:`split_alias`), or
    a local folder inside the Hugging Face cache's copy of it
    (``.../models--ORG--NAME/snapshots/REV``, also reached through a symlink), as ``hf
    download`` leaves it. Another folder is not guessed at (a fine-tune has the same
    configs): it keeps its pipeline's own defaults and no registry id.

    >>> registered_name("stabilityai/sd-turbo")
    'stabilityai/sd-turbo'
    >>> registered_name("/c/hub/models--stabilityai--sdxl-turbo/snapshots/abc123")
    'stabilityai/sdxl-turbo'
    >>> registered_name("/models/my-finetune") is None
    True
    """
    if model_id in KNOWN_PIPELINES:
        return model_id
    alias = split_alias(model_id)[0]
    if alias is not None:
        return alias
    if not _looks_like_path(model_id):
        return None
    path = Path(model_id).expanduser()
    try:
        candidates = [path, path.resolve()]
    except (OSError, RuntimeError):
        candidates = [path]
    for candidate in candidates:
        parts = candidate.parts
        for i, part in enumerate(parts[:-1]):
            if part.startswith("models--") and parts[i + 1] == "snapshots":
                repo = part.removeprefix("models--").replace("--", "/", 1)
                if repo in KNOWN_PIPELINES:
                    return repo
    return None


def _openai_hint() -> str:
    """When the openai backend is not set up either, say so: the user has two ways forward."""
    if os.environ.get("OPENAI_API_KEY"):
        return ""
    return "; or set OPENAI_API_KEY to use the openai backend"


def _looks_like_path(model_id: str) -> bool:
    """A local folder, as opposed to a Hub id (``org/name``).

    >>> [_looks_like_path(m) for m in ("stabilityai/sd-turbo", "/nonexistent/path", "./m", "~/m", "a/b/c")]
    [False, True, True, True, True]
    """
    return model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1 or "\\" in model_id


def _require(module: str) -> Any:
    """Import one of the hf extra's libraries (their own log chatter quieted), or say how to install them."""
    try:
        return import_quietly(module)
    except ImportError:
        raise BackendUnavailableError(
            f"the hf backend needs {module} (with torch, transformers and diffusers): pip install 'semcodec[hf]'"
            + _openai_hint()
        ) from None


def _version(text: str) -> tuple[int, ...]:
    """``"4.56.1"`` → ``(4, 56, 1)``; pre-release tails are ignored.

    >>> _version("5.24.0"), _version("4.57.0.dev0")
    ((5, 24, 0), (4, 57, 0))
    """
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _torch() -> Any:
    return _require("torch")


def _download_allowed() -> bool:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    return not offline and os.environ.get("SEMCODEC_HF_DOWNLOAD") == "1"


def _missing(model_id: str, err: BaseException) -> BackendUnavailableError:
    """The error for weights that are not on this machine, saying where we looked and what to do."""
    if Path(model_id).expanduser().exists():
        return BackendUnavailableError(f"hf model folder {model_id} cannot be loaded: {str(err).splitlines()[0]}")
    if _looks_like_path(model_id):
        return BackendUnavailableError(f"hf model folder {model_id} does not exist{_openai_hint()}")
    try:
        from huggingface_hub import constants

        cache = constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover
        cache = "the Hugging Face cache"
    where = "hf:/path/to/model"
    if model_id in KNOWN_PIPELINES:  # a copy elsewhere keeps the registry's settings and id
        where += f"; hf:{model_id}=/path/to/folder for a copy of {model_id}"
    return BackendUnavailableError(
        f"hf model {model_id!r} is not in the local Hugging Face cache ({cache}); download it once with "
        f"`hf download {model_id}`, or name a local folder ({where}){_openai_hint()}"
    )


class HFBackend:
    """Loads each model once and serialises inference on it (one model, one device)."""

    name = "hf"
    default_captioner = DEFAULT_VLM
    default_generator = DEFAULT_PIPELINE

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        self.on_event: Callable[[str], None] | None = None
        self._vlms: dict[str, tuple[Any, Any]] = {}
        self._pipes: dict[str, Any] = {}
        # Batch threads share the models; running two forward passes at once on one model
        # only splits the same cores (or GPU) and doubles activation memory.
        self._lock = threading.RLock()

    def device(self) -> str:
        if self.options.device:
            return self.options.device
        return "cuda" if _torch().cuda.is_available() else "cpu"

    def _dtype(self) -> Any:
        torch = _torch()
        if self.device().startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    def _load_kwargs(self, dtype_name: str = "torch_dtype") -> dict[str, Any]:
        kwargs: dict[str, Any] = {"local_files_only": not _download_allowed()}
        if self.device() != "cpu":  # CPU keeps float32: half precision there is slow or unsupported
            kwargs[dtype_name] = self._dtype()
        return kwargs

    def vlm(self, model_id: str) -> tuple[Any, Any]:
        """``(processor, model)`` for an image-text-to-text model, loaded on first use."""
        with self._lock:
            if model_id not in self._vlms:
                _torch()
                transformers = _require("transformers")
                # transformers 4.56 renamed torch_dtype to dtype (the old name still works, noisily)
                new_name = _version(transformers.__version__) >= (4, 56)
                kwargs = self._load_kwargs("dtype" if new_name else "torch_dtype")
                # transformers' classes are only partly typed; Any keeps mypy --strict honest.
                auto_processor: Any = transformers.AutoProcessor
                auto_model: Any = transformers.AutoModelForImageTextToText
                try:
                    processor = auto_processor.from_pretrained(model_id, local_files_only=kwargs["local_files_only"])
                    model = auto_model.from_pretrained(model_id, **kwargs)
                except OSError as err:
                    raise _missing(model_id, err) from None
                except (ValueError, KeyError) as err:
                    raise BackendUnavailableError(
                        f"hf model {model_id!r} is not an image-text-to-text model: {str(err).splitlines()[0]}"
                    ) from None
                self._vlms[model_id] = (processor, model.to(self.device()).eval())
            return self._vlms[model_id]

    def pipeline(self, model_id: str) -> Any:
        """A diffusers text-to-image pipeline, loaded on first use (``ID=FOLDER``: from FOLDER)."""
        key = model_id
        with self._lock:
            if key not in self._pipes:
                model_id = split_alias(model_id)[1]
                _torch()
                diffusers = _require("diffusers")
                auto_pipeline: Any = diffusers.AutoPipelineForText2Image
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", FutureWarning)  # diffusers' torch_dtype → dtype rename
                        # diffusers passes a deprecated argument to huggingface_hub: not the user's business
                        warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument")
                        pipe = auto_pipeline.from_pretrained(model_id, **self._load_kwargs())
                except OSError as err:
                    raise _missing(model_id, err) from None
                except ValueError as err:
                    raise BackendUnavailableError(
                        f"hf model {model_id!r} is not a text-to-image pipeline: {str(err).splitlines()[0]}"
                    ) from None
                pipe = pipe.to(self.device())
                pipe.set_progress_bar_config(disable=True)  # we report steps ourselves
                self._pipes[key] = pipe
            return self._pipes[key]

    def chat(self, model_id: str, text: str, images: list[Image], max_new_tokens: int) -> str:
        """One user turn with ``images`` through the model's own chat template; greedy decoding."""
        torch = _torch()
        with self._lock:
            processor, model = self.vlm(model_id)
            content: list[dict[str, Any]] = [{"type": "image", "image": im} for im in images]
            content.append({"type": "text", "text": text})
            try:
                inputs = processor.apply_chat_template(
                    [{"role": "user", "content": content}],
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=True,
                    return_tensors="pt",
                )
            except (ValueError, TypeError) as err:
                raise BackendError(f"hf model {model_id!r} cannot take a chat with images: {err}") from None
            inputs = inputs.to(model.device, dtype=model.dtype)
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            return str(processor.batch_decode(new_tokens, skip_special_tokens=True)[0])

    def captioner(self, model: str | None = None) -> HFCaptioner:
        self.vlm(model or DEFAULT_VLM)  # load now: a missing model is a start-up error, not a mid-batch one
        return HFCaptioner(self, self.name, model or DEFAULT_VLM)

    def critic(self, model: str | None = None) -> HFCritic:
        self.vlm(model or DEFAULT_VLM)
        return HFCritic(self, self.name, model or DEFAULT_VLM)

    def generator(self, model: str | None = None) -> HFGenerator:
        self.pipeline(model or DEFAULT_PIPELINE)
        return HFGenerator(self, self.name, model or DEFAULT_PIPELINE)


class HFCaptioner(ModelRole[HFBackend]):
    """Describes with a local vision-language model."""

    def describe(self, image: Image, word_budget: int, critique: str | None = None) -> str:
        # ~1.3 tokens a word, with slack for punctuation; the rate controller trims the rest.
        limit = 2 * word_budget + 8
        reply = self.backend.chat(self.model, prompts.describe_prompt(word_budget, critique), [image], limit)
        text = prompts.clean_description(reply)
        if not text:
            raise BackendError(f"hf describe: {self.model} returned an empty description")
        return text


class HFCritic(ModelRole[HFBackend]):
    """Scores a reconstruction with a local vision-language model (two images, one turn)."""

    def critique(self, original: Image, reconstruction: Image) -> tuple[float, str]:
        reply = self.backend.chat(self.model, prompts.CRITIQUE, [original, reconstruction], 96)
        return prompts.parse_critique(reply)


class HFGenerator(ModelRole[HFBackend]):
    """Paints with a local diffusers pipeline at its native area, then resizes to the header's size."""

    honours_seed = True

    @property
    def known(self) -> dict[str, float]:
        """The registry's settings for this model (also for a cached copy in a local folder)."""
        return KNOWN_PIPELINES.get(registered_name(self.model) or "", {})

    def _settings(self, pipe: Any) -> tuple[int, float | None]:
        known = self.known
        opts = self.backend.options
        steps = opts.steps or known.get("steps")
        guidance = opts.guidance if opts.guidance is not None else known.get("guidance")
        if steps is None:
            default = inspect.signature(pipe.__call__).parameters.get("num_inference_steps")
            steps = default.default if default is not None and isinstance(default.default, int) else 50
        return int(steps), guidance

    def paint_size(self, pipe: Any, width: int, height: int) -> tuple[int, int]:
        """What to paint a ``width``×``height`` header at: ``--paint-size`` if given, else
        the header's aspect ratio at the model's native area (:func:`imaging.paint_size`);
        sides are multiples of what every pipeline accepts (SD: 8, FLUX: 2 × its VAE factor,
        so 16). The painting is resized to the header's size afterwards.
        """
        scale = int(getattr(pipe, "vae_scale_factor", 8))
        step = max(16, 2 * scale)
        wanted = self.backend.options.paint_size
        if wanted is not None:
            return imaging.snap(wanted[0], step), imaging.snap(wanted[1], step)
        sample = getattr(pipe, "default_sample_size", None)
        if sample is None and getattr(pipe, "unet", None) is not None:
            sample = pipe.unet.config.sample_size
        native = int(
            self.known.get("side") or (sample if isinstance(sample, int) else 64) * scale
        )
        return imaging.paint_size(width, height, native * native, step)

    def generate(self, text: str, width: int, height: int, seed: int, on_step: StepCallback | None = None) -> Image:
        torch = _torch()
        with self.backend._lock:
            pipe = self.backend.pipeline(self.model)
            steps, guidance = self._settings(pipe)
            native_w, native_h = self.paint_size(pipe, width, height)
            kwargs: dict[str, Any] = {
                "prompt": text,
                "width": native_w,
                "height": native_h,
                "num_inference_steps": steps,
                "generator": torch.Generator("cpu").manual_seed(seed),
            }
            if guidance is not None:
                kwargs["guidance_scale"] = guidance
            if on_step and "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:

                def step_end(_pipe: Any, index: int, _t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                    on_step(index + 1, steps)
                    return tensors

                kwargs["callback_on_step_end"] = step_end
            try:
                with torch.inference_mode():
                    image = pipe(**kwargs).images[0]
            except (RuntimeError, ValueError) as err:
                raise BackendError(f"hf generate with {self.model} failed: {str(err).splitlines()[0]}") from None
        return image.convert("RGB")  # at the paint size: painting.paint resizes to the header's
