#!/usr/bin/env python3
"""What ending a paragraph costs: the model's end-of-text token against a length prior.

A five-caption paragraph's end-of-text token is expensive under profile 5 (about 7–8
bits: the model cannot count captions), while its length in tokens is easy to guess
(sd ≈ 7 tokens, ≈ 4.8 bits). This script measures, exactly (the tables ``pack`` would
use), three ways to code where a paragraph ends, each with the tokens' own bits, under
two contexts: profile 5's, and a plain list of the same 20 examples (``<|endoftext|>``,
one example per line, a line break as the end symbol: the float figure of
``gemma_rate.py --kind paragraphs`` that made it a candidate):

* **eos**: today's stream (SPEC §4): end-of-text is a token of the model's table.
* **prior**: the length is a symbol of a fixed two-sided geometric table (its centre the
  median length of lines 0–299, its scale chosen on the tune lines); the tokens are coded
  with the end-of-text entry's mass given back to the others.
* **hybrid**: before each token a binary "ends here" symbol whose probability is a
  logistic mix of the model's end-of-text probability and the prior's hazard at that
  length, fitted on the tune lines.

The tune lines are 200–299 of ``coco-paragraphs-dev.txt`` (profile 5's examples come
from lines 0–199); the check lines are 300–499, the held-out set of the README. The
table also prints what the header would cost such a stream: v3 has no free one-byte
form left, so a new profile's short header goes through the escape (SPEC §4).

    nice -n 5 env OPENBLAS_NUM_THREADS=1 python benchmarks/end_of_text.py
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

PROFILE = 5  # the paragraph profile the candidates are measured against
TUNE = (200, 300)
CHECK = (300, 500)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def geometric_prior(centre: int, scale: float, size: int) -> np.ndarray:
    """``p(n) ∝ exp(-|n - centre| / scale)`` for n in [0, size)."""
    n = np.arange(size)
    p = np.exp(-np.abs(n - centre) / scale)
    return p / p.sum()


def hazard(prior: np.ndarray) -> np.ndarray:
    """``P(L = n | L ≥ n)``."""
    survive = np.cumsum(prior[::-1])[::-1]
    return np.clip(prior / np.maximum(survive, 1e-300), 1e-12, 1 - 1e-12)


class Paragraph:
    """One text's exact numbers under a context: per-token bits and end-symbol probabilities."""

    def __init__(self, picked: np.ndarray, p_end: np.ndarray) -> None:
        self.length = len(picked) - 1  # body tokens
        self.p_eos = p_end  # at each position 0..L
        self.eos_bits = float(-np.log2(picked).sum())  # the stream as coded today, end symbol included
        self.tokens_without_eos = float(-np.log2(picked[:-1] / (1 - p_end[:-1])).sum())


def paragraphs(context: str, end: str, texts: list[str]) -> list[Paragraph]:
    """Exact tables (the runtime ``pack`` uses) of each text after ``context``, ended by the token ``end``."""
    from semcodec.models import blas_threads, evaluate_context, load_model

    model = load_model(0)  # the weights and tokenizer every SmolLM2 profile shares
    lm, tok = model.lm, model.tokenizer
    (end_id,) = tok.encode_context(end)
    state = evaluate_context(lm, tok.encode_context(context))
    out = []
    with blas_threads():
        for lo in range(0, len(texts), 6):
            toks = [tok.encode(t) for t in texts[lo : lo + 6]]
            hidden = lm.forward_many([(t, lm.new_cache(state.prefix)) for t in toks])
            for t, h in zip(toks, hidden, strict=True):
                tables = lm.tables(np.concatenate([state.hidden, h[: len(t)]]))
                symbols = [*t, end_id]
                picked = tables[np.arange(len(symbols)), symbols].astype(np.float64) / 2.0**24
                out.append(Paragraph(picked, tables[:, end_id].astype(np.float64) / 2.0**24))
    return out


def hybrid_bits(paras: list[Paragraph], weights: np.ndarray, h: np.ndarray) -> float:
    total = 0.0
    for p in paras:
        n = np.arange(p.length + 1)
        z = weights[0] * _logit(p.p_eos) + weights[1] * _logit(h[n]) + weights[2]
        q = np.clip(1 / (1 + np.exp(-z)), 1e-12, 1 - 1e-12)
        total += float(-np.log2(1 - q[:-1]).sum() - np.log2(q[-1])) + p.tokens_without_eos
    return total / len(paras)


def fit_hybrid(paras: list[Paragraph], h: np.ndarray) -> np.ndarray:
    """Logistic regression of "ends here" on (logit p_eos, logit hazard, 1): Newton steps."""
    rows, ends = [], []
    for p in paras:
        n = np.arange(p.length + 1)
        rows.append(np.stack([_logit(p.p_eos), _logit(h[n]), np.ones(len(n))], axis=1))
        ends.append(n == p.length)
    x, y = np.concatenate(rows), np.concatenate(ends).astype(np.float64)
    w = np.array([0.0, 1.0, 0.0])
    for _ in range(50):
        q = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (q - y)
        hess = (x * (q * (1 - q))[:, None]).T @ x + 1e-6 * np.eye(3)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return w


def main(argv: list[str] | None = None) -> int:
    from semcodec.container import SHORT_MODEL_TABLE
    from semcodec.models import load_model
    from semcodec.priming import PARAGRAPH_REPLIES
    from semcodec.registry import model_spec

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from priming import data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", type=int, default=CHECK[1] - CHECK[0], help="check paragraphs (from line 300)")
    args = parser.parse_args(argv)
    lines = (data_dir() / "coco-paragraphs-dev.txt").read_text(encoding="utf-8").splitlines()
    tokenizer = load_model(0).tokenizer
    centre = int(np.median([len(tokenizer.encode(t)) for t in lines[: TUNE[1]]]))
    p5 = model_spec(PROFILE)
    candidates = {
        "profile 5 (replies, end <|im_end|>)": (p5.context, p5.eos_token),
        "list k=20 (profile 5's examples one per line, end \\n)": (
            "<|endoftext|>" + "".join(f"{e}\n" for e in PARAGRAPH_REPLIES), "\n"),
    }
    size = 2049
    print("| context | lines | eos: bits | prior: bits | hybrid: bits | hybrid vs eos | eos vs profile 5 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    notes, reference = [], {}
    for name, (context, end) in candidates.items():
        tune = paragraphs(context, end, lines[TUNE[0] : TUNE[1]])
        check = paragraphs(context, end, lines[CHECK[0] : CHECK[0] + args.check])

        def prior_bits(paras: list[Paragraph], prior: np.ndarray) -> float:
            return sum(p.tokens_without_eos - math.log2(prior[p.length]) for p in paras) / len(paras)

        scale = min((4.0, 5.0, 6.0, 7.0), key=lambda s: prior_bits(tune, geometric_prior(centre, s, size)))
        prior = geometric_prior(centre, scale, size)
        h = hazard(prior)
        weights = fit_hybrid(tune, h)
        notes.append(f"{name}: prior scale {scale}, hybrid weights {np.round(weights, 3).tolist()}")
        for split, paras in ((f"{TUNE[0]}–{TUNE[1] - 1} (tune)", tune), (f"{CHECK[0]}– (check)", check)):
            eos = sum(p.eos_bits for p in paras) / len(paras)
            reference.setdefault(split, eos)
            pri, hyb = prior_bits(paras, prior), hybrid_bits(paras, weights, h)
            print(f"| {name} | {split}, {len(paras)} | {eos:.2f} | {pri:.2f} | {hyb:.2f} | {hyb - eos:+.2f} "
                  f"| {eos - reference[split]:+.2f} |")
    print(f"\nprior centre {centre} tokens (median of lines 0–{TUNE[1] - 1}); " + "; ".join(notes))
    short = 3.0  # the form symbol 1 of [2^21, 2^21, 2^22, 2^23]
    id5 = short + 24 - math.log2(SHORT_MODEL_TABLE[-1])
    escape = short + 24 - math.log2(SHORT_MODEL_TABLE[0])
    print(f"header bits: id 5 in v3's short form {id5:.2f}; a new profile through the escape ≥ {escape:.2f} "
          f"(+{escape - id5:.2f}); v2 explicit `A7 01 id` 16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
