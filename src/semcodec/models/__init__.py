"""Probability models: registry ids resolved to a tokenizer, a context and an exact LM."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from semcodec.models.exact import ExactLM
from semcodec.models.tokenizer import TextTokenizer
from semcodec.models.weights import load_weights
from semcodec.registry import ModelSpec, WeightsSource, model_spec


@dataclass(frozen=True)
class LoadedModel:
    """Everything pack and unpack need for one model id."""

    spec: ModelSpec
    lm: ExactLM
    tokenizer: TextTokenizer
    context_ids: tuple[int, ...]
    eos_id: int


@lru_cache(maxsize=4)
def _runtime(source: WeightsSource) -> tuple[ExactLM, TextTokenizer]:
    weights = load_weights(source)
    return ExactLM(weights), TextTokenizer(weights.directory)


@lru_cache(maxsize=8)
def load_model(model_id: int) -> LoadedModel:
    """Load (once per process) the model a header id names; ids sharing weights share memory."""
    spec = model_spec(model_id)
    lm, tokenizer = _runtime(spec.weights)
    context = tuple(tokenizer.encode_context(spec.context))
    return LoadedModel(spec, lm, tokenizer, context, tokenizer.token_id(spec.eos_token))
