"""Low-rank adapters merged exactly into the runtime's int8 weights (SPEC §5, step 1b).

What: an adapter is a set of integer factors per weight matrix — ``A`` (r, K) int8,
``B`` (N, r) int8 and a per-row factor ``c`` (N,) binary32 — that changes the runtime's
requantised rows ``q·s`` (step 1) into ``q·s + c ⊙ (B @ A)`` before requantising them again.
Why: a model trained for what describers write codes their text in fewer bits (issue #23),
and a merge computed once, at conversion, costs nothing per token: the adapted weights are
another int8 cache entry, pinned and verified like the base one.

The merge is exact by construction: ``B @ A`` is an integer product (|each| <= r·127², summed
in int64), and every other operation is one correctly rounded binary64 operation per
element, in a fixed order, so the adapted rows are the same bits on every machine.

    >>> import numpy as np
    >>> q, s = np.array([[127, -64, 0]], np.int8), np.array([0.5])
    >>> factors = Factors(a=np.array([[1, 0, 2]], np.int8), b=np.array([[3]], np.int8), c=np.array([0.25], "<f4"))
    >>> merged_q, merged_s = merge_rows(q, s, factors)
    >>> merged_q.tolist()  # the row 63.5 + 0.75, -32 + 0, 0 + 1.5, requantised
    [[127, -63, 3]]
    >>> float(merged_s[0]) == 64.25 / 127
    True
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from semcodec.errors import SemModelError

FACTOR_MAX = 127
"""``|A|, |B| <= 127``: each element of ``B @ A`` is a sum of r products below 2**14."""
MAX_RANK = 64
"""A larger rank is refused: ``B @ A`` stays below 2**20, exact in binary64 after the cast."""


@dataclass(frozen=True)
class Factors:
    """One matrix's adapter: its rows change by ``c[:, None] * (b @ a)``."""

    a: np.ndarray  # (r, K) int8
    b: np.ndarray  # (N, r) int8
    c: np.ndarray  # (N,) binary32 (read as binary64 exactly)

    def check(self, rows: int, cols: int, name: str) -> None:
        r = self.a.shape[0]
        ok = (
            self.a.dtype == np.int8 and self.b.dtype == np.int8 and self.c.dtype == np.dtype("<f4")
            and self.a.shape == (r, cols) and self.b.shape == (rows, r) and self.c.shape == (rows,)
            and 1 <= r <= MAX_RANK
            and int(np.abs(self.a.astype(np.int16)).max()) <= FACTOR_MAX
            and int(np.abs(self.b.astype(np.int16)).max()) <= FACTOR_MAX
            and bool(np.isfinite(self.c).all())
        )
        if not ok:
            raise SemModelError(f"adapter factors for {name} do not fit a ({rows}, {cols}) matrix")


def delta(factors: Factors) -> np.ndarray:
    """``B @ A`` as exact integers (int64), (N, K)."""
    return factors.b.astype(np.int64) @ factors.a.astype(np.int64)


def merge_rows(q: np.ndarray, scale: np.ndarray, factors: Factors) -> tuple[np.ndarray, np.ndarray]:
    """SPEC §5 step 1b: ``r = q·s + c·(B @ A)`` per element (each product and the sum rounded
    once, binary64), then step 1's requantisation of each row of ``r``."""
    from semcodec.models.weights import quantize_matrix

    factors.check(q.shape[0], q.shape[1], "matrix")
    base = q.astype(np.float64) * scale[:, None]  # q·s: step 1's row, one rounding per element
    change = delta(factors).astype(np.float64) * factors.c.astype(np.float64)[:, None]  # exact cast, one rounding
    return quantize_matrix(base + change)


@dataclass(frozen=True)
class Adapter:
    """A named adapter: factors per GGUF tensor name (``blk.3.attn_q.weight``)."""

    name: str
    sha256: str
    factors: dict[str, Factors]

    def merge(self, tensor: str, q: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of GGUF tensor ``tensor`` after step 1b (unchanged when it has no factors)."""
        f = self.factors.get(tensor)
        if f is None:
            return q, scale
        f.check(q.shape[0], q.shape[1], tensor)
        return merge_rows(q, scale, f)


_MEMBER = {"A": "a", "B": "b", "c": "c"}


def parse(name: str, data: bytes) -> Adapter:
    """An adapter from the bytes of its ``.npz`` (members ``{tensor}.A``, ``.B``, ``.c``; no pickle)."""
    digest = hashlib.sha256(data).hexdigest()
    parts: dict[str, dict[str, np.ndarray]] = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            for member in archive.files:
                tensor, _, kind = member.rpartition(".")
                if kind not in _MEMBER:
                    raise SemModelError(f"adapter {name}: unexpected member {member!r}")
                parts.setdefault(tensor, {})[_MEMBER[kind]] = archive[member]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise SemModelError(f"adapter {name} cannot be read ({err})") from None
    factors = {}
    for tensor, arrays in parts.items():
        if set(arrays) != {"a", "b", "c"}:
            raise SemModelError(f"adapter {name}: {tensor} lacks one of A, B, c")
        factors[tensor] = Factors(**arrays)
    return Adapter(name, digest, factors)


@cache
def packaged(name: str, sha256: str) -> Adapter:
    """The adapter shipped in ``semcodec/models/adapters/{name}.npz``, refused unless its
    bytes have the sha256 the registry pins."""
    try:
        data = resources.files("semcodec.models").joinpath("adapters", f"{name}.npz").read_bytes()
    except OSError as err:
        raise SemModelError(f"the packaged adapter {name} is missing ({err}); reinstall semcodec") from None
    adapter = parse(name, data)
    if adapter.sha256 != sha256:
        raise SemModelError(f"the packaged adapter {name} has sha256 {adapter.sha256[:16]}…, not the pinned "
                            f"{sha256[:16]}…; reinstall semcodec")
    return adapter
