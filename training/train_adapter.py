"""Train the describer adapter: a LoRA on SmolLM2-135M-Instruct, from the runtime's own weights.

What: one low-rank adapter (rank 16 on every linear layer of every block) trained on the
``shared/data`` corpora, each kind of text under its own instruction (the contexts of
profiles 6–9 in ``semcodec.registry``): one-sentence captions (COCO, Flickr8k), five-caption
paragraphs, detailed descriptions by VLMs and people, and web alt-text (CC3M). The loss is
the cross-entropy of the reply's tokens and the end-of-text token: exactly what ``pack``
codes after the context.

Why: the context levers of a 135M model are spent (issue #9); the weights are the next one.
Trained in float on CPU with torch + peft; :mod:`export_adapter` turns it into the integer
factors that ship (SPEC §5, step 1b).

Reproduce (2 quiet cores; seeded; resumable — run the same command again after a stop)::

    .venv/bin/pip install torch==2.13.0 peft==0.18.0
    .venv/bin/python training/train_adapter.py --tokens 900000 --out training/run
    .venv/bin/python training/export_adapter.py training/run

The log (``log.tsv``: step, tokens seen, train loss, tokens/s, wall s) is written beside the
checkpoint; ``training/README.md`` quotes the run that shipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora
import model as smol

# The share of training tokens each kind gets (descriptions are what `encode` codes).
MIX = {"descriptions": 0.5, "captions": 0.25, "paragraphs": 0.15, "alt-text": 0.10}
MAX_REPLY_TOKENS = 320  # longer descriptions are cut for training only (the longest 5 % or so)


def tokenizer_and_contexts() -> tuple[object, dict[str, list[int]], int]:
    from semcodec.models import load_model
    from semcodec.registry import ADAPTED_PROFILES

    base = load_model(0)
    contexts = {kind: base.tokenizer.encode_context(ctx) for kind, (_, ctx) in ADAPTED_PROFILES.items()}
    return base.tokenizer, contexts, base.eos_id


def training_texts() -> dict[str, list[corpora.Text]]:
    pools: dict[str, list[corpora.Text]] = {k: [] for k in corpora.KINDS}
    for corpus in ("coco-captions", "flickr8k", "cc3m", "descriptions", "coco-paragraphs"):
        for text, split in corpora.load(corpus):
            if split == "train":
                pools[text.kind].append(text)
    for corpus in ("coco-captions", "flickr8k"):
        pools["paragraphs"] += corpora.grouped_paragraphs(corpus, "train")
    return pools


def round_robin(pool: list[corpora.Text], rng: random.Random) -> list[corpora.Text]:
    """``pool`` shuffled within each corpus, then the corpora taken in turn: every corpus of
    a kind gets the same share of its tokens until it runs out (COCO's 4,000 training
    captions would otherwise be a tenth of the caption pool, beside Flickr8k's 36,410)."""
    by_corpus: dict[str, list[corpora.Text]] = {}
    for t in pool:
        by_corpus.setdefault(t.corpus, []).append(t)
    queues = [by_corpus[c] for c in sorted(by_corpus)]
    for q in queues:
        rng.shuffle(q)
    out: list[corpora.Text] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def examples(seed: int, total_tokens: int, mix: dict[str, float] | None = None,
             balance: bool = False) -> list[tuple[str, list[int]]]:
    """The training stream: (kind, context + reply + end-of-text ids), shuffled, cut to the
    mix (``MIX`` unless given); ``balance``: the corpora of a kind in turn (:func:`round_robin`)."""
    tok, contexts, eos = tokenizer_and_contexts()
    rng = random.Random(seed)
    stream: list[tuple[str, list[int]]] = []
    mix = MIX if mix is None else mix
    for kind, pool in training_texts().items():
        if kind not in mix:
            continue
        if balance:
            pool = round_robin(pool, rng)
        else:
            pool = list(pool)
            rng.shuffle(pool)
        budget = int(mix[kind] * total_tokens)
        used = 0
        for t in pool:
            if used >= budget:
                break
            try:
                reply = tok.encode(t.text)  # type: ignore[attr-defined]
            except Exception:
                continue
            ids = contexts[kind] + reply[:MAX_REPLY_TOKENS] + [eos]
            stream.append((kind, ids))
            used += len(ids)
    rng.shuffle(stream)
    return [(k, ids) for k, ids in stream]


def batches(stream: list[tuple[str, list[int]]], budget: int, seed: int) -> list[list[list[int]]]:
    """Sequences of similar length together (windows of 512 sorted by length), at most
    ``budget`` padded tokens a batch; batch order shuffled."""
    out: list[list[list[int]]] = []
    for lo in range(0, len(stream), 512):
        window = sorted((ids for _, ids in stream[lo : lo + 512]), key=len)
        batch: list[list[int]] = []
        for ids in window:
            if batch and (len(batch) + 1) * len(ids) > budget:
                out.append(batch)
                batch = []
            batch.append(ids)
        if batch:
            out.append(batch)
    random.Random(seed + 1).shuffle(out)
    return out


def batch_loss(model: torch.nn.Module, batch: list[list[int]], ctx_len: dict[tuple[int, ...], int]) -> tuple[
        torch.Tensor, int]:
    """Mean cross-entropy (nats) of the reply tokens and end-of-text in ``batch``."""
    device = model.embed.weight.device
    t = max(len(ids) for ids in batch)
    ids = torch.zeros((len(batch), t), dtype=torch.long)
    rows, cols, targets = [], [], []
    for b, seq in enumerate(batch):
        ids[b, : len(seq)] = torch.tensor(seq)
        start = next(n for prefix, n in ctx_len.items() if tuple(seq[:n]) == prefix)
        for p in range(start - 1, len(seq) - 1):  # position p predicts token p + 1
            rows.append(b)
            cols.append(p)
            targets.append(seq[p + 1])
    hidden = model.hidden(ids.to(device))  # (B, T, hidden)
    logits = model.head(hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)])  # coded positions
    return F.cross_entropy(logits, torch.tensor(targets, device=device)), len(targets)


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def load_shipped(model: torch.nn.Module, npz: Path, scaling: float) -> int:
    """Start from a shipped adapter's integer factors (``export_adapter``'s inverse): peft's
    ``A = t·A_int``, ``B[n] = c[n]·B_int[n] / (scaling·t)``, with ``t`` balancing the two;
    their product times ``scaling`` is exactly what SPEC §5 step 1b merges. Returns the
    number of matrices loaded."""
    import numpy as np
    from export_adapter import gguf_tensor

    arrays = np.load(npz)
    state = model.state_dict()
    loaded = 0
    for key in state:
        tensor = gguf_tensor(key)
        if tensor is None:
            continue
        a_int = arrays[f"{tensor}.A"].astype(np.float64)
        b_int = arrays[f"{tensor}.B"].astype(np.float64)
        c = arrays[f"{tensor}.c"].astype(np.float64)
        t = math.sqrt(max(float(np.abs(c).max()), 1e-30) / scaling)
        state[key].copy_(torch.from_numpy(a_int * t))
        state[key.replace("lora_A", "lora_B")].copy_(torch.from_numpy(b_int * (c / (scaling * t))[:, None]))
        loaded += 1
    return loaded


def parse_mix(spec: str) -> dict[str, float]:
    mix = {}
    for part in spec.split(","):
        kind, _, share = part.partition("=")
        if kind not in corpora.KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r} (one of {', '.join(corpora.KINDS)})")
        mix[kind] = float(share)
    return mix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=900_000, help="training tokens (context included)")
    ap.add_argument("--batch-tokens", type=int, default=3072)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cpu",
                    help="torch device to train on, e.g. cuda (the adapter is the same artifact; a GPU run is not "
                         "bit-reproducible, a CPU run is)")
    ap.add_argument("--checkpoint-every", type=int, default=20)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: all)")
    ap.add_argument("--init", type=Path, help="start from this run's adapter.pt (a second stage)")
    ap.add_argument("--init-npz", type=Path, help="start from a shipped adapter's integer factors (.npz)")
    ap.add_argument("--mix", type=parse_mix, default=None,
                    help="share of tokens per kind, e.g. captions=0.75,paragraphs=0.25 (default: MIX)")
    ap.add_argument("--balance-corpora", action="store_true",
                    help="take the corpora of each kind in turn instead of one shuffled pool")
    args = ap.parse_args()

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))

    _, contexts, _ = tokenizer_and_contexts()
    ctx_len = {tuple(ids): len(ids) for ids in contexts.values()}
    stream = examples(args.seed, args.tokens, args.mix, args.balance_corpora)
    plan = batches(stream, args.batch_tokens, args.seed)
    steps = len(plan)
    print(f"{len(stream)} sequences, {sum(len(s) for _, s in stream)} tokens, {steps} steps", flush=True)

    base = smol.build()
    config = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=list(smol.TARGETS),
                        bias="none")
    model = get_peft_model(base, config).to(args.device)
    params = [p for p in model.parameters() if p.requires_grad]
    print(f"trainable parameters: {sum(p.numel() for p in params)}", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))

    if args.init:
        first = torch.load(args.init, weights_only=False, map_location="cpu")
        missing = model.load_state_dict(first["lora"], strict=False).unexpected_keys
        assert not missing, missing
        print(f"initialised from {args.init}", flush=True)
    if args.init_npz:
        n = load_shipped(model, args.init_npz, args.alpha / args.rank)
        print(f"initialised from {args.init_npz} ({n} matrices)", flush=True)
    ckpt = args.out / "checkpoint.pt"
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location="cpu")  # the RNG state must stay on the CPU
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["opt"])
        start = state["step"]
        torch.set_rng_state(state["rng"])
        print(f"resumed at step {start}", flush=True)
    log = (args.out / "log.tsv").open("a")
    if start == 0:
        log.write("step\ttokens\tloss_bits\ttokens_per_s\twall_s\n")
    seen = sum(sum(len(s) for s in b) for b in plan[:start])
    t0 = time.time()
    window_tokens, window_t = 0, time.time()
    model.train()
    for step in range(start, steps):
        if args.max_steps and step >= args.max_steps:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, args.lr, args.warmup)
        loss, _ = batch_loss(model.base_model.model, plan[step], ctx_len)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        n = sum(len(s) for s in plan[step])
        seen += n
        window_tokens += n
        if (step + 1) % 5 == 0 or step + 1 == steps:
            now = time.time()
            rate = window_tokens / (now - window_t)
            window_tokens, window_t = 0, now
            line = f"{step + 1}\t{seen}\t{loss.item() / math.log(2):.4f}\t{rate:.0f}\t{now - t0:.0f}"
            log.write(line + "\n")
            log.flush()
            print(line, flush=True)
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == steps:
            trainable = {k: v.detach().cpu() for k, v in model.state_dict().items() if "lora_" in k}
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": trainable, "opt": opt.state_dict(), "step": step + 1,
                        "rng": torch.get_rng_state()}, tmp)
            os.replace(tmp, ckpt)
    trainable = {k: v.detach().cpu() for k, v in model.state_dict().items() if "lora_" in k}
    torch.save({"lora": trainable, "rank": args.rank, "alpha": args.alpha}, args.out / "adapter.pt")
    print("done", flush=True)


if __name__ == "__main__":
    main()
