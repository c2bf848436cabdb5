"""The backends one ``encode`` run uses, built once from its options.

Shared by ``semcodec encode`` (:mod:`semcodec.pipeline.commands`) and the batch coders of
:mod:`semcodec.data.images`. Importing it loads no model library: the backends and the
similarity metric are imported when :func:`load_encode_backends` runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from semcodec.pipeline.backends import BackendPool, BackendSpec, generator_id_for, parse_spec
from semcodec.pipeline.reflect import ReflectSettings

if TYPE_CHECKING:
    from semcodec.pipeline.interfaces import Captioner, Critic, Generator
    from semcodec.pipeline.similarity import Metric


@dataclass(frozen=True)
class EncodeBackends:
    """What :func:`load_encode_backends` built: the captioner, and what scores repaints (if any)."""

    captioner: Captioner
    generator: Generator | None
    """None when the settings never paint (no reflection, one seed)."""
    critic: Critic | None
    metric: Metric | None
    judge_mode: str
    """``"metric"`` or ``"critic"``: what a :class:`~semcodec.pipeline.reflect.Judge` scores with."""
    generator_id: int | None
    """The header's generator id; None when the generator has none in the registry."""
    generator_name: str
    """``backend:model`` of the generator."""


def default_captioner() -> str:
    """``SEMCODEC_CAPTIONER``, else ``openai`` when ``OPENAI_API_KEY`` is set, else ``hf``."""
    return os.environ.get("SEMCODEC_CAPTIONER") or ("openai" if os.environ.get("OPENAI_API_KEY") else "hf")


def scoring(kind: str) -> tuple[Metric, str]:
    """The metric and the judge mode for ``--score`` (``auto``, ``critic``, ``clip``, ``pixel``)."""
    from semcodec.pipeline.similarity import load_metric

    if kind not in ("auto", "critic"):
        return load_metric(kind), "metric"
    metric = load_metric("auto")
    if kind == "critic":
        return metric, "critic"
    # auto: a real image metric when there is one; the critic beats the pixel fallback.
    return metric, ("critic" if metric.is_fallback else "metric")


def _silent(message: str) -> None:
    pass


def load_encode_backends(
    pool: BackendPool,
    settings: ReflectSettings,
    *,
    captioner: str | None,
    generator: str | None,
    critic: str | None,
    score: str,
    note: Callable[[str], None] = _silent,
) -> EncodeBackends:
    """The backends of ``semcodec encode``'s ``--captioner``, ``--generator``, ``--critic`` and ``--score``.

    ``None`` picks the default: the captioner of :func:`default_captioner`, the generator of
    the captioner's backend, the captioner as critic. The generator, metric and critic are
    loaded only when ``settings`` paint; the critic only when it judges or reflection runs.
    ``note`` hears what is loaded, in order.
    """
    cap_spec = parse_spec(captioner or default_captioner())
    gen_spec = parse_spec(generator or cap_spec.backend)
    gen_backend = pool.get(gen_spec.backend)
    gen_id = generator_id_for(gen_spec, gen_backend.default_generator)
    gen_name = f"{gen_spec.backend}:{gen_spec.model or gen_backend.default_generator}"
    if gen_id is None:
        note(
            f"{gen_name} has no generator id in the registry: the header leaves the generator to the "
            f"decoder (decode with --generator {gen_name})"
        )

    note(f"loading captioner {cap_spec}")
    loaded_captioner = pool.captioner(cap_spec)
    loaded_generator: Generator | None = None
    loaded_critic: Critic | None = None
    metric: Metric | None = None
    judge_mode = "metric"
    if settings.paints:
        note(f"loading generator {gen_name}")
        loaded_generator = pool.generator(gen_spec)
        if settings.seeds > 1 and not loaded_generator.honours_seed:
            note(f"{loaded_generator.name} ignores seeds: --seeds {settings.seeds} tries one")
        metric, judge_mode = scoring(score)
        if judge_mode == "critic" or settings.reflect > 0:
            critic_spec: BackendSpec = parse_spec(critic) if critic else cap_spec
            note(f"loading critic {critic_spec}")
            loaded_critic = pool.critic(critic_spec)
        note(f"scoring with {metric.name if judge_mode == 'metric' else 'the critic'}")
    return EncodeBackends(
        loaded_captioner, loaded_generator, loaded_critic, metric, judge_mode, gen_id, gen_name
    )
