"""The image bench and its HTML report, driven by deterministic fake backends.

The fakes are defined here (not shared with the pipeline's tests) so this file depends
only on the pipeline's public protocols. One CLI test runs the real LM coder end to end;
the others use an honest stand-in coder (the real header followed by the UTF-8 text) so
every expected number is exact. The report is opened in headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PIL")

from PIL import Image

from semcodec import cli
from semcodec.bench import imagecli
from semcodec.bench.imagebench import BenchSettings, ImageBench, Roles, run_image_bench
from semcodec.bench.metrics import Psnr64Metric, load_metrics
from semcodec.bench.report import render_html
from semcodec.container import Header, decode_header, encode_header

COLOURS = {"red": (200, 30, 30), "green": (40, 160, 60), "blue": (30, 60, 200), "grey": (128, 128, 128)}


def _colour_name(image: Any) -> str:
    r, g, b = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    return min(COLOURS, key=lambda n: sum((x - y) ** 2 for x, y in zip(COLOURS[n], (r, g, b), strict=True)))


@dataclass
class FakeCaptioner:
    """Names the image's dominant colour; each revision adds one more word."""

    name: str = "fake-captioner"
    calls: list[str | None] = field(default_factory=list)

    def describe(self, image: Any, word_budget: int, critique: str | None = None) -> str:
        self.calls.append(critique)
        extra = " ".join(["very"] * (len(self.calls) - 1))
        return f"a {extra} {_colour_name(image)} square".replace("  ", " ")[: 8 * word_budget]


@dataclass
class FakeGenerator:
    """Paints the colour the text names; the seed nudges the shade, the word count the brightness."""

    name: str = "fake-generator"
    honours_seed: bool = True
    calls: list[tuple[str, int, int, int]] = field(default_factory=list)

    def generate(self, text: str, width: int, height: int, seed: int, on_step: Any = None) -> Any:
        self.calls.append((text, width, height, seed))
        base = next((COLOURS[w] for w in text.split() if w in COLOURS), COLOURS["grey"])
        boost = 10 * text.split().count("very") + 3 * seed
        return Image.new("RGB", (width, height), tuple(min(255, c + boost) for c in base))


@dataclass
class FakeCritic:
    """Scores by mean colour distance and always asks for more detail."""

    name: str = "fake-critic"

    def critique(self, original: Any, reconstruction: Any) -> tuple[float, str]:
        a = original.convert("RGB").resize((1, 1)).getpixel((0, 0))
        b = reconstruction.convert("RGB").resize((1, 1)).getpixel((0, 0))
        return 1.0 - sum(abs(x - y) for x, y in zip(a, b, strict=True)) / 765, "say more about the colour"


class FakeCoder:
    """The real header, then the text as UTF-8: sizes are exact and easy to predict."""

    def pack(self, text: str, header: Header) -> bytes:
        return encode_header(header) + text.encode("utf-8")

    def unpack_text(self, data: bytes) -> str:
        _, _, offset = decode_header(data)
        return data[offset:].decode("utf-8")


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = __import__("random").Random(7)
    # Noisy images so the JPEG/WebP anchors have something to code.
    for name, colour, size in (("a_red.png", "red", (96, 64)), ("b_blue.jpg", "blue", (64, 64))):
        img = Image.new("RGB", size, COLOURS[colour])
        px = img.load()
        for x in range(size[0]):
            for y in range(size[1]):
                c = px[x, y]
                px[x, y] = tuple(max(0, min(255, v + rng.randint(-40, 40))) for v in c)
        img.save(folder / name)
    (folder / "readme.txt").write_text("not an image")
    return folder


def _run_fake(photo_dir: Path, reflect: int) -> tuple[ImageBench, FakeGenerator]:
    metrics, notes = load_metrics(only={"pixel", "psnr64"})
    generator = FakeGenerator()
    roles = Roles(FakeCaptioner(), generator, FakeCritic())
    images = [(p.name, lambda p=p: Image.open(p).convert("RGB")) for p in sorted(photo_dir.glob("*.*g"))]
    bench = run_image_bench(images, roles, BenchSettings(reflect=reflect), metrics, notes, coder=FakeCoder())
    return bench, generator


def test_every_round_is_a_real_file_with_exact_rates(photo_dir: Path) -> None:
    bench, generator = _run_fake(photo_dir, reflect=2)
    assert [r.name for r in bench.images] == ["a_red.png", "b_blue.jpg"]
    red = bench.images[0]
    assert (red.width, red.height, red.decode_width, red.decode_height) == (96, 64, 96, 64)  # the source's size
    assert [it.text for it in red.iterations] == [
        "a red square",
        "a very red square",
        "a very very red square",
    ]
    header_bits = 8 * len(encode_header(Header(width=96, height=64)))
    for it in red.iterations:
        assert it.header_bits == header_bits
        assert it.payload_bits == 8 * len(it.text.encode())
        assert it.file_bits == header_bits + it.payload_bits
        assert it.micro_bpp == pytest.approx(1e6 * it.file_bits / (96 * 64))
        assert it.micro_bpp_at_1024 == pytest.approx(1e6 * it.file_bits / 1024**2)
        assert set(it.scores) == {"pixel", "psnr64"}
        assert it.image is not None and it.image.size == (96, 64)
    assert sum(it.chosen for it in red.iterations) == 1
    # The reflection painted every round; the bench reused those paintings, painting nothing twice.
    assert len(generator.calls) == 6
    assert [a.anchor.name for a in red.anchors] == ["JPEG q1", "WebP q1"]
    for a in red.anchors:
        assert a.anchor.bpp == pytest.approx(8 * len(a.anchor.data) / (96 * 64))
        assert 0 < a.scores["pixel"] <= 1
    means = {m.label: m for m in bench.means()}
    assert list(means) == ["round 0", "round 1", "round 2", "chosen", "JPEG q1", "WebP q1"]
    assert means["round 1"].file_bits == pytest.approx(sum(r.iterations[1].file_bits for r in bench.images) / 2)
    data = json.loads(json.dumps(bench.to_json()))  # JSON-serialisable, no images inside
    assert data["images"][0]["iterations"][1]["payload_bits"] == 8 * len("a very red square")
    first = data["images"][0]["iterations"][0]
    assert first["micro_bpp"] == round(1e6 * first["file_bits"] / (96 * 64), 3)  # the key info and encode use
    assert data["means"][0]["micro_bpp_at_1024"] == pytest.approx(means["round 0"].micro_bpp_at_1024)
    assert data["primary_metric"] == "pixel"


def test_no_reflection_paints_once_after_coding(photo_dir: Path) -> None:
    bench, generator = _run_fake(photo_dir, reflect=0)
    assert [len(r.iterations) for r in bench.images] == [1, 1]
    assert len(generator.calls) == 2 and all(it.chosen for r in bench.images for it in r.iterations)
    assert any("no reflection" in n for n in bench.notes)
    assert "chosen" not in [m.label for m in bench.means()]


def test_psnr_is_labelled_and_finite() -> None:
    score = Psnr64Metric().bind(Image.new("RGB", (10, 10), "red"))
    assert score(Image.new("RGB", (30, 20), "red")) == 99.0
    assert Psnr64Metric.info.cheap and "not perceptual" in Psnr64Metric.info.label


def test_unavailable_perceptual_metrics_are_skipped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMCODEC_CLIP_MODEL", "/nonexistent/clip")
    monkeypatch.setenv("SEMCODEC_DREAMSIM_DIR", "/nonexistent/dreamsim")
    metrics, notes = load_metrics()
    keys = [m.info.key for m in metrics]
    assert keys[-2:] == ["pixel", "psnr64"] and "clip" not in keys and "dreamsim" not in keys
    assert any(n.startswith("CLIP skipped") for n in notes)
    assert any(n.startswith("DreamSim skipped") for n in notes)
    if "lpips" not in keys:
        assert any(n.startswith("LPIPS skipped") for n in notes)


def _fake_roles(args: Any, say: Any) -> tuple[Roles, int]:
    return Roles(FakeCaptioner(), FakeGenerator(), FakeCritic()), 0


def test_cli_images_with_the_real_coder(
    photo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(imagecli, "build_roles", _fake_roles)
    broken = photo_dir / "c_broken.png"
    broken.write_bytes(b"\x89PNG not really")
    report = tmp_path / "out" / "report.html"
    code = cli.main(
        [
            "bench",
            "images",
            str(photo_dir),
            "--width",
            "64",
            "--height",
            "64",
            "--metrics",
            "pixel,psnr64",
            "--json",
            "--html",
            str(report),
            "-q",
        ]
    )
    captured = capsys.readouterr()
    assert code == 4, captured.err  # one image failed, the others are in the table
    data = json.loads(captured.out)
    assert [i["name"] for i in data["images"]] == ["a_red.png", "b_blue.jpg", "c_broken.png"]
    assert "not a readable image" in data["images"][2]["error"]
    import semcodec
    from semcodec.pipeline.prompts import DESCRIBER_MODEL_ID

    for image in data["images"][:2]:
        for it in image["iterations"]:
            real = semcodec.pack(it["text"], model_id=DESCRIBER_MODEL_ID, width=64, height=64)  # encode's profile
            assert it["file_bits"] == 8 * len(real)
            assert it["payload_bits"] == 8 * semcodec.unpack(real).payload_bytes
    assert report.exists() and "<svg" in report.read_text()


def test_cli_images_table_output(
    photo_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from semcodec.bench import imagebench

    monkeypatch.setattr(imagecli, "build_roles", _fake_roles)
    monkeypatch.setattr(imagebench, "SemcodecCoder", FakeCoder)
    code = cli.main(["bench", "images", str(photo_dir), "--limit", "1", "--metrics", "psnr64", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"a_red\.png\s+round 0\*", out)
    assert "JPEG q1" in out and "WebP q1" in out and "μbpp@1024²" in out
    assert "a_red.png round 0*: a red square" in out


def test_cli_images_missing_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "images", "/nonexistent/photos", "-q"]) == 1
    assert "No such file or directory" in capsys.readouterr().err


# -- the report in a real browser ------------------------------------------------------

CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const out = document.createElement('pre');
  out.id = 'img-check';
  out.textContent = JSON.stringify({images: imgs.length, broken: broken,
    tables: document.querySelectorAll('table').length, svg: document.querySelectorAll('svg circle').length});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    for name in (os.environ.get("SEMCODEC_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    return None


def test_report_loads_every_image_in_headless_chromium(photo_dir: Path, tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium not found (Debian: apt-get install chromium; or set SEMCODEC_CHROMIUM)")
    bench, _ = _run_fake(photo_dir, reflect=1)
    html = render_html(bench)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    profile = tmp_path / "profile"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="img-check">(.*?)</pre>', proc.stdout)
    assert match, f"no check result in the DOM; chromium said: {proc.stderr[-2000:]}"
    result = json.loads(match.group(1).replace("&quot;", '"'))
    # original + 2 rounds + JPEG + WebP per image
    assert result == {"images": 10, "broken": [], "tables": 3, "svg": result["svg"]}
    assert result["svg"] >= 4 + 2  # every round of every image, plus the mean per round
