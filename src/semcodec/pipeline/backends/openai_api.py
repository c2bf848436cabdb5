"""The ``openai`` backend: chat completions with image input, and the images API.

Works with OpenAI and any OpenAI-compatible server: the official client reads
``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``. The client's own retries are switched off so
one policy (:mod:`semcodec.pipeline.retry`) governs every call, with backoff, a cap, the
server's ``Retry-After`` and a bound on requests in flight across batch threads. Each
request has a deadline (``timeout``, for the whole request, not per read) and a cap on
the reply's size (:mod:`semcodec.pipeline.backends.bounded_http`); every message is
redacted (:func:`semcodec.pipeline.errors.redact`).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from semcodec.pipeline import imaging, prompts
from semcodec.pipeline.backends import BackendOptions, ModelRole
from semcodec.pipeline.backends.bounded_http import ResponseTooLargeError, bound_client, bounded, find_cause
from semcodec.pipeline.errors import BackendError, BackendUnavailableError, redact
from semcodec.pipeline.retry import RetryPolicy, call_with_retries

if TYPE_CHECKING:
    from PIL.Image import Image

    from semcodec.pipeline.interfaces import StepCallback

T = TypeVar("T")

DEFAULT_CHAT_MODEL = "gpt-4o"
DEFAULT_IMAGE_MODEL = "dall-e-3"

# Sizes each images model accepts; the request uses the one closest in aspect ratio, and
# the result is resized to the header's exact size (the source image's).
_SIZES: dict[str, tuple[tuple[int, int], ...]] = {
    "dall-e-3": ((1024, 1024), (1792, 1024), (1024, 1792)),
    "gpt-image": ((1024, 1024), (1536, 1024), (1024, 1536)),
    "dall-e-2": ((256, 256), (512, 512), (1024, 1024)),
}


_UNKNOWN_MODEL_AREA = 1024 * 1024


class MalformedReplyError(Exception):
    """The server answered 2xx but not with what the API promises."""


def request_size(model: str, width: int, height: int) -> str:
    """The ``size`` to ask ``model`` for, given the header's ``width``×``height``.

    >>> request_size("dall-e-3", 1920, 1080)
    '1792x1024'
    >>> request_size("gpt-image-1", 512, 512)
    '1024x1024'
    >>> request_size("dall-e-2", 300, 200)
    '512x512'
    >>> request_size("my-local-model", 4000, 3000)
    '1152x896'
    """
    allowed = next((sizes for prefix, sizes in _SIZES.items() if model.startswith(prefix)), None)
    if allowed is None:
        # An OpenAI-compatible server with its own (diffusion) models: the header's aspect
        # ratio at about a megapixel in multiples of 64, which every such model accepts.
        w, h = imaging.paint_size(width, height, _UNKNOWN_MODEL_AREA, 64)
        return f"{w}x{h}"
    want = math.log(width / height)

    def rank(size: tuple[int, int]) -> tuple[float, int, int]:
        w, h = size
        too_small = int(w < width or h < height)  # prefer not to upscale
        return (round(abs(math.log(w / h) - want), 6), too_small, w * h)

    w, h = min(allowed, key=rank)
    return f"{w}x{h}"


def _retryable(err: BaseException) -> bool:
    import openai

    if isinstance(err, openai.APIStatusError):
        return err.status_code in (408, 409, 429) or err.status_code >= 500
    return isinstance(err, (openai.APITimeoutError, openai.APIConnectionError, MalformedReplyError))


def _retry_after(err: BaseException) -> float | None:
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) / scale
            except ValueError:
                return None
    return None


def _status_detail(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(err, "message", err))


class OpenAIBackend:
    """Factory for OpenAI captioners, critics and generators sharing one client."""

    name = "openai"
    default_captioner = DEFAULT_CHAT_MODEL
    default_generator = DEFAULT_IMAGE_MODEL

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        self.policy = RetryPolicy(retries=self.options.retries, base_delay=self.options.backoff)
        self.on_event: Callable[[str], None] | None = None
        self._slots = threading.BoundedSemaphore(max(1, self.options.concurrency))
        self._client: Any = None
        self._client_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------

    def client(self) -> Any:
        """The ``openai.OpenAI`` client, created on first use (checks package and key)."""
        with self._client_lock:
            if self._client is None:
                try:
                    import openai
                except ImportError:
                    raise BackendUnavailableError(
                        "the openai backend needs the 'openai' package: pip install 'semcodec[openai]'"
                    ) from None
                if not os.environ.get("OPENAI_API_KEY"):
                    raise BackendUnavailableError(
                        "the openai backend needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server)"
                    )
                try:
                    http = bound_client(openai.DefaultHttpxClient(timeout=self.options.timeout))
                except RuntimeError as err:
                    raise BackendUnavailableError(f"the openai backend: {err} (an unknown httpx version)") from None
                self._client = openai.OpenAI(timeout=self.options.timeout, max_retries=0, http_client=http)
            return self._client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one API call under the retry policy and the concurrency bound."""
        import openai

        self.client()  # fail fast on a missing package or key, outside the retry loop
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            with self._slots, bounded(self.options.timeout, self.options.max_response_bytes):
                try:
                    return fn()
                except ValueError as err:  # the client's JSON decoding of a 2xx body
                    raise MalformedReplyError(f"invalid JSON ({err})") from err
                except Exception as err:  # the client wraps it in a connection error
                    too_large = find_cause(err, ResponseTooLargeError)
                    if too_large is not None:
                        raise too_large from None
                    raise

        def note(n: int, err: BaseException, wait: float) -> None:
            if self.on_event:
                self.on_event(f"openai {what}: {self._short(err)}; retry {n}/{self.policy.retries} in {wait:.1f}s")

        try:
            return call_with_retries(attempt, self.policy, retryable=_retryable, hint=_retry_after, on_retry=note)
        except ResponseTooLargeError as err:
            raise BackendError(self._final(what, attempts, str(err))) from None
        except openai.APIConnectionError as err:
            cls = BackendError if isinstance(err, openai.APITimeoutError) else BackendUnavailableError
            raise cls(self._final(what, attempts, self._short(err))) from None
        except (openai.APIStatusError, MalformedReplyError) as err:
            cls = (
                BackendUnavailableError
                if isinstance(err, openai.APIStatusError) and err.status_code in (401, 403, 404)
                else BackendError
            )
            raise cls(self._final(what, attempts, self._short(err))) from None
        except openai.OpenAIError as err:
            raise BackendError(self._final(what, attempts, self._short(err))) from None

    def _short(self, err: BaseException) -> str:
        """One redacted line about ``err`` (servers may echo the key in error bodies)."""
        import openai

        if isinstance(err, openai.APITimeoutError):
            text = f"timed out after {self.options.timeout:g}s"
        elif isinstance(err, openai.APIConnectionError):
            text = f"cannot reach {self.client().base_url}"
        elif isinstance(err, openai.APIStatusError):
            text = f"HTTP {err.status_code}: {_status_detail(err)[:200]}"
        elif isinstance(err, MalformedReplyError):
            text = f"malformed reply: {err}"[:240]
        else:
            text = f"{type(err).__name__}: {err}"[:240]
        return redact(text)

    def _final(self, what: str, attempts: int, detail: str) -> str:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        return redact(f"openai {what} failed after {tries}: {detail}")

    def chat(self, model: str, what: str, text: str, images: list[Image]) -> str:
        """One user turn with ``images``; returns the assistant's text."""
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        content += [{"type": "image_url", "image_url": {"url": imaging.to_data_url(im)}} for im in images]

        def call() -> str:
            reply = self.client().chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
            choices = getattr(reply, "choices", None)
            if not choices:
                raise MalformedReplyError("no choices in the chat reply")
            message = choices[0].message
            if message is None:
                raise MalformedReplyError("no message in the chat reply")
            if message.content is None:
                refusal = getattr(message, "refusal", None)
                if refusal:
                    raise BackendError(redact(f"openai {what}: the model refused: {refusal}"))
                raise MalformedReplyError("empty message content")
            return str(message.content)

        return self._call(what, call)

    def images(self, model: str, text: str, width: int, height: int) -> Image:
        """One image from the images API for a ``width``×``height`` header, at the size
        :func:`request_size` (or ``--paint-size``) asks for; the caller resizes it."""
        paint = self.options.paint_size
        kwargs: dict[str, Any] = {
            "model": model,
            "prompt": text,
            "n": 1,
            "size": f"{paint[0]}x{paint[1]}" if paint else request_size(model, width, height),
        }
        if model.startswith("dall-e"):
            kwargs["response_format"] = "b64_json"  # gpt-image-* always returns base64 and rejects this

        def call() -> Image:
            reply = self.client().images.generate(**kwargs)
            data = getattr(reply, "data", None)
            if not data or not getattr(data[0], "b64_json", None):
                raise MalformedReplyError("no b64_json image in the images reply")
            try:
                return imaging.from_b64(data[0].b64_json)
            except BackendError as err:
                raise MalformedReplyError(str(err)) from None

        return self._call("generate", call)

    # -- the three roles ------------------------------------------------------------

    def captioner(self, model: str | None = None) -> OpenAICaptioner:
        self.client()
        return OpenAICaptioner(self, self.name, model or DEFAULT_CHAT_MODEL)

    def critic(self, model: str | None = None) -> OpenAICritic:
        self.client()
        return OpenAICritic(self, self.name, model or DEFAULT_CHAT_MODEL)

    def generator(self, model: str | None = None) -> OpenAIGenerator:
        self.client()
        return OpenAIGenerator(self, self.name, model or DEFAULT_IMAGE_MODEL)


class OpenAICaptioner(ModelRole[OpenAIBackend]):
    """Describes images with a chat model that accepts image input."""

    def describe(self, image: Image, word_budget: int, critique: str | None = None) -> str:
        reply = self.backend.chat(self.model, "describe", prompts.describe_prompt(word_budget, critique), [image])
        text = prompts.clean_description(reply)
        if not text:
            raise BackendError(f"openai describe: {self.model} returned an empty description")
        return text


class OpenAICritic(ModelRole[OpenAIBackend]):
    """Compares original and reconstruction with a chat model (two images, one turn)."""

    def critique(self, original: Image, reconstruction: Image) -> tuple[float, str]:
        reply = self.backend.chat(self.model, "critique", prompts.CRITIQUE, [original, reconstruction])
        return prompts.parse_critique(reply)


class OpenAIGenerator(ModelRole[OpenAIBackend]):
    """Paints with the images API. Seeds are not part of that API, so they are ignored."""

    honours_seed = False

    def generate(self, text: str, width: int, height: int, seed: int, on_step: StepCallback | None = None) -> Image:
        image = self.backend.images(self.model, text, width, height)
        if on_step:
            on_step(1, 1)
        return image
