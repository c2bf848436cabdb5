/* One decode step of the exact runtime for a single row (semcodec.models.exact.ExactLM), native.
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
 *   attention own keys t <= own: s_t = q.k_t (int64, exact: |s| < 2**46); the prefix's part by
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

#define QK_FRACTION_BITS 10  /* SPEC section 5, step 4: queries and keys are rint(y * 2**10) */
#define V_FRACTION_BITS 12   /* values: rint(y * 2**12) */
#define RMS_STEPS 32767.0    /* SPEC section 5, step 3: the sum of squares' 16-bit image */
#define MAX_GROUP 8          /* query heads per kv head (SmolLM2-135M: 3) */
#define N_TABLES 4
#define N_LAYER_ARRAYS 10

typedef struct {
    const double *attn_norm, *ffn_norm;
    const int8_t *qkv, *o, *gate_up, *down;
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
            PyErr_SetString(PyExc_ValueError, "step_model: each layer is a tuple of 10 arrays");
            goto fail;
        }
        Layer *l = &m->layers[li];
        const Py_ssize_t h = m->hidden, f = m->ffn, hd = m->heads * m->dim;
        if (!(l->attn_norm = view(m, PyTuple_GET_ITEM(t, 0), 'd', 1, h, -1, "attn_norm")) ||
            !(l->qkv = view(m, PyTuple_GET_ITEM(t, 1), 'b', 2, h, qkv_n, "qkv")) ||
            !(l->qkv_scale = view(m, PyTuple_GET_ITEM(t, 2), 'd', 1, qkv_n, -1, "qkv scale")) ||
            !(l->o = view(m, PyTuple_GET_ITEM(t, 3), 'b', 2, hd, h, "o")) ||
            !(l->o_scale = view(m, PyTuple_GET_ITEM(t, 4), 'd', 1, h, -1, "o scale")) ||
            !(l->ffn_norm = view(m, PyTuple_GET_ITEM(t, 5), 'd', 1, h, -1, "ffn_norm")) ||
            !(l->gate_up = view(m, PyTuple_GET_ITEM(t, 6), 'b', 2, h, 2 * f, "gate_up")) ||
            !(l->gate_up_scale = view(m, PyTuple_GET_ITEM(t, 7), 'd', 1, 2 * f, -1, "gate_up scale")) ||
            !(l->down = view(m, PyTuple_GET_ITEM(t, 8), 'b', 2, f, h, "down")) ||
            !(l->down_scale = view(m, PyTuple_GET_ITEM(t, 9), 'd', 1, h, -1, "down scale")))
            goto fail;
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

static inline int finite_all(const double *x, Py_ssize_t n) {
    double acc = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) acc *= x[i];  /* stays 0 unless some x[i] is inf or NaN */
    return acc == 0.0;
}

/* quantize_rows: q = rint(y / scale) in [-amax_int, amax_int]; returns the scale, or NAN when y
 * holds a value that is not finite. */
static double quantize(const double *y, Py_ssize_t n, int amax_int, int8_t *q) {
    if (!finite_all(y, n)) return NAN;
    const double amax = row_amax(y, n);
    const double scale = amax > 0 ? amax / (double)amax_int : 1.0;
    const double limit = (double)amax_int;
    if (scale >= DBL_MIN && scale <= DBL_MAX) {
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
                           int8_t *q) {
    const Py_ssize_t k = m->hidden;
    if (!finite_all(x, k)) return NAN;
    const double amax = row_amax(x, k);
    const double step = amax > 0 ? amax / RMS_STEPS : 1.0;
    double sumsq = 0.0;  /* integers t*t <= 2**30, partial sums < 2**41: exact in any order */
    for (Py_ssize_t i = 0; i < k; i++) {
        const double t = rint(x[i] / step);
        sumsq += t * t;
    }
    const double ms = sumsq * step * step / (double)k + m->eps;
    const double rms = sqrt(ms);
    for (Py_ssize_t i = 0; i < k; i++) tmp[i] = x[i] * gain[i];
    const double scale = quantize(tmp, k, amax_int, q);
    return scale / rms;
}

/* y = (products * x_scale) * w_scale, as exact.py's _matmul. */
static void scaled_products(const int8_t *q, double x_scale, const int8_t *w, const double *w_scale, Py_ssize_t k,
                            Py_ssize_t n, int level, int32_t *acc, double *y) {
    semcodec_products(q, w, acc, 1, k, n, level);
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = (double)acc[i] * x_scale;
        y[i] = v * w_scale[i];
    }
}

static inline double rint_clip(double v, double limit) {
    v = v > -limit ? v : -limit;
    v = v < limit ? v : limit;
    return rint(v);
}

/* -- attention over the cache's own keys: scalar int64, or AVX2 + FMA in float64 ------------------
 *
 * own_scores: sc[g, t] = q[g] . k[t, h] for the G query rows of kv head h (q: (G, D) integers).
 * own_weigh: num[g, d] = sum_t p[g, t] v[t, h, d] with p[g, t] = E16[...] of each score.
 * The AVX2 paths multiply the same integers in float64: |q k| < 2**40, a row's sum < 2**46, and
 * p v < 2**40 with at most MAX_POSITIONS terms < 2**53, so every product and partial sum is exact
 * and FMA, lanes and order change no bit (bounds.h). */

static void own_scores_plain(const double *q, const int32_t *k_layer, Py_ssize_t h, Py_ssize_t KV, Py_ssize_t D,
                             Py_ssize_t G, Py_ssize_t T, int64_t *sc) {
    int64_t qi[MAX_GROUP * MAX_DIM];
    for (Py_ssize_t i = 0; i < G * D; i++) qi[i] = (int64_t)q[i];
    for (Py_ssize_t t = 0; t < T; t++) {
        const int32_t *kt = k_layer + (t * KV + h) * D;
        for (Py_ssize_t g = 0; g < G; g++) {
            int64_t acc = 0;
            for (Py_ssize_t d = 0; d < D; d++) acc += qi[g * D + d] * (int64_t)kt[d];
            sc[g * T + t] = acc;
        }
    }
}

static void own_weigh_plain(const int64_t *p, const int32_t *v_layer, Py_ssize_t h, Py_ssize_t KV, Py_ssize_t D,
                            Py_ssize_t G, Py_ssize_t T, double *num) {
    for (Py_ssize_t g = 0; g < G; g++) {
        int64_t acc[MAX_DIM] = {0};
        for (Py_ssize_t t = 0; t < T; t++) {
            const int64_t pt = p[g * T + t];
            if (!pt) continue;
            const int32_t *vt = v_layer + (t * KV + h) * D;
            for (Py_ssize_t d = 0; d < D; d++) acc[d] += pt * (int64_t)vt[d];
        }
        for (Py_ssize_t d = 0; d < D; d++) num[g * D + d] = (double)acc[d];
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(SEMCODEC_PLAIN_C)
#include <immintrin.h>
#define HAVE_AVX2_FMA 1
#define AVX2_FMA __attribute__((target("avx2,fma")))
AVX2_FMA static void own_scores_avx2(const double *q, const int32_t *k_layer, Py_ssize_t h, Py_ssize_t KV,
                                     Py_ssize_t D, Py_ssize_t G, Py_ssize_t T, int64_t *sc) {
    /* Each key row is converted once and serves the G query rows (at most MAX_GROUP, 4 at a time). */
    for (Py_ssize_t g0 = 0; g0 < G; g0 += 4) {
        const Py_ssize_t rows = G - g0 < 4 ? G - g0 : 4;
        for (Py_ssize_t t = 0; t < T; t++) {
            const int32_t *kt = k_layer + (t * KV + h) * D;
            __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
            for (Py_ssize_t d = 0; d < D; d += 4) {
                const __m256d k = _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(kt + d)));
                for (Py_ssize_t r = 0; r < rows; r++)
                    acc[r] = _mm256_fmadd_pd(_mm256_loadu_pd(q + (g0 + r) * D + d), k, acc[r]);
            }
            for (Py_ssize_t r = 0; r < rows; r++) {
                __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(acc[r]), _mm256_extractf128_pd(acc[r], 1));
                s2 = _mm_add_sd(s2, _mm_unpackhi_pd(s2, s2));
                sc[(g0 + r) * T + t] = (int64_t)_mm_cvtsd_f64(s2);
            }
        }
    }
}

AVX2_FMA static void own_weigh_avx2(const int64_t *p, const int32_t *v_layer, Py_ssize_t h, Py_ssize_t KV,
                                    Py_ssize_t D, Py_ssize_t G, Py_ssize_t T, double *num) {
    for (Py_ssize_t g = 0; g < G; g++) {
        __m256d acc[MAX_DIM / 4];
        for (Py_ssize_t i = 0; i < D / 4; i++) acc[i] = _mm256_setzero_pd();
        for (Py_ssize_t t = 0; t < T; t++) {
            const int64_t pt = p[g * T + t];
            if (!pt) continue;
            const __m256d pv = _mm256_set1_pd((double)pt);
            const int32_t *vt = v_layer + (t * KV + h) * D;
            for (Py_ssize_t i = 0; i < D / 4; i++)
                acc[i] = _mm256_fmadd_pd(pv, _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(vt + 4 * i))), acc[i]);
        }
        for (Py_ssize_t i = 0; i < D / 4; i++) _mm256_storeu_pd(num + g * D + 4 * i, acc[i]);
    }
}

static int has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

typedef struct {
    double *x, *tmp, *y, *att, *num_pre, *rows, *num_own;
    int64_t *weights;
    int vector;  /* the AVX2 + FMA attention paths */
    int8_t *q;
    int32_t *acc;
    int64_t *scores, *own_top, *top, *z_pre;
} Scratch;

/* Attention over the cache's own keys, one kv head per block: head_scores writes the G rows'
 * scores and maxima, head_weigh their weights (with the maxima over prefix and own keys), the
 * weighted values and the head's output. Heads write disjoint parts of the scratch. */
typedef struct {
    const Model *m;
    Py_ssize_t li, cap, own;
    const int32_t *keys, *values;
    int prefixed;
    Scratch *s;
} HeadJob;

static void head_scores(void *arg, long block) {
    const HeadJob *j = (const HeadJob *)arg;
    const Model *m = j->m;
    Scratch *s = j->s;
    const Py_ssize_t h = block, KV = m->kv, D = m->dim, G = m->heads / KV, T = j->own + 1;
    const int32_t *k_layer = j->keys + (j->li * j->cap) * KV * D;
    int64_t *sc = s->scores + h * G * T;  /* (G, T) per kv head: head h * G + g's scores at g * T */
#ifdef HAVE_AVX2_FMA
    if (s->vector)
        own_scores_avx2(s->rows + h * G * D, k_layer, h, KV, D, G, T, sc);
    else
#endif
        own_scores_plain(s->rows + h * G * D, k_layer, h, KV, D, G, T, sc);
    for (Py_ssize_t g = 0; g < G; g++) {
        int64_t top = INT64_MIN;
        for (Py_ssize_t t = 0; t < T; t++) top = sc[g * T + t] > top ? sc[g * T + t] : top;
        s->own_top[h * G + g] = top;
    }
}

static void head_weigh(void *arg, long block) {
    const HeadJob *j = (const HeadJob *)arg;
    const Model *m = j->m;
    Scratch *s = j->s;
    const Py_ssize_t h = block, KV = m->kv, D = m->dim, G = m->heads / KV, T = j->own + 1;
    const int32_t *v_layer = j->values + (j->li * j->cap) * KV * D;
    const int64_t half = (int64_t)1 << (m->shift - 1), last = m->att_len - 1;
    int64_t z[MAX_GROUP], *weights = s->weights + h * G * T;
    double *num_own = s->num_own + h * G * D;
    for (Py_ssize_t g = 0; g < G; g++) {  /* weights p = E16[min((top - s + 2**(shift-1)) >> shift, len - 1)] */
        const Py_ssize_t head = h * G + g;
        const int64_t top = j->prefixed ? s->top[head] : s->own_top[head], *sc = s->scores + head * T;
        int64_t *p = weights + g * T, sum = 0;
        for (Py_ssize_t t = 0; t < T; t++) {
            int64_t idx = (top - sc[t] + half) >> m->shift;
            p[t] = m->att_exp[idx < last ? idx : last];
            sum += p[t];
        }
        z[g] = sum;
    }
#ifdef HAVE_AVX2_FMA
    if (s->vector)
        own_weigh_avx2(weights, v_layer, h, KV, D, G, T, num_own);
    else
#endif
        own_weigh_plain(weights, v_layer, h, KV, D, G, T, num_own);
    for (Py_ssize_t g = 0; g < G; g++) {
        const Py_ssize_t head = h * G + g;
        const double *num = num_own + g * D;
        double *out = s->att + head * D;
        if (j->prefixed) {  /* num += prefix num; z += prefix z; out = num / z / 2**12 (exact.py's order) */
            const int64_t zt = z[g] + s->z_pre[head];
            for (Py_ssize_t d = 0; d < D; d++) out[d] = (num[d] + s->num_pre[head * D + d]) / (double)zt;
        } else {
            for (Py_ssize_t d = 0; d < D; d++) out[d] = num[d] / (double)z[g];
        }
        for (Py_ssize_t d = 0; d < D; d++) out[d] /= (double)(1 << V_FRACTION_BITS);
    }
}

#define PARALLEL_POSITIONS 256  /* own keys from which the kv heads are shared out among the threads */

static void attend_heads(void (*fn)(void *, long), HeadJob *job) {
    if (job->own + 1 >= PARALLEL_POSITIONS) {
        semcodec_run_blocks(fn, job, (long)job->m->kv);
    } else {
        for (long h = 0; h < job->m->kv; h++) fn(job, h);
    }
}

/* Part one of the attention block: norm, q/k/v, RoPE, fixed point, the new key and value stored at
 * `own`, the query rows and each row's maximum over its own keys. 0 when not finite. */
static int attention_in(const Model *m, const Layer *l, Py_ssize_t li, Py_ssize_t pos, int32_t *keys, int32_t *values,
                        Py_ssize_t cap, Py_ssize_t own, int level, Scratch *s) {
    const Py_ssize_t H = m->heads, KV = m->kv, D = m->dim, qkv_n = (H + 2 * KV) * D;
    const double xs = rms_quantize(m, s->x, l->attn_norm, m->amax_hidden, s->tmp, s->q);
    if (isnan(xs)) return 0;
    scaled_products(s->q, xs, l->qkv, l->qkv_scale, m->hidden, qkv_n, level, s->acc, s->y);
    if (!finite_all(s->y, qkv_n)) return 0;
    const double *c = m->cos + pos * (D / 2), *sn = m->sin + pos * (D / 2);
    for (Py_ssize_t h = 0; h < H + KV; h++) {  /* RoPE: queries and keys (values keep x * 1 + x' * 0 = x) */
        double *r = s->y + h * D;
        for (Py_ssize_t j = 0; j < D / 2; j++) {
            const double e = r[2 * j], o = r[2 * j + 1];
            const double e1 = e * c[j], o1 = o * (-sn[j]);
            const double o2 = o * c[j], e2 = e * sn[j];
            r[2 * j] = e1 + o1;
            r[2 * j + 1] = o2 + e2;
        }
    }
    const double qk_scale = (double)(1 << QK_FRACTION_BITS), v_scale = (double)(1 << V_FRACTION_BITS);
    for (Py_ssize_t i = 0; i < (H + KV) * D; i++) s->y[i] = rint_clip(s->y[i] * qk_scale, (double)QK_LIMIT);
    for (Py_ssize_t i = (H + KV) * D; i < qkv_n; i++) s->y[i] = rint_clip(s->y[i] * v_scale, (double)V_LIMIT);
    int32_t *k_row = keys + ((li * cap + own) * KV) * D, *v_row = values + ((li * cap + own) * KV) * D;
    for (Py_ssize_t i = 0; i < KV * D; i++) {
        k_row[i] = (int32_t)s->y[H * D + i];
        v_row[i] = (int32_t)s->y[(H + KV) * D + i];
    }
    memcpy(s->rows, s->y, sizeof(double) * (size_t)(H * D));  /* (KV, G, D): row g of kv head h is head h * G + g */
    HeadJob job = {m, li, cap, own, keys, values, 0, s};
    attend_heads(head_scores, &job);
    return 1;
}

/* Part two: the own keys' weights (with the rows' maxima `top` over prefix and own keys), the
 * weighted values joined with the prefix's (num_pre, z_pre; NULL: none), o, then the MLP. */
static int attention_out_mlp(const Model *m, const Layer *l, Py_ssize_t li, int32_t *values, Py_ssize_t cap,
                             Py_ssize_t own, int prefixed, int level, Scratch *s) {
    const Py_ssize_t H = m->heads, D = m->dim;
    HeadJob job = {m, li, cap, own, NULL, values, prefixed, s};
    attend_heads(head_weigh, &job);
    const Py_ssize_t hidden = m->hidden, ffn = m->ffn;
    double as = quantize(s->att, H * D, m->amax_hidden, s->q);
    if (isnan(as)) return 0;
    scaled_products(s->q, as, l->o, l->o_scale, H * D, hidden, level, s->acc, s->y);
    for (Py_ssize_t i = 0; i < hidden; i++) s->x[i] = s->x[i] + s->y[i];
    /* MLP: down(silu(gate(x)) * up(x)) */
    const double xs = rms_quantize(m, s->x, l->ffn_norm, m->amax_hidden, s->tmp, s->q);
    if (isnan(xs)) return 0;
    scaled_products(s->q, xs, l->gate_up, l->gate_up_scale, hidden, 2 * ffn, level, s->acc, s->y);
    if (!finite_all(s->y, 2 * ffn)) return 0;
    const double steps = (double)(1 << m->sigmoid_bits), limit = (double)m->sigmoid_half;
    for (Py_ssize_t i = 0; i < ffn; i++) {
        const double g = s->y[i];
        const Py_ssize_t idx = (Py_ssize_t)rint_clip(g * steps, limit);
        const double silu = g * m->sigmoid[idx + m->sigmoid_half];
        s->y[i] = silu * s->y[ffn + i];
    }
    const double hs = quantize(s->y, ffn, m->amax_ffn, s->q);
    if (isnan(hs)) return 0;
    scaled_products(s->q, hs, l->down, l->down_scale, ffn, hidden, level, s->acc, s->tmp);
    for (Py_ssize_t i = 0; i < hidden; i++) s->x[i] = s->x[i] + s->tmp[i];
    return 1;
}

/* attend(layer) -> (num, z, top), copied into the scratch. 0 with an exception set on failure. */
static int call_attend(PyObject *attend, Py_ssize_t li, Py_ssize_t rows, Py_ssize_t dim, Scratch *s) {
    PyObject *res = PyObject_CallFunction(attend, "n", li);
    if (!res) return 0;
    int ok = 0;
    Py_buffer b[3];
    int got = 0;
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 3) {
        PyErr_SetString(PyExc_TypeError, "attend must return (num, z, top)");
        goto done;
    }
    const Py_ssize_t want[3] = {rows * dim * 8, rows * 8, rows * 8};
    const char kinds[3] = {'d', 'q', 'q'};
    for (; got < 3; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(res, got), &b[got], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
        if (b[got].len != want[got] || !holds(&b[got], kinds[got])) {
            got++;
            PyErr_SetString(PyExc_ValueError, "attend's results have the wrong type or size");
            goto done;
        }
    }
    memcpy(s->num_pre, b[0].buf, (size_t)want[0]);
    memcpy(s->z_pre, b[1].buf, (size_t)want[1]);
    memcpy(s->top, b[2].buf, (size_t)want[2]);
    for (Py_ssize_t i = 0; i < rows; i++)  /* what attend promises; anything else would index E16 out of bounds */
        if (s->top[i] < s->own_top[i] || s->top[i] > SCORE_LIMIT || s->z_pre[i] < 0 ||
            s->z_pre[i] > (int64_t)MAX_POSITIONS * P_MAX) {
            PyErr_SetString(PyExc_ValueError, "attend's maxima or weight sums are outside their bounds");
            goto done;
        }
    ok = 1;
done:
    for (int i = 0; i < got; i++) PyBuffer_Release(&b[i]);
    Py_DECREF(res);
    return ok;
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
    const int prefixed = attend != Py_None;
    if (prefixed && !PyCallable_Check(attend)) {
        PyErr_SetString(PyExc_TypeError, "attend must be callable or None");
        return NULL;
    }
    Py_buffer xb, kb, vb, rb, tb;
    int held = 0;
    PyObject *result = NULL;
    Scratch s = {0};
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
    const Py_ssize_t wide = m->ffn > m->hidden ? 2 * m->ffn : 2 * m->hidden;
    const Py_ssize_t qkv_n = (H + 2 * KV) * D;
    const Py_ssize_t big = wide > qkv_n ? wide : qkv_n;
    s.x = (double *)xb.buf;
    s.rows = (double *)rb.buf;
    s.own_top = (int64_t *)tb.buf;
    s.tmp = malloc(sizeof(double) * (size_t)big);
    s.y = malloc(sizeof(double) * (size_t)big);
    s.att = malloc(sizeof(double) * (size_t)(H * D));
    s.num_pre = malloc(sizeof(double) * (size_t)(H * D));
    s.q = malloc((size_t)big);
    s.acc = malloc(sizeof(int32_t) * (size_t)big);
    s.scores = malloc(sizeof(int64_t) * (size_t)(H * (own + 1)));
    s.top = malloc(sizeof(int64_t) * (size_t)H);
    s.z_pre = malloc(sizeof(int64_t) * (size_t)H);
    s.weights = malloc(sizeof(int64_t) * (size_t)(H * (own + 1)));
    s.num_own = malloc(sizeof(double) * (size_t)(H * D));
#ifdef HAVE_AVX2_FMA
    s.vector = level > 0 && has_avx2_fma();  /* path "plain" keeps every part in C */
#endif
    if (!s.tmp || !s.y || !s.att || !s.num_pre || !s.q || !s.acc || !s.scores || !s.top || !s.z_pre || !s.weights ||
        !s.num_own) {
        PyErr_NoMemory();
        goto done;
    }
    int finite = 1;
    for (Py_ssize_t li = 0; li < m->n_layers && finite; li++) {
        const Layer *l = &m->layers[li];
        PyThreadState *ts = PyEval_SaveThread();
        finite = attention_in(m, l, li, pos, (int32_t *)kb.buf, (int32_t *)vb.buf, cap, own, level, &s);
        PyEval_RestoreThread(ts);
        if (!finite) break;
        if (prefixed && !call_attend(attend, li, H, D, &s)) goto done;
        ts = PyEval_SaveThread();
        finite = attention_out_mlp(m, l, li, (int32_t *)vb.buf, cap, own, prefixed, level, &s);
        PyEval_RestoreThread(ts);
    }
    result = PyBool_FromLong(finite);
done:
    free(s.tmp);
    free(s.y);
    free(s.att);
    free(s.num_pre);
    free(s.q);
    free(s.acc);
    free(s.scores);
    free(s.top);
    free(s.z_pre);
    free(s.weights);
    free(s.num_own);
    if (held > 4) PyBuffer_Release(&tb);
    if (held > 3) PyBuffer_Release(&rb);
    if (held > 2) PyBuffer_Release(&vb);
    if (held > 1) PyBuffer_Release(&kb);
    if (held > 0) PyBuffer_Release(&xb);
    return result;
}
