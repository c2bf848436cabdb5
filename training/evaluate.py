#!/usr/bin/env python3
"""Cross-entropy of held-back texts under an adapter, in float torch: the quick way to
compare training runs before one is exported and registered.

Each text is scored as ``pack`` codes it under its kind's adapted profile (SPEC §2, ids
6–13): the reply's tokens and ``<|im_end|>`` after the profile's context, in bits per text.
The float model is the exact runtime's own int8 rows times their scales, so these bits are
close to, not equal to, what the codec pays (the codec adds about 1.3 B of header,
termination and fixed symbols per file); the choice between runs is then confirmed with
the real codec (``benchmarks/describer_rate.py --part choose``).

    python training/evaluate.py src/semcodec/models/adapters/captioner-1.npz training/run5/adapter.pt \
        --sets captions-coco,paragraphs-coco --limit 100
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout
import model as smol
from train_adapter import load_shipped, tokenizer_and_contexts


def adapted_model(adapter: Path, rank: int, alpha: float, device: str = "cpu") -> torch.nn.Module:
    """The float model with ``adapter`` (a run's ``adapter.pt`` or a shipped ``.npz``) applied."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(smol.TARGETS), bias="none")
    model = get_peft_model(smol.build(), config)
    if adapter.suffix == ".npz":
        load_shipped(model, adapter, alpha / rank)
    else:
        state = torch.load(adapter, weights_only=False, map_location="cpu")
        unexpected = model.load_state_dict(state["lora"], strict=False).unexpected_keys
        assert not unexpected, unexpected
    model.eval()
    return model.base_model.model.to(device)


@torch.no_grad()
def text_bits(model: torch.nn.Module, context: list[int], reply: list[int], eos: int) -> float:
    """Bits of ``reply`` and end-of-text after ``context`` (one sequence, no padding)."""
    seq = context + reply + [eos]
    device = model.embed.weight.device
    ids = torch.tensor([seq], device=device)
    logits = model.head(model.hidden(ids)[0, len(context) - 1: len(seq) - 1])  # (len(reply) + 1, V)
    targets = torch.tensor(seq[len(context):], device=device)
    return float(F.cross_entropy(logits.float(), targets, reduction="sum")) / math.log(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("adapters", type=Path, nargs="+", help="adapter.pt of a run, or a shipped .npz")
    ap.add_argument("--sets", default="captions-coco,captions-flickr8k,paragraphs-coco")
    ap.add_argument("--part", choices=("choose", "report"), default="choose")
    ap.add_argument("--limit", type=int, default=100, help="texts per set (the first N of the split)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tok, contexts, eos = tokenizer_and_contexts()
    sets = {name: heldout.held_texts(name, args.part)[: args.limit] for name in args.sets.split(",")}
    # (context of the text's kind, reply): each held text names the profile it is coded under
    coded = {name: [(contexts[t.kind], tok.encode(t.text)) for t in texts]  # type: ignore[attr-defined]
             for name, texts in sets.items()}
    print(f"held-back part {args.part!r}, first {args.limit} texts per set; mean bits per text (float model)")
    print("| adapter | " + " | ".join(sets) + " |")
    print("| --- |" + " ---: |" * len(sets))
    for adapter in args.adapters:
        model = adapted_model(adapter, args.rank, args.alpha, args.device)
        means = [statistics.fmean(text_bits(model, context, r, eos) for context, r in coded[name])
                 for name in sets]
        print(f"| {adapter} | " + " | ".join(f"{m:.2f}" for m in means) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
