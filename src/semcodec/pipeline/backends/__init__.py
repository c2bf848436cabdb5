"""Backends by name, loaded lazily.

A name on the command line is ``BACKEND`` or ``BACKEND:MODEL`` (``openai:gpt-4.1``,
``hf:HuggingFaceTB/SmolVLM-256M-Instruct``, ``hf:/path/to/local/model``). The backend
module is imported only when it is asked for, so importing semcodec (or running
pack/unpack) never pulls in torch, transformers, diffusers or openai.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from semcodec.errors import SemInputError
from semcodec.registry import GENERATORS

if TYPE_CHECKING:
    from semcodec.pipeline.interfaces import Captioner, Critic, Generator

BACKENDS: dict[str, str] = {
    "openai": "semcodec.pipeline.backends.openai_api:OpenAIBackend",
    "hf": "semcodec.pipeline.backends.hf:HFBackend",
}
"""Backend name → ``module:class``; the class is instantiated with :class:`BackendOptions`."""


@dataclass(frozen=True)
class BackendOptions:
    """Knobs shared by the backends; each reads the ones it understands.

    Attributes:
        timeout: seconds per API request, the whole request: connecting, sending, waiting and
            reading the reply (openai).
        max_response_bytes: most bytes one reply may have, headers included (openai).
        retries: extra attempts on 429 / 5xx / timeouts / malformed replies (openai).
        backoff: first retry wait in seconds, doubled each time (openai).
        concurrency: most API requests in flight at once, across threads (openai).
        device: ``cuda``, ``cpu`` or None for CUDA-if-present (hf).
        steps: diffusion steps, None for the model's default (hf).
        guidance: classifier-free guidance scale, None for the model's default (hf).
        paint_size: ``(width, height)`` to paint at before resizing to the header's size,
            None for the generator's choice from the header's aspect ratio (both backends).
    """

    timeout: float = 120.0
    max_response_bytes: int = 64 << 20
    retries: int = 4
    backoff: float = 1.0
    concurrency: int = 4
    device: str | None = None
    steps: int | None = None
    guidance: float | None = None
    paint_size: tuple[int, int] | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> BackendOptions:
        """Defaults, then ``SEMCODEC_TIMEOUT`` / ``_RETRIES`` / ``_BACKOFF``, then ``overrides``."""
        values: dict[str, object] = {}
        for field, env, kind in (
            ("timeout", "SEMCODEC_TIMEOUT", float),
            ("retries", "SEMCODEC_RETRIES", int),
            ("backoff", "SEMCODEC_BACKOFF", float),
        ):
            raw = os.environ.get(env)
            if raw:
                try:
                    values[field] = kind(raw)
                except ValueError:
                    raise SemInputError(f"{env}={raw!r} is not a number") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


BackendT = TypeVar("BackendT")


class ModelRole(Generic[BackendT]):
    """One role (captioner, critic, generator) played by one model of a backend.

    The backend owns the client or the loaded weights; roles only name the model, so a
    captioner and a critic on the same model share one copy of it.
    """

    def __init__(self, backend: BackendT, backend_name: str, model: str) -> None:
        self.backend = backend
        self.model = model
        self.name = f"{backend_name}:{model}"


class Backend(Protocol):
    """What a backend class offers: factories for the three roles."""

    name: str
    default_captioner: str
    default_generator: str
    on_event: Callable[[str], None] | None
    """Where a backend reports news worth a line on stderr (a retry after a 429, ...)."""

    def captioner(self, model: str | None = None) -> Captioner: ...

    def generator(self, model: str | None = None) -> Generator: ...

    def critic(self, model: str | None = None) -> Critic: ...


@dataclass(frozen=True)
class BackendSpec:
    """A parsed ``BACKEND[:MODEL]`` name."""

    backend: str
    model: str | None = None

    def __str__(self) -> str:
        return f"{self.backend}:{self.model}" if self.model else self.backend


def parse_spec(name: str) -> BackendSpec:
    """Split ``BACKEND[:MODEL]``; the model may itself contain ``:`` or ``/``.

    >>> parse_spec("hf:stabilityai/sd-turbo")
    BackendSpec(backend='hf', model='stabilityai/sd-turbo')
    >>> parse_spec("openai")
    BackendSpec(backend='openai', model=None)
    """
    backend, _, model = name.partition(":")
    if backend not in BACKENDS:
        raise SemInputError(f"unknown backend {backend!r} in {name!r} (known: {', '.join(BACKENDS)})")
    return BackendSpec(backend, model or None)


def load_backend(name: str, options: BackendOptions | None = None) -> Backend:
    """Import and instantiate the backend called ``name`` (``openai`` or ``hf``)."""
    target = BACKENDS.get(name)
    if target is None:
        raise SemInputError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = cls(options or BackendOptions())
    return backend


class BackendPool:
    """Backends instantiated once per run, so a captioner and a critic share one model."""

    def __init__(self, options: BackendOptions | None = None, on_event: Callable[[str], None] | None = None) -> None:
        self.options = options or BackendOptions()
        self.on_event = on_event
        self._loaded: dict[str, Backend] = {}

    def get(self, name: str) -> Backend:
        if name not in self._loaded:
            backend = load_backend(name, self.options)
            backend.on_event = self.on_event
            self._loaded[name] = backend
        return self._loaded[name]

    def captioner(self, spec: BackendSpec) -> Captioner:
        return self.get(spec.backend).captioner(spec.model)

    def critic(self, spec: BackendSpec) -> Critic:
        return self.get(spec.backend).critic(spec.model)

    def generator(self, spec: BackendSpec) -> Generator:
        return self.get(spec.backend).generator(spec.model)


def auto_generator_name() -> str:
    """What generator id 0 ("decoder's choice") means here.

    ``SEMCODEC_GENERATOR`` when set; else OpenAI's default when ``OPENAI_API_KEY`` is set;
    else the local ``hf`` default.
    """
    chosen = os.environ.get("SEMCODEC_GENERATOR")
    if chosen:
        return chosen
    return "openai" if os.environ.get("OPENAI_API_KEY") else "hf"


def generator_spec_for_id(generator_id: int) -> BackendSpec:
    """The backend and model a header's generator id names (id 0 → :func:`auto_generator_name`)."""
    from semcodec.registry import generator_name

    name = generator_name(generator_id)
    return parse_spec(auto_generator_name() if name == "auto" else name)


def generator_id_for(spec: BackendSpec, default_model: str) -> int | None:
    """The registry id of a generator, or None when it has none (e.g. a local folder other
    than a Hugging Face cache's copy of a registered model: see ``hf.registered_name``)."""
    model = spec.model or default_model
    if spec.backend == "hf":
        from semcodec.pipeline.backends.hf import registered_name

        model = registered_name(model) or model
    full = f"{spec.backend}:{model}"
    for gid, name in GENERATORS.items():
        if name == full:
            return gid
    return None
