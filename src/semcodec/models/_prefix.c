/* Exact products of integer rows with a prefix's keys and values (semcodec.models.attention).
 *
 * scores(keys, q, out): out[h, n, t] = sum_d q[h, n, d] * keys[t, h, d]
 * weigh(values, p, out): out[h, n, d] = sum_t p[h, n, t] * values[t, h, d]
 *
 * keys/values: one layer of a prefix, C-contiguous (T, KV, D) int16 or int32 (the context
 * file's own layout, so a memory-mapped layer is used in place); q: (KV, N, D) float64
 * holding integers; p: (KV, N, T) int64; any strides for q and p. out: C-contiguous,
 * int64 for scores, float64 for weigh.
 *
 * Exactness (SPEC 5.4): every product and every partial sum is an integer of magnitude
 * below 2**53, so float64 holds it exactly and the result does not depend on the order of
 * the additions: FMA, vector lanes and blocking cannot change a bit. Bounds: |q|, |k| < 2**20
 * and D <= 64 give |q.k| < 64 * 2**40 = 2**46; 0 <= p <= 2**16 and |v| < 2**24 give
 * |p.v| <= T * 2**40, below 2**53 for T < 2**13 (checked: T > MAX_POSITIONS is refused).
 * Never build this with -ffast-math (it would allow non-IEEE conversions).
 *
 * GQA: the N rows of a kv head (its 3 query heads, times the files of a batch) share each
 * key/value row, which is loaded and converted once per group of ROWS rows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX2 1
#include <immintrin.h>
#endif

#define ROWS 3               /* rows per register block: one token's query heads per kv head */
#define MAX_POSITIONS 8191   /* T * 2**40 < 2**53 */
#define MAX_DIM 64           /* D * 2**40 <= 2**46 */

typedef struct {
    const void *data;   /* (T, KV, D) */
    int wide;           /* 0: int16, 1: int32 */
    Py_ssize_t t, kv, d;
} Prefix;

/* -- plain C ------------------------------------------------------------------------ */

static inline double prefix_at(const Prefix *x, Py_ssize_t i) {
    return x->wide ? (double)((const int32_t *)x->data)[i] : (double)((const int16_t *)x->data)[i];
}

/* q: (npad, D) doubles of one kv head; out (N, T) int64 rows of that head. */
static void scores_plain(const Prefix *k, Py_ssize_t h, const double *q, Py_ssize_t n, int64_t *out) {
    for (Py_ssize_t t = 0; t < k->t; t++) {
        Py_ssize_t base = (t * k->kv + h) * k->d;
        for (Py_ssize_t r = 0; r < n; r++) {
            double acc = 0.0;
            for (Py_ssize_t d = 0; d < k->d; d++) acc += q[r * k->d + d] * prefix_at(k, base + d);
            out[r * k->t + t] = (int64_t)acc;
        }
    }
}

/* p: (npad, T) doubles of one kv head; out (N, D) doubles of that head. */
static void weigh_plain(const Prefix *v, Py_ssize_t h, const double *p, Py_ssize_t n, double *out) {
    memset(out, 0, (size_t)(n * v->d) * sizeof(double));
    for (Py_ssize_t t = 0; t < v->t; t++) {
        Py_ssize_t base = (t * v->kv + h) * v->d;
        for (Py_ssize_t r = 0; r < n; r++) {
            double w = p[r * v->t + t];
            if (w == 0.0) continue;
            for (Py_ssize_t d = 0; d < v->d; d++) out[r * v->d + d] += w * prefix_at(v, base + d);
        }
    }
}

/* -- AVX2 + FMA ----------------------------------------------------------------------- */

#ifdef HAVE_AVX2
#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256d load4(const Prefix *x, Py_ssize_t i) {
    if (x->wide) return _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)((const int32_t *)x->data + i)));
    return _mm256_cvtepi32_pd(_mm_cvtepi16_epi32(_mm_loadl_epi64((const __m128i *)((const int16_t *)x->data + i))));
}

AVX2 static inline double hsum(__m256d a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* Three positions by ROWS rows per block: nine accumulators, each key chunk converted once.
 * Positions outermost, heads inside: the layer is read once, in address order. */
AVX2 static void scores_avx2(const Prefix *k, const double *q, Py_ssize_t n, Py_ssize_t npad, int64_t *out) {
    const Py_ssize_t D = k->d, T = k->t, KV = k->kv, stride = KV * D;
    Py_ssize_t t = 0;
    for (; t + 3 <= T; t += 3)
        for (Py_ssize_t h = 0; h < KV; h++)
            for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS) {
                const double *q0 = q + (h * npad + r0) * D, *q1 = q0 + D, *q2 = q1 + D;
                Py_ssize_t b0 = t * stride + h * D, b1 = b0 + stride, b2 = b1 + stride;
                __m256d a00 = _mm256_setzero_pd(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00,
                        a20 = a00, a21 = a00, a22 = a00;
                for (Py_ssize_t d = 0; d < D; d += 4) {
                    __m256d k0 = load4(k, b0 + d), k1 = load4(k, b1 + d), k2 = load4(k, b2 + d);
                    __m256d x = _mm256_loadu_pd(q0 + d);
                    a00 = _mm256_fmadd_pd(x, k0, a00); a01 = _mm256_fmadd_pd(x, k1, a01); a02 = _mm256_fmadd_pd(x, k2, a02);
                    x = _mm256_loadu_pd(q1 + d);
                    a10 = _mm256_fmadd_pd(x, k0, a10); a11 = _mm256_fmadd_pd(x, k1, a11); a12 = _mm256_fmadd_pd(x, k2, a12);
                    x = _mm256_loadu_pd(q2 + d);
                    a20 = _mm256_fmadd_pd(x, k0, a20); a21 = _mm256_fmadd_pd(x, k1, a21); a22 = _mm256_fmadd_pd(x, k2, a22);
                }
                __m256d acc[3][3] = {{a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22}};
                int64_t *o = out + (h * n + r0) * T + t;
                for (Py_ssize_t r = 0; r < ROWS && r0 + r < n; r++)
                    for (int j = 0; j < 3; j++) o[r * T + j] = (int64_t)hsum(acc[r][j]);
            }
    for (; t < T; t++)
        for (Py_ssize_t h = 0; h < KV; h++)
            for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS) {
                const double *q0 = q + (h * npad + r0) * D, *q1 = q0 + D, *q2 = q1 + D;
                Py_ssize_t b0 = t * stride + h * D;
                __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0;
                for (Py_ssize_t d = 0; d < D; d += 4) {
                    __m256d k0 = load4(k, b0 + d);
                    a0 = _mm256_fmadd_pd(_mm256_loadu_pd(q0 + d), k0, a0);
                    a1 = _mm256_fmadd_pd(_mm256_loadu_pd(q1 + d), k0, a1);
                    a2 = _mm256_fmadd_pd(_mm256_loadu_pd(q2 + d), k0, a2);
                }
                __m256d acc[3] = {a0, a1, a2};
                for (Py_ssize_t r = 0; r < ROWS && r0 + r < n; r++) out[(h * n + r0 + r) * T + t] = (int64_t)hsum(acc[r]);
            }
}

#define BLOCK 32  /* positions per block: 32 rows of 3 x 64 int32 (24 KB) stay in L1 across the passes */

/* Eight columns (two vectors) by ROWS rows per pass over a block of positions; the blocks
 * in address order, the partial sums kept in out between blocks. */
AVX2 static void weigh_avx2(const Prefix *v, const double *p, Py_ssize_t n, Py_ssize_t npad, double *out) {
    const Py_ssize_t D = v->d, T = v->t, KV = v->kv, stride = KV * D;
    memset(out, 0, (size_t)(KV * n * D) * sizeof(double));
    for (Py_ssize_t t0 = 0; t0 < T; t0 += BLOCK) {
        Py_ssize_t t1 = t0 + BLOCK < T ? t0 + BLOCK : T;
        for (Py_ssize_t h = 0; h < KV; h++)
            for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS) {
                const double *p0 = p + (h * npad + r0) * T, *p1 = p0 + T, *p2 = p1 + T;
                double *o = out + (h * n + r0) * D;
                Py_ssize_t rows = n - r0 < ROWS ? n - r0 : ROWS;
                for (Py_ssize_t d = 0; d < D; d += 8) {
                    int two = d + 8 <= D;
                    __m256d a00 = _mm256_setzero_pd(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
                    Py_ssize_t at = t0 * stride + h * D + d;
                    for (Py_ssize_t t = t0; t < t1; t++, at += stride) {
                        __m256d v0 = load4(v, at), v1 = two ? load4(v, at + 4) : _mm256_setzero_pd();
                        __m256d w = _mm256_broadcast_sd(p0 + t);
                        a00 = _mm256_fmadd_pd(w, v0, a00); a01 = _mm256_fmadd_pd(w, v1, a01);
                        w = _mm256_broadcast_sd(p1 + t);
                        a10 = _mm256_fmadd_pd(w, v0, a10); a11 = _mm256_fmadd_pd(w, v1, a11);
                        w = _mm256_broadcast_sd(p2 + t);
                        a20 = _mm256_fmadd_pd(w, v0, a20); a21 = _mm256_fmadd_pd(w, v1, a21);
                    }
                    __m256d acc[3][2] = {{a00, a01}, {a10, a11}, {a20, a21}};
                    for (Py_ssize_t r = 0; r < rows; r++) {
                        double *x = o + r * D + d;
                        _mm256_storeu_pd(x, _mm256_add_pd(_mm256_loadu_pd(x), acc[r][0]));
                        if (two) _mm256_storeu_pd(x + 4, _mm256_add_pd(_mm256_loadu_pd(x + 4), acc[r][1]));
                    }
                }
            }
    }
}

/* -- AVX-512 (where the CPU has it): eight lanes, twice the registers -------------------- */

#define AVX512 __attribute__((target("avx512f,avx2,fma")))

AVX512 static inline __m512d load8(const Prefix *x, Py_ssize_t i) {
    if (x->wide) return _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)((const int32_t *)x->data + i)));
    return _mm512_cvtepi32_pd(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)((const int16_t *)x->data + i))));
}

/* Four positions by ROWS rows per block: twelve accumulators. */
AVX512 static void scores_avx512(const Prefix *k, const double *q, Py_ssize_t n, Py_ssize_t npad, int64_t *out) {
    const Py_ssize_t D = k->d, T = k->t, KV = k->kv, stride = KV * D;
    Py_ssize_t t = 0;
    for (; t + 4 <= T; t += 4)
        for (Py_ssize_t h = 0; h < KV; h++)
            for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS) {
                const double *q0 = q + (h * npad + r0) * D, *q1 = q0 + D, *q2 = q1 + D;
                Py_ssize_t b0 = t * stride + h * D, b1 = b0 + stride, b2 = b1 + stride, b3 = b2 + stride;
                __m512d acc[3][4];
                for (int r = 0; r < 3; r++)
                    for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_pd();
                for (Py_ssize_t d = 0; d < D; d += 8) {
                    __m512d kk[4] = {load8(k, b0 + d), load8(k, b1 + d), load8(k, b2 + d), load8(k, b3 + d)};
                    __m512d x0 = _mm512_loadu_pd(q0 + d), x1 = _mm512_loadu_pd(q1 + d), x2 = _mm512_loadu_pd(q2 + d);
                    for (int j = 0; j < 4; j++) {
                        acc[0][j] = _mm512_fmadd_pd(x0, kk[j], acc[0][j]);
                        acc[1][j] = _mm512_fmadd_pd(x1, kk[j], acc[1][j]);
                        acc[2][j] = _mm512_fmadd_pd(x2, kk[j], acc[2][j]);
                    }
                }
                int64_t *o = out + (h * n + r0) * T + t;
                for (Py_ssize_t r = 0; r < ROWS && r0 + r < n; r++)
                    for (int j = 0; j < 4; j++) o[r * T + j] = (int64_t)_mm512_reduce_add_pd(acc[r][j]);
            }
    for (; t < T; t++)
        for (Py_ssize_t h = 0; h < KV; h++)
            for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS) {
                const double *q0 = q + (h * npad + r0) * D, *q1 = q0 + D, *q2 = q1 + D;
                Py_ssize_t b0 = t * stride + h * D;
                __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0;
                for (Py_ssize_t d = 0; d < D; d += 8) {
                    __m512d k0 = load8(k, b0 + d);
                    a0 = _mm512_fmadd_pd(_mm512_loadu_pd(q0 + d), k0, a0);
                    a1 = _mm512_fmadd_pd(_mm512_loadu_pd(q1 + d), k0, a1);
                    a2 = _mm512_fmadd_pd(_mm512_loadu_pd(q2 + d), k0, a2);
                }
                __m512d acc[3] = {a0, a1, a2};
                for (Py_ssize_t r = 0; r < ROWS && r0 + r < n; r++)
                    out[(h * n + r0 + r) * T + t] = (int64_t)_mm512_reduce_add_pd(acc[r]);
            }
}

/* 32 columns (four vectors) by ROWS rows per pass over a block of positions. */
AVX512 static void weigh_avx512(const Prefix *v, const double *p, Py_ssize_t n, Py_ssize_t npad, double *out) {
    const Py_ssize_t D = v->d, T = v->t, KV = v->kv, stride = KV * D;
    memset(out, 0, (size_t)(KV * n * D) * sizeof(double));
    for (Py_ssize_t t0 = 0; t0 < T; t0 += BLOCK) {
        Py_ssize_t t1 = t0 + BLOCK < T ? t0 + BLOCK : T;
        for (Py_ssize_t h = 0; h < KV; h++)
            for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS) {
                const double *p0 = p + (h * npad + r0) * T, *p1 = p0 + T, *p2 = p1 + T;
                double *o = out + (h * n + r0) * D;
                Py_ssize_t rows = n - r0 < ROWS ? n - r0 : ROWS;
                for (Py_ssize_t d = 0; d < D; d += 32) {
                    int m = (int)((D - d < 32 ? D - d : 32) / 8);  /* vectors in this block: 1 to 4 */
                    __m512d acc[3][4];
                    for (int r = 0; r < 3; r++)
                        for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_pd();
                    Py_ssize_t at = t0 * stride + h * D + d;
                    for (Py_ssize_t t = t0; t < t1; t++, at += stride) {
                        __m512d w0 = _mm512_set1_pd(p0[t]), w1 = _mm512_set1_pd(p1[t]), w2 = _mm512_set1_pd(p2[t]);
                        for (int j = 0; j < 4; j++) {
                            if (j >= m) break;
                            __m512d x = load8(v, at + 8 * j);
                            acc[0][j] = _mm512_fmadd_pd(w0, x, acc[0][j]);
                            acc[1][j] = _mm512_fmadd_pd(w1, x, acc[1][j]);
                            acc[2][j] = _mm512_fmadd_pd(w2, x, acc[2][j]);
                        }
                    }
                    for (Py_ssize_t r = 0; r < rows; r++)
                        for (int j = 0; j < m; j++) {
                            double *x = o + r * D + d + 8 * j;
                            _mm512_storeu_pd(x, _mm512_add_pd(_mm512_loadu_pd(x), acc[r][j]));
                        }
                }
            }
    }
}

static int use_avx512(Py_ssize_t d) {
    static int cpu = -1;
    if (cpu < 0) {
        __builtin_cpu_init();
        cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cpu && d % 8 == 0;
}

static int use_avx2(Py_ssize_t d) {
    static int cpu = -1;
    if (cpu < 0) {
        __builtin_cpu_init();
        cpu = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cpu && d % 4 == 0;
}
#else
static int use_avx2(Py_ssize_t d) { (void)d; return 0; }
static int use_avx512(Py_ssize_t d) { (void)d; return 0; }
#endif

/* -- argument handling ---------------------------------------------------------------- */

static int integer_format(const Py_buffer *b, Py_ssize_t itemsize) {
    if (b->itemsize != itemsize || b->format == NULL) return 0;
    const char *f = b->format;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (f[1] != '\0') return 0;
    switch (itemsize) {
        case 2: return *f == 'h';
        case 4: return *f == 'i' || (*f == 'l' && sizeof(long) == 4);
        case 8: return *f == 'q' || (*f == 'l' && sizeof(long) == 8);
    }
    return 0;
}

static int double_format(const Py_buffer *b) {
    const char *f = b->format;
    if (f == NULL || b->itemsize != 8) return 0;
    if (*f == '<' || *f == '=' || *f == '@') f++;
    return f[0] == 'd' && f[1] == '\0';
}

/* A (T, KV, D) int16/int32 C-contiguous prefix layer. */
static int get_prefix(PyObject *obj, Py_buffer *b, Prefix *x) {
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (b->ndim != 3 || !(integer_format(b, 2) || integer_format(b, 4))) {
        PyErr_SetString(PyExc_TypeError, "the prefix must be a C-contiguous (T, KV, D) int16 or int32 array");
        PyBuffer_Release(b);
        return -1;
    }
    x->data = b->buf;
    x->wide = b->itemsize == 4;
    x->t = b->shape[0];
    x->kv = b->shape[1];
    x->d = b->shape[2];
    if (x->t > MAX_POSITIONS || x->d > MAX_DIM) {
        PyErr_Format(PyExc_ValueError, "a prefix of %zd positions of %zd dims exceeds the exact bounds (%d, %d)",
                     x->t, x->d, MAX_POSITIONS, MAX_DIM);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* rows (KV, N, X) of any strides -> (KV, npad, X) doubles, rows past N zero. */
static double *gather_rows(const Py_buffer *b, int is_double, Py_ssize_t npad) {
    Py_ssize_t kv = b->shape[0], n = b->shape[1], x = b->shape[2];
    double *out = PyMem_Calloc((size_t)(kv * npad * x), sizeof(double));
    if (out == NULL) return (double *)PyErr_NoMemory();
    for (Py_ssize_t h = 0; h < kv; h++)
        for (Py_ssize_t r = 0; r < n; r++) {
            const char *row = (const char *)b->buf + h * b->strides[0] + r * b->strides[1];
            double *dst = out + (h * npad + r) * x;
            for (Py_ssize_t i = 0; i < x; i++) {
                const char *at = row + i * b->strides[2];
                if (is_double) memcpy(dst + i, at, sizeof(double));
                else { int64_t v; memcpy(&v, at, sizeof v); dst[i] = (double)v; }  /* |v| <= 2**16 */
            }
        }
    return out;
}

static int get_rows(PyObject *obj, Py_buffer *b, int want_double, Py_ssize_t kv, Py_ssize_t x, const char *what) {
    if (PyObject_GetBuffer(obj, b, PyBUF_STRIDED_RO | PyBUF_FORMAT) < 0) return -1;
    int ok = want_double ? double_format(b) : integer_format(b, 8);
    if (b->ndim != 3 || !ok || b->shape[0] != kv || b->shape[2] != x) {
        PyErr_Format(PyExc_ValueError, "%s must be (%zd, N, %zd) %s", what, kv, x, want_double ? "float64" : "int64");
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static int get_out(PyObject *obj, Py_buffer *b, int want_double, Py_ssize_t kv, Py_ssize_t n, Py_ssize_t x) {
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT) < 0) return -1;
    int ok = want_double ? double_format(b) : integer_format(b, 8);
    if (b->ndim != 3 || !ok || b->shape[0] != kv || b->shape[1] != n || b->shape[2] != x) {
        PyErr_Format(PyExc_ValueError, "out must be a C-contiguous (%zd, %zd, %zd) %s", kv, n, x,
                     want_double ? "float64" : "int64");
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static PyObject *products(PyObject *args, int weigh) {
    PyObject *prefix_obj, *rows_obj, *out_obj;
    const char *path = NULL;
    if (!PyArg_ParseTuple(args, weigh ? "OOO|z:weigh" : "OOO|z:scores", &prefix_obj, &rows_obj, &out_obj, &path))
        return NULL;
    int want = path == NULL ? 2 : !strcmp(path, "avx512") ? 2 : !strcmp(path, "avx2") ? 1 : !strcmp(path, "plain") ? 0 : -1;
    if (want < 0) {
        PyErr_Format(PyExc_ValueError, "unknown path %s (avx512, avx2 or plain)", path);
        return NULL;
    }
    Py_buffer pb, rb, ob;
    Prefix x;
    if (get_prefix(prefix_obj, &pb, &x) < 0) return NULL;
    Py_ssize_t inner = weigh ? x.t : x.d, outer = weigh ? x.d : x.t;
    if (get_rows(rows_obj, &rb, !weigh, x.kv, inner, weigh ? "p" : "q") < 0) {
        PyBuffer_Release(&pb);
        return NULL;
    }
    Py_ssize_t n = rb.shape[1], npad = (n + ROWS - 1) / ROWS * ROWS;
    if (get_out(out_obj, &ob, weigh, x.kv, n, outer) < 0) {
        PyBuffer_Release(&pb);
        PyBuffer_Release(&rb);
        return NULL;
    }
    double *rows = gather_rows(&rb, !weigh, npad);
    if (rows != NULL) {
        /* The widest path this CPU has, at most the one asked for (tests run each). */
        int wide = want >= 2 && use_avx512(x.d), fast = want >= 1 && use_avx2(x.d);
        Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_AVX2
        if (wide && weigh) weigh_avx512(&x, rows, n, npad, (double *)ob.buf);
        else if (wide) scores_avx512(&x, rows, n, npad, (int64_t *)ob.buf);
        else if (fast && weigh) weigh_avx2(&x, rows, n, npad, (double *)ob.buf);
        else if (fast) scores_avx2(&x, rows, n, npad, (int64_t *)ob.buf);
        else
#endif
        for (Py_ssize_t h = 0; h < x.kv; h++) {
            const double *r = rows + h * npad * inner;
            if (weigh) weigh_plain(&x, h, r, n, (double *)ob.buf + h * n * outer);
            else scores_plain(&x, h, r, n, (int64_t *)ob.buf + h * n * outer);
        }
        Py_END_ALLOW_THREADS
        PyMem_Free(rows);
    }
    PyBuffer_Release(&pb);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&ob);
    if (rows == NULL) return NULL;
    Py_RETURN_NONE;
}

static PyObject *scores(PyObject *self, PyObject *args) { (void)self; return products(args, 0); }
static PyObject *weigh(PyObject *self, PyObject *args) { (void)self; return products(args, 1); }

static PyObject *vector_paths(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    if (use_avx512(8)) return Py_BuildValue("(sss)", "avx512", "avx2", "plain");
    if (use_avx2(4)) return Py_BuildValue("(ss)", "avx2", "plain");
    return Py_BuildValue("(s)", "plain");
}

static PyMethodDef methods[] = {
    {"scores", scores, METH_VARARGS,
     "scores(keys, q, out, path=None): out[h, n, t] = q[h, n] . keys[t, h] exactly; keys (T, KV, D) "
     "int16/int32, q (KV, N, D) float64 integers, out (KV, N, T) int64. path: the widest code path to "
     "use (default: the widest this CPU has); every path gives the same integers."},
    {"weigh", weigh, METH_VARARGS,
     "weigh(values, p, out, path=None): out[h, n] = sum_t p[h, n, t] values[t, h] exactly; values "
     "(T, KV, D) int16/int32, p (KV, N, T) int64, out (KV, N, D) float64."},
    {"vector_paths", vector_paths, METH_NOARGS,
     "The code paths this CPU runs, widest first: 'avx512' (AVX-512F), 'avx2' (AVX2+FMA), 'plain' (C)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "semcodec.models._prefix",
    "Exact prefix attention products in native code (see semcodec.models.attention).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__prefix(void) { return PyModule_Create(&module); }
