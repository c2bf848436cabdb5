"""Lookup tables for the exact runtime, built with correctly rounded decimal arithmetic.

No libm call is involved: ``decimal``'s ``exp`` is correctly rounded by specification,
sine and cosine come from Taylor series evaluated with 50 significant digits, and the
final conversion ``float(Decimal)`` rounds correctly. So every table is the same bit
pattern on every machine and Python build. They are part of the format (SPEC §5).
"""

from __future__ import annotations

from decimal import Context, Decimal
from functools import cache

import numpy as np

_CTX = Context(prec=50)

SOFTMAX_STEP_BITS = 8
"""exp tables are indexed by ``round(distance * 2**8)``: a step of 1/256 nat."""

ATTENTION_EXP_SCALE_BITS = 16
LOGIT_EXP_SCALE_BITS = 24
SIGMOID_STEP_BITS = 10
SIGMOID_RANGE = 16  # |x| >= 16: sigmoid saturates (error < 1.2e-7)


def _exp_neg(x: Decimal) -> Decimal:
    return _CTX.exp(-x)


@cache
def exp_table(scale_bits: int) -> np.ndarray:
    """``T[i] = round(2**scale_bits * exp(-i / 256))`` for every i until it rounds to 0 (int64)."""
    one = Decimal(2) ** scale_bits
    step = Decimal(1) / Decimal(2**SOFTMAX_STEP_BITS)
    values = []
    i = 0
    while True:
        v = int(_CTX.multiply(one, _exp_neg(step * i)).to_integral_value())
        if v == 0:
            break
        values.append(v)
        i += 1
    return np.array(values, dtype=np.int64)


@cache
def sigmoid_table() -> np.ndarray:
    """``S[k] = 1 / (1 + exp(-(k - K) / 1024))`` for ``k`` in ``[0, 2K]``, ``K = 16 * 1024`` (float64)."""
    half = SIGMOID_RANGE << SIGMOID_STEP_BITS
    step = Decimal(1) / Decimal(2**SIGMOID_STEP_BITS)
    out = np.empty(2 * half + 1, dtype=np.float64)
    for k in range(-half, half + 1):
        out[k + half] = float(_CTX.divide(1, 1 + _exp_neg(step * k)))
    return out


def _taylor(x: Decimal, term: Decimal, n: int) -> Decimal:
    """Sum of ``term * (-x**2)**j / ((n+1)(n+2)...)`` until the terms fall below 1e-60."""
    total = Decimal(0)
    while abs(term) >= Decimal("1e-60"):
        total = _CTX.add(total, term)
        term = _CTX.divide(_CTX.multiply(_CTX.multiply(term, x), -x), (n + 1) * (n + 2))
        n += 2
    return total


def _sin_cos(x: Decimal) -> tuple[Decimal, Decimal]:
    """Taylor series for |x| <= 1 (enough terms for 50 digits)."""
    return _taylor(x, x, 1), _taylor(x, Decimal(1), 0)


def rope_tables(n_positions: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """``cos, sin`` of ``p * theta**(-2i/head_dim)``, shape ``(n_positions, head_dim // 2)`` (float64).

    The rotation by position p is the p-th power of the rotation by one step, computed
    with 128-bit fixed-point integers (error far below float64 resolution), then rounded.
    """
    half = head_dim // 2
    frac = 128
    unit = 1 << frac
    theta_dec = Decimal(repr(theta))
    cos_out = np.empty((n_positions, half), dtype=np.float64)
    sin_out = np.empty((n_positions, half), dtype=np.float64)
    for i in range(half):
        omega = _CTX.power(theta_dec, _CTX.divide(Decimal(-2 * i), Decimal(head_dim)))
        s, c = _sin_cos(omega)
        step_c = int(_CTX.multiply(c, unit).to_integral_value())
        step_s = int(_CTX.multiply(s, unit).to_integral_value())
        zc, zs = unit, 0
        for p in range(n_positions):
            cos_out[p, i] = zc / unit
            sin_out[p, i] = zs / unit
            zc, zs = (zc * step_c - zs * step_s) >> frac, (zc * step_s + zs * step_c) >> frac
    return cos_out, sin_out
