"""The ``openai`` backend through the REAL ``openai`` client against a local scripted server.

The server (tests/pipeline_fixtures/openai_server.py) listens on 127.0.0.1 only and
answers /v1/chat/completions and /v1/images/generations from per-test scripts: good
replies, 429s with Retry-After, 500s, slow replies that trip the client's timeout,
malformed JSON and wrong-shaped JSON.
"""

from __future__ import annotations

import base64
import io
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("openai")
PIL = pytest.importorskip("PIL.Image")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_fixtures import openai_server as srv  # noqa: E402
from semcodec.container import Header  # noqa: E402
from semcodec.pipeline.backends import BackendOptions  # noqa: E402
from semcodec.pipeline.backends.openai_api import OpenAIBackend  # noqa: E402
from semcodec.pipeline.errors import BackendError, BackendUnavailableError  # noqa: E402
from semcodec.pipeline.painting import paint  # noqa: E402

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[srv.OpenAIStub]:
    yield from _stub(monkeypatch)


def _stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[srv.OpenAIStub]:
    server = srv.start()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    try:
        yield server
    finally:
        srv.stop(server)


def backend(**options: object) -> OpenAIBackend:
    defaults: dict[str, object] = {"timeout": 2.0, "retries": 3, "backoff": 0.01}
    defaults.update(options)
    return OpenAIBackend(BackendOptions(**defaults))  # type: ignore[arg-type]


def photo() -> object:
    return PIL.new("RGB", (96, 64), (30, 120, 200))


def test_describe_sends_the_image_and_the_key(stub: srv.OpenAIStub) -> None:
    text = backend().captioner("gpt-4.1").describe(photo(), 12)
    assert text == "A small red cat sits on a green lawn under a blue sky."
    (call,) = stub.calls(srv.CHAT)
    assert call.headers["authorization"] == f"Bearer {KEY}"
    assert call.body["model"] == "gpt-4.1"
    parts = call.body["messages"][0]["content"]
    assert "at most 12 words" in parts[0]["text"]
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    sent = PIL.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (96, 64)


def test_revision_sends_the_critique(stub: srv.OpenAIStub) -> None:
    backend().captioner().describe(photo(), 20, 'Its description was: "A cat."\nDifferences: it is a dog')
    (call,) = stub.calls(srv.CHAT)
    assert call.body["model"] == "gpt-4o"
    assert "it is a dog" in call.body["messages"][0]["content"][0]["text"]


def test_critique_sends_both_images_and_parses_the_score(stub: srv.OpenAIStub) -> None:
    score, critique = backend().critic().critique(photo(), photo())
    assert score == 0.6 and critique == "The sky should be darker and the cat larger."
    (call,) = stub.calls(srv.CHAT)
    assert srv.n_images(call.body) == 2


@pytest.mark.parametrize(
    ("model", "width", "height", "size", "response_format"),
    [
        ("dall-e-3", 1024, 768, "1792x1024", "b64_json"),
        ("dall-e-3", 512, 512, "1024x1024", "b64_json"),
        ("gpt-image-1", 768, 1024, "1024x1536", None),
    ],
)
def test_generate_asks_an_allowed_size_and_paint_returns_the_header_size(
    stub: srv.OpenAIStub, model: str, width: int, height: int, size: str, response_format: str | None
) -> None:
    generator = backend().generator(model)
    assert not generator.honours_seed
    steps: list[tuple[int, int]] = []
    header = Header(width=width, height=height)
    image = paint(generator, "a red square", header, on_step=lambda d, t: steps.append((d, t)))
    assert image.size == (width, height) and image.mode == "RGB"
    assert image.getpixel((width // 2, height // 2)) == (200, 30, 30)
    (call,) = stub.calls(srv.IMAGES)
    assert call.body["model"] == model and call.body["size"] == size and call.body["prompt"] == "a red square"
    assert call.body.get("response_format") == response_format
    assert steps == [(1, 1)]


def test_429_is_retried_after_the_servers_hint(stub: srv.OpenAIStub) -> None:
    stub.push(
        srv.CHAT,
        srv.Reply(429, {"error": {"message": "Rate limit reached"}}, headers={"retry-after": "0.05"}),
    )
    events: list[str] = []
    b = backend()
    b.on_event = events.append
    assert b.captioner().describe(photo(), 10).startswith("A small red cat")
    assert len(stub.calls(srv.CHAT)) == 2
    assert events == ["openai describe: HTTP 429: Rate limit reached; retry 1/3 in 0.1s"]


def test_5xx_exhausts_retries_into_one_line_without_the_key(stub: srv.OpenAIStub) -> None:
    echo = {"error": {"message": f"upstream failed for key {KEY}\nstack trace here"}}
    stub.push(srv.IMAGES, *[srv.Reply(500, echo)] * 3)
    with pytest.raises(BackendError) as info:
        backend(retries=2).generator().generate("x", 64, 64, 0)
    message = str(info.value)
    assert len(stub.calls(srv.IMAGES)) == 3
    assert message.startswith("openai generate failed after 3 attempts: HTTP 500: upstream failed for key")
    assert KEY not in message and "0123456789abcdef" not in message and "\n" not in message


def test_timeouts_are_retried(stub: srv.OpenAIStub) -> None:
    stub.push(srv.CHAT, srv.Reply(body=srv.chat_body("too late"), delay=1.0))
    text = backend(timeout=0.3).captioner().describe(photo(), 10)
    assert text.startswith("A small red cat")
    assert len(stub.calls(srv.CHAT)) == 2


def test_persistent_timeouts_fail_clearly(stub: srv.OpenAIStub) -> None:
    stub.push(srv.CHAT, *[srv.Reply(body=srv.chat_body("late"), delay=0.6)] * 2)
    with pytest.raises(BackendError, match=r"^openai describe failed after 2 attempts: timed out after 0.2s$"):
        backend(timeout=0.2, retries=1).captioner().describe(photo(), 10)


def test_malformed_json_is_retried_then_reported(stub: srv.OpenAIStub) -> None:
    stub.push(srv.CHAT, srv.Reply(200, "{not json"))
    assert backend().captioner().describe(photo(), 10).startswith("A small red cat")
    stub.push(srv.CHAT, *[srv.Reply(200, {"object": "chat.completion", "choices": []})] * 2)
    with pytest.raises(BackendError, match="malformed reply: no choices in the chat reply"):
        backend(retries=1).captioner().describe(photo(), 10)
    stub.push(srv.IMAGES, *[srv.Reply(200, {"created": 0, "data": [{"url": "http://x/y.png"}]})] * 2)
    with pytest.raises(BackendError, match="no b64_json image"):
        backend(retries=1).generator().generate("x", 64, 64, 0)
    stub.push(srv.IMAGES, *[srv.Reply(200, srv.images_body("bm90IGFuIGltYWdl"))] * 2)
    with pytest.raises(BackendError, match="not a readable image"):
        backend(retries=1).generator().generate("x", 64, 64, 0)


def test_auth_errors_are_final_and_mean_unavailable(stub: srv.OpenAIStub) -> None:
    stub.push(srv.CHAT, srv.Reply(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}))
    with pytest.raises(BackendUnavailableError) as info:
        backend().captioner().describe(photo(), 10)
    assert len(stub.calls(srv.CHAT)) == 1
    assert "HTTP 401" in str(info.value) and KEY not in str(info.value)


def test_missing_key_and_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendUnavailableError, match="needs OPENAI_API_KEY"):
        backend().captioner()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # discard port: nothing listens
    with pytest.raises(BackendUnavailableError, match=r"after 2 attempts: cannot reach http://127.0.0.1:9/v1"):
        backend(retries=1).captioner().describe(photo(), 10)


def test_requests_in_flight_are_bounded(stub: srv.OpenAIStub) -> None:
    stub.defaults[srv.CHAT] = lambda body: srv.Reply(body=srv.chat_body("A cat."), delay=0.15)
    captioner = backend(concurrency=2).captioner()
    threads = [threading.Thread(target=captioner.describe, args=(photo(), 5)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stub.calls(srv.CHAT)) == 5
    assert stub.max_in_flight == 2
