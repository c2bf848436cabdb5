"""Every request of the ``openai`` backend is bounded and every message redacted (issue #20, item 7).

Hostile OpenAI-compatible servers, each a thread on 127.0.0.1 speaking raw HTTP/1.1 and
giving up on its own after a few seconds: a body without end, a server that drips one
byte at a time (in its headers or in its body), and a 401 that echoes the request's
``Authorization`` header (``Basic`` base64 of the URL's ``user:password``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("openai")
PIL = pytest.importorskip("PIL.Image")

from semcodec.pipeline.backends import BackendOptions  # noqa: E402
from semcodec.pipeline.backends.openai_api import OpenAIBackend  # noqa: E402
from semcodec.pipeline.errors import BackendError, redact  # noqa: E402

KEY = "sk-bounds-5f3a9c1e7b2d4068"
SERVER_LIFETIME = 8.0  # no server thread outlives this, whatever the client does


def _read_request(conn: socket.socket) -> bytes:
    """The request's head and body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head


@contextlib.contextmanager
def raw_server(handle: Callable[[socket.socket, bytes, float], None]) -> Iterator[int]:
    """A server calling ``handle(conn, request_head, stop_at)`` per connection; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop_at = time.monotonic() + SERVER_LIFETIME

    def serve_one(conn: socket.socket) -> None:
        conn.settimeout(SERVER_LIFETIME)
        with conn, contextlib.suppress(OSError):  # OSError: the client hung up, as the bounds want
            handle(conn, _read_request(conn), stop_at)

    def serve() -> None:
        while time.monotonic() < stop_at:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop_at = 0.0
        thread.join(1.0)
        listener.close()


def _backend(monkeypatch: pytest.MonkeyPatch, base_url: str, **options: object) -> OpenAIBackend:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    values: dict[str, object] = {"timeout": 1.0, "retries": 0, "backoff": 0.01}
    values.update(options)
    return OpenAIBackend(BackendOptions(**values))  # type: ignore[arg-type]


def _photo() -> object:
    return PIL.new("RGB", (32, 32), (10, 20, 30))


def endless_body(conn: socket.socket, head: bytes, stop_at: float) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.sendall(b"1\r\n{\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    while time.monotonic() < stop_at:
        conn.sendall(chunk)


def test_an_endless_body_stops_at_the_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    with raw_server(endless_body) as port:
        b = _backend(monkeypatch, f"http://127.0.0.1:{port}/v1", timeout=6.0, retries=2,
                     max_response_bytes=2 << 20)
        tracemalloc.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(BackendError) as info:
                b.captioner().describe(_photo(), 10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        elapsed = time.monotonic() - t0
    # Final at once (not retried: a bigger reply will not come smaller), well before the deadline.
    assert str(info.value) == f"openai describe failed after 1 attempt: the reply exceeded {2 << 20} bytes"
    assert elapsed < 4.0
    assert peak < 16 << 20


def drip(head_first: bool) -> Callable[[socket.socket, bytes, float], None]:
    def handle(conn: socket.socket, head: bytes, stop_at: float) -> None:
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "A cat."}}]}).encode()
        header = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        if head_first:
            conn.sendall(header)
            stream = body
        else:
            stream = header + body
        for byte in stream:
            if time.monotonic() > stop_at:
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.2)  # each read well within the 1 s timeout

    return handle


@pytest.mark.parametrize("head_first", [True, False], ids=["slow-body", "slow-headers"])
def test_a_dripping_server_meets_the_whole_request_deadline(monkeypatch: pytest.MonkeyPatch, head_first: bool) -> None:
    with raw_server(drip(head_first)) as port:
        b = _backend(monkeypatch, f"http://127.0.0.1:{port}/v1", timeout=1.0, retries=1)
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"^openai describe failed after 2 attempts: timed out after 1s$"):
            b.captioner().describe(_photo(), 10)
        elapsed = time.monotonic() - t0
    # Two attempts of one second each (plus a 0.01 s backoff); the drip alone would take 20 s.
    assert 1.9 < elapsed < 3.0


def echo_auth(conn: socket.socket, head: bytes, stop_at: float) -> None:
    lines = head.decode("latin-1").split("\r\n")
    auth = next(line for line in lines if line.lower().startswith("authorization:"))
    token = auth.split()[-1]
    message = f"bad credentials. You sent {auth} (decoded: {base64.b64decode(token).decode()}); raw {token}; key {KEY}"
    body = json.dumps({"error": {"message": message}}).encode()
    conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body))


def test_a_401_echoing_basic_credentials_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = "alice", "hunter2-secret"
    with raw_server(echo_auth) as port:
        b = _backend(monkeypatch, f"http://{user}:{password}@127.0.0.1:{port}/v1")
        with pytest.raises(BackendError) as info:
            b.captioner().describe(_photo(), 10)
    message = str(info.value)
    assert message.startswith("openai describe failed after 1 attempt: HTTP 401: bad credentials. You sent")
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    for secret in (password, f"{user}:{password}", pair, pair.rstrip("="), KEY, "5f3a9c1e7b2d4068"):
        assert secret not in message, secret
    assert "Basic ***" in message


@pytest.mark.parametrize("prefix", ["", "x", "xy"])
def test_redact_finds_a_secrets_base64_inside_longer_base64(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://bob:s3cr3t-pw@llm.example/v1")
    for secret in (KEY, "bob:s3cr3t-pw", "s3cr3t-pw"):
        blob = base64.b64encode(f"{prefix}Authorization: {secret} trailing".encode()).decode()
        out = redact(f"body {blob} end")
        # Whatever survives cannot be decoded back to the secret.
        for word in out.split():
            padded = word.replace("***", "") + "=" * (-len(word.replace("***", "")) % 4)
            with contextlib.suppress(ValueError):
                assert secret.encode() not in base64.b64decode(padded)
        assert "***" in out
    assert redact("Bearer sk-abcdef0123 and bearer%20Zm9vOmJhcg==") == "Bearer *** and bearer ***"
