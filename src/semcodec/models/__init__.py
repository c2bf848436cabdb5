"""Probability models: registry ids resolved to a tokenizer, a context and an exact LM."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from threadpoolctl import threadpool_limits

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


@contextmanager
def blas_threads() -> Iterator[None]:
    """BLAS threads for model work: ``$SEMCODEC_THREADS``, default 1.

    The results are the same for any count (that is the point of the exact runtime), so
    this is only about speed: one token at a time is a chain of small matrix products a
    second thread barely helps, and on a busy machine OpenBLAS threads spin-wait each other
    to a crawl (measured: a pack 0.47 s with 1 thread, 8.3 s with 2 under load).
    """
    threads = int(os.environ.get("SEMCODEC_THREADS", "1"))
    with threadpool_limits(limits=max(1, threads), user_api="blas"):
        yield
