/* One decode step of the exact runtime for a single row, native (step.c): the Python entry points
 * that products.c's module carries. Layouts and bounds: step.c's opening comment and bounds.h. */
#ifndef SEMCODEC_NATIVE_STEP_H
#define SEMCODEC_NATIVE_STEP_H

#include <Python.h>

PyObject *semcodec_step_model(PyObject *self, PyObject *args);
PyObject *semcodec_step(PyObject *self, PyObject *args);
PyObject *semcodec_step_many(PyObject *self, PyObject *args);

#define SEMCODEC_STEP_MODEL_DOC                                                                           \
    "step_model(config, tables, layers): the weights of ExactLM for step() (kept referenced), as a capsule. " \
    "config = (hidden, ffn, heads, kv_heads, head_dim, amax_hidden, amax_ffn, rms_eps, attention_shift, "      \
    "sigmoid_half, sigmoid_step_bits); tables = (rope_cos, rope_sin, sigmoid, attention_exp + [0]); layers = "   \
    "[(attn_norm, qkv panels, qkv colsum, qkv scale, o panels, o colsum, o scale, ffn_norm, gate_up panels, "  \
    "gate_up colsum, gate_up scale, down panels, down colsum, down scale), ...] (panels: panels.h's layout)."
#define SEMCODEC_STEP_DOC                                                                                 \
    "step(model, x, position, keys, values, own, attend, rows, own_top, path=None) -> bool: every layer of " \
    "one token's row x (hidden,) float64, in place (SPEC section 5, steps 2-5), writing its keys and values " \
    "at index own of the cache (layers, capacity, kv_heads, head_dim) int32. attend(layer) (or None: no "    \
    "prefix) returns the prefix's (num, z, top) for the query rows and own maxima written to rows and "      \
    "own_top. False (x and the cache's row own undefined) when a value is not finite: the caller recomputes."
#define SEMCODEC_STEP_MANY_DOC                                                                            \
    "step_many(model, x, positions, caches, attend, rows, own_top, products, staging, path=None) -> bool: "   \
    "step() for M rows in lockstep, each continuing its own cache: x (M, hidden) float64 in place, "          \
    "positions a tuple of M ints, caches a list of M (keys, values, own); rows of one cache take "          \
    "consecutive indices, in order (a prefill). The rows share each "                                       \
    "weight product and one attend(layer) per layer over rows (KV, M G, D) and own_top (KV, M G) (row b's "   \
    "head h G + g at [h, b G + g]). products: None (native) or products(matrix, k) -> (M, N) int32 of the " \
    "M rows of staging (int8, at least M * max(hidden, ffn, heads * head_dim)), matrix = 4 layer + (0 qkv, 1 o, 2 gate_up, "  \
    "3 down). False when a row's value is not finite (the caller recomputes every row)."

#endif
