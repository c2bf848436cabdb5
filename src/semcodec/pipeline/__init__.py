"""The image side of semcodec: describe → code → repaint, with reflection and rate control.

    image ──captioner──▶ description ──semcodec.pack──▶ .sem ──unpack──▶ description ──generator──▶ image

Modules, one job each:

* :mod:`.interfaces` — the ``Captioner`` / ``Generator`` / ``Critic`` protocols;
* :mod:`.backends` — backends by name (``openai``, ``hf``), imported lazily;
* :mod:`.libraries` — transformers and diffusers imported with their own log chatter quieted;
* :mod:`.similarity` — CLIP image similarity, or a labelled pixel fallback;
* :mod:`.ratecontrol` — fitting a description into a bit budget with the real coder;
* :mod:`.reflect` — the reflection loop and its rate–distortion choice;
* :mod:`.painting` — paint at a size the generator supports, resize to the header's;
* :mod:`.image_codec` — image ⇄ ``.sem`` bytes;
* :mod:`.encoding` — the backends of one ``encode`` run, built from its options;
* :mod:`.commands` — ``semcodec encode`` / ``semcodec decode``.

Nothing here imports torch, transformers, diffusers or openai at import time.
"""

from __future__ import annotations

from semcodec.pipeline.errors import BackendError, BackendUnavailableError
from semcodec.pipeline.image_codec import Encoded, decode_image, encode_image
from semcodec.pipeline.interfaces import Captioner, Critic, Generator
from semcodec.pipeline.reflect import Candidate, Judge, ReflectResult, ReflectSettings, reflect

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "Candidate",
    "Captioner",
    "Critic",
    "Encoded",
    "Generator",
    "Judge",
    "ReflectResult",
    "ReflectSettings",
    "decode_image",
    "encode_image",
    "reflect",
]
