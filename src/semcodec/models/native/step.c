/* The decode step of the exact runtime (semcodec.models.exact.ExactLM), native: step_many runs
 * several rows in lockstep, and step() is the same code for one row (both at the end of this file).
 *
 * step(model, x, position, keys, values, own, attend, rows, own_top, path) runs every layer of one
 * token's row in place, with the same IEEE binary64 operations in the same order as the numpy
 * code of exact.py (SPEC section 5, steps 2-5), so the row, the cache and every table are the same
 * bits. Per layer (nanoGPT's reading: x = x + attn(norm(x)); x = x + mlp(norm(x))):
 *
 *   norm      rms_quantize: step = max|x| / 32767 (1 for a zero row); t = rint(x / step);
 *             ms = ((sum t*t) * step * step) / K + eps; q, scale = quantize(x * gain); scale / sqrt(ms)
 *   products  y[n] = ((double)(q . w[:, n]) * x_scale) * w_scale[n]   (semcodec_products: exact int32)
 *   RoPE      heads 0 .. H+KV-1, pair j of position p: (e*c + o*(-s), o*c + e*s), c, s = cos, sin[p, j]
 *   fixed pt  q, k: rint(clip(y * 2**10, +-QK_LIMIT)); v: rint(clip(y * 2**12, +-V_LIMIT))
 *   attention own keys t <= own: s_t = q.k_t (int64, exact: |s| < 2**46), in blocks of OWN_BLOCK
 *             positions shared among the threads; the prefix's part by
 *             attend(layer) (the native prefix kernel, given the own maxima); p_t =
 *             E16[min((top - s_t + 2**(shift-1)) >> shift, len - 1)]; out = ((double)sum p v +
 *             prefix num) / (double)(sum p + prefix z) / 2**12
 *   o         quantize(out) then products; x = x + y
 *   mlp       g, u = products(norm(x)); silu = g * Sig[rint(clip(g * 2**b, +-half)) + half];
 *             quantize(silu * u) then down products; x = x + y
 *
 * quantize(y, amax_int): scale = max|y| / amax_int (1 for a zero row); q = rint(y / scale), clipped
 * to +-amax_int first when the scale is not a normal number (exact.py's quantize_rows).
 *
 * Code paths (`path`, the products' path name): "plain" keeps every part in C; any other path
 * takes the AVX2 loops for the elementwise rules (the same IEEE operations per element; the
 * reductions are a maximum, an OR and sums of integers, which no order changes) and the AVX2 + FMA
 * own attention, or its AVX-512 form with "vnni" on a CPU with AVX-512F.
 *
 * Exactness: the integer parts are exact in int32 (bounds.h) and int64 (scores < 2**46, sum p v <
 * 2**53 for at most MAX_POSITIONS positions); the float parts are single IEEE operations, compiled
 * without contraction (setup.py: -ffp-contract=off, no FMA in these functions) and never under
 * -ffast-math (bounds.h). Only the rounding mode must be the default, which the caller checks
 * (exact.check_rounding) before every step. Values that are not finite are outside the numpy
 * code's defined behaviour (its int8 casts): the step stops and returns False, and the caller
 * recomputes the row with numpy (the cache's row `own` is rewritten there).
 *
 * Layouts (all C-contiguous): x (H,) float64; keys, values (L, capacity, KV, D) int32; rows (KV, G, D)
 * float64 and own_top (KV, G) int64 (G = heads / KV: row g of kv head h is head h * G + g); attend's
 * results num (KV, G, D) float64, z and top (KV, G) int64. Weights as ModelWeights holds them:
 * (K, N) int8 with (N,) float64 column scales; qkv's columns are q heads, k heads, v heads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bounds.h"
#include "products.h"
#include "step.h"
#include "buffers.h"
#include "own_attention.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(SEMCODEC_PLAIN_C)
#include <immintrin.h>
#define HAVE_AVX2_FMA 1  /* x86 builds carry the vector paths (chosen per step); -DSEMCODEC_PLAIN_C: C only */
#define AVX2_FMA __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx2,fma,avx512f")))
#define INLINE static inline __attribute__((always_inline))
#endif

#define QK_FRACTION_BITS 10  /* SPEC section 5, step 4: queries and keys are rint(y * 2**10) */
#define V_FRACTION_BITS 12   /* values: rint(y * 2**12) */
#define RMS_STEPS 32767.0    /* SPEC section 5, step 3: the sum of squares' 16-bit image */
#define N_TABLES 4
#define N_LAYER_ARRAYS 14

typedef struct {
    const double *attn_norm, *ffn_norm;
    Weights qkv, o, gate_up, down;  /* panels.h's layout and column sums */
    const double *qkv_scale, *o_scale, *gate_up_scale, *down_scale;
} Layer;

typedef struct {
    Py_ssize_t n_layers, hidden, ffn, heads, kv, dim;
    int amax_hidden, amax_ffn, shift, sigmoid_half, sigmoid_bits;
    double eps;
    const double *cos, *sin, *sigmoid;
    const int64_t *att_exp;
    Py_ssize_t positions, att_len;
    Layer *layers;
    Py_buffer *views;
    Py_ssize_t n_views;
} Model;

static const char *const CAPSULE = "semcodec.models._products.step_model";

static void model_free(PyObject *capsule) {
    Model *m = (Model *)PyCapsule_GetPointer(capsule, CAPSULE);
    if (!m) return;
    for (Py_ssize_t i = 0; i < m->n_views; i++) PyBuffer_Release(&m->views[i]);
    free(m->views);
    free(m->layers);
    free(m);
}

/* A C-contiguous view of `obj` with `ndim` dimensions, items of `kind` (holds) and the given
 * shape (-1: any); kept in m->views. */
static const void *view(Model *m, PyObject *obj, char kind, int ndim, Py_ssize_t d0, Py_ssize_t d1,
                        const char *what) {
    Py_buffer *b = &m->views[m->n_views];
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    int ok = b->ndim == ndim && holds(b, kind) &&
             (d0 < 0 || b->shape[0] == d0) && (ndim < 2 || d1 < 0 || b->shape[1] == d1);
    if (!ok) {
        PyBuffer_Release(b);
        PyErr_Format(PyExc_ValueError, "step_model: %s has the wrong type or shape", what);
        return NULL;
    }
    m->n_views++;
    return b->buf;
}

/* The panels (panels.h's layout) and column sums of a (k, n) matrix, both kept in m->views. */
static int weights_view(Model *m, PyObject *panels, PyObject *colsum, Py_ssize_t k, Py_ssize_t n, Weights *w,
                        const char *what) {
    Py_buffer *b = &m->views[m->n_views];
    if (PyObject_GetBuffer(panels, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return 0;
    const int ok = b->ndim == 4 && holds(b, 'b') && b->shape[0] == (n + PANEL_COLUMNS - 1) / PANEL_COLUMNS &&
                   b->shape[1] == (k + PANEL_DEPTH - 1) / PANEL_DEPTH && b->shape[2] == PANEL_COLUMNS &&
                   b->shape[3] == PANEL_DEPTH;
    if (!ok) {
        PyBuffer_Release(b);
        PyErr_Format(PyExc_ValueError, "step_model: %s panels have the wrong type or shape", what);
        return 0;
    }
    m->n_views++;
    w->panels = b->buf;
    return (w->colsum = view(m, colsum, 'i', 1, n, -1, what)) != NULL;
}

PyObject *semcodec_step_model(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *config, *tables, *layers;
    if (!PyArg_ParseTuple(args, "O!O!O!:step_model", &PyTuple_Type, &config, &PyTuple_Type, &tables, &PyList_Type,
                          &layers))
        return NULL;
    Model *m = calloc(1, sizeof(Model));
    if (!m) return PyErr_NoMemory();
    if (!PyArg_ParseTuple(config, "nnnnniidiii:config", &m->hidden, &m->ffn, &m->heads, &m->kv, &m->dim,
                          &m->amax_hidden, &m->amax_ffn, &m->eps, &m->shift, &m->sigmoid_half, &m->sigmoid_bits))
        goto fail;
    m->n_layers = PyList_GET_SIZE(layers);
    if (m->hidden < 1 || m->ffn < 1 || m->kv < 1 || m->heads % m->kv || m->heads / m->kv > MAX_GROUP || m->dim % 8 ||
        m->dim > MAX_DIM ||
        m->hidden > MAX_INNER || m->ffn > MAX_INNER || m->heads * m->dim > MAX_INNER || m->amax_hidden < 1 ||
        m->amax_hidden > ACT_MAX || m->amax_ffn < 1 || m->amax_ffn > ACT_MAX || m->shift < 1 || m->shift > MAX_SHIFT ||
        m->sigmoid_half < 1 || m->sigmoid_bits < 0 || m->sigmoid_bits > 30) {
        PyErr_SetString(PyExc_ValueError, "step_model: configuration out of range");
        goto fail;
    }
    if (PyTuple_GET_SIZE(tables) != N_TABLES) {
        PyErr_SetString(PyExc_ValueError, "step_model: tables must be (rope_cos, rope_sin, sigmoid, attention_exp)");
        goto fail;
    }
    m->views = calloc((size_t)(N_TABLES + N_LAYER_ARRAYS * m->n_layers), sizeof(Py_buffer));
    m->layers = calloc((size_t)(m->n_layers ? m->n_layers : 1), sizeof(Layer));
    if (!m->views || !m->layers) {
        PyErr_NoMemory();
        goto fail;
    }
    const Py_ssize_t half = m->dim / 2, qkv_n = (m->heads + 2 * m->kv) * m->dim;
    if (!(m->cos = view(m, PyTuple_GET_ITEM(tables, 0), 'd', 2, -1, half, "rope_cos"))) goto fail;
    m->positions = m->views[m->n_views - 1].shape[0];
    if (!(m->sin = view(m, PyTuple_GET_ITEM(tables, 1), 'd', 2, m->positions, half, "rope_sin"))) goto fail;
    if (!(m->sigmoid = view(m, PyTuple_GET_ITEM(tables, 2), 'd', 1, 2 * (Py_ssize_t)m->sigmoid_half + 1, -1, "sigmoid")))
        goto fail;
    if (!(m->att_exp = view(m, PyTuple_GET_ITEM(tables, 3), 'q', 1, -1, -1, "attention_exp"))) goto fail;
    m->att_len = m->views[m->n_views - 1].shape[0];
    for (Py_ssize_t i = 0; i < m->att_len; i++)
        if (m->att_exp[i] < 0 || m->att_exp[i] > P_MAX || (i == m->att_len - 1 && m->att_exp[i])) {
            PyErr_SetString(PyExc_ValueError, "step_model: attention weights must lie in [0, 2**16] and end in 0");
            goto fail;
        }
    for (Py_ssize_t li = 0; li < m->n_layers; li++) {
        PyObject *t = PyList_GET_ITEM(layers, li);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != N_LAYER_ARRAYS) {
            PyErr_SetString(PyExc_ValueError, "step_model: each layer is a tuple of 14 arrays");
            goto fail;
        }
        Layer *l = &m->layers[li];
        const Py_ssize_t h = m->hidden, f = m->ffn, hd = m->heads * m->dim;
#define ITEM(i) PyTuple_GET_ITEM(t, i)
        if (!(l->attn_norm = view(m, ITEM(0), 'd', 1, h, -1, "attn_norm")) ||
            !weights_view(m, ITEM(1), ITEM(2), h, qkv_n, &l->qkv, "qkv") ||
            !(l->qkv_scale = view(m, ITEM(3), 'd', 1, qkv_n, -1, "qkv scale")) ||
            !weights_view(m, ITEM(4), ITEM(5), hd, h, &l->o, "o") ||
            !(l->o_scale = view(m, ITEM(6), 'd', 1, h, -1, "o scale")) ||
            !(l->ffn_norm = view(m, ITEM(7), 'd', 1, h, -1, "ffn_norm")) ||
            !weights_view(m, ITEM(8), ITEM(9), h, 2 * f, &l->gate_up, "gate_up") ||
            !(l->gate_up_scale = view(m, ITEM(10), 'd', 1, 2 * f, -1, "gate_up scale")) ||
            !weights_view(m, ITEM(11), ITEM(12), f, h, &l->down, "down") ||
            !(l->down_scale = view(m, ITEM(13), 'd', 1, h, -1, "down scale")))
            goto fail;
#undef ITEM
    }
    /* The weights' range (|w| <= WEIGHT_MAX) is the caller's check (weights_in_range, once per matrix). */
    PyObject *capsule = PyCapsule_New(m, CAPSULE, model_free);
    if (capsule) return capsule;
fail:
    for (Py_ssize_t i = 0; i < m->n_views; i++) PyBuffer_Release(&m->views[i]);
    free(m->views);
    free(m->layers);
    free(m);
    return NULL;
}

/* -- the arithmetic, one rule per function (exact.py's names) ------------------------------------ */

static inline double row_amax(const double *x, Py_ssize_t n) {
    double a = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = fabs(x[i]);
        a = v > a ? v : a;
    }
    return a;
}

static inline double rint_clip(double v, double limit) {
    v = v > -limit ? v : -limit;
    v = v < limit ? v : limit;
    return rint(v);
}

static inline int finite_all(const double *x, Py_ssize_t n) {
    /* inf and NaN have an all-ones exponent: adding 2**52 to it, and only to it, carries into bit
     * 63. An OR of integers has no chain of rounded operations, so the compiler vectorizes it. */
    const uint64_t exponent = (uint64_t)0x7FF << 52;
    uint64_t carry = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, x + i, sizeof bits);
        carry |= (bits & exponent) + ((uint64_t)1 << 52);
    }
    return !(carry >> 63);
}

#ifdef HAVE_AVX2_FMA
/* The same rules four lanes at a time (the step's vector paths): a maximum of finite values, an
 * OR of bits and a sum of integers below 2**53 do not depend on the order of their terms, and a
 * division or rint of each element is one IEEE operation either way (vroundpd in the current
 * rounding mode is rint), so every result is the C loop's. */
AVX2_FMA static int finite_amax_avx2(const double *x, Py_ssize_t n, double *amax) {
    const __m256d magnitude = _mm256_castsi256_pd(_mm256_set1_epi64x(INT64_MAX));
    const __m256i exponent = _mm256_set1_epi64x((int64_t)0x7FF << 52);  /* all ones: inf or NaN */
    __m256d top = _mm256_setzero_pd();
    __m256i bad = _mm256_setzero_si256();
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d v = _mm256_loadu_pd(x + i);
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_castpd_si256(v), exponent), exponent));
        top = _mm256_max_pd(top, _mm256_and_pd(v, magnitude));
    }
    double lanes[4], a = 0.0;
    _mm256_storeu_pd(lanes, top);
    for (int l = 0; l < 4; l++) a = lanes[l] > a ? lanes[l] : a;
    int finite = _mm256_testz_si256(bad, bad);
    for (; i < n; i++) {
        const double v = fabs(x[i]);
        finite &= v <= DBL_MAX;
        a = v > a ? v : a;
    }
    *amax = a;
    return finite;
}

/* q[i] = rint(y[i] / scale), |q| <= 127 (a normal scale: see quantize). */
AVX2_FMA static void divide_round_avx2(const double *y, Py_ssize_t n, double scale, int8_t *q) {
    const __m256d s = _mm256_set1_pd(scale);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d v = _mm256_round_pd(_mm256_div_pd(_mm256_loadu_pd(y + i), s), _MM_FROUND_CUR_DIRECTION);
        __m128i w = _mm256_cvtpd_epi32(v);  /* integers of magnitude <= 127: exact, no saturation below */
        w = _mm_packs_epi16(_mm_packs_epi32(w, w), w);
        const int32_t four = _mm_cvtsi128_si32(w);
        memcpy(q + i, &four, sizeof four);
    }
    for (; i < n; i++) q[i] = (int8_t)rint(y[i] / scale);
}

/* sum of rint(x[i] / step)**2: integers t*t <= 2**30, partial sums < 2**41. */
AVX2_FMA static double sum_squares_avx2(const double *x, Py_ssize_t n, double step) {
    const __m256d s = _mm256_set1_pd(step);
    __m256d acc = _mm256_setzero_pd();
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d t = _mm256_round_pd(_mm256_div_pd(_mm256_loadu_pd(x + i), s), _MM_FROUND_CUR_DIRECTION);
        acc = _mm256_add_pd(acc, _mm256_mul_pd(t, t));
    }
    double lanes[4], sum = 0.0;
    _mm256_storeu_pd(lanes, acc);
    for (int l = 0; l < 4; l++) sum += lanes[l];
    for (; i < n; i++) {
        const double t = rint(x[i] / step);
        sum += t * t;
    }
    return sum;
}

/* y[i] = ((double)acc[i] * x_scale) * w_scale[i]: int32 -> binary64 is exact, then two roundings. */
AVX2_FMA static void scale_products_avx2(const int32_t *acc, double x_scale, const double *w_scale, Py_ssize_t n,
                                         double *y) {
    const __m256d xs = _mm256_set1_pd(x_scale);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d v = _mm256_mul_pd(_mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(acc + i))), xs);
        _mm256_storeu_pd(y + i, _mm256_mul_pd(v, _mm256_loadu_pd(w_scale + i)));
    }
    for (; i < n; i++) {
        const double v = (double)acc[i] * x_scale;
        y[i] = v * w_scale[i];
    }
}

/* x[i] = x[i] + y[i] (the residual). */
AVX2_FMA static void add_into_avx2(double *x, const double *y, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) _mm256_storeu_pd(x + i, _mm256_add_pd(_mm256_loadu_pd(x + i), _mm256_loadu_pd(y + i)));
    for (; i < n; i++) x[i] = x[i] + y[i];
}

/* y[i] = rint(clip(y[i] * scale, +-limit)) for finite y (the fixed point of queries, keys and values). */
AVX2_FMA static void fixed_point_avx2(double *y, Py_ssize_t n, double scale, double limit) {
    const __m256d s = _mm256_set1_pd(scale), hi = _mm256_set1_pd(limit), lo = _mm256_set1_pd(-limit);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d v = _mm256_min_pd(_mm256_max_pd(_mm256_mul_pd(_mm256_loadu_pd(y + i), s), lo), hi);
        _mm256_storeu_pd(y + i, _mm256_round_pd(v, _MM_FROUND_CUR_DIRECTION));
    }
    for (; i < n; i++) y[i] = rint_clip(y[i] * scale, limit);
}

/* y[i] = (g * Sig[rint(clip(g * 2**bits, +-half)) + half]) * y[ffn + i], g = y[i] finite: silu(gate) * up.
 * sig_mid points at Sig's middle entry (index half). */
AVX2_FMA static void silu_avx2(double *y, Py_ssize_t ffn, double steps, double limit, const double *sig_mid) {
    const __m256d s = _mm256_set1_pd(steps), hi = _mm256_set1_pd(limit), lo = _mm256_set1_pd(-limit);
    Py_ssize_t i = 0;
    for (; i + 4 <= ffn; i += 4) {
        const __m256d g = _mm256_loadu_pd(y + i);
        const __m256d k = _mm256_round_pd(_mm256_min_pd(_mm256_max_pd(_mm256_mul_pd(g, s), lo), hi),
                                          _MM_FROUND_CUR_DIRECTION);
        const __m256d sig = _mm256_i32gather_pd(sig_mid, _mm256_cvtpd_epi32(k), 8);  /* |k| <= half: exact */
        _mm256_storeu_pd(y + i, _mm256_mul_pd(_mm256_mul_pd(g, sig), _mm256_loadu_pd(y + ffn + i)));
    }
    for (; i < ffn; i++) {
        const double g = y[i];
        const double silu = g * sig_mid[(Py_ssize_t)rint_clip(g * steps, limit)];
        y[i] = silu * y[ffn + i];
    }
}

AVX2_FMA static int finite_avx2(const double *x, Py_ssize_t n) {
    const __m256i exponent = _mm256_set1_epi64x((int64_t)0x7FF << 52);
    __m256i bad = _mm256_setzero_si256();
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4)
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)),
                                                                       exponent), exponent));
    return _mm256_testz_si256(bad, bad) && finite_all(x + i, n - i);
}
#endif

/* The rules above with a choice of loops (vec: AVX2; the same bits). */
static int finite_rows(const double *x, Py_ssize_t n, int vec) {
#ifdef HAVE_AVX2_FMA
    if (vec) return finite_avx2(x, n);
#endif
    (void)vec;
    return finite_all(x, n);
}

static void scale_products(const int32_t *acc, double x_scale, const double *w_scale, Py_ssize_t n, double *y, int vec) {
#ifdef HAVE_AVX2_FMA
    if (vec) {
        scale_products_avx2(acc, x_scale, w_scale, n, y);
        return;
    }
#endif
    (void)vec;
    for (Py_ssize_t i = 0; i < n; i++) {
        const double v = (double)acc[i] * x_scale;
        y[i] = v * w_scale[i];
    }
}

static void add_into(double *x, const double *y, Py_ssize_t n, int vec) {
#ifdef HAVE_AVX2_FMA
    if (vec) {
        add_into_avx2(x, y, n);
        return;
    }
#endif
    (void)vec;
    for (Py_ssize_t i = 0; i < n; i++) x[i] = x[i] + y[i];
}

static void fixed_point(double *y, Py_ssize_t n, double scale, double limit, int vec) {
#ifdef HAVE_AVX2_FMA
    if (vec) {
        fixed_point_avx2(y, n, scale, limit);
        return;
    }
#endif
    (void)vec;
    for (Py_ssize_t i = 0; i < n; i++) y[i] = rint_clip(y[i] * scale, limit);
}

/* The MLP's silu(gate) * up of a finite row y = (gate, up), into y[0, ffn). */
static void silu_times_up(const Model *m, double *y, int vec) {
    const Py_ssize_t ffn = m->ffn;
    const double steps = (double)(1 << m->sigmoid_bits), limit = (double)m->sigmoid_half;
#ifdef HAVE_AVX2_FMA
    if (vec) {
        silu_avx2(y, ffn, steps, limit, m->sigmoid + m->sigmoid_half);
        return;
    }
#endif
    (void)vec;
    for (Py_ssize_t i = 0; i < ffn; i++) {
        const double g = y[i];
        const Py_ssize_t idx = (Py_ssize_t)rint_clip(g * steps, limit);
        const double silu = g * m->sigmoid[idx + m->sigmoid_half];
        y[i] = silu * y[ffn + i];
    }
}

/* Whether every x[i] is finite (vec: the AVX2 loop), and the largest |x[i]| when it is. */
static int finite_amax(const double *x, Py_ssize_t n, int vec, double *amax) {
#ifdef HAVE_AVX2_FMA
    if (vec) return finite_amax_avx2(x, n, amax);
#endif
    (void)vec;
    if (!finite_all(x, n)) return 0;
    *amax = row_amax(x, n);
    return 1;
}

/* quantize_rows: q = rint(y / scale) in [-amax_int, amax_int]; returns the scale, or NAN when y
 * holds a value that is not finite. vec: the AVX2 loops (the same integers). */
static double quantize(const double *y, Py_ssize_t n, int amax_int, int8_t *q, int vec) {
    double amax;
    if (!finite_amax(y, n, vec, &amax)) return NAN;
    const double scale = amax > 0 ? amax / (double)amax_int : 1.0;
    const double limit = (double)amax_int;
    if (scale >= DBL_MIN && scale <= DBL_MAX) {
#ifdef HAVE_AVX2_FMA
        if (vec) {
            divide_round_avx2(y, n, scale, q);
            return scale;
        }
#endif
        for (Py_ssize_t i = 0; i < n; i++) q[i] = (int8_t)rint(y[i] / scale);  /* |.| <= amax_int: exact.py */
    } else {
        for (Py_ssize_t i = 0; i < n; i++) {
            double v = y[i] / scale;
            v = v > -limit ? v : -limit;
            v = v < limit ? v : limit;
            q[i] = (int8_t)rint(v);
        }
    }
    return scale;
}

/* rms_quantize: q of x * gain and the row's scale divided by its RMS; NAN when not finite. */
static double rms_quantize(const Model *m, const double *x, const double *gain, int amax_int, double *tmp,
                           int8_t *q, int vec) {
    const Py_ssize_t k = m->hidden;
    double amax;
    if (!finite_amax(x, k, vec, &amax)) return NAN;
    const double step = amax > 0 ? amax / RMS_STEPS : 1.0;
    double sumsq = 0.0;  /* integers t*t <= 2**30, partial sums < 2**41: exact in any order */
#ifdef HAVE_AVX2_FMA
    if (vec) sumsq = sum_squares_avx2(x, k, step);
    else
#endif
        for (Py_ssize_t i = 0; i < k; i++) {
            const double t = rint(x[i] / step);
            sumsq += t * t;
        }
    const double ms = sumsq * step * step / (double)k + m->eps;
    const double rms = sqrt(ms);
    for (Py_ssize_t i = 0; i < k; i++) tmp[i] = x[i] * gain[i];
    const double scale = quantize(tmp, k, amax_int, q, vec);
    return scale / rms;
}

/* -- attention over the cache's own keys (own_attention.c's kernels, in blocks) ---------------------
 *
 * The own keys are cut into blocks of OWN_BLOCK positions; a block holds every kv head, so its
 * rows are read once, in address order, and blocks are shared out among the threads. Every sum
 * is of integers (own_attention.h), so the blocks' totals are the numpy code's. */

#define OWN_BLOCK 128  /* positions per block: a block's keys or values (128 x 768 B) stay in L2 */

/* The own attention's path (and the AVX2 arithmetic's, unless OWN_PLAIN) for a products path:
 * "plain" keeps every part in C; "vnni" (an AVX-512 CPU) takes the AVX-512 kernels; the others
 * AVX2 + FMA where the CPU has them. */
static int own_path(int level) {
    return semcodec_own_path(level == PATH_PLAIN ? OWN_PLAIN : level == PATH_VNNI ? OWN_AVX512 : OWN_AVX2);
}


typedef struct {
    double *x, *tmp, *att, *num_pre, *rows, *num_own;
    int64_t *weights;
    int vector;  /* OWN_*: the own-attention path; not OWN_PLAIN: the AVX2 arithmetic too */
    int64_t *scores, *own_top, *top, *z_pre;
    int64_t *block_top, *block_z;  /* (blocks, H): each block's maxima and weight sums */
    double *block_num;             /* (blocks, H, D): each block's weighted values */
} Scratch;

/* Attention over the cache's own keys, one block of OWN_BLOCK positions per job: block_scores
 * writes the block's scores and maxima, block_weigh its weights (with the maxima over prefix and
 * own keys), weight sums and weighted values. Blocks write disjoint parts of the scratch. */
typedef struct {
    const Model *m;
    Py_ssize_t li, cap, own;
    const int32_t *keys, *values;
    int prefixed;
    Scratch *s;
} OwnJob;

static void block_scores(void *arg, long block) {
    const OwnJob *j = (const OwnJob *)arg;
    const Model *m = j->m;
    Scratch *s = j->s;
    const Py_ssize_t KV = m->kv, D = m->dim, G = m->heads / KV, H = m->heads, T = j->own + 1;
    const Py_ssize_t t0 = block * OWN_BLOCK, t1 = t0 + OWN_BLOCK < T ? t0 + OWN_BLOCK : T;
    const int32_t *k_layer = j->keys + (j->li * j->cap) * KV * D;
    semcodec_own_scores(s->vector, s->rows, k_layer, KV, D, G, T, t0, t1, s->scores);
    semcodec_own_maxima(s->vector, s->scores, H, T, t0, t1, s->block_top + block * H);
}

static void block_weigh(void *arg, long block) {
    const OwnJob *j = (const OwnJob *)arg;
    const Model *m = j->m;
    Scratch *s = j->s;
    const Py_ssize_t KV = m->kv, D = m->dim, G = m->heads / KV, H = m->heads, T = j->own + 1;
    const Py_ssize_t t0 = block * OWN_BLOCK, t1 = t0 + OWN_BLOCK < T ? t0 + OWN_BLOCK : T;
    const int32_t *v_layer = j->values + (j->li * j->cap) * KV * D;
    const int64_t half = (int64_t)1 << (m->shift - 1), last = m->att_len - 1;
    for (Py_ssize_t row = 0; row < H; row++) {  /* the maxima over prefix and own keys, or own keys only */
        const int64_t top = j->prefixed ? s->top[row] : s->own_top[row];
        s->block_z[block * H + row] = semcodec_own_weights(s->vector, s->scores + row * T, top, half, m->shift,
                                                           m->att_exp, last, t0, t1, s->weights + row * T);
    }
    semcodec_own_weigh(s->vector, s->weights, v_layer, KV, D, G, T, t0, t1, s->block_num + block * H * D);
}

#define PARALLEL_POSITIONS 256  /* own keys from which the blocks are shared out among the threads */

static inline Py_ssize_t own_blocks(Py_ssize_t positions) { return (positions + OWN_BLOCK - 1) / OWN_BLOCK; }

static void attend_blocks(void (*fn)(void *, long), OwnJob *job) {
    const long blocks = (long)own_blocks(job->own + 1);
    if (job->own + 1 >= PARALLEL_POSITIONS) {
        semcodec_run_blocks(fn, job, blocks);
    } else {
        for (long b = 0; b < blocks; b++) fn(job, b);
    }
}

/* Each row's maximum over its own keys: the blocks' maxima. */
static void own_maxima(const Model *m, Py_ssize_t own, Scratch *s) {
    const Py_ssize_t H = m->heads, blocks = own_blocks(own + 1);
    for (Py_ssize_t row = 0; row < H; row++) {
        int64_t top = INT64_MIN;
        for (Py_ssize_t b = 0; b < blocks; b++) top = s->block_top[b * H + row] > top ? s->block_top[b * H + row] : top;
        s->own_top[row] = top;
    }
}

/* The heads' outputs: the blocks' weighted values and weight sums (integers: exact in any order),
 * joined with the prefix's, over the total weight, in exact.py's order. */
static void own_outputs(const Model *m, Py_ssize_t own, int prefixed, Scratch *s) {
    const Py_ssize_t H = m->heads, D = m->dim, blocks = own_blocks(own + 1);
    for (Py_ssize_t row = 0; row < H; row++) {
        double *num = s->num_own + row * D, *out = s->att + row * D;
        int64_t z = 0;
        for (Py_ssize_t d = 0; d < D; d++) num[d] = 0.0;
        for (Py_ssize_t b = 0; b < blocks; b++) {
            z += s->block_z[b * H + row];
            for (Py_ssize_t d = 0; d < D; d++) num[d] += s->block_num[(b * H + row) * D + d];
        }
        if (prefixed) {  /* num += prefix num; z += prefix z; out = num / z / 2**12 (exact.py's order) */
            const int64_t zt = z + s->z_pre[row];
            for (Py_ssize_t d = 0; d < D; d++) out[d] = (num[d] + s->num_pre[row * D + d]) / (double)zt;
        } else {
            for (Py_ssize_t d = 0; d < D; d++) out[d] = num[d] / (double)z;
        }
        for (Py_ssize_t d = 0; d < D; d++) out[d] /= (double)(1 << V_FRACTION_BITS);
    }
}

static int writable(PyObject *obj, Py_buffer *b, char kind, Py_ssize_t ndim, const char *what) {
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) return 0;
    if (b->ndim != ndim || !holds(b, kind)) {
        PyBuffer_Release(b);
        PyErr_Format(PyExc_ValueError, "step: %s has the wrong type or shape", what);
        return 0;
    }
    return 1;
}

/* The scores and weights of a long cache: H * (own + 1) int64 each, past malloc's mmap threshold
 * from about 1,800 own positions, so a fresh buffer per step would cost a map, page faults and an
 * unmap. Kept per thread (steps of other caches may run on other threads), grown, never shrunk:
 * at most 2 * heads * MAX_POSITIONS int64 (1.2 MB for SmolLM2). While it is in use (a step's
 * later lanes, a step run from within attend) a fresh buffer is made. NULL when out of memory. */
static _Thread_local int64_t *kept_scratch = NULL;
static _Thread_local Py_ssize_t kept_size = 0;
static _Thread_local int kept_busy = 0;

static int64_t *take_scratch(Py_ssize_t n) {
    if (kept_busy) return malloc(sizeof(int64_t) * (size_t)n);
    if (n > kept_size) {
        int64_t *grown = realloc(kept_scratch, sizeof(int64_t) * (size_t)n);
        if (!grown) return NULL;
        kept_scratch = grown;
        kept_size = n;
    }
    kept_busy = 1;
    return kept_scratch;
}

static void give_scratch(int64_t *buffer) {
    if (buffer == kept_scratch) kept_busy = 0;
    else free(buffer);
}

/* -- many rows in lockstep ------------------------------------------------------------------------
 *
 * step_many runs M rows through every layer: the rows share each weight product (one pass over
 * the weights for all of them) and the prefix's attention (one attend call per layer for all
 * rows); everything else is the single-row step's code, row by row, so each row gets exactly the
 * bits step() (and the numpy code) gives it. A row is one token continuing a cache at index own;
 * several rows may continue one cache at consecutive indices (a prefill): rows run in order, so
 * each row's key and value are stored before a later row of its cache reads them, and a row
 * never reads past its own index (the numpy code's causal mask gives the positions past it a
 * weight of 0, which adds nothing). The products of M rows are
 * native (products None) or a Python callback products(matrix, k) -> (M, N) int32 that reads the
 * M rows of the int8 buffer `staging` (matrix = 4 * layer + 0 qkv, 1 o, 2 gate_up, 3 down): past a
 * few rows onnxruntime's MLAS is faster (kernels.NATIVE_MAX_ROWS). */

typedef struct {
    int32_t *keys, *values;  /* the cache (L, cap, KV, D) */
    Py_ssize_t cap, own, pos;
    Scratch s;
    Py_buffer kb, vb;        /* step_many's views of keys and values */
    int held;                /* of those, held: 0..2 */
} Lane;

typedef struct {
    const Model *m;
    Py_ssize_t rows;
    int level, vec;      /* the products' path; the AVX2 arithmetic */
    PyObject *products;  /* NULL: native */
    int8_t *staging;     /* (rows, widest) int8: the callback's input */
    int8_t *q;           /* (rows, widest) int8 */
    int32_t *acc;        /* (rows, widest) int32 */
    double *y, *xs;      /* (rows, widest) and (rows,) */
} Many;

/* acc = q @ w for every row (exact int32); 0 with an exception set when the callback fails.
 * Called without the GIL; takes it for the callback. */
static int many_products(Many *c, Py_ssize_t matrix, const Weights *w, Py_ssize_t k, Py_ssize_t n) {
    if (!c->products) {
        semcodec_products(c->q, w, c->acc, c->rows, k, n, c->level);
        return 1;
    }
    memcpy(c->staging, c->q, (size_t)(c->rows * k));
    PyGILState_STATE g = PyGILState_Ensure();
    int ok = 0;
    PyObject *res = PyObject_CallFunction(c->products, "nn", matrix, k);
    if (res) {
        Py_buffer b;
        if (PyObject_GetBuffer(res, &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) == 0) {
            if (b.len == c->rows * n * 4 && holds(&b, 'i')) {
                memcpy(c->acc, b.buf, (size_t)b.len);
                ok = 1;
            } else {
                PyErr_SetString(PyExc_ValueError, "products must return (rows, N) int32");
            }
            PyBuffer_Release(&b);
        }
        Py_DECREF(res);
    }
    PyGILState_Release(g);
    return ok;
}

/* y[r] = (acc[r] * scale[r]) * w_scale for every row, as _matmul. */
static void many_scale(const Many *c, const double *scale, const double *w_scale, Py_ssize_t n) {
    for (Py_ssize_t r = 0; r < c->rows; r++) scale_products(c->acc + r * n, scale[r], w_scale, n, c->y + r * n, c->vec);
}

/* rms_quantize of every row into q; 0 when a row is not finite. */
static int many_norm(Many *c, Lane *lanes, const double *gain) {
    const Model *m = c->m;
    for (Py_ssize_t r = 0; r < c->rows; r++) {
        Scratch *s = &lanes[r].s;
        c->xs[r] = rms_quantize(m, s->x, gain, m->amax_hidden, s->tmp, c->q + r * m->hidden, s->vector);
        if (isnan(c->xs[r])) return 0;
    }
    return 1;
}

/* After the q/k/v products of a row (y, scaled; overwritten): RoPE, fixed point, the key and value
 * stored at the lane's index, the query rows and the own keys' scores and maxima. 0 when not finite. */
static int lane_keys(const Model *m, Py_ssize_t li, Lane *lane, double *y) {
    const Py_ssize_t H = m->heads, KV = m->kv, D = m->dim, qkv_n = (H + 2 * KV) * D;
    Scratch *s = &lane->s;
    if (!finite_rows(y, qkv_n, s->vector)) return 0;
    const double *c = m->cos + lane->pos * (D / 2), *sn = m->sin + lane->pos * (D / 2);
    for (Py_ssize_t h = 0; h < H + KV; h++) {  /* RoPE: queries and keys (values keep x * 1 + x' * 0 = x) */
        double *r = y + h * D;
        for (Py_ssize_t j = 0; j < D / 2; j++) {
            const double e = r[2 * j], o = r[2 * j + 1];
            const double e1 = e * c[j], o1 = o * (-sn[j]);
            const double o2 = o * c[j], e2 = e * sn[j];
            r[2 * j] = e1 + o1;
            r[2 * j + 1] = o2 + e2;
        }
    }
    const double qk_scale = (double)(1 << QK_FRACTION_BITS), v_scale = (double)(1 << V_FRACTION_BITS);
    fixed_point(y, (H + KV) * D, qk_scale, (double)QK_LIMIT, s->vector);
    fixed_point(y + (H + KV) * D, KV * D, v_scale, (double)V_LIMIT, s->vector);
    const Py_ssize_t at = ((li * lane->cap + lane->own) * KV) * D;
    for (Py_ssize_t i = 0; i < KV * D; i++) {
        lane->keys[at + i] = (int32_t)y[H * D + i];
        lane->values[at + i] = (int32_t)y[(H + KV) * D + i];
    }
    memcpy(s->rows, y, sizeof(double) * (size_t)(H * D));  /* (KV, G, D): row g of kv head h is head h * G + g */
    OwnJob job = {m, li, lane->cap, lane->own, lane->keys, lane->values, 0, s};
    attend_blocks(block_scores, &job);
    own_maxima(m, lane->own, s);
    return 1;
}

/* attend(layer) for all rows at once: the rows' queries and own maxima gathered into rows_all
 * (KV, M G, D) and top_all (KV, M G) (row b's head h G + g at [h, b G + g]), the prefix's num,
 * z and top scattered back into each lane. 0 with an exception set on failure (GIL held). */
static int many_attend(const Model *m, PyObject *attend, Py_ssize_t li, Lane *lanes, Py_ssize_t rows, double *rows_all,
                       int64_t *top_all) {
    const Py_ssize_t KV = m->kv, G = m->heads / KV, D = m->dim, n = rows * G;
    for (Py_ssize_t b = 0; b < rows; b++)
        for (Py_ssize_t h = 0; h < KV; h++)
            for (Py_ssize_t g = 0; g < G; g++) {
                memcpy(rows_all + (h * n + b * G + g) * D, lanes[b].s.rows + (h * G + g) * D, sizeof(double) * (size_t)D);
                top_all[h * n + b * G + g] = lanes[b].s.own_top[h * G + g];
            }
    PyObject *res = PyObject_CallFunction(attend, "n", li);
    if (!res) return 0;
    int ok = 0, got = 0;
    Py_buffer buf[3];
    const Py_ssize_t want[3] = {KV * n * D * 8, KV * n * 8, KV * n * 8};
    const char kinds[3] = {'d', 'q', 'q'};
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 3) {
        PyErr_SetString(PyExc_TypeError, "attend must return (num, z, top)");
        goto done;
    }
    for (; got < 3; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(res, got), &buf[got], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
        if (buf[got].len != want[got] || !holds(&buf[got], kinds[got])) {
            got++;
            PyErr_SetString(PyExc_ValueError, "attend's results have the wrong type or size");
            goto done;
        }
    }
    const double *num = (const double *)buf[0].buf;
    const int64_t *z = (const int64_t *)buf[1].buf, *top = (const int64_t *)buf[2].buf;
    for (Py_ssize_t b = 0; b < rows; b++)
        for (Py_ssize_t h = 0; h < KV; h++)
            for (Py_ssize_t g = 0; g < G; g++) {
                Scratch *s = &lanes[b].s;
                const Py_ssize_t at = h * n + b * G + g, head = h * G + g;
                if (top[at] < s->own_top[head] || top[at] > SCORE_LIMIT || z[at] < 0 ||
                    z[at] > (int64_t)MAX_POSITIONS * P_MAX) {  /* what attend promises (call_attend) */
                    PyErr_SetString(PyExc_ValueError, "attend's maxima or weight sums are outside their bounds");
                    goto done;
                }
                s->top[head] = top[at];
                s->z_pre[head] = z[at];
                memcpy(s->num_pre + head * D, num + at * D, sizeof(double) * (size_t)D);
            }
    ok = 1;
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&buf[i]);
    Py_DECREF(res);
    return ok;
}

/* One layer for every row. 1: done; 0: a row is not finite; -1: an exception is set. */
static int many_layer(Many *c, Lane *lanes, Py_ssize_t li, PyObject *attend, double *rows_all, int64_t *top_all) {
    const Model *m = c->m;
    const Layer *l = &m->layers[li];
    const Py_ssize_t H = m->heads, KV = m->kv, D = m->dim, qkv_n = (H + 2 * KV) * D, hidden = m->hidden, ffn = m->ffn;
    const Py_ssize_t M = c->rows;
    if (!many_norm(c, lanes, l->attn_norm)) return 0;
    if (!many_products(c, 4 * li + 0, &l->qkv, hidden, qkv_n)) return -1;
    many_scale(c, c->xs, l->qkv_scale, qkv_n);
    for (Py_ssize_t r = 0; r < M; r++)
        if (!lane_keys(m, li, &lanes[r], c->y + r * qkv_n)) return 0;
    if (attend) {
        PyGILState_STATE g = PyGILState_Ensure();
        int ok = many_attend(m, attend, li, lanes, M, rows_all, top_all);
        PyGILState_Release(g);
        if (!ok) return -1;
    }
    for (Py_ssize_t r = 0; r < M; r++) {
        Scratch *s = &lanes[r].s;
        OwnJob job = {m, li, lanes[r].cap, lanes[r].own, NULL, lanes[r].values, attend != NULL, s};
        attend_blocks(block_weigh, &job);
        own_outputs(m, lanes[r].own, attend != NULL, s);
        c->xs[r] = quantize(s->att, H * D, m->amax_hidden, c->q + r * H * D, s->vector);
        if (isnan(c->xs[r])) return 0;
    }
    if (!many_products(c, 4 * li + 1, &l->o, H * D, hidden)) return -1;
    many_scale(c, c->xs, l->o_scale, hidden);
    for (Py_ssize_t r = 0; r < M; r++)
        add_into(lanes[r].s.x, c->y + r * hidden, hidden, lanes[r].s.vector);
    /* MLP: down(silu(gate(x)) * up(x)) */
    if (!many_norm(c, lanes, l->ffn_norm)) return 0;
    if (!many_products(c, 4 * li + 2, &l->gate_up, hidden, 2 * ffn)) return -1;
    many_scale(c, c->xs, l->gate_up_scale, 2 * ffn);
    for (Py_ssize_t r = 0; r < M; r++) {
        double *y = c->y + r * 2 * ffn;
        if (!finite_rows(y, 2 * ffn, lanes[r].s.vector)) return 0;
        silu_times_up(m, y, lanes[r].s.vector);
        c->xs[r] = quantize(y, ffn, m->amax_ffn, c->q + r * ffn, lanes[r].s.vector);
        if (isnan(c->xs[r])) return 0;
    }
    if (!many_products(c, 4 * li + 3, &l->down, ffn, hidden)) return -1;
    many_scale(c, c->xs, l->down_scale, hidden);
    for (Py_ssize_t r = 0; r < M; r++)
        add_into(lanes[r].s.x, c->y + r * hidden, hidden, lanes[r].s.vector);
    return 1;
}

static void lane_free(Lane *lane) {
    Scratch *s = &lane->s;
    free(s->tmp);
    free(s->att);
    free(s->num_pre);
    free(s->rows);
    free(s->num_own);
    free(s->own_top);
    free(s->top);
    free(s->z_pre);
    if (s->scores) give_scratch(s->scores);
    free(s->block_top);
    free(s->block_z);
    free(s->block_num);
    if (lane->held > 1) PyBuffer_Release(&lane->vb);
    if (lane->held > 0) PyBuffer_Release(&lane->kb);
}

/* The lane's scratch for a cache index own: the thread's kept buffer of scores and weights for
 * the first lane (take_scratch), fresh ones for the others. 0 with an exception set. */
static int lane_scratch(const Model *m, Lane *lane, int vector) {
    const Py_ssize_t H = m->heads, D = m->dim, T = lane->own + 1, blocks = own_blocks(T);
    Scratch *s = &lane->s;
    s->vector = vector;
    s->tmp = malloc(sizeof(double) * (size_t)m->hidden);
    s->att = malloc(sizeof(double) * (size_t)(H * D));
    s->num_pre = malloc(sizeof(double) * (size_t)(H * D));
    s->rows = malloc(sizeof(double) * (size_t)(H * D));
    s->num_own = malloc(sizeof(double) * (size_t)(H * D));
    s->own_top = malloc(sizeof(int64_t) * (size_t)H);
    s->top = malloc(sizeof(int64_t) * (size_t)H);
    s->z_pre = malloc(sizeof(int64_t) * (size_t)H);
    s->scores = take_scratch(2 * H * T);  /* scores, then weights */
    s->weights = s->scores ? s->scores + H * T : NULL;
    s->block_top = malloc(sizeof(int64_t) * (size_t)(blocks * H));
    s->block_z = malloc(sizeof(int64_t) * (size_t)(blocks * H));
    s->block_num = malloc(sizeof(double) * (size_t)(blocks * H * D));
    if (!s->tmp || !s->att || !s->num_pre || !s->rows || !s->num_own || !s->own_top || !s->top || !s->z_pre ||
        !s->scores || !s->block_top || !s->block_z || !s->block_num) {
        PyErr_NoMemory();
        return 0;
    }
    return 1;
}

/* The row's cache (keys, values, own) and scratch; 0 with an exception set. */
static int lane_open(const Model *m, PyObject *spec, Py_ssize_t pos, int vector, Lane *lane) {
    Py_ssize_t own;
    PyObject *k_obj, *v_obj;
    if (!PyTuple_Check(spec) || !PyArg_ParseTuple(spec, "OOn:cache", &k_obj, &v_obj, &own)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "step_many: each cache is (keys, values, own)");
        return 0;
    }
    if (!writable(k_obj, &lane->kb, 'i', 4, "keys")) return 0;
    lane->held = 1;
    if (!writable(v_obj, &lane->vb, 'i', 4, "values")) return 0;
    lane->held = 2;
    const Py_buffer *kb = &lane->kb, *vb = &lane->vb;
    const Py_ssize_t KV = m->kv, D = m->dim, cap = kb->shape[1];
    if (kb->shape[0] != m->n_layers || kb->shape[2] != KV || kb->shape[3] != D || vb->shape[0] != kb->shape[0] ||
        vb->shape[1] != cap || vb->shape[2] != KV || vb->shape[3] != D) {
        PyErr_SetString(PyExc_ValueError, "step_many: a cache does not match the model");
        return 0;
    }
    if (own < 0 || own >= cap || pos < 0 || pos >= m->positions || own + 1 > MAX_POSITIONS) {
        PyErr_Format(PyExc_ValueError, "step_many: position %zd / cache index %zd out of range", pos, own);
        return 0;
    }
    lane->keys = (int32_t *)kb->buf;
    lane->values = (int32_t *)vb->buf;
    lane->cap = cap;
    lane->own = own;
    lane->pos = pos;
    return lane_scratch(m, lane, vector);
}

/* The rows' shared buffers (q, acc, y: rows x the widest product; xs: rows). 0 with an exception set. */
static int many_open(Many *c) {
    const Model *m = c->m;
    const Py_ssize_t qkv_n = (m->heads + 2 * m->kv) * m->dim;
    Py_ssize_t widest = 2 * m->ffn > qkv_n ? 2 * m->ffn : qkv_n;
    widest = widest > m->hidden ? widest : m->hidden;
    c->q = malloc((size_t)(c->rows * widest));
    c->acc = malloc(sizeof(int32_t) * (size_t)(c->rows * widest));
    c->y = malloc(sizeof(double) * (size_t)(c->rows * widest));
    c->xs = malloc(sizeof(double) * (size_t)c->rows);
    if (c->q && c->acc && c->y && c->xs) return 1;
    PyErr_NoMemory();
    return 0;
}

static void many_free(Many *c) {
    free(c->q);
    free(c->acc);
    free(c->y);
    free(c->xs);
}

/* Every layer for every row, without the GIL (many_layer takes it for the callbacks): 1 done,
 * 0 a row is not finite, -1 an exception is set. */
static int many_layers(Many *c, Lane *lanes, PyObject *attend, double *rows_all, int64_t *top_all) {
    int state = 1;
    PyThreadState *ts = PyEval_SaveThread();
    for (Py_ssize_t li = 0; li < c->m->n_layers && state == 1; li++)
        state = many_layer(c, lanes, li, attend == Py_None ? NULL : attend, rows_all, top_all);
    PyEval_RestoreThread(ts);
    return state;
}

PyObject *semcodec_step_many(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule, *x_obj, *pos_obj, *caches, *attend, *rows_obj, *top_obj, *products, *staging_obj;
    const char *path = NULL;
    if (!PyArg_ParseTuple(args, "OOO!O!OOOOO|z:step_many", &capsule, &x_obj, &PyTuple_Type, &pos_obj, &PyList_Type,
                          &caches, &attend, &rows_obj, &top_obj, &products, &staging_obj, &path))
        return NULL;
    Model *m = (Model *)PyCapsule_GetPointer(capsule, CAPSULE);
    if (!m) return NULL;
    int level;
    if (semcodec_products_level(path, &level) < 0) return NULL;
    if ((attend != Py_None && !PyCallable_Check(attend)) || (products != Py_None && !PyCallable_Check(products))) {
        PyErr_SetString(PyExc_TypeError, "attend and products must be callable or None");
        return NULL;
    }
    const Py_ssize_t M = PyList_GET_SIZE(caches), H = m->heads, KV = m->kv, D = m->dim, G = H / KV;
    Py_ssize_t widest_in = m->ffn > m->hidden ? m->ffn : m->hidden;  /* the widest product input */
    widest_in = widest_in > H * D ? widest_in : H * D;
    if (M < 1 || PyTuple_GET_SIZE(pos_obj) != M) {
        PyErr_SetString(PyExc_ValueError, "step_many: one position per cache, at least one");
        return NULL;
    }
    Py_buffer xb, rb, tb, sb;
    int held = 0;
    PyObject *result = NULL;
    Lane *lanes = calloc((size_t)M, sizeof(Lane));
    Many c = {m, M, level, 0, products == Py_None ? NULL : products, NULL, NULL, NULL, NULL, NULL};
    if (!lanes) return PyErr_NoMemory();
    if (!writable(x_obj, &xb, 'd', 2, "x")) goto done;
    held = 1;
    if (!writable(rows_obj, &rb, 'd', 3, "rows")) goto done;
    held = 2;
    if (!writable(top_obj, &tb, 'q', 2, "own_top")) goto done;
    held = 3;
    if (c.products) {
        if (!writable(staging_obj, &sb, 'b', 1, "staging")) goto done;
        held = 4;
        if (sb.shape[0] < M * widest_in) {
            PyErr_SetString(PyExc_ValueError, "step_many: the staging buffer is too small");
            goto done;
        }
        c.staging = (int8_t *)sb.buf;
    }
    if (xb.shape[0] != M || xb.shape[1] != m->hidden || rb.shape[0] != KV || rb.shape[1] != M * G || rb.shape[2] != D ||
        tb.shape[0] != KV || tb.shape[1] != M * G) {
        PyErr_SetString(PyExc_ValueError, "step_many: x, rows or own_top do not match the model and the rows");
        goto done;
    }
    const int vector = own_path(level);
    c.vec = vector != OWN_PLAIN;
    for (Py_ssize_t r = 0; r < M; r++) {
        const Py_ssize_t pos = PyLong_AsSsize_t(PyTuple_GET_ITEM(pos_obj, r));
        if (pos == -1 && PyErr_Occurred()) goto done;
        if (!lane_open(m, PyList_GET_ITEM(caches, r), pos, vector, &lanes[r])) goto done;
        for (Py_ssize_t q = r - 1; q >= 0; q--)  /* the last earlier row of the same cache, if any */
            if (lanes[q].keys == lanes[r].keys || lanes[q].values == lanes[r].values) {
                if (lanes[q].keys != lanes[r].keys || lanes[q].values != lanes[r].values ||
                    lanes[r].own != lanes[q].own + 1) {
                    PyErr_SetString(PyExc_ValueError, "step_many: rows of one cache must take consecutive indices");
                    goto done;
                }
                break;
            }
        lanes[r].s.x = (double *)xb.buf + r * m->hidden;
    }
    if (!many_open(&c)) goto done;
    const int state = many_layers(&c, lanes, attend, (double *)rb.buf, (int64_t *)tb.buf);
    if (state >= 0) result = PyBool_FromLong(state);
done:
    many_free(&c);
    for (Py_ssize_t r = 0; r < M; r++) lane_free(&lanes[r]);
    free(lanes);
    if (held > 3) PyBuffer_Release(&sb);
    if (held > 2) PyBuffer_Release(&tb);
    if (held > 1) PyBuffer_Release(&rb);
    if (held > 0) PyBuffer_Release(&xb);
    return result;
}

/* step(): the lockstep code for one row, with the native products. Its own messages name the
 * arrays it takes; rows and own_top are the caller's arrays, which attend reads. */
PyObject *semcodec_step(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule, *x_obj, *k_obj, *v_obj, *attend, *rows_obj, *top_obj;
    Py_ssize_t pos, own;
    const char *path = NULL;
    if (!PyArg_ParseTuple(args, "OOnOOnOOO|z:step", &capsule, &x_obj, &pos, &k_obj, &v_obj, &own, &attend, &rows_obj,
                          &top_obj, &path))
        return NULL;
    Model *m = (Model *)PyCapsule_GetPointer(capsule, CAPSULE);
    if (!m) return NULL;
    int level;
    if (semcodec_products_level(path, &level) < 0) return NULL;
    if (attend != Py_None && !PyCallable_Check(attend)) {
        PyErr_SetString(PyExc_TypeError, "attend must be callable or None");
        return NULL;
    }
    Py_buffer xb, kb, vb, rb, tb;
    int held = 0;
    PyObject *result = NULL;
    Lane lane = {0};
    Many c = {m, 1, level, 0, NULL, NULL, NULL, NULL, NULL, NULL};
    if (!writable(x_obj, &xb, 'd', 1, "x")) goto done;
    held = 1;
    if (!writable(k_obj, &kb, 'i', 4, "keys")) goto done;
    held = 2;
    if (!writable(v_obj, &vb, 'i', 4, "values")) goto done;
    held = 3;
    if (!writable(rows_obj, &rb, 'd', 3, "rows")) goto done;
    held = 4;
    if (!writable(top_obj, &tb, 'q', 2, "own_top")) goto done;
    held = 5;
    const Py_ssize_t H = m->heads, KV = m->kv, D = m->dim, cap = kb.shape[1];
    if (xb.shape[0] != m->hidden || kb.shape[0] != m->n_layers || kb.shape[2] != KV || kb.shape[3] != D ||
        vb.shape[0] != kb.shape[0] || vb.shape[1] != cap || vb.shape[2] != KV || vb.shape[3] != D ||
        rb.shape[0] != KV || rb.shape[1] != H / KV || rb.shape[2] != D || tb.shape[0] != KV || tb.shape[1] != H / KV) {
        PyErr_SetString(PyExc_ValueError, "step: x, the cache, rows or own_top do not match the model");
        goto done;
    }
    if (own < 0 || own >= cap || pos < 0 || pos >= m->positions || own + 1 > MAX_POSITIONS) {
        PyErr_Format(PyExc_ValueError, "step: position %zd / cache index %zd out of range", pos, own);
        goto done;
    }
    lane.keys = (int32_t *)kb.buf;
    lane.values = (int32_t *)vb.buf;
    lane.cap = cap;
    lane.own = own;
    lane.pos = pos;
    lane.s.x = (double *)xb.buf;
    if (!lane_scratch(m, &lane, own_path(level))) goto done;
    c.vec = lane.s.vector != OWN_PLAIN;
    if (!many_open(&c)) goto done;
    const int state = many_layers(&c, &lane, attend, (double *)rb.buf, (int64_t *)tb.buf);
    if (state >= 0) result = PyBool_FromLong(state);
done:
    many_free(&c);
    lane_free(&lane);
    if (held > 4) PyBuffer_Release(&tb);
    if (held > 3) PyBuffer_Release(&rb);
    if (held > 2) PyBuffer_Release(&vb);
    if (held > 1) PyBuffer_Release(&kb);
    if (held > 0) PyBuffer_Release(&xb);
    return result;
}
