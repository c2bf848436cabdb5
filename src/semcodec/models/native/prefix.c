/* Exact attention over a prefix's keys and values, native (semcodec.models.attention).
 *
 * scores(keys, fixes, T, q, out): out[h, n, t] = sum_d q[h, n, d] * k[t, h, d]
 * weigh(values, fixes, T, p, out): out[h, n, d] = sum_t p[h, n, t] * v[t, h, d]
 * attend(keys, key_fixes, values, value_fixes, T, q, own_max, table, shift, num, z, top):
 *     the prefix's whole part of one layer's softmax attention (SPEC §5, step 4) in one call.
 *
 * keys/values: one layer of a prefix of T positions, C-contiguous: (T, KV, D) int16 or int32
 * rows (int32: the context file's own layout, so a memory-mapped layer is used in place),
 * or the int16 pair layouts (PAIRS below); fixes: (E, 4) int32 (FIXES). q: (KV, N, D)
 * float64 holding integers; p: (KV, N, T) int64; any strides for q and p. Outputs
 * C-contiguous, int64 for scores, float64 for weigh.
 *
 * Exactness (SPEC §5, step 4), float64 paths (plain C, AVX2+FMA, AVX-512): every product and every
 * partial sum is an integer of magnitude below 2**53, so float64 holds it exactly and the
 * result does not depend on the order of the additions: FMA, vector lanes and blocking
 * cannot change a bit. Bounds: |q|, |k| < 2**20 and D <= 64 give |q.k| < 64 * 2**40 = 2**46;
 * 0 <= p <= 2**16 and |v| < 2**24 give |p.v| <= T * 2**40, below 2**53 for T < 2**13
 * (checked: T > MAX_POSITIONS is refused). The VNNI paths' int32 bounds are given with them.
 * Never build this with -ffast-math (it would allow non-IEEE conversions).
 *
 * GQA: the N rows of a kv head (its 3 query heads, times the files of a batch) share each
 * key/value row, which is loaded and converted once per group of ROWS rows.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bounds.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(SEMCODEC_PLAIN_C)
#define HAVE_AVX2 1  /* x86 builds carry the vector paths (chosen at run time); -DSEMCODEC_PLAIN_C: C only */
#include <immintrin.h>
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11)
#define HAVE_AVXVNNI 1  /* compilers that know AVX-VNNI (the 256-bit, VEX-coded vpdpwssd) */
#endif
#endif

#define ROWS 3               /* rows per register block: one token's query heads per kv head */

typedef struct {
    const void *data;   /* rows: (T, KV, D); pairs: see PAIRS */
    int wide;           /* 0: int16, 1: int32 */
    int paired;         /* the pair layouts (int16 only) */
    Py_ssize_t t, kv, d;
    const int32_t *fixes;  /* (nfix, 4): t, h, d, residual; the layer holds x - residual there */
    Py_ssize_t nfix;
} Prefix;

/* PAIRS: int16 layouts for the integer dot-product instructions (AVX512-VNNI's vpdpwssd
 * multiplies 32 int16 pairs and adds each pair's two products into an int32 lane; AVX-VNNI's
 * does 16, so a 16-position block or 16-dim chunk is two of its vectors). Keys:
 * (KV, TK/16, D/2, 16, 2), element [h, b, j, i, c] = k[16 b + i, h, 2 j + c], TK = T rounded
 * up to 16 (zeros past T): 16 positions' pairs of dims per vector, each block of 16
 * positions contiguous (read in address order). Values: (KV, TV, D, 2), element
 * [h, j, d, i] = v[2j + i, h, d], TV = ceil(T / 2): 16 dims' pairs of positions per vector.
 * Every |entry| <= 2**15 - 1 (the storage refuses -2**15).
 *
 * FIXES: an int16 layer (rows or pairs) may hold a few entries clipped to +-(2**15 - 1) (a
 * profile's deeper layers have a handful of values up to 2**16); each comes with a row
 * (t, h, d, residual), and the residual's products are added after the main loop (integers:
 * the totals keep the bounds above). */
static inline Py_ssize_t key_span(Py_ssize_t t) { return (t + 15) / 16 * 16; }
static inline Py_ssize_t value_span(Py_ssize_t t) { return (t + 1) / 2; }

/* -- plain C ------------------------------------------------------------------------ */

static inline double prefix_at(const Prefix *x, Py_ssize_t i) {
    return x->wide ? (double)((const int32_t *)x->data)[i] : (double)((const int16_t *)x->data)[i];
}

/* Positions t0 .. T-1 of every kv head: the whole layer here, the few positions a vector
 * block leaves over in the AVX paths. q: (KV, npad, D) doubles; out (KV, N, T) int64. */
static void scores_from(const Prefix *k, const double *q, Py_ssize_t n, Py_ssize_t npad, int64_t *out, Py_ssize_t t0) {
    for (Py_ssize_t h = 0; h < k->kv; h++)
        for (Py_ssize_t t = t0; t < k->t; t++) {
            Py_ssize_t base = (t * k->kv + h) * k->d;
            for (Py_ssize_t r = 0; r < n; r++) {
                double acc = 0.0;
                for (Py_ssize_t d = 0; d < k->d; d++) acc += q[(h * npad + r) * k->d + d] * prefix_at(k, base + d);
                out[(h * n + r) * k->t + t] = (int64_t)acc;
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

static void scores_pairs_plain(const Prefix *k, Py_ssize_t h, const double *q, Py_ssize_t n, int64_t *out) {
    const int16_t *base = (const int16_t *)k->data + h * k->d * key_span(k->t);
    for (Py_ssize_t r = 0; r < n; r++)
        for (Py_ssize_t t = 0; t < k->t; t++) {
            double acc = 0.0;
            for (Py_ssize_t d = 0; d < k->d; d++)
                acc += q[r * k->d + d] * base[(((t / 16) * (k->d / 2) + d / 2) * 16 + t % 16) * 2 + d % 2];
            out[r * k->t + t] = (int64_t)acc;
        }
}

static void weigh_pairs_plain(const Prefix *v, Py_ssize_t h, const double *p, Py_ssize_t n, double *out) {
    const int16_t *base = (const int16_t *)v->data + h * value_span(v->t) * v->d * 2;
    memset(out, 0, (size_t)(n * v->d) * sizeof(double));
    for (Py_ssize_t r = 0; r < n; r++)
        for (Py_ssize_t t = 0; t < v->t; t++)
            for (Py_ssize_t d = 0; d < v->d; d++) out[r * v->d + d] += p[r * v->t + t] * base[((t / 2) * v->d + d) * 2 + t % 2];
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
    scores_from(k, q, n, npad, out, t);  /* at most two positions left */
}

#define BLOCK 32  /* positions per block: 32 rows of 3 x 64 int32 (24 KB) stay in L1 across the passes */

/* One block of the float64 weigh paths: positions [t0, t1) of kv head h against ROWS rows of
 * weights (p0, and the rows after it), their products added into o (rows x D; `rows` real). */
typedef void (*WeighBlock)(const Prefix *v, const double *p0, Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t h,
                           Py_ssize_t rows, double *o);

/* The loop nest they share: blocks of positions in address order (the partial sums kept in
 * out between blocks), each kv head, ROWS rows at a time. */
static void weigh_blocks(const Prefix *v, const double *p, Py_ssize_t n, Py_ssize_t npad, double *out, WeighBlock block) {
    const Py_ssize_t D = v->d, T = v->t, KV = v->kv;
    memset(out, 0, (size_t)(KV * n * D) * sizeof(double));
    for (Py_ssize_t t0 = 0; t0 < T; t0 += BLOCK) {
        Py_ssize_t t1 = t0 + BLOCK < T ? t0 + BLOCK : T;
        for (Py_ssize_t h = 0; h < KV; h++)
            for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS)
                block(v, p + (h * npad + r0) * T, t0, t1, h, n - r0 < ROWS ? n - r0 : ROWS, out + (h * n + r0) * D);
    }
}

/* Eight columns (two vectors) by ROWS rows per pass over the block. */
AVX2 static void weigh_block_avx2(const Prefix *v, const double *p0, Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t h,
                                  Py_ssize_t rows, double *o) {
    const Py_ssize_t D = v->d, T = v->t, stride = v->kv * D;
    const double *p1 = p0 + T, *p2 = p1 + T;
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

static void weigh_avx2(const Prefix *v, const double *p, Py_ssize_t n, Py_ssize_t npad, double *out) {
    weigh_blocks(v, p, n, npad, out, weigh_block_avx2);
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
    scores_from(k, q, n, npad, out, t);  /* at most three positions left */
}

/* 32 columns (four vectors) by ROWS rows per pass over the block. */
AVX512 static void weigh_block_avx512(const Prefix *v, const double *p0, Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t h,
                                      Py_ssize_t rows, double *o) {
    const Py_ssize_t D = v->d, T = v->t, stride = v->kv * D;
    const double *p1 = p0 + T, *p2 = p1 + T;
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

static void weigh_avx512(const Prefix *v, const double *p, Py_ssize_t n, Py_ssize_t npad, double *out) {
    weigh_blocks(v, p, n, npad, out, weigh_block_avx512);
}

/* -- AVX512-VNNI on the pair layouts: exact int32 dot products ----------------------------
 *
 * The int32 lanes are added modulo 2**32, so a sum is exact when its true value fits int32:
 * scores: q is split into balanced digits q = q0 + 2**11 q1, |q0| <= 2**10, |q1| <= 2**10 (for
 * |q| < 2**20), and a lane adds D products of |k| <= 2**15 - 1 by one digit: below
 * 64 * 2**15 * 2**10 = 2**31. weigh: p = p0 + 2**8 p1, 0 <= p0 < 2**8, 0 <= p1 <= 2**8, and a
 * lane adds 2 * VNNI_BLOCK products of |v| <= 2**15 - 1 by one digit (below 2**30) before it
 * is moved into float64 (exact: the totals stay below 2**53 as above). */

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma")))
#define DIGIT_BITS 11
#define VNNI_BLOCK 64  /* position pairs per int32 accumulation in weigh */
#ifndef PREFETCH
#define PREFETCH 16384
#endif
#if PREFETCH
#define PF(a) _mm_prefetch((a), _MM_HINT_T0)
#else
#define PF(a) ((void)(a))
#endif

static inline int32_t pack2(int64_t lo, int64_t hi) { return (int32_t)(((uint32_t)(uint16_t)lo) | ((uint32_t)(uint16_t)hi << 16)); }

/* q rows (KV, npad, D) doubles -> (KV, npad, 2, D/2) packed digit pairs; 0 where a digit would not fit. */
static int query_digits(const double *q, Py_ssize_t kv, Py_ssize_t npad, Py_ssize_t d, int32_t *out) {
    const int64_t half = 1 << (DIGIT_BITS - 1), mask = (1 << DIGIT_BITS) - 1;
    for (Py_ssize_t row = 0; row < kv * npad; row++)
        for (Py_ssize_t j = 0; j < d / 2; j++) {
            int64_t lo[2], hi[2];
            for (int i = 0; i < 2; i++) {
                double x = q[row * d + 2 * j + i];
                if (!(x > -1048576.0 && x < 1048576.0)) return 0;  /* |q| < 2**20 */
                int64_t v = (int64_t)x;
                lo[i] = ((v + half) & mask) - half;
                hi[i] = (v - lo[i]) >> DIGIT_BITS;
            }
            out[(row * 2 + 0) * (d / 2) + j] = pack2(lo[0], lo[1]);
            out[(row * 2 + 1) * (d / 2) + j] = pack2(hi[0], hi[1]);
        }
    return 1;
}

static int use_avx2(Py_ssize_t d);

/* One row's positions [j0, tv) of weight_digits, in C. */
static void weight_digits_tail(const double *p, Py_ssize_t t, Py_ssize_t j0, Py_ssize_t tv, int32_t *lo, int32_t *hi) {
    for (Py_ssize_t j = j0; j < tv; j++) {
        int64_t a = (int64_t)p[2 * j], b = 2 * j + 1 < t ? (int64_t)p[2 * j + 1] : 0;
        lo[j] = pack2(a & 255, b & 255);
        hi[j] = pack2(a >> 8, b >> 8);
    }
}

/* Eight weights (four position pairs) at a time: truncated to int32 (they are integers in
 * [0, 2**16], checked before), split into bytes, each pair's two digits packed as pack2
 * does (the even position's digit in the low half). Same integers as the C loop. */
AVX2 static void weight_digits_avx2(const double *p, Py_ssize_t t, Py_ssize_t tv, int32_t *lo, int32_t *hi) {
    const Py_ssize_t body = (t / 8) * 4;  /* pairs whose 8 weights all lie before t */
    const __m256i low_halves = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6), byte = _mm256_set1_epi64x(255);
    for (Py_ssize_t j = 0; j < body; j += 4) {
        __m128i first = _mm256_cvttpd_epi32(_mm256_loadu_pd(p + 2 * j));
        __m128i second = _mm256_cvttpd_epi32(_mm256_loadu_pd(p + 2 * j + 4));
        __m256i w = _mm256_set_m128i(second, first);  /* int32: a0 b0 a1 b1 a2 b2 a3 b3 */
        __m256i digit[2] = {_mm256_and_si256(w, _mm256_set1_epi32(255)), _mm256_srli_epi32(w, 8)};
        for (int l = 0; l < 2; l++) {  /* 64-bit lanes a + b * 2**32 -> a | b << 16, then their low halves */
            __m256i lane = digit[l];
            __m256i packed = _mm256_or_si256(_mm256_and_si256(lane, l ? _mm256_set1_epi64x(511) : byte),
                                             _mm256_srli_epi64(lane, 16));
            __m128i four = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(packed, low_halves));
            _mm_storeu_si128((__m128i *)((l ? hi : lo) + j), four);
        }
    }
    weight_digits_tail(p, t, body, tv, lo, hi);
}

/* p rows (KV, npad, T) doubles -> (KV, npad, 2, TV) packed digit pairs along t; 0 where a
 * weight lies outside [0, 2**16]. */
static int weight_digits(const double *p, Py_ssize_t kv, Py_ssize_t npad, Py_ssize_t t, int32_t *out) {
    Py_ssize_t tv = value_span(t);
    for (Py_ssize_t i = 0; i < kv * npad * t; i++)
        if (!(p[i] >= 0.0 && p[i] <= 65536.0)) return 0;
    for (Py_ssize_t row = 0; row < kv * npad; row++) {
        int32_t *lo = out + (row * 2 + 0) * tv, *hi = out + (row * 2 + 1) * tv;
        if (use_avx2(4)) weight_digits_avx2(p + row * t, t, tv, lo, hi);
        else weight_digits_tail(p + row * t, t, 0, tv, lo, hi);
    }
    return 1;
}

/* scores of ROWS rows for NB blocks of 16 positions starting at t0: 2 * ROWS * NB accumulators. */
#define SCORES_VNNI_BLOCK(NB)                                                                            \
    do {                                                                                                 \
        __m512i acc[ROWS][2][NB];                                                                        \
        for (int r = 0; r < ROWS; r++)                                                                   \
            for (int l = 0; l < 2; l++)                                                                  \
                for (int j = 0; j < NB; j++) acc[r][l][j] = _mm512_setzero_si512();                      \
        for (Py_ssize_t j2 = 0; j2 < D / 2; j2++) {                                                      \
            const int16_t *at = base + ((t0 / 16) * (D / 2) + j2) * 32;                                  \
            __m512i kk[NB];                                                                              \
            for (int j = 0; j < NB; j++) {                                                               \
                kk[j] = _mm512_loadu_si512((const void *)(at + 16 * D * j));                             \
                PF((const char *)(at + 16 * D * j) + PREFETCH);                                          \
            }                                                                                            \
            for (int r = 0; r < ROWS; r++)                                                               \
                for (int l = 0; l < 2; l++) {                                                            \
                    __m512i w = _mm512_set1_epi32(qd[((h * npad + r0 + r) * 2 + l) * (D / 2) + j2]);     \
                    for (int j = 0; j < NB; j++) acc[r][l][j] = _mm512_dpwssd_epi32(acc[r][l][j], kk[j], w); \
                }                                                                                        \
        }                                                                                                \
        for (Py_ssize_t r = 0; r < ROWS && r0 + r < n; r++)                                              \
            for (int j = 0; j < NB; j++)                                                                 \
                for (int half_ = 0; half_ < 2; half_++) {                                                \
                    Py_ssize_t t = t0 + 16 * j + 8 * half_;                                              \
                    if (t >= T) break;                                                                   \
                    __m512i lo = _mm512_cvtepi32_epi64(half_ ? _mm512_extracti64x4_epi64(acc[r][0][j], 1)   \
                                                             : _mm512_castsi512_si256(acc[r][0][j]));    \
                    __m512i hi = _mm512_cvtepi32_epi64(half_ ? _mm512_extracti64x4_epi64(acc[r][1][j], 1)   \
                                                             : _mm512_castsi512_si256(acc[r][1][j]));    \
                    __m512i sum = _mm512_add_epi64(lo, _mm512_slli_epi64(hi, DIGIT_BITS));               \
                    __mmask8 keep = T - t >= 8 ? 0xFF : (__mmask8)((1u << (T - t)) - 1);                 \
                    _mm512_mask_storeu_epi64(out + (h * n + r0 + r) * T + t, keep, sum);                 \
                }                                                                                        \
    } while (0)

VNNI static void scores_vnni(const Prefix *k, const int32_t *qd, Py_ssize_t n, Py_ssize_t npad, int64_t *out) {
    const Py_ssize_t D = k->d, T = k->t, TK = key_span(T);
    for (Py_ssize_t h = 0; h < k->kv; h++) {
        const int16_t *base = (const int16_t *)k->data + h * D * TK;
        for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS) {
            Py_ssize_t t0 = 0;
            for (; t0 + 64 <= TK; t0 += 64) SCORES_VNNI_BLOCK(4);
            for (; t0 < TK; t0 += 16) SCORES_VNNI_BLOCK(1);
        }
    }
}

/* One block of the pair-layout weigh paths: dims [d0, d0 + its width) of position pairs
 * [j0, j1) against ROWS rows of weight digits (pd: the first row's two digit rows), whose
 * lo + 2**8 hi sums are added into o (rows x D; `rows` real). */
typedef void (*PairBlock)(const Prefix *v, const int16_t *base, const int32_t *pd, Py_ssize_t d0, Py_ssize_t j0,
                          Py_ssize_t j1, Py_ssize_t rows, double *o);

/* The loop nest they share: each kv head, ROWS rows at a time, `dims` columns per pass,
 * VNNI_BLOCK position pairs per int32 accumulation (the bound above). */
static void weigh_pair_blocks(const Prefix *v, const int32_t *pd, Py_ssize_t n, Py_ssize_t npad, double *out,
                              Py_ssize_t dims, PairBlock block) {
    const Py_ssize_t D = v->d, TV = value_span(v->t);
    memset(out, 0, (size_t)(v->kv * n * D) * sizeof(double));
    for (Py_ssize_t h = 0; h < v->kv; h++) {
        const int16_t *base = (const int16_t *)v->data + h * TV * D * 2;
        for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS)
            for (Py_ssize_t d0 = 0; d0 < D; d0 += dims)
                for (Py_ssize_t j0 = 0; j0 < TV; j0 += VNNI_BLOCK)
                    block(v, base, pd + (h * npad + r0) * 2 * TV, d0, j0, j0 + VNNI_BLOCK < TV ? j0 + VNNI_BLOCK : TV,
                          n - r0 < ROWS ? n - r0 : ROWS, out + (h * n + r0) * D);
    }
}

/* D in chunks of 16 dims (up to 4 per pass), ROWS rows, both digits: 24 accumulators. */
VNNI static void weigh_block_vnni(const Prefix *v, const int16_t *base, const int32_t *pd, Py_ssize_t d0, Py_ssize_t j0,
                                  Py_ssize_t j1, Py_ssize_t rows, double *o) {
    const Py_ssize_t D = v->d, TV = value_span(v->t);
    int m = (int)((D - d0 < 64 ? D - d0 : 64) / 16);
    __m512i acc[ROWS][2][4];
    for (int r = 0; r < ROWS; r++)
        for (int l = 0; l < 2; l++)
            for (int c = 0; c < 4; c++) acc[r][l][c] = _mm512_setzero_si512();
    for (Py_ssize_t j = j0; j < j1; j++) {
        const int16_t *at = base + (j * D + d0) * 2;
        for (int c = 0; c < m; c++) PF((const char *)(at + 32 * c) + PREFETCH);
        __m512i vv[4];
        for (int c = 0; c < 4; c++)
            vv[c] = c < m ? _mm512_loadu_si512((const void *)(at + 32 * c)) : _mm512_setzero_si512();
        for (int r = 0; r < ROWS; r++)
            for (int l = 0; l < 2; l++) {
                __m512i w = _mm512_set1_epi32(pd[(r * 2 + l) * TV + j]);
                for (int c = 0; c < 4; c++) acc[r][l][c] = _mm512_dpwssd_epi32(acc[r][l][c], vv[c], w);
            }
    }
    for (Py_ssize_t r = 0; r < rows; r++)
        for (int c = 0; c < m; c++)
            for (int half_ = 0; half_ < 2; half_++) {
                __m256i lo = half_ ? _mm512_extracti64x4_epi64(acc[r][0][c], 1) : _mm512_castsi512_si256(acc[r][0][c]);
                __m256i hi = half_ ? _mm512_extracti64x4_epi64(acc[r][1][c], 1) : _mm512_castsi512_si256(acc[r][1][c]);
                __m512d sum = _mm512_fmadd_pd(_mm512_cvtepi32_pd(hi), _mm512_set1_pd(256.0), _mm512_cvtepi32_pd(lo));
                double *x = o + r * D + d0 + 16 * c + 8 * half_;
                _mm512_storeu_pd(x, _mm512_add_pd(_mm512_loadu_pd(x), sum));
            }
}

static void weigh_vnni(const Prefix *v, const int32_t *pd, Py_ssize_t n, Py_ssize_t npad, double *out) {
    weigh_pair_blocks(v, pd, n, npad, out, 64, weigh_block_vnni);
}

/* -- AVX-VNNI and AVX2: the same pair layouts and digits in 256-bit vectors ------------------
 *
 * For CPUs with AVX-VNNI but no AVX-512 (Intel's client cores since Alder Lake), and for AVX2
 * alone (AMD's Zen 2-4 as virtual machines show them, older Intel). Each lane adds exactly the
 * products the AVX512-VNNI path's lane adds (a 16-position block or a 16-dim chunk is two
 * vectors here), so the int32 bounds above hold unchanged. AVX2 has no vpdpwssd: vpmaddwd
 * makes the same pair sums (each below 2**31: no entry is -2**15, so the one case vpmaddwd
 * wraps, -2**15 * -2**15 twice, cannot occur) and vpaddd adds them without saturation, the
 * integers vpdpwssd adds. Fewer registers: one 16-position block (scores) or 16 dims (weigh)
 * per pass. */

/* out[h, r, t0 .. t0+15] for ROWS rows: q0.k + 2**11 q1.k from int32 lanes, as int64. */
#define SCORES_PAIRS_256(NAME, TARGET, DPW)                                                                  \
    TARGET static void NAME(const Prefix *k, const int32_t *qd, Py_ssize_t n, Py_ssize_t npad, int64_t *out) { \
        const Py_ssize_t D = k->d, T = k->t, TK = key_span(T);                                            \
        for (Py_ssize_t h = 0; h < k->kv; h++) {                                                           \
            const int16_t *base = (const int16_t *)k->data + h * D * TK;                                   \
            for (Py_ssize_t r0 = 0; r0 < n; r0 += ROWS)                                                    \
                for (Py_ssize_t t0 = 0; t0 < TK; t0 += 16) {                                               \
                    __m256i acc[ROWS][2][2];                                                               \
                    for (int r = 0; r < ROWS; r++)                                                         \
                        for (int l = 0; l < 2; l++) acc[r][l][0] = acc[r][l][1] = _mm256_setzero_si256();  \
                    for (Py_ssize_t j2 = 0; j2 < D / 2; j2++) {                                            \
                        const int16_t *at = base + ((t0 / 16) * (D / 2) + j2) * 32;                        \
                        PF((const char *)at + PREFETCH);                                                   \
                        __m256i k0 = _mm256_loadu_si256((const __m256i *)at);                              \
                        __m256i k1 = _mm256_loadu_si256((const __m256i *)(at + 16));                       \
                        for (int r = 0; r < ROWS; r++)                                                     \
                            for (int l = 0; l < 2; l++) {                                                  \
                                __m256i w = _mm256_set1_epi32(qd[((h * npad + r0 + r) * 2 + l) * (D / 2) + j2]); \
                                acc[r][l][0] = DPW(acc[r][l][0], k0, w);                                   \
                                acc[r][l][1] = DPW(acc[r][l][1], k1, w);                                   \
                            }                                                                              \
                    }                                                                                      \
                    Py_ssize_t m = T - t0 < 16 ? T - t0 : 16;                                              \
                    for (Py_ssize_t r = 0; r < ROWS && r0 + r < n; r++) {                                  \
                        int32_t lo[16], hi[16];                                                            \
                        _mm256_storeu_si256((__m256i *)lo, acc[r][0][0]);                                  \
                        _mm256_storeu_si256((__m256i *)(lo + 8), acc[r][0][1]);                            \
                        _mm256_storeu_si256((__m256i *)hi, acc[r][1][0]);                                  \
                        _mm256_storeu_si256((__m256i *)(hi + 8), acc[r][1][1]);                            \
                        int64_t *o = out + (h * n + r0 + r) * T + t0;                                      \
                        for (Py_ssize_t i = 0; i < m; i++)                                                 \
                            o[i] = (int64_t)lo[i] + (int64_t)hi[i] * ((int64_t)1 << DIGIT_BITS);           \
                    }                                                                                      \
                }                                                                                          \
        }                                                                                                  \
    }

/* o[r, d0 .. d0+15] += the lo + 2**8 hi digit sums of the block's position pairs. */
#define WEIGH_PAIRS_256(NAME, TARGET, DPW)                                                                   \
    TARGET static void NAME(const Prefix *v, const int16_t *base, const int32_t *pd, Py_ssize_t d0,           \
                            Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t rows, double *o) {                      \
        const Py_ssize_t D = v->d, TV = value_span(v->t);                                                 \
        __m256i acc[ROWS][2][2];                                                                           \
        for (int r = 0; r < ROWS; r++)                                                                     \
            for (int l = 0; l < 2; l++) acc[r][l][0] = acc[r][l][1] = _mm256_setzero_si256();              \
        for (Py_ssize_t j = j0; j < j1; j++) {                                                             \
            const int16_t *at = base + (j * D + d0) * 2;                                                   \
            PF((const char *)at + PREFETCH);                                                               \
            __m256i v0 = _mm256_loadu_si256((const __m256i *)at), v1 = _mm256_loadu_si256((const __m256i *)(at + 16)); \
            for (int r = 0; r < ROWS; r++)                                                                 \
                for (int l = 0; l < 2; l++) {                                                              \
                    __m256i w = _mm256_set1_epi32(pd[(r * 2 + l) * TV + j]);                               \
                    acc[r][l][0] = DPW(acc[r][l][0], v0, w);                                               \
                    acc[r][l][1] = DPW(acc[r][l][1], v1, w);                                               \
                }                                                                                          \
        }                                                                                                  \
        for (Py_ssize_t r = 0; r < rows; r++)                                                              \
            for (int c = 0; c < 2; c++)                                                                    \
                for (int half_ = 0; half_ < 2; half_++) {                                                  \
                    __m128i lo = half_ ? _mm256_extracti128_si256(acc[r][0][c], 1) : _mm256_castsi256_si128(acc[r][0][c]); \
                    __m128i hi = half_ ? _mm256_extracti128_si256(acc[r][1][c], 1) : _mm256_castsi256_si128(acc[r][1][c]); \
                    __m256d sum = _mm256_fmadd_pd(_mm256_cvtepi32_pd(hi), _mm256_set1_pd(256.0), _mm256_cvtepi32_pd(lo)); \
                    double *x = o + r * D + d0 + 8 * c + 4 * half_;                                        \
                    _mm256_storeu_pd(x, _mm256_add_pd(_mm256_loadu_pd(x), sum));                           \
                }                                                                                          \
    }

#ifdef HAVE_AVX2
#define AVX2_PAIRS __attribute__((target("avx2,fma")))
AVX2_PAIRS static inline __m256i dpw_avx2(__m256i acc, __m256i a, __m256i b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
}
SCORES_PAIRS_256(scores_avx2pairs, AVX2_PAIRS, dpw_avx2)
WEIGH_PAIRS_256(weigh_block_avx2pairs, AVX2_PAIRS, dpw_avx2)
static void weigh_avx2pairs(const Prefix *v, const int32_t *pd, Py_ssize_t n, Py_ssize_t npad, double *out) {
    weigh_pair_blocks(v, pd, n, npad, out, 16, weigh_block_avx2pairs);
}
#endif

#ifdef HAVE_AVXVNNI
#define AVXVNNI __attribute__((target("avxvnni,avx2,fma")))
AVXVNNI static inline __m256i dpw_avxvnni(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_avx_epi32(acc, a, b); }
SCORES_PAIRS_256(scores_avxvnni, AVXVNNI, dpw_avxvnni)
WEIGH_PAIRS_256(weigh_block_avxvnni, AVXVNNI, dpw_avxvnni)
static void weigh_avxvnni(const Prefix *v, const int32_t *pd, Py_ssize_t n, Py_ssize_t npad, double *out) {
    weigh_pair_blocks(v, pd, n, npad, out, 16, weigh_block_avxvnni);
}

static int use_avxvnni(Py_ssize_t d) {
    static int cpu = -1;
    if (cpu < 0) {
        __builtin_cpu_init();
        cpu = __builtin_cpu_supports("avxvnni") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cpu && d % 16 == 0;
}
#else
static int use_avxvnni(Py_ssize_t d) { (void)d; return 0; }
#endif

static int use_vnni(Py_ssize_t d) {
    static int cpu = -1;
    if (cpu < 0) {
        __builtin_cpu_init();
        cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cpu && d % 16 == 0;
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

static int use_avx2pairs(Py_ssize_t d) { return use_avx2(d) && d % 16 == 0; }
#else
static int use_avx2(Py_ssize_t d) { (void)d; return 0; }
static int use_avx2pairs(Py_ssize_t d) { (void)d; return 0; }
static int use_avx512(Py_ssize_t d) { (void)d; return 0; }
static int use_vnni(Py_ssize_t d) { (void)d; return 0; }
static int use_avxvnni(Py_ssize_t d) { (void)d; return 0; }
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

/* One prefix layer of `length` positions, C-contiguous: (T, KV, D) int16/int32 rows, or a 4-d
 * int16 pair layout (PAIRS) of keys (values = 0) or values (values = 1). */
static int get_layout(PyObject *obj, Py_buffer *b, Prefix *x, int values, Py_ssize_t length) {
    if (PyObject_GetBuffer(obj, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    x->data = b->buf;
    x->wide = b->itemsize == 4;
    x->paired = b->ndim > 3;
    x->t = length;
    int ok;
    if (b->ndim == 3) {
        x->kv = b->shape[1];
        x->d = b->shape[2];
        ok = (integer_format(b, 2) || integer_format(b, 4)) && b->shape[0] == length;
    } else if (b->ndim == 5 && !values) {
        x->kv = b->shape[0];
        x->d = 2 * b->shape[2];
        ok = integer_format(b, 2) && b->shape[1] * 16 == key_span(length) && b->shape[3] == 16 && b->shape[4] == 2;
    } else if (b->ndim == 4 && values) {
        x->kv = b->shape[0];
        x->d = b->shape[2];
        ok = integer_format(b, 2) && b->shape[1] == value_span(length) && b->shape[3] == 2;
    } else {
        ok = 0;
    }
    if (!ok || length < 0) {
        PyErr_Format(PyExc_TypeError, "the %s must be a C-contiguous (T, KV, D) int16/int32 array or its int16 pair "
                     "layout, for T = %zd positions", values ? "values" : "keys", length);
        PyBuffer_Release(b);
        return -1;
    }
    if (x->t > MAX_POSITIONS || x->d > MAX_DIM) {
        PyErr_Format(PyExc_ValueError, "a prefix of %zd positions of %zd dims exceeds the exact bounds (%d, %d)",
                     x->t, x->d, MAX_POSITIONS, MAX_DIM);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* A layer and its fixes ((E, 4) int32: t, h, d, residual, each within the layer): two buffers held. */
static int get_prefix(PyObject *obj, PyObject *fixes, Py_buffer *b, Prefix *x, int values, Py_ssize_t length) {
    if (get_layout(obj, &b[0], x, values, length) < 0) return -1;
    if (PyObject_GetBuffer(fixes, &b[1], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&b[0]);
        return -1;
    }
    int ok = b[1].ndim == 2 && integer_format(&b[1], 4) && b[1].shape[1] == 4;
    x->fixes = b[1].buf;
    x->nfix = ok ? b[1].shape[0] : 0;
    for (Py_ssize_t e = 0; ok && e < x->nfix; e++) {
        const int32_t *f = x->fixes + 4 * e;
        ok = f[0] >= 0 && f[0] < x->t && f[1] >= 0 && f[1] < x->kv && f[2] >= 0 && f[2] < x->d;
    }
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "fixes must be (E, 4) int32 rows (t, h, d, residual) within the layer");
        PyBuffer_Release(&b[0]);
        PyBuffer_Release(&b[1]);
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

/* Whether gathered rows lie within the bounds the exactness proof and the softmax index need
 * (bounds.h): queries integers with |q| <= QK_LIMIT (NaN and infinities fail), weights integers in
 * [0, P_MAX]. Outside them a score could pass 2**53 or the index (top - s + half) >> shift could
 * wrap to a negative table index: refused before any product runs. */
static int rows_in_bounds(const double *rows, Py_ssize_t count, int weights) {
    const double lo = weights ? 0.0 : -(double)QK_LIMIT, hi = weights ? (double)P_MAX : (double)QK_LIMIT;
    for (Py_ssize_t i = 0; i < count; i++) {
        double x = rows[i];
        if (!(x >= lo && x <= hi) || x != (double)(int64_t)x) {
            PyErr_SetString(PyExc_ValueError, weights ? "weights p must be integers in [0, 2**16]"
                                                      : "queries q must be integers with |q| <= 2**20 - 1");
            return 0;
        }
    }
    return 1;
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

/* Code path levels: 5 vnni, 4 avxvnni, 3 avx512, 2 avx2pairs, 1 avx2, 0 plain. */
enum { PATH_PLAIN, PATH_AVX2, PATH_AVX2PAIRS, PATH_AVX512, PATH_AVXVNNI, PATH_VNNI };

/* Whether a cap lets a level run: each names a CPU, so "avxvnni" (AVX-VNNI and AVX2, no AVX-512,
 * as on Intel's client cores) rules out the AVX-512 kernels below it. */
static int allows(int want, int level) { return want >= level && !(want == PATH_AVXVNNI && level == PATH_AVX512); }

static int parse_path(const char *path) {
    if (path == NULL || !strcmp(path, "vnni")) return PATH_VNNI;
    if (!strcmp(path, "avxvnni")) return PATH_AVXVNNI;
    if (!strcmp(path, "avx512")) return PATH_AVX512;
    if (!strcmp(path, "avx2pairs")) return PATH_AVX2PAIRS;
    if (!strcmp(path, "avx2")) return PATH_AVX2;
    if (!strcmp(path, "plain")) return PATH_PLAIN;
    PyErr_Format(PyExc_ValueError, "unknown path %s (vnni, avxvnni, avx512, avx2pairs, avx2 or plain)", path);
    return -1;
}

/* The few entries an int16 layer could not hold (FIXES): their residuals' products added. */
static void fix_scores(const Prefix *x, const double *rows, Py_ssize_t n, Py_ssize_t npad, int64_t *out) {
    for (Py_ssize_t e = 0; e < x->nfix; e++) {
        const int32_t *f = x->fixes + 4 * e;
        for (Py_ssize_t r = 0; r < n; r++)
            out[(f[1] * n + r) * x->t + f[0]] += (int64_t)rows[(f[1] * npad + r) * x->d + f[2]] * f[3];  /* < 2**44 */
    }
}

static void fix_weigh(const Prefix *x, const double *rows, Py_ssize_t n, Py_ssize_t npad, double *out) {
    for (Py_ssize_t e = 0; e < x->nfix; e++) {
        const int32_t *f = x->fixes + 4 * e;
        for (Py_ssize_t r = 0; r < n; r++)
            out[(f[1] * n + r) * x->d + f[2]] += rows[(f[1] * npad + r) * x->t + f[0]] * (double)f[3];
    }
}

/* The widest code path this CPU has for the layout, at most the one asked for (tests run
 * each); rows (KV, npad, D). Returns 0 when out of memory. */
static int run_scores_bare(const Prefix *x, const double *rows, Py_ssize_t n, Py_ssize_t npad, int64_t *out, int want) {
    (void)want;  /* C-only builds have one path */
    if (x->paired) {
#ifdef HAVE_AVX2
        void (*kernel)(const Prefix *, const int32_t *, Py_ssize_t, Py_ssize_t, int64_t *) = NULL;
        if (want >= PATH_VNNI && use_vnni(x->d)) kernel = scores_vnni;
#ifdef HAVE_AVXVNNI
        else if (want >= PATH_AVXVNNI && use_avxvnni(x->d)) kernel = scores_avxvnni;
#endif
        if (kernel == NULL && want >= PATH_AVX2PAIRS && use_avx2pairs(x->d)) kernel = scores_avx2pairs;
        if (kernel != NULL) {
            int32_t *digits = malloc((size_t)(x->kv * npad * x->d + 1) * sizeof(int32_t));
            if (digits == NULL) return 0;
            int fits = query_digits(rows, x->kv, npad, x->d, digits);
            if (fits) kernel(x, digits, n, npad, out);
            free(digits);
            if (fits) return 1;  /* else a query beyond the format's bound: the plain loop below */
        }
#endif
        for (Py_ssize_t h = 0; h < x->kv; h++) scores_pairs_plain(x, h, rows + h * npad * x->d, n, out + h * n * x->t);
        return 1;
    }
#ifdef HAVE_AVX2
    if (allows(want, PATH_AVX512) && use_avx512(x->d)) { scores_avx512(x, rows, n, npad, out); return 1; }
    if (want >= PATH_AVX2 && use_avx2(x->d)) { scores_avx2(x, rows, n, npad, out); return 1; }
#endif
    scores_from(x, rows, n, npad, out, 0);
    return 1;
}

/* rows (KV, npad, T) weights in [0, 2**16]. */
static int run_weigh_bare(const Prefix *x, const double *rows, Py_ssize_t n, Py_ssize_t npad, double *out, int want) {
    (void)want;
    if (x->paired) {
#ifdef HAVE_AVX2
        void (*kernel)(const Prefix *, const int32_t *, Py_ssize_t, Py_ssize_t, double *) = NULL;
        if (want >= PATH_VNNI && use_vnni(x->d)) kernel = weigh_vnni;
#ifdef HAVE_AVXVNNI
        else if (want >= PATH_AVXVNNI && use_avxvnni(x->d)) kernel = weigh_avxvnni;
#endif
        if (kernel == NULL && want >= PATH_AVX2PAIRS && use_avx2pairs(x->d)) kernel = weigh_avx2pairs;
        if (kernel != NULL) {
            int32_t *digits = malloc((size_t)(x->kv * npad * 2 * value_span(x->t) + 1) * sizeof(int32_t));
            if (digits == NULL) return 0;
            int fits = weight_digits(rows, x->kv, npad, x->t, digits);
            if (fits) kernel(x, digits, n, npad, out);
            free(digits);
            if (fits) return 1;  /* else a weight beyond P_MAX: the plain loop below */
        }
#endif
        for (Py_ssize_t h = 0; h < x->kv; h++) weigh_pairs_plain(x, h, rows + h * npad * x->t, n, out + h * n * x->d);
        return 1;
    }
#ifdef HAVE_AVX2
    if (allows(want, PATH_AVX512) && use_avx512(x->d)) { weigh_avx512(x, rows, n, npad, out); return 1; }
    if (want >= PATH_AVX2 && use_avx2(x->d)) { weigh_avx2(x, rows, n, npad, out); return 1; }
#endif
    for (Py_ssize_t h = 0; h < x->kv; h++) weigh_plain(x, h, rows + h * npad * x->t, n, out + h * n * x->d);
    return 1;
}

static int run_scores(const Prefix *x, const double *rows, Py_ssize_t n, Py_ssize_t npad, int64_t *out, int want) {
    if (!run_scores_bare(x, rows, n, npad, out, want)) return 0;
    fix_scores(x, rows, n, npad, out);
    return 1;
}

static int run_weigh(const Prefix *x, const double *rows, Py_ssize_t n, Py_ssize_t npad, double *out, int want) {
    if (!run_weigh_bare(x, rows, n, npad, out, want)) return 0;
    fix_weigh(x, rows, n, npad, out);
    return 1;
}

static PyObject *products(PyObject *args, int weigh) {
    PyObject *prefix_obj, *fix_obj, *rows_obj, *out_obj;
    Py_ssize_t length;
    const char *path = NULL;
    if (!PyArg_ParseTuple(args, weigh ? "OOnOO|z:weigh" : "OOnOO|z:scores", &prefix_obj, &fix_obj, &length, &rows_obj,
                          &out_obj, &path))
        return NULL;
    int want = parse_path(path);
    if (want < 0) return NULL;
    Py_buffer pb[2], rb, ob;
    Prefix x;
    if (get_prefix(prefix_obj, fix_obj, pb, &x, weigh, length) < 0) return NULL;
    Py_ssize_t inner = weigh ? x.t : x.d, outer = weigh ? x.d : x.t;
    if (get_rows(rows_obj, &rb, !weigh, x.kv, inner, weigh ? "p" : "q") < 0) {
        PyBuffer_Release(&pb[0]);
        PyBuffer_Release(&pb[1]);
        return NULL;
    }
    Py_ssize_t n = rb.shape[1], npad = (n + ROWS - 1) / ROWS * ROWS;
    if (get_out(out_obj, &ob, weigh, x.kv, n, outer) < 0) {
        PyBuffer_Release(&pb[0]);
        PyBuffer_Release(&pb[1]);
        PyBuffer_Release(&rb);
        return NULL;
    }
    double *rows = gather_rows(&rb, !weigh, npad);
    int ran = 0;
    if (rows != NULL && !rows_in_bounds(rows, x.kv * npad * inner, weigh)) {
        PyMem_Free(rows);
        rows = NULL;
    }
    if (rows != NULL) {
        Py_BEGIN_ALLOW_THREADS
        ran = weigh ? run_weigh(&x, rows, n, npad, (double *)ob.buf, want)
                    : run_scores(&x, rows, n, npad, (int64_t *)ob.buf, want);
        Py_END_ALLOW_THREADS
        PyMem_Free(rows);
        if (!ran) PyErr_NoMemory();
    }
    /* rows == NULL: gather_rows or rows_in_bounds set the error */
    PyBuffer_Release(&pb[0]);
    PyBuffer_Release(&pb[1]);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&ob);
    if (!ran) return NULL;
    Py_RETURN_NONE;
}

/* A (KV, N) int64 buffer: read with any strides, or written C-contiguous. */
static int get_pairs(PyObject *obj, Py_buffer *b, int writable, Py_ssize_t kv, Py_ssize_t n, const char *what) {
    int flags = writable ? PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT : PyBUF_STRIDED_RO | PyBUF_FORMAT;
    if (PyObject_GetBuffer(obj, b, flags) < 0) return -1;
    if (b->ndim != 2 || !integer_format(b, 8) || b->shape[0] != kv || b->shape[1] != n) {
        PyErr_Format(PyExc_ValueError, "%s must be (%zd, %zd) int64", what, kv, n);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* attend(keys, values, q, own_max, table, shift, num, z, top[, path]): the prefix's whole part
 * of a layer's integer softmax attention (SPEC §5, step 4) in one call. For each row: the scores
 * s_t = q . k_t; the row maximum top = max(own_max, max_t s_t) (own_max: the row's maximum
 * over its own keys, computed by the caller); the weights p_t = table[min((top - s_t +
 * 2**(shift-1)) >> shift, len(table) - 1)]; z = sum_t p_t (int64) and num = sum_t p_t v_t. The
 * caller weighs its own keys with the same top and adds the sums. */
/* One row's prefix weights (SPEC §5, step 4): top = max(top, max_t s_t), then
 * w_t = table[min((top - s_t + 2**(shift-1)) >> shift, last)], sum = sum_t w_t. top - s_t lies in
 * [0, 2**47): |s_t| < 2**46 and top is one of them or above (the caller's own maximum). */
typedef struct {
    const int64_t *s;
    Py_ssize_t t;
    const int64_t *table;
    Py_ssize_t last;
    int shift;
    double *w;
    int64_t top, sum;
    int bad;  /* a table entry outside [0, 2**16] */
} Row;

static void softmax_plain(Row *x) {
    int64_t m = x->top, sum = 0, half = (int64_t)1 << (x->shift - 1);
    for (Py_ssize_t t = 0; t < x->t; t++) m = x->s[t] > m ? x->s[t] : m;
    for (Py_ssize_t t = 0; t < x->t; t++) {
        int64_t i = (m - x->s[t] + half) >> x->shift;
        int64_t p = x->table[i < x->last ? i : x->last];
        x->bad |= p < 0 || p > (1 << 16);
        sum += p;
        x->w[t] = (double)p;
    }
    x->top = m;
    x->sum = sum;
}

#ifdef HAVE_AVX2
AVX512 static void softmax_avx512(Row *x) {
    const Py_ssize_t T = x->t, body = T / 8 * 8;
    __m512i m = _mm512_set1_epi64(x->top);
    for (Py_ssize_t t = 0; t < body; t += 8) m = _mm512_max_epi64(m, _mm512_loadu_si512((const void *)(x->s + t)));
    int64_t top = _mm512_reduce_max_epi64(m);
    for (Py_ssize_t t = body; t < T; t++) top = x->s[t] > top ? x->s[t] : top;
    const __m512i base = _mm512_set1_epi64(top + ((int64_t)1 << (x->shift - 1))), last = _mm512_set1_epi64(x->last);
    const __m512i lo = _mm512_setzero_si512(), hi = _mm512_set1_epi64(1 << 16);
    __m512i sum = _mm512_setzero_si512();
    __mmask8 bad = 0;
    for (Py_ssize_t t = 0; t < body; t += 8) {
        __m512i i = _mm512_srai_epi64(_mm512_sub_epi64(base, _mm512_loadu_si512((const void *)(x->s + t))), x->shift);
        __m512i p = _mm512_i64gather_epi64(_mm512_min_epi64(i, last), (const void *)x->table, 8);
        bad |= _mm512_cmplt_epi64_mask(p, lo) | _mm512_cmpgt_epi64_mask(p, hi);
        sum = _mm512_add_epi64(sum, p);
        _mm512_storeu_pd(x->w + t, _mm512_cvtepi32_pd(_mm512_cvtepi64_epi32(p)));  /* p fits int32 once checked */
    }
    int64_t total = _mm512_reduce_add_epi64(sum), half = (int64_t)1 << (x->shift - 1);
    for (Py_ssize_t t = body; t < T; t++) {
        int64_t i = (top - x->s[t] + half) >> x->shift;
        int64_t p = x->table[i < x->last ? i : x->last];
        x->bad |= p < 0 || p > (1 << 16);
        total += p;
        x->w[t] = (double)p;
    }
    x->bad |= bad != 0;
    x->top = top;
    x->sum = total;
}

/* The same with four lanes. AVX2 has no 64-bit arithmetic shift, min or int64 -> double, but
 * top + 2**(shift-1) - s_t > 0 (top is the row maximum), so a logical shift is the same; the
 * index is capped with a compare and blend; and a checked weight (in [0, 2**16]) is its low
 * 32 bits, converted from int32. */
AVX2 static void softmax_avx2(Row *x) {
    const Py_ssize_t T = x->t, body = T / 4 * 4;
    __m256i m = _mm256_set1_epi64x(x->top);
    for (Py_ssize_t t = 0; t < body; t += 4) {
        __m256i s = _mm256_loadu_si256((const __m256i *)(x->s + t));
        m = _mm256_blendv_epi8(m, s, _mm256_cmpgt_epi64(s, m));
    }
    int64_t lanes[4], top;
    _mm256_storeu_si256((__m256i *)lanes, m);
    top = lanes[0];
    for (int i = 1; i < 4; i++) top = lanes[i] > top ? lanes[i] : top;
    for (Py_ssize_t t = body; t < T; t++) top = x->s[t] > top ? x->s[t] : top;
    const __m256i base = _mm256_set1_epi64x(top + ((int64_t)1 << (x->shift - 1))), last = _mm256_set1_epi64x(x->last);
    const __m256i zero = _mm256_setzero_si256(), above = _mm256_set1_epi64x(1 << 16);
    const __m256i low_halves = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    const __m128i shift = _mm_cvtsi32_si128(x->shift);
    __m256i sum = _mm256_setzero_si256(), bad = _mm256_setzero_si256();
    for (Py_ssize_t t = 0; t < body; t += 4) {
        __m256i i = _mm256_srl_epi64(_mm256_sub_epi64(base, _mm256_loadu_si256((const __m256i *)(x->s + t))), shift);
        i = _mm256_blendv_epi8(i, last, _mm256_cmpgt_epi64(i, last));
        __m256i p = _mm256_i64gather_epi64((const long long *)x->table, i, 8);
        bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpgt_epi64(zero, p), _mm256_cmpgt_epi64(p, above)));
        sum = _mm256_add_epi64(sum, p);
        __m128i low = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(p, low_halves));
        _mm256_storeu_pd(x->w + t, _mm256_cvtepi32_pd(low));
    }
    _mm256_storeu_si256((__m256i *)lanes, sum);
    int64_t total = lanes[0] + lanes[1] + lanes[2] + lanes[3], half = (int64_t)1 << (x->shift - 1);
    for (Py_ssize_t t = body; t < T; t++) {
        int64_t i = (top - x->s[t] + half) >> x->shift;
        int64_t p = x->table[i < x->last ? i : x->last];
        x->bad |= p < 0 || p > (1 << 16);
        total += p;
        x->w[t] = (double)p;
    }
    x->bad |= !_mm256_testz_si256(bad, bad);
    x->top = top;
    x->sum = total;
}
#endif

static PyObject *attend(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *k_obj, *kf_obj, *v_obj, *vf_obj, *q_obj, *own_obj, *table_obj, *num_obj, *z_obj, *top_obj;
    Py_ssize_t length;
    int shift;
    const char *path = NULL;
    if (!PyArg_ParseTuple(args, "OOOOnOOOiOOO|z:attend", &k_obj, &kf_obj, &v_obj, &vf_obj, &length, &q_obj, &own_obj,
                          &table_obj, &shift, &num_obj, &z_obj, &top_obj, &path))
        return NULL;
    int want = parse_path(path);
    if (want < 0) return NULL;
    if (shift < 1 || shift > MAX_SHIFT) {
        PyErr_SetString(PyExc_ValueError, "shift must lie in [1, 40]");
        return NULL;
    }
    Py_buffer bufs[10];
    int held = 0, ok = 0;
    Prefix k, v;
    double *rows = NULL, *weights = NULL;
    int64_t *scores_ = NULL;
    if (get_prefix(k_obj, kf_obj, &bufs[held], &k, 0, length) < 0) goto done;
    held += 2;
    if (get_prefix(v_obj, vf_obj, &bufs[held], &v, 1, length) < 0) goto done;
    held += 2;
    if (v.t != k.t || v.kv != k.kv || v.d != k.d) {
        PyErr_SetString(PyExc_ValueError, "keys and values must have the same shape");
        goto done;
    }
    if (get_rows(q_obj, &bufs[held], 1, k.kv, k.d, "q") < 0) goto done;
    Py_buffer *qb = &bufs[held++];
    Py_ssize_t n = qb->shape[1], npad = (n + ROWS - 1) / ROWS * ROWS, T = k.t;
    if (get_pairs(own_obj, &bufs[held], 0, k.kv, n, "own_max") < 0) goto done;
    Py_buffer *ob = &bufs[held++];
    if (PyObject_GetBuffer(table_obj, &bufs[held], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
    Py_buffer *tb = &bufs[held++];
    if (tb->ndim != 1 || !integer_format(tb, 8) || tb->shape[0] < 1) {
        PyErr_SetString(PyExc_ValueError, "table must be a non-empty 1-d int64 array");
        goto done;
    }
    if (get_out(num_obj, &bufs[held], 1, k.kv, n, k.d) < 0) goto done;
    double *num = bufs[held++].buf;
    if (get_pairs(z_obj, &bufs[held], 1, k.kv, n, "z") < 0) goto done;
    int64_t *z = bufs[held++].buf;
    if (get_pairs(top_obj, &bufs[held], 1, k.kv, n, "top") < 0) goto done;
    int64_t *top = bufs[held++].buf;
    const int64_t *table = tb->buf;
    Py_ssize_t last = tb->shape[0] - 1;
    rows = gather_rows(qb, 1, npad);
    scores_ = PyMem_Malloc((size_t)(k.kv * n * T + 1) * sizeof(int64_t));
    weights = PyMem_Calloc((size_t)(k.kv * npad * T + 1), sizeof(double));
    if (rows == NULL || scores_ == NULL || weights == NULL) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto done;
    }
    if (!rows_in_bounds(rows, k.kv * npad * k.d, 0)) goto done;
    for (Py_ssize_t h = 0; h < k.kv; h++)  /* a row's own maximum is a score: |s| < 2**46 (or below, "none") */
        for (Py_ssize_t r = 0; r < n; r++) {
            int64_t m;
            memcpy(&m, (const char *)ob->buf + h * ob->strides[0] + r * ob->strides[1], sizeof m);
            if (m > SCORE_LIMIT) {
                PyErr_SetString(PyExc_ValueError, "own_max must be at most 2**46 (a score's bound)");
                goto done;
            }
        }
    int ran, bad = 0;
    Py_BEGIN_ALLOW_THREADS
    ran = run_scores(&k, rows, n, npad, scores_, want);
    int wide = allows(want, PATH_AVX512) && use_avx512(8), narrow = !wide && allows(want, PATH_AVX2) && use_avx2(4);
    (void)wide;
    (void)narrow;
    for (Py_ssize_t h = 0; h < k.kv; h++)
        for (Py_ssize_t r = 0; r < n; r++) {
            int64_t m;
            memcpy(&m, (const char *)ob->buf + h * ob->strides[0] + r * ob->strides[1], sizeof m);
            Row row = {scores_ + (h * n + r) * T, T, table, last, shift, weights + (h * npad + r) * T, m, 0, 0};
#ifdef HAVE_AVX2
            if (wide) softmax_avx512(&row); else if (narrow) softmax_avx2(&row); else
#endif
            softmax_plain(&row);
            bad |= row.bad;
            z[h * n + r] = row.sum;
            top[h * n + r] = row.top;
        }
    ran = ran && (bad || run_weigh(&v, weights, n, npad, num, want));
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "table entries must lie in [0, 2**16]");
        goto done;
    }
    if (!ran) {
        PyErr_NoMemory();
        goto done;
    }
    ok = 1;
done:
    PyMem_Free(rows);
    PyMem_Free(scores_);
    PyMem_Free(weights);
    while (held > 0) PyBuffer_Release(&bufs[--held]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *scores(PyObject *self, PyObject *args) { (void)self; return products(args, 0); }
static PyObject *weigh(PyObject *self, PyObject *args) { (void)self; return products(args, 1); }

static PyObject *vector_paths(PyObject *self, PyObject *args) {
    (void)self; (void)args;
    const char *names[6];
    int count = 0;
    if (use_vnni(16)) names[count++] = "vnni";
    if (use_avxvnni(16)) names[count++] = "avxvnni";
    if (use_avx512(8)) names[count++] = "avx512";
    if (use_avx2pairs(16)) names[count++] = "avx2pairs";
    if (use_avx2(4)) names[count++] = "avx2";
    names[count++] = "plain";
    PyObject *out = PyTuple_New(count);
    for (int i = 0; out != NULL && i < count; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        if (name == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, i, name);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"scores", scores, METH_VARARGS,
     "scores(keys, fixes, length, q, out, path=None): out[h, n, t] = q[h, n] . k[t, h] exactly; keys: one layer "
     "of `length` positions, (T, KV, D) int16/int32 or the int16 pair layout; fixes (E, 4) int32 rows "
     "(t, h, d, residual): entries the layer holds as k - residual; q (KV, N, D) float64 "
     "integers; out (KV, N, T) int64. path: the widest code path to use (default: the widest this CPU "
     "has); every path gives the same integers."},
    {"weigh", weigh, METH_VARARGS,
     "weigh(values, fixes, length, p, out, path=None): out[h, n] = sum_t p[h, n, t] v[t, h] exactly; values as "
     "keys (or their pair layout); p (KV, N, T) int64 in [0, 2**16]; out (KV, N, D) float64."},
    {"attend", attend, METH_VARARGS,
     "attend(keys, key_fixes, values, value_fixes, length, q, own_max, table, shift, num, z, top, path=None): the prefix's part "
     "of a layer's integer softmax attention in one call; own_max (KV, N) int64, table 1-d int64; "
     "writes num (KV, N, D) float64, z and top (KV, N) int64."},
    {"vector_paths", vector_paths, METH_NOARGS,
     "The code paths this CPU runs, widest first: 'vnni' (AVX512-VNNI, pair layouts), 'avxvnni' "
     "(AVX-VNNI, the pair layouts in 256-bit vectors), 'avx512' (AVX-512F), 'avx2' (AVX2+FMA), 'plain' (C)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "semcodec.models._prefix",
    "Exact prefix attention products in native code (see semcodec.models.attention).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__prefix(void) { return PyModule_Create(&module); }
