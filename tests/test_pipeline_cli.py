"""``semcodec encode`` / ``decode``: conventions, exit codes, batches, and a real round trip.

Backends are the real ``openai`` backend talking to the local scripted server. Most tests
swap the LM coder for an honest stand-in (real header, UTF-8 payload) so they run in
milliseconds; the round trip at the end uses the real ``semcodec.pack``/``unpack``
through the real top-level CLI.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("openai")
PIL = pytest.importorskip("PIL.Image")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_fixtures import cli  # noqa: E402
from pipeline_fixtures import openai_server as srv  # noqa: E402
from pipeline_fixtures.fakes import fake_pack, fake_unpack  # noqa: E402
from semcodec.cli import main  # noqa: E402
from semcodec.container import Header, decode_header  # noqa: E402
from semcodec.pipeline import image_codec  # noqa: E402
from semcodec.pipeline.prompts import DESCRIBER_MODEL_ID  # noqa: E402

KEY = "sk-cli-test-abcdef0123456789"
LONG = (
    "A small red cat with white paws sits on a green lawn under a bright blue sky, next to an old "
    "wooden fence, with yellow flowers and a distant white house behind it in warm afternoon light."
)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[srv.OpenAIStub]:
    yield from srv.serving(monkeypatch, KEY, retries=2)


@pytest.fixture
def fast_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_codec, "pack_text", fake_pack)
    monkeypatch.setattr(image_codec, "unpack_file", fake_unpack)


def write_photo(path: Path, size: tuple[int, int] = (120, 90), color: tuple[int, int, int] = (30, 120, 200)) -> Path:
    PIL.new("RGB", size, color).save(path)
    return path


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


@pytest.mark.usefixtures("fast_codec")
def test_encode_decode_files_with_progress(
    stub: srv.OpenAIStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = write_photo(tmp_path / "photo.jpg", (400, 300))
    assert main(["encode", str(photo)]) == 0
    sem = tmp_path / "photo.sem"  # default output name
    header, _, offset = decode_header(sem.read_bytes())
    # openai:dall-e-3, the source's size, and the describer's paired profile
    assert header == Header(model_id=DESCRIBER_MODEL_ID, generator_id=1, width=400, height=300)
    assert sem.read_bytes()[offset:].decode() == "A small red cat sits on a green lawn under a blue sky."
    err = capsys.readouterr().err
    assert "loading captioner openai" in err and "describing in ≤30 words" in err
    assert f"→ {sem}:" in err and "μbpp at 400×300" in err
    assert stub.calls(srv.IMAGES) == []  # no reflection, one seed: nothing painted

    assert main(["decode", str(sem), "-o", str(tmp_path / "back.png")]) == 0
    back = PIL.open(tmp_path / "back.png")
    assert back.size == (400, 300) and back.format == "PNG"
    (call,) = stub.calls(srv.IMAGES)
    assert call.body["model"] == "dall-e-3" and call.body["size"] == "1792x1024"  # painted at a DALL-E 3 size
    assert "painting 400×300 with openai:dall-e-3" in capsys.readouterr().err


@pytest.mark.usefixtures("fast_codec")
def test_existing_outputs_are_refused_before_any_api_call(
    stub: srv.OpenAIStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = write_photo(tmp_path / "p.png")
    out = tmp_path / "p.sem"
    out.write_bytes(b"precious")
    assert main(["encode", str(photo), "-o", str(out)]) == 1
    assert lines(capsys.readouterr().err) == [f"semcodec: error: {out} already exists (use -f to overwrite)"]
    assert out.read_bytes() == b"precious" and stub.requests == []
    assert main(["encode", str(photo), "-o", str(out), "-f", "-q"]) == 0
    assert out.read_bytes() != b"precious"
    assert capsys.readouterr().err == ""  # -q: no progress

    png = tmp_path / "p2.png"
    png.write_bytes(b"keep")
    assert main(["decode", str(out), "-o", str(png)]) == 1
    assert png.read_bytes() == b"keep" and stub.calls(srv.IMAGES) == []


@pytest.mark.usefixtures("fast_codec")
def test_stdin_and_stdout(
    stub: srv.OpenAIStub, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    buf = io.BytesIO()
    PIL.new("RGB", (64, 64), "red").save(buf, format="PNG")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue())))
    assert main(["encode", "-", "-o", "-", "--width", "256", "--height", "128"]) == 0
    data = capsysbinary.readouterr().out
    assert decode_header(data)[0] == Header(model_id=DESCRIBER_MODEL_ID, generator_id=1, width=256, height=128)

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["decode", "-", "-o", "-"]) == 0
    image = PIL.open(io.BytesIO(capsysbinary.readouterr().out))
    assert image.format == "PNG" and image.size == (256, 128)


@pytest.mark.usefixtures("fast_codec")
def test_binary_output_to_a_terminal_is_refused_before_any_backend(
    stub: srv.OpenAIStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-o -` with stdout a terminal (a pty made here): exit 1, as `pack` does, and no request sent."""
    photo = write_photo(tmp_path / "p.png")
    sem = tmp_path / "p.sem"
    assert main(["encode", str(photo), "-o", str(sem), "-q"]) == 0
    stub.requests.clear()
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as terminal:
            monkeypatch.setattr(sys, "stdout", terminal)
            assert main(["encode", str(photo), "-o", "-"]) == 1
            assert main(["decode", str(sem), "-o", "-"]) == 1
        os.set_blocking(master, False)
        with pytest.raises(BlockingIOError):  # nothing reached the terminal
            os.read(master, 1024)
    finally:
        os.close(slave)
        os.close(master)
    assert lines(capsys.readouterr().err) == [
        "semcodec: error: refusing to write binary .sem data to a terminal (use -o FILE)",
        "semcodec: error: refusing to write binary PNG data to a terminal (use -o FILE)",
    ]
    assert stub.requests == []  # refused before any captioner or generator was asked

@pytest.mark.usefixtures("fast_codec")
def test_reflection_json_and_kept_candidates(
    stub: srv.OpenAIStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = write_photo(tmp_path / "cat.png", (200, 200), (200, 30, 30))
    keep = tmp_path / "cands"
    code = main(
        ["encode", str(photo), "-o", str(tmp_path / "cat.sem"), "--reflect", "1", "--seeds", "3",
         "--score", "critic", "--keep-candidates", str(keep), "--json"]
    )  # fmt: skip
    assert code == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["bytes"] == (tmp_path / "cat.sem").stat().st_size
    assert summary["bits"] == 8 * summary["bytes"]
    assert (summary["width"], summary["height"], summary["generator"]) == (200, 200, "openai:dall-e-3")
    assert summary["micro_bpp"] == round(summary["bits"] / 200**2 * 1e6, 3)
    assert [it["iteration"] for it in summary["iterations"]] == [0, 1]
    first = summary["iterations"][0]
    assert first["score"] == 0.6 and first["score_source"] == "critic:openai:gpt-4o"
    assert first["critique"] == "The sky should be darker and the cat larger."
    assert first["seed_scores"] == [0.6]  # openai ignores seeds: one painting per candidate
    assert "openai:dall-e-3 ignores seeds: --seeds 3 tries one" in err
    # The second describe call carried the first round's text and critique.
    describe_calls = [c for c in stub.calls(srv.CHAT) if srv.n_images(c.body) == 1]
    assert "The sky should be darker" in describe_calls[1].body["messages"][0]["content"][0]["text"]
    assert sorted(p.name for p in keep.iterdir()) == [
        "cat.r0.json", "cat.r0.s0.png", "cat.r0.txt", "cat.r1.json", "cat.r1.s0.png", "cat.r1.txt",
    ]  # fmt: skip
    assert json.loads((keep / "cat.r1.json").read_text())["iteration"] == 1


@pytest.mark.usefixtures("fast_codec")
def test_batch_reports_failures_and_keeps_the_rest(
    stub: srv.OpenAIStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "c.webp"):
        write_photo(src / name)
    (src / "b.jpg").write_bytes(b"not an image")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert main(["encode", str(src), "-o", str(out), "--jobs", "2", "--json"]) == 4
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a.sem", "c.sem"]
    report = json.loads(captured.out)
    assert [f["input"] for f in report["files"]] == [str(src / "a.png"), str(src / "c.webp")]
    bad = f"{src / 'b.jpg'}: not a readable image (UnidentifiedImageError)"
    assert report["failed"] == [{"input": str(src / "b.jpg"), "error": bad}]
    assert f"semcodec: error: {src / 'b.jpg'}: not a readable image (UnidentifiedImageError)" in captured.err
    assert "2 of 3 images encoded" in captured.err
    assert "a.png: → " in captured.err  # per-item progress is prefixed with the file name


@pytest.mark.usefixtures("fast_codec")
def test_bit_budgets_are_met_or_refused(
    stub: srv.OpenAIStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stub.defaults[srv.CHAT] = lambda body: srv.Reply(body=srv.chat_body(LONG))  # ignores every word budget
    photo = write_photo(tmp_path / "p.png", (64, 64))
    out = tmp_path / "p.sem"
    assert main(["encode", str(photo), "-o", str(out), "--max-bits", "300", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert out.stat().st_size * 8 <= 300
    assert summary["iterations"][0]["truncated"] and LONG.startswith(summary["text"])
    assert summary["iterations"][0]["captioner_calls"] >= 2  # re-asked before cutting

    assert main(["encode", str(photo), "-o", str(out), "-f", "--target-ubpp", "20000", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["max_bits"] == int(20000 * 64 * 64 / 1e6) and summary["bits"] <= summary["max_bits"]

    assert main(["encode", str(photo), "-o", str(out), "-f", "--max-bits", "8"]) == 1
    assert lines(capsys.readouterr().err)[-1] == (
        "semcodec: error: a budget of 8 bits leaves nothing for the description: the header alone takes 48 bits"
    )
    with pytest.raises(SystemExit) as usage:
        main(["encode", str(photo), "--max-bits", "100", "--target-ubpp", "3"])
    assert usage.value.code == 2


@pytest.mark.usefixtures("fast_codec")
def test_backend_failures_exit_3_without_the_key(
    stub: srv.OpenAIStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = write_photo(tmp_path / "p.png")
    stub.defaults[srv.CHAT] = lambda body: srv.Reply(503, {"error": {"message": f"overloaded ({KEY})"}})
    assert main(["encode", str(photo), "-o", str(tmp_path / "p.sem")]) == 3
    err = capsys.readouterr().err
    assert lines(err)[-1] == "semcodec: error: openai describe failed after 3 attempts: HTTP 503: overloaded (***)"
    assert KEY not in err and not (tmp_path / "p.sem").exists()

    monkeypatch.delenv("OPENAI_API_KEY")
    assert main(["encode", str(photo), "-o", str(tmp_path / "p.sem"), "--captioner", "openai"]) == 3
    assert lines(capsys.readouterr().err)[-1] == (
        "semcodec: error: the openai backend needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server)"
    )


@pytest.mark.usefixtures("fast_codec")
def test_bad_inputs_exit_1(stub: srv.OpenAIStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.sem"
    junk.write_bytes(b"hello")
    assert main(["decode", str(junk), "-o", str(tmp_path / "x.png")]) == 1
    assert lines(capsys.readouterr().err) == [
        "semcodec: error: not a .sem file (first byte 0x68, expected 0xa7 or 0xa8)"]
    assert main(["encode", str(tmp_path / "missing.jpg")]) == 1
    assert "missing.jpg: No such file or directory" in capsys.readouterr().err
    photo = write_photo(tmp_path / "p.png")
    assert main(["encode", str(photo), "-o", "-", "--json"]) == 1
    assert main(["encode", str(photo), "--captioner", "dalle"]) == 1
    assert "unknown backend 'dalle'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["encode", str(empty), "-o", str(tmp_path / "o")]) == 1
    assert "empty: no images" in capsys.readouterr().err
    assert stub.requests == []


def test_round_trip_with_the_real_coder_and_cli(stub: srv.OpenAIStub, tmp_path: Path) -> None:
    """`semcodec encode` → real LM pack (in the rate-control loop) → `semcodec decode` → real unpack."""
    import semcodec

    # A captioner that ignores word budgets: the real coder must size the cut.
    short = LONG.split(",")[0]
    stub.defaults[srv.CHAT] = lambda body: srv.Reply(
        body=srv.chat_body("SCORE: 4\nCRITIQUE: needs the fence" if srv.n_images(body) == 2 else short)
    )
    env = cli.clean_env(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=stub.base_url, SEMCODEC_BACKOFF="0.01")
    photo = write_photo(tmp_path / "photo.png", (160, 120))
    sem = tmp_path / "photo.sem"
    argv = ["encode", str(photo), "-o", str(sem), "--reflect", "1", "--max-bits", "110", "--width", "512"]
    enc = cli.semcodec(*argv, "--json", env=env)
    assert enc.returncode == 0, enc.stderr
    summary = json.loads(enc.stdout)
    data = sem.read_bytes()
    assert short.startswith(summary["text"]) and summary["iterations"][0]["truncated"]
    assert 1 < len(summary["text"].split()) < len(short.split())
    assert semcodec.read_header(data) == Header(model_id=DESCRIBER_MODEL_ID, generator_id=1, width=512, height=384)
    assert summary["bits"] == 8 * len(data) == summary["iterations"][summary["chosen"]]["bits"] <= 110
    payload = len(data) - decode_header(data)[2]
    assert payload < len(summary["text"])  # the LM coder compresses even a cut description
    assert "cut at a word boundary" in enc.stderr

    painted_while_encoding = len(stub.calls(srv.IMAGES))
    dec = cli.semcodec("decode", str(sem), "-o", str(tmp_path / "photo.out.png"), env=env)
    assert dec.returncode == 0, dec.stderr
    assert PIL.open(tmp_path / "photo.out.png").size == (512, 384)
    (decode_call,) = stub.calls(srv.IMAGES)[painted_while_encoding:]
    assert decode_call.body["prompt"] == summary["text"]  # real unpack restored the exact description


def test_a_768x512_photo_has_one_rate_everywhere_and_decodes_to_768x512(
    stub: srv.OpenAIStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13's goal, with the real coder: `encode --json`, `info` and `bench images` report
    the same μbpp (over the source's 768×512 pixels), `decode` gives back 768×512, and the
    header costs no more than the old default header (1024×704, the aspect ratio at 1024)."""
    from semcodec import cli as top
    from semcodec.container import encode_header

    photo = write_photo(tmp_path / "photo.png", (768, 512))
    sem = tmp_path / "photo.sem"
    assert main(["encode", str(photo), "-o", str(sem), "--json", "-q"]) == 0
    encoded = json.loads(capsys.readouterr().out)
    data = sem.read_bytes()
    header, _, offset = decode_header(data)
    assert header == Header(model_id=DESCRIBER_MODEL_ID, generator_id=1, width=768, height=512)
    assert encoded["micro_bpp"] == round(8e6 * len(data) / (768 * 512), 3)
    assert offset <= len(encode_header(Header(model_id=DESCRIBER_MODEL_ID, generator_id=1, width=1024, height=704)))

    assert top.main(["info", str(sem), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["micro_bpp"] == encoded["micro_bpp"] and info["text"] == encoded["text"]

    assert top.main(["bench", "images", str(photo), "--metrics", "psnr64", "--json", "-q"]) == 0
    bench = json.loads(capsys.readouterr().out)
    (only,) = bench["images"][0]["iterations"]
    assert (only["text"], only["file_bits"]) == (encoded["text"], 8 * len(data))  # the same encode path
    assert only["micro_bpp"] == encoded["micro_bpp"]

    out = tmp_path / "photo.webp"
    assert main(["decode", str(sem), "-o", str(out), "-q"]) == 0
    back = PIL.open(out)
    assert (back.format, back.size) == ("WEBP", (768, 512))
    assert stub.calls(srv.IMAGES)[-1].body["size"] == "1792x1024"  # painted at a DALL-E 3 size, then resized


@pytest.mark.usefixtures("fast_codec")
def test_decode_output_format_and_paint_size(
    stub: srv.OpenAIStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = write_photo(tmp_path / "p.png", (300, 200))
    sem = tmp_path / "p.sem"
    assert main(["encode", str(photo), "-o", str(sem), "-q"]) == 0
    for name in ("p.gif", "p"):
        assert main(["decode", str(sem), "-o", str(tmp_path / name)]) == 1
        assert lines(capsys.readouterr().err)[-1].startswith(f"semcodec: error: {tmp_path / name}: cannot write")
    assert stub.calls(srv.IMAGES) == []  # refused before painting
    assert main(["decode", str(sem), "-o", str(tmp_path / "p.jpg"), "--paint-size", "1024x1024", "-q"]) == 0
    back = PIL.open(tmp_path / "p.jpg")
    assert (back.format, back.size) == ("JPEG", (300, 200))
    assert stub.calls(srv.IMAGES)[-1].body["size"] == "1024x1024"
    with pytest.raises(SystemExit):
        main(["decode", str(sem), "--paint-size", "big"])
    assert "is not WIDTHxHEIGHT" in capsys.readouterr().err
