"""Lookup tables for the exact runtime, built with correctly rounded decimal arithmetic.

No libm call is involved: ``decimal``'s ``exp`` is correctly rounded by specification,
sine and cosine come from Taylor series evaluated with 50 significant digits, and the
final conversion ``float(Decimal)`` rounds correctly. So every table is the same bit
pattern on every machine and Python build. They are part of the format (SPEC §5).

Every decimal operation runs under :data:`DECIMAL_CONTEXT`, entered explicitly, never the
caller's thread context (a program that set ``decimal.getcontext().rounding`` or ``prec``
must still get the format's tables). :func:`runtime_tables` checks each table against the
sha256 pinned in :mod:`semcodec.models.pins`, so a wrong one is never cached or used.

    >>> import decimal
    >>> with decimal.localcontext(decimal.Context(prec=5, rounding=decimal.ROUND_DOWN)):
    ...     e24 = exp_table.__wrapped__(LOGIT_EXP_SCALE_BITS)
    >>> check_table("E24", e24) is None and int(e24[1]) == 16711808  # round(2**24 * exp(-1/256))
    True
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, InvalidOperation, Overflow, localcontext
from functools import cache

import numpy as np

from semcodec.errors import SemModelError
from semcodec.models import pins

DECIMAL_CONTEXT = Context(
    prec=50,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    capitals=1,
    clamp=0,
    flags=[],
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
"""Every table's arithmetic (SPEC §5): 50 digits, round half even; every field given, none inherited."""

SOFTMAX_STEP_BITS = 8
"""exp tables are indexed by ``round(distance * 2**8)``: a step of 1/256 nat."""

ATTENTION_EXP_SCALE_BITS = 16
LOGIT_EXP_SCALE_BITS = 24
SIGMOID_STEP_BITS = 10
SIGMOID_RANGE = 16  # |x| >= 16: sigmoid saturates (error < 1.2e-7)


@cache
def exp_table(scale_bits: int) -> np.ndarray:
    """``T[i] = round(2**scale_bits * exp(-i / 256))`` for every i until it rounds to 0 (int64)."""
    values = []
    with localcontext(DECIMAL_CONTEXT):
        one = Decimal(2) ** scale_bits
        step = Decimal(1) / Decimal(2**SOFTMAX_STEP_BITS)
        i = 0
        while True:
            v = int((one * (-(step * i)).exp()).to_integral_value())
            if v == 0:
                break
            values.append(v)
            i += 1
    return np.array(values, dtype=np.int64)


@cache
def sigmoid_table() -> np.ndarray:
    """``S[k] = 1 / (1 + exp(-(k - K) / 1024))`` for ``k`` in ``[0, 2K]``, ``K = 16 * 1024`` (float64)."""
    half = SIGMOID_RANGE << SIGMOID_STEP_BITS
    out = np.empty(2 * half + 1, dtype=np.float64)
    with localcontext(DECIMAL_CONTEXT):
        step = Decimal(1) / Decimal(2**SIGMOID_STEP_BITS)
        for k in range(-half, half + 1):
            out[k + half] = float(1 / (1 + (-(step * k)).exp()))  # float(Decimal) rounds correctly
    return out


def _taylor(x: Decimal, term: Decimal, n: int) -> Decimal:
    """Sum of ``term * (-x**2)**j / ((n+1)(n+2)...)`` until the terms fall below 1e-60."""
    total = Decimal(0)
    with localcontext(DECIMAL_CONTEXT):
        while abs(term) >= Decimal("1e-60"):
            total += term
            term = term * x * -x / ((n + 1) * (n + 2))
            n += 2
    return total


def _sin_cos(x: Decimal) -> tuple[Decimal, Decimal]:
    """Taylor series for |x| <= 1 (enough terms for 50 digits)."""
    return _taylor(x, x, 1), _taylor(x, Decimal(1), 0)


def rope_tables(n_positions: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """``cos, sin`` of ``p * theta**(-2i/head_dim)``, shape ``(n_positions, head_dim // 2)`` (float64).

    The rotation by position p is the p-th power of the rotation by one step, computed
    with 128-bit fixed-point integers (error far below float64 resolution), then rounded
    (``int / int`` is correctly rounded in Python).
    """
    half = head_dim // 2
    frac = 128
    unit = 1 << frac
    cos_out = np.empty((n_positions, half), dtype=np.float64)
    sin_out = np.empty((n_positions, half), dtype=np.float64)
    with localcontext(DECIMAL_CONTEXT):
        theta_dec = Decimal(repr(theta))
        for i in range(half):
            omega = theta_dec ** (Decimal(-2 * i) / Decimal(head_dim))
            s, c = _sin_cos(omega)
            step_c = int((c * unit).to_integral_value())
            step_s = int((s * unit).to_integral_value())
            zc, zs = unit, 0
            for p in range(n_positions):
                cos_out[p, i] = zc / unit
                sin_out[p, i] = zs / unit
                zc, zs = (zc * step_c - zs * step_s) >> frac, (zc * step_s + zs * step_c) >> frac
    return cos_out, sin_out


def rope_keys(n_positions: int, head_dim: int, theta: float) -> tuple[str, str]:
    """The pin names of the RoPE tables for these parameters."""
    tail = f"{n_positions}/{head_dim}/{theta!r}"
    return f"RoPE-cos/{tail}", f"RoPE-sin/{tail}"


def check_table(key: str, table: np.ndarray) -> None:
    """Raise :class:`SemModelError` unless ``table`` has the sha256 pinned for ``key``."""
    pinned = pins.TABLES.get(key)
    if pinned is None:
        raise SemModelError(f"no sha256 is pinned for the table {key} (semcodec.models.pins)")
    actual = pins.array_digest(table)
    if actual != pinned:
        raise SemModelError(
            f"the table {key} has sha256 {actual[:16]}…, not the pinned {pinned[:16]}…: this Python "
            "computes it differently from the format (SPEC §5), so it is not used"
        )


def runtime_tables(n_positions: int, head_dim: int, theta: float, check: bool = True) -> dict[str, np.ndarray]:
    """Every table the runtime uses, by pin name; ``check`` compares each with its pinned sha256."""
    cos, sin = rope_tables(n_positions, head_dim, theta)
    cos_key, sin_key = rope_keys(n_positions, head_dim, theta)
    out = {
        "E16": exp_table(ATTENTION_EXP_SCALE_BITS),
        "E24": exp_table(LOGIT_EXP_SCALE_BITS),
        "Sig": sigmoid_table(),
        cos_key: cos,
        sin_key: sin,
    }
    if check:
        for key, table in out.items():
            check_table(key, table)
    return out
