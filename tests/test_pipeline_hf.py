"""The ``hf`` backend against tiny random-weight models built here with the libraries' configs.

Models are saved with ``save_pretrained`` and loaded back through the backend's real
``from_pretrained`` path: from local folders, and from a Hugging Face cache laid out in a
temporary ``HF_HOME`` under the registry's model ids (offline, as on a user's machine
after ``hf download``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("diffusers")
PIL = pytest.importorskip("PIL.Image")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_fixtures import cli, tiny_models  # noqa: E402
from pipeline_fixtures.fakes import fake_pack, fake_unpack  # noqa: E402
from semcodec.cli import main  # noqa: E402
from semcodec.container import Header, decode_header  # noqa: E402
from semcodec.pipeline import image_codec  # noqa: E402
from semcodec.pipeline.backends import BackendOptions  # noqa: E402
from semcodec.pipeline.backends.hf import HFBackend  # noqa: E402
from semcodec.pipeline.errors import BackendUnavailableError  # noqa: E402
from semcodec.pipeline.painting import paint  # noqa: E402
from semcodec.pipeline.similarity import load_metric  # noqa: E402

# diffusers' own numpy-2 deprecations are not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Toy models gain nothing from threads, and on a busy 2-core machine spinning OpenMP
    workers make every tiny op many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny-models")
    return {
        "vlm": tiny_models.build_smolvlm(base / "vlm"),
        "sd": tiny_models.build_sd(base / "sd"),
        "clip": tiny_models.build_clip(base / "clip"),
    }


@pytest.fixture(scope="module")
def backend() -> HFBackend:
    return HFBackend(BackendOptions(steps=2, device="cpu"))


@pytest.fixture
def photo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "photo.png"
    image = PIL.new("RGB", (96, 72), (40, 160, 60))
    image.paste((220, 40, 40), (20, 20, 60, 50))
    image.save(path)
    yield path


def test_captioner_and_critic(models: dict[str, Path], backend: HFBackend) -> None:
    image = PIL.new("RGB", (80, 60), (200, 20, 20))
    captioner = backend.captioner(str(models["vlm"]))
    text = captioner.describe(image, 8)
    assert text and text == text.strip() and "\n" not in text
    assert captioner.describe(image, 8) == text  # greedy decoding: deterministic
    assert len(text.split()) <= 2 * 8 + 8  # the token limit follows the word budget
    assert captioner.describe(image, 8, "Differences: the cat is green") != ""
    score, critique = backend.critic(str(models["vlm"])).critique(image, image)
    assert math.isnan(score) or 0.0 <= score <= 1.0  # random weights rarely write "SCORE: n"
    assert isinstance(critique, str)


def test_generator_honours_seed_size_and_steps(models: dict[str, Path], backend: HFBackend) -> None:
    import numpy as np

    generator = backend.generator(str(models["sd"]))
    assert generator.honours_seed
    steps: list[tuple[int, int]] = []
    header = Header(width=100, height=70, seed=5)
    first = paint(generator, "a red cat", header, on_step=lambda d, t: steps.append((d, t)))
    assert first.size == (100, 70) and first.mode == "RGB"
    assert steps == [(1, 2), (2, 2)]
    # Painted at the toy model's native area (32² px) in the header's aspect ratio, then resized.
    assert generator.generate("a red cat", 100, 70, seed=5).size == (32, 32)
    again = paint(generator, "a red cat", header)
    other = paint(generator, "a red cat", replace(header, seed=6))
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    big = paint(generator, "a red cat", Header(width=1536, height=640, seed=2**64 - 1))  # any header seed and size
    assert big.size == (1536, 640)


def test_clip_metric_from_a_local_model(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    metric = load_metric("clip", str(models["clip"]))
    assert metric.name == f"clip:{models['clip']}" and not metric.is_fallback
    red, blue = PIL.new("RGB", (50, 40), "red"), PIL.new("RGB", (50, 40), "blue")
    score = metric.bind(red)
    assert score(red) == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= score(blue) < 1.0
    monkeypatch.setenv("SEMCODEC_CLIP_MODEL", str(models["clip"]))
    assert load_metric("auto").name.startswith("clip:")
    with pytest.raises(BackendUnavailableError, match="the clip metric needs"):
        load_metric("clip", "/nonexistent/clip")


def test_missing_weights_are_a_clear_error(
    backend: HFBackend, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(BackendUnavailableError, match=r"not in the local Hugging Face cache .*hf download acme/no"):
        backend.generator("acme/no-such-model")
    assert main(["encode", str(photo), "-o", str(tmp_path / "x.sem"), "--captioner", "hf:acme/no-vlm"]) == 3
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("semcodec: error: hf model 'acme/no-vlm' is not in the local Hugging Face cache")
    assert not (tmp_path / "x.sem").exists()



@pytest.mark.parametrize("quiet", [True, False])
def test_missing_generator_is_one_error_line_without_library_chatter(tmp_path: Path, quiet: bool) -> None:
    """`decode` in a fresh process with no weights: semcodec's lines only on stderr.

    Importing diffusers makes transformers log (e.g. "`CLIPImageProcessor` requires
    torchvision" three times where torchvision is missing); the backend quiets both
    libraries' loggers first, so -q leaves exactly the one error line.
    """
    import semcodec

    sem = tmp_path / "photo.sem"
    sem.write_bytes(semcodec.pack("A red apple on a table."))  # generator id 0: the decoder picks hf
    env = cli.clean_env(HF_HOME=str(tmp_path / "empty-hf-home"), HF_HUB_OFFLINE="1")
    for variable in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        env.pop(variable, None)
    args = ["decode", str(sem), "-o", str(tmp_path / "photo.png")] + (["-q"] if quiet else [])
    result = cli.semcodec(*args, env=env)
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("semcodec: error: hf model 'stabilityai/sd-turbo' is not in the local Hugging Face")
    expected = [] if quiet else ["the file leaves the generator to the decoder: using hf", "loading generator hf"]
    assert lines[:-1] == expected
    assert not (tmp_path / "photo.png").exists()


def test_a_painting_with_q_prints_nothing(models: dict[str, Path], tmp_path: Path) -> None:
    """`decode -q` from the HF cache in a fresh process: no library log lines, no loading bars."""
    import semcodec

    hf_home = tmp_path / "hf-home"
    tiny_models.add_to_hf_cache(hf_home, "stabilityai/sd-turbo", models["sd"])
    sem = tmp_path / "photo.sem"
    sem.write_bytes(semcodec.pack("A red apple on a table.", width=64, height=64))
    env = cli.clean_env(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    for variable in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        env.pop(variable, None)
    result = cli.semcodec("decode", str(sem), "-o", str(tmp_path / "photo.png"), "-q", env=env)
    assert (result.returncode, result.stderr) == (0, "")
    assert PIL.open(tmp_path / "photo.png").size == (64, 64)


def test_a_users_library_verbosity_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """quiet_libraries sets errors-only and no bars once, except for a library whose level the
    user set; huggingface_hub's download bars stay on."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled

    from semcodec.pipeline import libraries

    both = (transformers_logging, diffusers_logging)
    before = [(m.get_verbosity(), m.is_progress_bar_enabled()) for m in both]
    hub_before = are_progress_bars_disabled()
    try:
        for logging_module in both:
            logging_module.set_verbosity_info()
            logging_module.enable_progress_bar()
        monkeypatch.setattr(libraries, "_quieted", False)
        monkeypatch.setenv("DIFFUSERS_VERBOSITY", "info")
        monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
        libraries.quiet_libraries()
        assert transformers_logging.get_verbosity() == transformers_logging.ERROR
        assert not transformers_logging.is_progress_bar_enabled()
        assert not are_progress_bars_disabled()  # downloads keep their progress
        assert diffusers_logging.get_verbosity() == diffusers_logging.INFO  # the user's choice stands
        assert diffusers_logging.is_progress_bar_enabled()
        transformers_logging.set_verbosity_warning()
        libraries.quiet_libraries()  # once per process: a level set afterwards stands
        assert transformers_logging.get_verbosity() == transformers_logging.WARNING
    finally:
        for logging_module, (verbosity, bars) in zip(both, before, strict=True):
            logging_module.set_verbosity(verbosity)
            (logging_module.enable_progress_bar if bars else logging_module.disable_progress_bar)()
        from huggingface_hub.utils.tqdm import disable_progress_bars, enable_progress_bars

        (disable_progress_bars if hub_before else enable_progress_bars)()

def test_reflection_and_seeds_decode_to_the_chosen_painting(
    models: dict[str, Path],
    photo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """encode --reflect --seeds with local folders; decode repaints the kept candidate exactly."""
    monkeypatch.setattr(image_codec, "pack_text", fake_pack)  # the real coder runs in the test below
    monkeypatch.setattr(image_codec, "unpack_file", fake_unpack)
    monkeypatch.setenv("SEMCODEC_CLIP_MODEL", str(models["clip"]))
    sem, keep = tmp_path / "photo.sem", tmp_path / "keep"
    vlm, sd = f"hf:{models['vlm']}", f"hf:{models['sd']}"
    code = main(
        ["encode", str(photo), "-o", str(sem), "--captioner", vlm, "--generator", sd, "--reflect", "1",
         "--seeds", "2", "--steps", "2", "--words", "6", "--width", "80", "--height", "64",
         "--keep-candidates", str(keep), "--json"]
    )  # fmt: skip
    assert code == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert f"{sd[3:]} has no generator id in the registry" in err.replace("hf:", "")
    assert "painting with" in err and "[####################] 2/2" in err  # diffusion steps reported
    assert summary["generator_id"] == 0 and summary["score_source"].startswith("clip:")
    assert [len(it["seed_scores"]) for it in summary["iterations"]] == [2, 2]
    best = summary["iterations"][summary["chosen"]]
    assert decode_header(sem.read_bytes())[0].seed == best["seed"] == summary["seed"]

    out_png = tmp_path / "photo.out.png"
    assert main(["decode", str(sem), "-o", str(out_png), "--generator", sd, "--steps", "2"]) == 0
    decoded = PIL.open(out_png)
    kept = PIL.open(keep / f"photo.r{best['iteration']}.s{best['seed']}.png")
    assert decoded.size == (80, 64)
    assert decoded.tobytes() == kept.tobytes()  # same text, seed, model: same painting


def test_round_trip_through_the_semcodec_cli_and_the_hf_cache(
    models: dict[str, Path], photo: Path, tmp_path: Path
) -> None:
    """`semcodec encode` / `decode` in fresh processes: registry names resolved offline from HF_HOME."""
    hf_home = tmp_path / "hf-home"
    tiny_models.add_to_hf_cache(hf_home, "HuggingFaceTB/SmolVLM-256M-Instruct", models["vlm"])
    tiny_models.add_to_hf_cache(hf_home, "stabilityai/sd-turbo", models["sd"])
    tiny_models.add_to_hf_cache(hf_home, "openai/clip-vit-base-patch32", models["clip"])
    env = cli.clean_env(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")

    def semcodec(*args: str) -> subprocess.CompletedProcess[str]:
        return cli.semcodec(*args, env=env)

    sem = tmp_path / "photo.sem"
    # --words 1: the toy captioner babbles to its token limit, and every word is LM work.
    enc = semcodec("encode", str(photo), "-o", str(sem), "--reflect", "1", "--words", "1", "--json")
    assert enc.returncode == 0, enc.stderr
    summary = json.loads(enc.stdout)
    assert summary["captioner"] == "hf:HuggingFaceTB/SmolVLM-256M-Instruct"
    assert summary["generator"] == "hf:stabilityai/sd-turbo" and summary["generator_id"] == 3
    assert summary["score_source"] == "clip:openai/clip-vit-base-patch32"
    assert summary["bytes"] == sem.stat().st_size

    out_png = tmp_path / "photo.decoded.png"
    dec = semcodec("decode", str(sem), "-o", str(out_png))  # generator from the header's id
    assert dec.returncode == 0, dec.stderr
    assert "loading generator hf:stabilityai/sd-turbo" in dec.stderr
    assert f'seed {summary["seed"]}: "{summary["text"]}"' in dec.stderr  # the real unpack's text
    assert PIL.open(out_png).size == (summary["width"], summary["height"]) == (96, 72)  # the source's size


# -- the defaults, as named ------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Path:
    """Each default's toy model in a Hugging Face cache, under its hub id (as after `hf download`)."""
    base = tmp_path_factory.mktemp("hub-models")
    built = {tiny_models.build_smolvlm: models["vlm"], tiny_models.build_sd: models["sd"]}
    for repo_id, build in tiny_models.DEFAULTS.items():
        folder = built.get(build) or build(base / repo_id.replace("/", "--"))
        tiny_models.add_to_hf_cache(base / "hf-home", repo_id, folder)
    return base / "hf-home" / "hub"


@pytest.fixture
def offline_hub(hub: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point this process's Hugging Face cache at ``hub`` (what HF_HOME does for a new process)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.delenv("SEMCODEC_HF_DOWNLOAD", raising=False)
    return hub


@pytest.mark.usefixtures("offline_hub")
def test_the_default_captioner_runs_as_smolvlm() -> None:
    """`hf` with no model: SmolVLM's Idefics3 model, processor (image splitting) and chat template."""
    backend = HFBackend(BackendOptions(device="cpu"))
    captioner = backend.captioner()
    assert captioner.name == "hf:HuggingFaceTB/SmolVLM-256M-Instruct"
    processor, model = backend.vlm("HuggingFaceTB/SmolVLM-256M-Instruct")
    assert (type(model).__name__, type(processor).__name__) == ("Idefics3ForConditionalGeneration", "Idefics3Processor")
    image = PIL.new("RGB", (80, 60), (200, 20, 20))
    chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Describe."}]}]
    inputs = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    assert tokens[:5] == ["<|im_start|>", "User", ":", "<fake_token_around_image>", "<row_1_col_1>"]  # tiled
    assert tokens[-3:] == ["<end_of_utterance>", "Assistant", ":"] and "<global-img>" in tokens
    assert tokens.count("<image>") == 4 * (1 + 2 * 2)  # 4 tokens for each of 2×2 tiles and the global view
    description = captioner.describe(image, 6)
    assert description and description == captioner.describe(image, 6)


@pytest.mark.usefixtures("offline_hub")
@pytest.mark.parametrize(
    ("repo_id", "pipeline", "steps"),
    [
        ("stabilityai/sd-turbo", "StableDiffusionPipeline", 1),
        ("stabilityai/sdxl-turbo", "StableDiffusionXLPipeline", 1),
        ("black-forest-labs/FLUX.1-schnell", "FluxPipeline", 4),
    ],
)
def test_the_default_generators_run_with_their_steps_and_guidance(repo_id: str, pipeline: str, steps: int) -> None:
    """Each registry generator from the cache by its hub id: its pipeline class, the step
    count and guidance its distillation needs (turbo: 1 step; schnell: 4; guidance 0)."""
    from semcodec.registry import GENERATORS

    assert f"hf:{repo_id}" in GENERATORS.values()
    backend = HFBackend(BackendOptions(device="cpu", paint_size=(48, 32)))  # toy models, toy paintings
    generator = backend.generator(repo_id)
    pipe = backend.pipeline(repo_id)
    assert type(pipe).__name__ == pipeline
    done: list[tuple[int, int]] = []
    header = Header(width=96, height=64, seed=3)
    image = paint(generator, "a red cat on the grass", header, on_step=lambda d, t: done.append((d, t)))
    assert image.size == (96, 64)
    assert done == [(i, steps) for i in range(1, steps + 1)]
    assert pipe.guidance_scale == 0.0
    if pipeline == "FluxPipeline":  # schnell has no guidance input at all, and no negative prompt pass
        assert not pipe.transformer.config.guidance_embeds
    else:  # guidance 0: no unconditional pass
        assert not pipe.do_classifier_free_guidance
    assert generator.generate("a red cat on the grass", 96, 64, 3).size == (48, 32)  # --paint-size
    assert np_equal(image, paint(generator, "a red cat on the grass", header))  # the seed pins the painting


def np_equal(a: object, b: object) -> bool:
    import numpy as np

    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def test_paint_sizes_follow_the_models_native_area() -> None:
    """The real models' configs (not loaded: only what paint_size reads)."""
    from types import SimpleNamespace

    from semcodec.pipeline.backends.hf import HFGenerator

    sd = SimpleNamespace(vae_scale_factor=8, unet=SimpleNamespace(config=SimpleNamespace(sample_size=64)))
    sdxl = SimpleNamespace(vae_scale_factor=8, default_sample_size=128)
    flux = SimpleNamespace(vae_scale_factor=8, default_sample_size=128)

    def size(model: str, pipe: object, width: int, height: int, **options: object) -> tuple[int, int]:
        backend = HFBackend(BackendOptions(device="cpu", **options))  # type: ignore[arg-type]
        return HFGenerator(backend, "hf", model).paint_size(pipe, width, height)

    assert size("stabilityai/sd-turbo", sd, 768, 512) == (624, 416)  # 512² area, 3:2
    assert size("stabilityai/sdxl-turbo", sdxl, 768, 512) == (624, 416)  # distilled at 512², whatever its UNet says
    assert size("black-forest-labs/FLUX.1-schnell", flux, 1920, 1080) == (1360, 768)  # ~1 MP, multiples of 16
    assert size("stabilityai/sd-turbo", sd, 1, 1, paint_size=(500, 300)) == (496, 304)  # --paint-size, snapped


def test_a_local_copy_of_a_registered_generator_gets_its_settings_and_id(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """``--generator hf:FOLDER`` where FOLDER is the Hugging Face cache's copy of SD-Turbo (as
    ``hf download`` leaves it, or a symlink to it), or ``hf:stabilityai/sd-turbo=FOLDER``: 1
    step, guidance 0 and generator id 3, as for ``hf:stabilityai/sd-turbo``; another folder
    keeps its pipeline's defaults and no id."""
    from semcodec.pipeline.backends import generator_id_for, parse_spec
    from semcodec.pipeline.backends.hf import DEFAULT_PIPELINE, registered_name

    tiny_models.add_to_hf_cache(tmp_path / "hf", "stabilityai/sd-turbo", models["sd"])
    snapshot = next((tmp_path / "hf" / "hub" / "models--stabilityai--sd-turbo" / "snapshots").iterdir())
    (tmp_path / "my-sd-turbo").symlink_to(snapshot, target_is_directory=True)
    backend = HFBackend(BackendOptions(device="cpu"))  # no --steps: the model's own settings
    # The cache's folder, a symlink to it, and any folder named as a copy of the model (ID=FOLDER).
    for folder in (snapshot, tmp_path / "my-sd-turbo", f"stabilityai/sd-turbo={models['sd']}"):
        assert registered_name(str(folder)) == "stabilityai/sd-turbo"
        assert generator_id_for(parse_spec(f"hf:{folder}"), DEFAULT_PIPELINE) == 3
        generator = backend.generator(str(folder))
        assert generator._settings(backend.pipeline(str(folder))) == (1, 0.0)
        steps: list[tuple[int, int]] = []
        header = Header(width=40, height=30, seed=1)
        paint(generator, "a red cat", header, on_step=lambda d, t, s=steps: s.append((d, t)))
        assert steps == [(1, 1)]
    plain = str(models["sd"])
    assert registered_name(plain) is None and generator_id_for(parse_spec(f"hf:{plain}"), DEFAULT_PIPELINE) is None
    assert backend.generator(plain)._settings(backend.pipeline(plain))[0] == 50  # the pipeline's own default
