"""training/: the pieces of the adapter training that decide what ships (torch; no model run).

``--init-npz`` must start from exactly the adapter that ships (its float factors rebuilt from
the integer ones give the same product, and export them again to the same integers), and
``--balance-corpora`` must give each corpus of a kind its turn.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

import corpora  # noqa: E402
import export_adapter  # noqa: E402
import train_adapter  # noqa: E402

PEFT_KEY = "base_model.model.layers.{layer}.self_attn.q_proj.lora_{which}.default.weight"


class _Lora(torch.nn.Module):  # type: ignore[misc]
    """Just the two peft parameters of one adapted matrix, under peft's names."""

    def __init__(self, rank: int, k: int, n: int, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.a = torch.nn.Parameter(torch.zeros(rank, k))
        self.b = torch.nn.Parameter(torch.zeros(n, rank))

    def state_dict(self, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        return {PEFT_KEY.format(layer=self.layer, which="A"): self.a.data,
                PEFT_KEY.format(layer=self.layer, which="B"): self.b.data}


def test_init_from_a_shipped_adapter_is_the_shipped_adapter(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rank, k, n, scaling = 4, 24, 10, 2.0
    a_int, b_int, c = export_adapter.integer_factors(rng.normal(size=(rank, k)) * 0.02,
                                                     rng.normal(size=(n, rank)) * 0.01, scaling)
    npz = tmp_path / "demo.npz"
    npz.write_bytes(export_adapter.npz_bytes(
        {"blk.3.attn_q.weight.A": a_int, "blk.3.attn_q.weight.B": b_int, "blk.3.attn_q.weight.c": c}))
    model = _Lora(rank, k, n, layer=3)
    assert train_adapter.load_shipped(model, npz, scaling) == 1
    # The float product is step 1b's delta c[n]·(B_int·A_int), to binary32's precision ...
    shipped = c.astype(np.float64)[:, None] * (b_int.astype(np.int64) @ a_int.astype(np.int64))
    rebuilt = scaling * (model.b.data.double().numpy() @ model.a.data.double().numpy())
    assert np.abs(rebuilt - shipped).max() <= 1e-6 * np.abs(shipped).max()
    # ... and exporting it again gives the same integer factors.
    a2, b2, c2 = export_adapter.integer_factors(model.a.data.numpy(), model.b.data.numpy(), scaling)
    assert np.array_equal(a2, a_int) and np.array_equal(b2, b_int)
    assert np.allclose(c2, c, rtol=1e-2)
    # A matrix the file does not hold is an error, not a silent zero.
    with pytest.raises(KeyError):
        train_adapter.load_shipped(_Lora(rank, k, n, layer=4), npz, scaling)


def test_round_robin_gives_each_corpus_its_turn() -> None:
    pool = [corpora.Text("big", i, "captions", f"b{i}") for i in range(10)]
    pool += [corpora.Text("small", i, "captions", f"s{i}") for i in range(3)]
    out = train_adapter.round_robin(pool, random.Random(1))
    assert sorted(t.text for t in out) == sorted(t.text for t in pool)  # every text once
    assert [t.corpus for t in out[:6]] == ["big", "small"] * 3  # in turn while both last
    assert {t.corpus for t in out[6:]} == {"big"}


def test_mix_names_only_known_kinds() -> None:
    assert train_adapter.parse_mix("captions=0.75,paragraphs=0.25") == {"captions": 0.75, "paragraphs": 0.25}
    with pytest.raises(Exception, match="unknown kind 'poems'"):
        train_adapter.parse_mix("poems=1")
