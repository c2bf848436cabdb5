"""Unit tests of the pipeline's pieces: prompts, rate control, reflection, metrics, retries.

Backends and the coder are injected fakes here, so every expectation is exact and the
whole file runs in about a second. The real client, real models and the real coder are
exercised in test_pipeline_openai.py, test_pipeline_hf.py and test_pipeline_cli.py.
"""

from __future__ import annotations

import io
import math
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_fixtures.fakes import (
    SENTENCE,
    FakeCaptioner,
    FakeCritic,
    FakeGenerator,
    TableMetric,
    fake_pack,
    fake_unpack,
    word_cost,
)
from semcodec.container import Header
from semcodec.errors import SemInputError, SemUnknownModelError
from semcodec.pipeline import image_codec, imaging, prompts
from semcodec.pipeline.backends import (
    BackendOptions,
    BackendSpec,
    generator_id_for,
    generator_spec_for_id,
    parse_spec,
)
from semcodec.pipeline.batch import Outcome, output_names, run_all
from semcodec.pipeline.errors import redact
from semcodec.pipeline.progress import Progress
from semcodec.pipeline.ratecontrol import (
    budget_from,
    fit_description,
    seed_bits,
    truncate_to_fit,
)
from semcodec.pipeline.reflect import (
    Candidate,
    Judge,
    ReflectSettings,
    best_of,
    reflect,
)
from semcodec.pipeline.retry import RetryPolicy, call_with_retries
from semcodec.pipeline.similarity import PixelSimilarity, load_metric

PIL = pytest.importorskip("PIL.Image")


def red_image(size: tuple[int, int] = (40, 30)) -> object:
    return PIL.new("RGB", size, (200, 0, 0))


# -- prompts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "score", "critique"),
    [
        ("SCORE: 7\nCRITIQUE: too bright", 0.7, "too bright"),
        ("**Score:** 8.5\nCritique: the dog is missing", 0.85, "the dog is missing"),
        ("SCORE: 14\nCRITIQUE: x", 1.0, "x"),
        ("Score = 0", 0.0, ""),
    ],
)
def test_parse_critique_reads_score_and_text(reply: str, score: float, critique: str) -> None:
    assert prompts.parse_critique(reply) == (score, critique)


def test_parse_critique_without_number_is_nan() -> None:
    score, critique = prompts.parse_critique("The images differ in colour.")
    assert math.isnan(score)
    assert critique == "The images differ in colour."


def test_clean_description_makes_one_codable_line() -> None:
    assert prompts.clean_description('Description: "Two\u0000 dogs\r\n play."') == "Two dogs play."
    assert prompts.clean_description("   \n") == ""


def test_describe_prompt_carries_budget_and_critique() -> None:
    plain = prompts.describe_prompt(12, None)
    revised = prompts.describe_prompt(12, "the cat is black")
    assert "12 words" in plain and "the cat is black" not in plain
    assert "the cat is black" in revised and revised.count("12 words") == 2


# -- rate control -----------------------------------------------------------------


def test_budget_from_target_ubpp_uses_header_pixels() -> None:
    assert budget_from(None, 100.0, 1024, 1024) == 104
    assert budget_from(None, 100.0, 512, 512) == 26
    assert budget_from(77, None, 1, 1) == 77


def test_seed_bits_match_the_container() -> None:
    header = Header(width=512, height=512, check=True)
    assert seed_bits(header, 0) == 0
    assert seed_bits(header, 1) == 8
    assert seed_bits(header, 127) == 8
    assert seed_bits(header, 128) == 16


def test_fit_without_budget_asks_once() -> None:
    captioner = FakeCaptioner(overshoot=3)
    fitted = fit_description(lambda w: captioner.describe(None, w), word_cost(), None, 5)
    assert captioner.calls == [(5, None)]
    assert fitted.text == " ".join(SENTENCE[:8])
    assert not fitted.truncated


def test_fit_first_answer_within_budget_is_kept() -> None:
    captioner = FakeCaptioner()
    cost = word_cost(header_bits=16, per_word=10)
    fitted = fit_description(lambda w: captioner.describe(None, w), cost, 1000, 6, overhead_bits=16)
    assert len(captioner.calls) == 1 and fitted.bits == 16 + 60


def test_fit_reasks_with_a_smaller_budget_before_cutting() -> None:
    captioner = FakeCaptioner(overshoot=4)  # always 4 words over what it is asked
    cost = word_cost(header_bits=16, per_word=10)
    fitted = fit_description(lambda w: captioner.describe(None, w), cost, 16 + 10 * 9, 30, overhead_bits=16)
    budgets = [b for b, _ in captioner.calls]
    assert budgets == sorted(budgets, reverse=True) and len(set(budgets)) == len(budgets)
    assert len(budgets) >= 2
    assert fitted.bits <= 106
    assert not fitted.truncated
    assert fitted.text == " ".join(SENTENCE[: len(fitted.text.split())])


def test_fit_cuts_at_a_word_boundary_as_a_last_resort() -> None:
    budgets: list[int] = []

    def stubborn(budget: int) -> str:
        budgets.append(budget)
        return " ".join(SENTENCE)  # ignores every budget

    cost = word_cost(header_bits=16, per_word=10)
    fitted = fit_description(stubborn, cost, 16 + 10 * 5, 30, overhead_bits=16, max_asks=3)
    assert budgets == [5, 1]  # re-asked down to one word, then gave up asking
    assert fitted.truncated and fitted.words_before_cut == len(SENTENCE)
    assert fitted.text == " ".join(SENTENCE[:5])
    assert fitted.bits == 66


def test_fit_with_no_room_beside_the_header_is_a_clear_error() -> None:
    with pytest.raises(SemInputError, match="leaves nothing for the description: the header alone takes 24 bits"):
        fit_description(lambda w: "a cat", word_cost(header_bits=24), 20, 10, overhead_bits=24)


def test_truncate_when_not_even_one_word_fits() -> None:
    with pytest.raises(SemInputError, match=r"too small: the shortest description, 'enormous', needs 90 bits"):
        truncate_to_fit("enormous cat", lambda t: 10 + 10 * len(t), 50)


def test_truncate_always_returns_a_prefix_that_fits_even_if_cost_is_not_monotone() -> None:
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

    def bumpy(text: str) -> int:  # odd prefixes end "badly" and cost much more
        n = len(text.split())
        return 10 * n + (45 if n % 2 else 0)

    for budget in range(55, 150, 7):
        cut, bits = truncate_to_fit(" ".join(words), bumpy, budget)
        assert bits == bumpy(cut) <= budget
        assert words[: len(cut.split())] == cut.split()


def test_truncate_drops_dangling_punctuation() -> None:
    cut, _ = truncate_to_fit("a red cat, sitting", lambda t: 8 * len(t), 8 * 10)
    assert cut == "a red cat"


# -- reflection -------------------------------------------------------------------


def test_no_reflection_and_one_seed_paints_nothing() -> None:
    generator, critic = FakeGenerator(), FakeCritic()
    original = red_image()
    result = reflect(
        original,
        captioner=FakeCaptioner(),
        generator=generator,
        judge=Judge(original, "metric", PixelSimilarity(), critic),
        cost_bits=word_cost(),
        header=Header(),
        settings=ReflectSettings(words=5),
    )
    assert generator.calls == [] and critic.calls == 0
    assert len(result.candidates) == 1
    assert result.best.score is None and result.best.bits == 16 + 50


def test_reflection_revises_from_the_critique_and_keeps_the_best() -> None:
    captioner, generator = FakeCaptioner(), FakeGenerator()
    scores = iter([0.3, 0.9, 0.5])  # round 1 is the best
    critic = FakeCritic(score_of=lambda image: next(scores))
    original = red_image()
    result = reflect(
        original,
        captioner=captioner,
        generator=generator,
        judge=Judge(original, "critic", PixelSimilarity(), critic),
        cost_bits=word_cost(),
        header=Header(width=64, height=48),
        settings=ReflectSettings(reflect=2, words=6, lam=0.0),
    )
    assert [c.iteration for c in result.candidates] == [0, 1, 2]
    assert result.best.iteration == 1 and result.best.score == 0.9
    assert result.best.score_source == "critic:fake:critic"
    first, second, third = captioner.calls
    assert first[1] is None
    assert result.candidates[0].text in second[1] and "critique 1" in second[1]
    # Round 2 revises the best so far (round 1), not merely the latest.
    assert result.candidates[1].text in third[1] and "critique 2" in third[1]
    assert all(call[1:3] == (64, 48) for call in generator.calls)


def test_revision_starts_from_the_best_not_the_latest() -> None:
    captioner = FakeCaptioner()
    scores = iter([0.9, 0.1, 0.5])
    original = red_image()
    result = reflect(
        original,
        captioner=captioner,
        generator=FakeGenerator(),
        judge=Judge(original, "critic", PixelSimilarity(), FakeCritic(score_of=lambda image: next(scores))),
        cost_bits=word_cost(),
        header=Header(),
        settings=ReflectSettings(reflect=2, words=6, lam=0.0),
    )
    assert result.best.iteration == 0
    assert result.candidates[0].text in captioner.calls[2][1]


def test_rate_distortion_choice_trades_score_for_bits() -> None:
    cheap = Candidate(0, "a cat", bits=100, score=0.60)
    rich = Candidate(1, "a very detailed cat", bits=300, score=0.75)
    assert best_of([cheap, rich], lam=0.0) is rich
    assert best_of([cheap, rich], lam=0.001) is cheap  # 0.5 > 0.45
    assert best_of([cheap, rich], lam=0.0005) is rich  # 0.55 < 0.6
    tie = Candidate(2, "a cat too", bits=90, score=0.59)
    assert best_of([cheap, tie], lam=0.001) is tie  # equal J: fewer bits wins


def test_seeds_pick_the_best_and_pay_for_their_header_bytes() -> None:
    generator = FakeGenerator()
    text_len = len(" ".join(SENTENCE[:4]))
    shade = [(text_len * 7 + s * 40) % 256 for s in range(3)]
    metric = TableMetric({shade[0]: 0.2, shade[1]: 0.3, shade[2]: 0.8})
    original = red_image()
    result = reflect(
        original,
        captioner=FakeCaptioner(),
        generator=generator,
        judge=Judge(original, "metric", metric, None),
        cost_bits=word_cost(),
        header=Header(model_id=3),
        settings=ReflectSettings(seeds=3, words=4),
    )
    best = result.best
    assert [c[3] for c in generator.calls] == [0, 1, 2]
    assert best.seed == 2 and best.seed_scores == [0.2, 0.3, 0.8]
    # v2 (model 3, its default: no model field): the seed costs its byte and the flags byte of an explicit header
    assert best.bits == 16 + 40 + 16
    assert best.score_source == "fake-metric"


def test_a_seed_is_not_worth_its_byte_when_lambda_says_so() -> None:
    shade = [(len(" ".join(SENTENCE[:4])) * 7 + s * 40) % 256 for s in range(2)]
    metric = TableMetric({shade[0]: 0.50, shade[1]: 0.51})
    original = red_image()
    result = reflect(
        original,
        captioner=FakeCaptioner(),
        generator=FakeGenerator(),
        judge=Judge(original, "metric", metric, None),
        cost_bits=word_cost(),
        header=Header(),
        settings=ReflectSettings(seeds=2, words=4, lam=0.01),  # 8 bits cost 0.08 > 0.01 gain
    )
    assert result.best.seed == 0


def test_generators_that_ignore_seeds_are_painted_once() -> None:
    generator = FakeGenerator(honours_seed=False)
    original = red_image()
    result = reflect(
        original,
        captioner=FakeCaptioner(),
        generator=generator,
        judge=Judge(original, "metric", PixelSimilarity(), None),
        cost_bits=word_cost(),
        header=Header(),
        settings=ReflectSettings(seeds=4, words=3),
    )
    assert len(generator.calls) == 1 and result.best.seed == 0


def test_budget_holds_with_the_largest_seed_reserved() -> None:
    original = red_image()
    budget = 16 + 10 * 6 + 8
    result = reflect(
        original,
        captioner=FakeCaptioner(overshoot=10),
        generator=FakeGenerator(),
        judge=Judge(original, "metric", PixelSimilarity(), FakeCritic()),
        cost_bits=word_cost(),
        header=Header(),
        settings=ReflectSettings(reflect=1, seeds=3, max_bits=budget, words=30),
    )
    assert all(c.bits <= budget for c in result.candidates)
    assert all(len(c.text.split()) <= 6 for c in result.candidates)


def test_critic_without_a_number_falls_back_to_the_metric_and_says_so() -> None:
    original = red_image()
    judge = Judge(original, "critic", PixelSimilarity(), FakeCritic(score_of=lambda image: math.nan))
    verdict = judge.judge(original)
    assert verdict.score == 1.0
    assert verdict.source == "pixel-fallback (critic gave no score)"
    assert verdict.critique == "critique 1"


def test_encode_image_packs_the_best_text_and_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_codec, "pack_text", fake_pack)
    shade = [(len(" ".join(SENTENCE[:5])) * 7 + s * 40) % 256 for s in range(2)]
    original = red_image()
    encoded = image_codec.encode_image(
        original,
        captioner=FakeCaptioner(),
        generator=FakeGenerator(),
        judge=Judge(original, "metric", TableMetric({shade[0]: 0.1, shade[1]: 0.9}), None),
        header=Header(width=320, height=240),
        settings=ReflectSettings(seeds=2, words=5),
    )
    back = fake_unpack(encoded.data)
    assert back.text == encoded.best.text == " ".join(SENTENCE[:5])
    assert back.header == Header(width=320, height=240, seed=1)
    assert encoded.best.bits == 8 * len(encoded.data)  # the cost is the real file size


# -- similarity -------------------------------------------------------------------


def test_pixel_fallback_is_deterministic_and_ordered() -> None:
    original = PIL.new("RGB", (64, 48), (200, 40, 40))
    near = PIL.new("RGB", (64, 48), (190, 50, 40))
    far = PIL.new("RGB", (64, 48), (20, 40, 220))
    score = PixelSimilarity().bind(original)
    assert score(original) == 1.0
    assert 1.0 > score(near) > score(far) >= 0.0
    assert score(near) == PixelSimilarity().bind(original)(near)


def test_auto_metric_without_clip_is_the_labelled_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMCODEC_CLIP_MODEL", "/nonexistent/clip")
    metric = load_metric("auto")
    assert metric.name == "pixel-fallback" and metric.is_fallback
    assert load_metric("pixel").name == "pixel-fallback"


# -- retries ----------------------------------------------------------------------


class FlakyError(Exception):
    pass


def test_retries_back_off_exponentially_then_succeed() -> None:
    waits: list[float] = []
    attempts = iter([FlakyError(), FlakyError(), "ok"])

    def call() -> str:
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    policy = RetryPolicy(retries=3, base_delay=1.0, max_delay=30.0)
    assert call_with_retries(call, policy, retryable=lambda e: True, sleep=waits.append) == "ok"
    assert len(waits) == 2
    assert 0.75 <= waits[0] <= 1.25 and 1.5 <= waits[1] <= 2.5


def test_retries_give_up_and_reraise_the_last_error() -> None:
    calls = []

    def call() -> None:
        calls.append(1)
        raise FlakyError(len(calls))

    with pytest.raises(FlakyError, match="3"):
        call_with_retries(call, RetryPolicy(retries=2), retryable=lambda e: True, sleep=lambda s: None)


def test_non_retryable_errors_fail_at_once() -> None:
    calls = []

    def call() -> None:
        calls.append(1)
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        call_with_retries(call, RetryPolicy(retries=5), retryable=lambda e: False, sleep=lambda s: None)
    assert len(calls) == 1


def test_server_hint_wins_within_the_cap() -> None:
    policy = RetryPolicy(retries=1, base_delay=1.0, max_delay=5.0)
    assert policy.delay(0, hint=0.25) == 0.25
    assert policy.delay(0, hint=60.0) == 5.0
    assert policy.delay(10) == 5.0


# -- small helpers ----------------------------------------------------------------


def test_redact_removes_keys_and_newlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "my-very-secret-key")
    message = redact("HTTP 401: Incorrect API key provided: my-very-secret-key.\nsee sk-proj-abcdef123456")
    assert "my-very-secret-key" not in message and "abcdef123456" not in message
    assert "\n" not in message


def test_backend_names() -> None:
    assert parse_spec("openai:gpt-4.1") == BackendSpec("openai", "gpt-4.1")
    assert parse_spec("hf:C:/models/sd") == BackendSpec("hf", "C:/models/sd")
    with pytest.raises(SemInputError, match="unknown backend 'dalle'"):
        parse_spec("dalle")
    assert generator_id_for(BackendSpec("openai"), "dall-e-3") == 1
    assert generator_id_for(BackendSpec("hf", "stabilityai/sd-turbo"), "x") == 3
    assert generator_id_for(BackendSpec("hf", "/tmp/my-model"), "x") is None


def test_generator_id_zero_is_the_decoders_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEMCODEC_GENERATOR", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert generator_spec_for_id(0) == BackendSpec("hf")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    assert generator_spec_for_id(0) == BackendSpec("openai")
    monkeypatch.setenv("SEMCODEC_GENERATOR", "hf:/models/x")
    assert generator_spec_for_id(0) == BackendSpec("hf", "/models/x")
    assert generator_spec_for_id(2) == BackendSpec("openai", "gpt-image-1")
    with pytest.raises(SemUnknownModelError):
        generator_spec_for_id(999)


def test_backend_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMCODEC_RETRIES", "7")
    monkeypatch.setenv("SEMCODEC_BACKOFF", "0.01")
    options = BackendOptions.from_env(timeout=3.0, retries=None)
    assert (options.retries, options.backoff, options.timeout) == (7, 0.01, 3.0)
    monkeypatch.setenv("SEMCODEC_TIMEOUT", "soon")
    with pytest.raises(SemInputError, match="SEMCODEC_TIMEOUT"):
        BackendOptions.from_env()


def test_image_sizes() -> None:
    landscape = PIL.new("RGB", (4000, 3000))
    assert imaging.complete_size(landscape, None, None) == (4000, 3000)  # the source's own size
    huge = SimpleNamespace(size=(20000, 10000))  # only its size is read
    assert imaging.complete_size(huge, None, None) == (16384, 8192)  # scaled to the format's limit
    assert imaging.complete_size(landscape, 800, None) == (800, 600)
    assert imaging.complete_size(landscape, None, 300) == (400, 300)
    assert imaging.resize(landscape, 33, 17).size == (33, 17)
    assert imaging.resize(PIL.new("RGB", (16, 16)), 40, 24).size == (40, 24)


def test_paint_sizes_keep_the_native_area_and_the_header_aspect() -> None:
    for width, height in ((768, 512), (1920, 1080), (512, 768), (1000, 1000), (300, 2000)):
        for area, step in ((512 * 512, 16), (1024 * 1024, 64)):
            w, h = imaging.paint_size(width, height, area, step)
            assert w % step == 0 and h % step == 0
            assert 0.8 < w * h / area < 1.2
            if max(width, height) / min(width, height) <= 4:
                assert abs(w / h - width / height) < 0.1 * width / height


def test_resize_filters_lanczos_down_bicubic_up() -> None:
    # A one-pixel checkerboard averages to grey under Lanczos' low-pass; upscaling a
    # hard edge with bicubic overshoots less than Lanczos would.
    board = PIL.new("L", (64, 64))
    board.putdata([255 * ((x + y) % 2) for y in range(64) for x in range(64)])
    small = imaging.resize(board.convert("RGB"), 16, 16)
    assert all(100 < v < 160 for v in small.convert("L").tobytes())
    edge = PIL.new("RGB", (8, 8), (0, 0, 0))
    edge.paste((255, 255, 255), (4, 0, 8, 8))
    big = imaging.resize(edge, 64, 64).convert("L")
    lanczos = edge.resize((64, 64), PIL.Resampling.LANCZOS).convert("L")
    assert big.size == (64, 64) and big.tobytes() != lanczos.tobytes()
    assert big.tobytes() == edge.resize((64, 64), PIL.Resampling.BICUBIC).convert("L").tobytes()


@pytest.mark.parametrize(("name", "fmt"), [("x.png", "PNG"), ("x.jpg", "JPEG"), ("X.JPEG", "JPEG"), ("x.webp", "WEBP")])
def test_output_format_by_extension(name: str, fmt: str) -> None:
    data = imaging.image_bytes(PIL.new("RGB", (8, 8), "red"), name)
    assert PIL.open(io.BytesIO(data)).format == fmt
    assert imaging.output_format(name) == fmt


def test_unknown_output_extension_is_bad_input() -> None:
    for name in ("x.gif", "x.sem", "noext"):
        with pytest.raises(SemInputError, match="cannot write"):
            imaging.output_format(name)


def test_unreadable_image_is_bad_input() -> None:
    with pytest.raises(SemInputError, match=r"photo\.jpg: not a readable image"):
        imaging.load_image(b"GIF89a-not-really", "photo.jpg")


def test_batch_runs_everything_in_order_past_failures() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def work(source: str, output: str) -> Outcome:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        if source == "b":
            return Outcome(source, output, error="broken", code=1)
        return Outcome(source, output, summary={})

    outcomes = run_all([(s, s + ".sem") for s in "abcde"], work, concurrency=2)
    assert [o.source for o in outcomes] == list("abcde")
    assert [o.error for o in outcomes] == [None, "broken", None, None, None]
    assert peak == 2


def test_batch_output_names_never_collide() -> None:
    names = output_names([Path("x/a.jpg"), Path("x/a.png"), Path("x/b.webp")], Path("out"), ".sem")
    assert [str(n) for n in names] == ["out/a.jpg.sem", "out/a.png.sem", "out/b.sem"]


def test_progress_lines_and_bars() -> None:
    stream = io.StringIO()
    progress = Progress(stream, live=False).child("photo.jpg")
    progress.note("describing")
    bar = progress.steps("painting", 4)
    for i in range(1, 5):
        bar(i)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "photo.jpg: describing"
    assert lines[-1].startswith("photo.jpg: painting [####################] 4/4")
    assert len(lines) <= 3  # throttled: first step and the last, not every step
    quiet = io.StringIO()
    Progress(quiet, enabled=False).note("x")
    assert quiet.getvalue() == ""
    live = io.StringIO()
    bar = Progress(live, live=True).steps("painting", 2)
    bar(1)
    bar(2)
    assert live.getvalue().count("\r") == 2 and live.getvalue().endswith("\n")


def test_a_failed_revision_keeps_the_candidates_already_made() -> None:
    from semcodec.pipeline.errors import BackendError

    class FailsOnRevision(FakeCaptioner):
        def describe(self, image: object, word_budget: int, critique: str | None = None) -> str:
            if critique:
                raise BackendError("openai describe failed after 5 attempts: HTTP 503: overloaded")
            return super().describe(image, word_budget, critique)

    stream = io.StringIO()
    original = red_image()
    result = reflect(
        original,
        captioner=FailsOnRevision(),
        generator=FakeGenerator(),
        judge=Judge(original, "metric", PixelSimilarity(), FakeCritic()),
        cost_bits=word_cost(),
        header=Header(),
        settings=ReflectSettings(reflect=3, words=4),
        progress=Progress(stream, live=False),
    )
    assert [c.iteration for c in result.candidates] == [0]
    assert "round 1/3: revision failed (openai describe failed" in stream.getvalue()

    class AlwaysFails(FakeCaptioner):
        def describe(self, image: object, word_budget: int, critique: str | None = None) -> str:
            raise BackendError("no")

    with pytest.raises(BackendError):  # nothing to keep from the first round: the error stands
        reflect(
            original,
            captioner=AlwaysFails(),
            generator=FakeGenerator(),
            judge=Judge(original, "metric", PixelSimilarity(), FakeCritic()),
            cost_bits=word_cost(),
            header=Header(),
            settings=ReflectSettings(reflect=1, words=4),
        )


def test_truncation_needs_few_real_packs_when_cost_grows_steadily() -> None:
    words = [f"w{i}" for i in range(60)]
    calls: list[str] = []

    def cost(text: str) -> int:
        calls.append(text)
        return 20 + 9 * len(text.split()) + (3 if len(text.split()) % 3 == 0 else 0)

    cut, bits = truncate_to_fit(" ".join(words), cost, 200)
    assert bits <= 200 and len(cut.split()) == 20
    assert len(calls) <= 4  # the full text, then interpolation: not a 6-step bisection


def test_later_rounds_ask_for_the_words_that_fitted() -> None:
    captioner = FakeCaptioner(overshoot=6)
    original = red_image()
    budget = 16 + 10 * 5
    reflect(
        original,
        captioner=captioner,
        generator=FakeGenerator(),
        judge=Judge(original, "metric", PixelSimilarity(), FakeCritic()),
        cost_bits=word_cost(),
        header=Header(),
        settings=ReflectSettings(reflect=1, max_bits=budget, words=30),
    )
    revision_budgets = [b for b, critique in captioner.calls if critique]
    assert revision_budgets[0] == 5  # the five words that fitted, not the last budget asked for


def test_fit_asks_once_for_more_when_the_first_guess_left_bits_unspent() -> None:
    captioner = FakeCaptioner()
    cost = word_cost(header_bits=16, per_word=4)  # cheaper words than the first guess assumes
    fitted = fit_description(lambda w: captioner.describe(None, w), cost, 16 + 4 * 12, 30, overhead_bits=16)
    assert [b for b, _ in captioner.calls] == [4, 10]
    assert fitted.text == " ".join(SENTENCE[:10]) and fitted.bits == 56 and fitted.asked == 2


def test_fit_keeps_the_first_answer_when_the_longer_one_does_not_fit() -> None:
    budgets: list[int] = []

    def describe(budget: int) -> str:
        budgets.append(budget)
        return " ".join(SENTENCE[:4] if len(budgets) == 1 else SENTENCE)  # the second answer rambles

    fitted = fit_description(describe, word_cost(header_bits=16, per_word=4), 16 + 4 * 12, 30, overhead_bits=16)
    assert budgets == [4, 10]
    assert fitted.text == " ".join(SENTENCE[:4]) and not fitted.truncated and fitted.bits == 32


def test_fit_never_grows_back_to_a_budget_that_was_too_long() -> None:
    budgets: list[int] = []

    def describe(budget: int) -> str:
        budgets.append(budget)
        return " ".join(SENTENCE[: budget + 1])  # one word over, always

    cost = word_cost(header_bits=16, per_word=10)
    fitted = fit_description(describe, cost, 16 + 10 * 5 + 4, 30, overhead_bits=16)
    assert budgets == [5, 4]  # 6 words did not fit; 5 do, and asking for 5 again is pointless
    assert fitted.bits == 66 and fitted.asked == 2
