"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for tests (no internet needed).

Tests push replies onto per-endpoint queues; when a queue is empty the server answers
with a plausible default (a description, a critique, or a small PNG). Every request is
recorded so tests can assert what the real ``openai`` client sent.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

CHAT = "/v1/chat/completions"
IMAGES = "/v1/images/generations"


@dataclass
class Reply:
    """One scripted answer: a status, a body (dict → JSON, str/bytes → raw), an optional delay."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


def png_b64(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30)) -> str:
    """A solid-colour PNG, base64-encoded as the images API returns it."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def chat_body(content: str, model: str = "gpt-4o") -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def images_body(b64: str) -> dict[str, Any]:
    return {"created": 0, "data": [{"b64_json": b64}]}


def n_images(request_body: Any) -> int:
    """How many image parts a chat request carries (1 = describe, 2 = critique)."""
    count = 0
    for message in request_body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if part.get("type") == "image_url")
    return count


def default_chat(request_body: Any) -> Reply:
    if n_images(request_body) >= 2:
        return Reply(body=chat_body("SCORE: 6\nCRITIQUE: The sky should be darker and the cat larger."))
    return Reply(body=chat_body("A small red cat sits on a green lawn under a blue sky."))


def default_images(request_body: Any) -> Reply:
    return Reply(body=images_body(png_b64((64, 64))))


class OpenAIStub:
    """The server plus its scripts and its log. Use :func:`running` to start and stop it."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Reply]] = {CHAT: deque(), IMAGES: deque()}
        self.defaults: dict[str, Callable[[Any], Reply]] = {CHAT: default_chat, IMAGES: default_images}
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def push(self, path: str, *replies: Reply) -> None:
        with self.lock:
            self.queues[path].extend(replies)

    def calls(self, path: str) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def _next(self, path: str, body: Any, headers: dict[str, str]) -> Reply:
        with self.lock:
            self.requests.append(Recorded(path, headers, body))
            queue = self.queues.get(path)
            if queue:
                return queue.popleft()
        default = self.defaults.get(path)
        return default(body) if default else Reply(404, {"error": {"message": "no such endpoint"}})


def _handler(stub: OpenAIStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            with stub.lock:
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            reply = stub._next(self.path, body, {k.lower(): v for k, v in self.headers.items()})
            try:
                if reply.delay:
                    time.sleep(reply.delay)
            finally:
                with stub.lock:
                    stub.in_flight -= 1
            if isinstance(reply.body, (dict, list)):
                data = json.dumps(reply.body).encode()
            elif isinstance(reply.body, str):
                data = reply.body.encode()
            else:
                data = reply.body or b""
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and hung up: expected in timeout tests

    return Handler


def start() -> OpenAIStub:
    stub = OpenAIStub()
    stub.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    stub.server.daemon_threads = True
    threading.Thread(
        target=stub.server.serve_forever, kwargs={"poll_interval": 0.02}, name="openai-stub", daemon=True
    ).start()
    return stub


def stop(stub: OpenAIStub) -> None:
    if stub.server is not None:
        stub.server.shutdown()
        stub.server.server_close()


def running() -> Iterator[OpenAIStub]:
    """Generator for a pytest fixture: ``yield from running()``."""
    stub = start()
    try:
        yield stub
    finally:
        stop(stub)


def serving(monkeypatch: pytest.MonkeyPatch, key: str, retries: int) -> Iterator[OpenAIStub]:
    """Generator for a pytest fixture (``yield from serving(...)``): a running stub that the
    ``openai`` backend reaches through the environment (``OPENAI_API_KEY=key``, its base URL),
    a 0.01 s backoff, ``retries`` retries, and no captioner or generator chosen by the environment.
    """
    stub = start()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("SEMCODEC_BACKOFF", "0.01")
    monkeypatch.setenv("SEMCODEC_RETRIES", str(retries))
    for name in ("SEMCODEC_CAPTIONER", "SEMCODEC_GENERATOR"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield stub
    finally:
        stop(stub)
