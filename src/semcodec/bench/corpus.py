"""Corpora with one text per line, and the disjoint split a trained dictionary needs.

Blank lines are skipped; each line's newline (``\\n`` or ``\\r\\n``) is not part of its
text. A ``.jsonl`` file holds one JSON object a line whose ``text`` is the text (which may
then hold line breaks: detailed descriptions), as ``shared/data/descriptions-dev.jsonl``.
The measured texts are the first ``limit`` lines, so runs with the same limit measure the
same texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semcodec.errors import SemInputError


@dataclass(frozen=True)
class Corpus:
    """Every text of a corpus file, in file order."""

    path: Path
    texts: list[str]

    @property
    def name(self) -> str:
        return self.path.name


MAX_CORPUS_BYTES = 256 * 1024 * 1024
"""Most bytes of a corpus file read (256 MiB: ~2 M captions); ``/dev/zero`` is refused, not read."""


def read_corpus(path: str | Path) -> Corpus:
    """Read a UTF-8 file of one text per line."""
    from semcodec.fileio import read_input

    path = Path(path)
    try:
        raw = read_input(path, MAX_CORPUS_BYTES)
    except OSError as err:
        raise SemInputError(f"{path}: {err.strerror or err}") from None
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SemInputError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    texts = [line.rstrip("\r") for line in content.split("\n")]
    texts = [t for t in texts if t.strip()]
    if path.suffix == ".jsonl":
        texts = [_json_text(path, n, line) for n, line in enumerate(texts, 1)]
    if not texts:
        raise SemInputError(f"{path}: no texts (one per line expected)")
    return Corpus(path, texts)


def _json_text(path: Path, n: int, line: str) -> str:
    import json

    try:
        record = json.loads(line)
    except ValueError:
        raise SemInputError(f"{path}: line {n} is not JSON") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise SemInputError(f"{path}: line {n} has no \"text\" string")
    return str(record["text"])


@dataclass(frozen=True)
class Fold:
    """Measured texts (indices into the measured list) and the texts a dictionary learns from."""

    measured: list[int]
    training: list[str]


@dataclass(frozen=True)
class Split:
    """How a trained-dictionary coder sees the corpus: every fold is disjoint from its training."""

    folds: list[Fold]
    description: str


def dictionary_split(corpus: Corpus, n_measured: int) -> Split:
    """Train on the lines not measured; if every line is measured, two-fold cross-fitting.

    >>> c = Corpus(Path("c.txt"), [f"t{i}" for i in range(10)])
    >>> s = dictionary_split(c, 4)
    >>> s.folds[0].measured, s.folds[0].training[:2]
    ([0, 1, 2, 3], ['t4', 't5'])
    >>> s.description
    'trained on texts 5-10 of the same file, none of them measured'
    >>> [f.measured for f in dictionary_split(c, 10).folds]
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    """
    rest = corpus.texts[n_measured:]
    if rest:
        return Split(
            [Fold(list(range(n_measured)), rest)],
            f"trained on texts {n_measured + 1}-{len(corpus.texts)} of the same file, none of them measured",
        )
    half = n_measured // 2
    first, second = list(range(half)), list(range(half, n_measured))
    texts = corpus.texts[:n_measured]
    return Split(
        [Fold(first, [texts[i] for i in second]), Fold(second, [texts[i] for i in first])],
        "2-fold: each half of the measured texts coded with a dictionary trained on the other half",
    )
