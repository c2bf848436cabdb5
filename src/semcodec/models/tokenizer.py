"""Byte-level BPE from the GGUF's vocabulary, via the ``tokenizers`` library.

The text a user packs is tokenized as plain bytes: special-token spellings inside it
(``<|im_end|>``) are ordinary characters, never control tokens, so the end-of-text token
cannot occur inside a description. Only the registry's context profiles are parsed for
control tokens. Detokenization is the byte concatenation of the tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from semcodec.errors import SemInputError, SemIntegrityError

_CONTROL = 3  # GGUF token type of special tokens


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 byte values."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def build_tokenizer_file(metadata: dict[str, object], path: Path) -> None:
    """Write a ``tokenizers`` JSON for the GGUF's BPE (SmolLM2's pre-tokenizer: single
    digits, then GPT-2 byte-level splitting) plus the control-token list."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokens = metadata["tokenizer.ggml.tokens"]
    merges = metadata["tokenizer.ggml.merges"]
    types = metadata["tokenizer.ggml.token_type"]
    assert isinstance(tokens, list) and isinstance(merges, list) and isinstance(types, list)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.save(str(path))
    controls = [i for i, t in enumerate(types) if t == _CONTROL]
    path.with_name("control_tokens.json").write_text(json.dumps(controls))


class TextTokenizer:
    """``encode`` text to ids and ``decode`` ids to text, exactly inverse on valid UTF-8."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        raw = (directory / "tokenizer.json").read_bytes()
        controls = (directory / "control_tokens.json").read_bytes()
        # Digests of exactly the bytes this tokenizer is built from (to compare with the cache's record).
        self.files_sha256 = {"tokenizer.json": hashlib.sha256(raw).hexdigest(),
                             "control_tokens.json": hashlib.sha256(controls).hexdigest()}
        self._tok = Tokenizer.from_str(raw.decode("utf-8"))
        self._size = self._tok.get_vocab_size()
        # Stand-in character -> its byte; any other character maps outside latin-1, so a token
        # holding one fails to encode instead of passing through.
        self._inverse = {ord(ch): b for b, ch in _bytes_to_unicode().items()}
        self._inverse.update({c: 0xFFFF for c in range(256) if c not in self._inverse})
        self.control_ids = frozenset(json.loads(controls))
        self._control_by_text: dict[str, int] = {}
        for idx in sorted(self.control_ids):
            text = self._tok.id_to_token(idx)
            if text is not None:
                self._control_by_text[text] = idx
        # Token bytes are made as tokens are met (a caption meets ~20): making all 49,152 at
        # every start cost a cold unpack ~50 ms.
        self._some_bytes: dict[int, bytes] = {}
        self._control_re = re.compile("|".join(re.escape(t) for t in sorted(self._control_by_text, key=len)[::-1]))

    def _make_bytes(self, idx: int) -> bytes:
        text = self._tok.id_to_token(idx) if 0 <= idx < self._size else None
        if text is None:
            raise IndexError(f"token id {idx} is not in the vocabulary")
        return text.encode("utf-8") if idx in self.control_ids else text.translate(self._inverse).encode("latin-1")

    @cached_property
    def missing_bytes(self) -> frozenset[int]:
        """Byte values no single token stands for (a text holding one cannot be packed).

        Only a one-character token is one byte: a byte's stand-in, or a control token
        (every encode needs this, so it is looked up, not found in the whole table).
        """
        single = [self._tok.token_to_id(ch) for ch in _bytes_to_unicode().values()]
        ids = {i for i in single if i is not None} | {i for i in self.control_ids if 0 <= i < self._size}
        present = {t[0] for t in map(self.token_bytes, ids) if len(t) == 1}
        return frozenset(set(range(256)) - present)

    def token_id(self, text: str) -> int:
        """Id of a control token such as ``<|im_end|>``."""
        return self._control_by_text[text]

    def encode(self, text: str) -> list[int]:
        """Tokenize a description; refuses text that would not decode back to itself."""
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            raise SemInputError("text is not valid Unicode (it contains lone surrogates)") from None
        if self.missing_bytes.intersection(raw):
            for pos, char in enumerate(text):
                if self.missing_bytes.intersection(char.encode("utf-8")):
                    raise SemInputError(
                        f"character U+{ord(char):04X} at position {pos} has no token in this model's "
                        "vocabulary; it cannot be packed"
                    )
        ids: list[int] = self._tok.encode(text, add_special_tokens=False).ids
        if any(i in self.control_ids for i in ids):
            raise SemInputError("text tokenizes to a control token and cannot be packed")
        if self.decode(ids) != text:
            raise SemInputError("the tokenizer cannot reproduce this text exactly; refusing to pack it")
        return ids

    def encode_context(self, text: str) -> list[int]:
        """Tokenize a context profile: control-token spellings become control tokens."""
        ids: list[int] = []
        pos = 0
        for match in self._control_re.finditer(text):
            if match.start() > pos:
                ids += self._tok.encode(text[pos : match.start()], add_special_tokens=False).ids
            ids.append(self._control_by_text[match.group()])
            pos = match.end()
        if pos < len(text):
            ids += self._tok.encode(text[pos:], add_special_tokens=False).ids
        return ids

    def token_bytes(self, token: int) -> bytes:
        made = self._some_bytes.get(token)
        if made is None:
            made = self._some_bytes[token] = self._make_bytes(token)
        return made

    def decode(self, ids: Sequence[int]) -> str:
        """Concatenate the tokens' bytes; invalid UTF-8 means a corrupt payload."""
        try:
            return b"".join(self.token_bytes(i) for i in ids).decode("utf-8")
        except UnicodeDecodeError:
            raise SemIntegrityError("payload decodes to bytes that are not valid UTF-8") from None
