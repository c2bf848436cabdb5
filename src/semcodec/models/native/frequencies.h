/* Frequency tables from logits, native (frequencies.c): SPEC section 5, step 6, fused into two
 * passes per row where numpy makes about fourteen. Layouts: logits (N, V) float64, table (L,)
 * int64 (E24 and one 0 past its end), out (N, V) int32, all C-contiguous; V <= 2**24 - 1.
 * Bounds: an E24 entry is at most 2**24, so a row's sum of V entries is below 2**48 and
 * e * (2**24 - V) below 2**48: int64 throughout, exact. Rows are handed to the products' thread
 * pool (products.h), one row per block: each row is computed alone, so no bit depends on it. */
#ifndef SEMCODEC_NATIVE_FREQUENCIES_H
#define SEMCODEC_NATIVE_FREQUENCIES_H

#include <Python.h>

PyObject *semcodec_frequencies(PyObject *self, PyObject *args);
PyObject *semcodec_head_frequencies(PyObject *self, PyObject *args);

#define SEMCODEC_FREQUENCIES_DOC                                                                          \
    "frequencies(logits, table, scale, precision_bits, out) -> bool: out[i] = the frequency table of "      \
    "logits[i] (SPEC section 5, step 6): n = rint(min((max - l) * scale, len(table) - 1)), e = table[n], "   \
    "f = 1 + floor(e * (2**precision_bits - V) / sum(e)), the remainder added to the first largest e. "     \
    "False (out undefined) when a logit is not finite: the caller computes the table with numpy."

#define SEMCODEC_HEAD_FREQUENCIES_DOC                                                                     \
    "head_frequencies(acc, x_scale, w_scale, table, scale, precision_bits, out) -> bool: frequencies() of "  \
    "the logits ((double)acc * x_scale[i]) * w_scale[j] (acc (N, V) int32: the output head's exact products; " \
    "x_scale (N,), w_scale (V,) float64), made row by row as ExactLM._matmul makes them, never stored."

#endif
