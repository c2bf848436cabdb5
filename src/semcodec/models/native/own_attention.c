/* Attention over a text's own keys and values (the decode step's cache), native: the kernels
 * step.c runs on each block of positions (own_attention.h states the layouts and bounds).
 *
 * Three paths, chosen per call: plain C in int64; AVX2 + FMA and AVX-512 in float64, which
 * multiply the same integers: |q k| < 2**40, a row's sum < 2**46, and p v < 2**40 with at most
 * MAX_POSITIONS terms < 2**53, so every product and partial sum (a block's, and the blocks' total)
 * is exact and FMA, lanes, blocks and order change no bit (bounds.h). The AVX-512 helpers for a
 * block's maxima and weights compute the C loops' int64 values eight at a time.
 */
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "bounds.h"
#include "own_attention.h"


#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(SEMCODEC_PLAIN_C)
#include <immintrin.h>
#define HAVE_AVX2_FMA 1
#define AVX2_FMA __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx2,fma,avx512f")))
#define INLINE static inline __attribute__((always_inline))
#endif

/* -- plain C ---------------------------------------------------------------------------------- */

static void own_scores_plain(const double *q, const int32_t *k_layer, Py_ssize_t KV, Py_ssize_t D, Py_ssize_t G,
                             Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, int64_t *sc) {
    int64_t qi[MAX_GROUP * MAX_DIM];
    for (Py_ssize_t h = 0; h < KV; h++) {
        for (Py_ssize_t i = 0; i < G * D; i++) qi[i] = (int64_t)q[h * G * D + i];
        for (Py_ssize_t t = t0; t < t1; t++) {
            const int32_t *kt = k_layer + (t * KV + h) * D;
            for (Py_ssize_t g = 0; g < G; g++) {
                int64_t acc = 0;
                for (Py_ssize_t d = 0; d < D; d++) acc += qi[g * D + d] * (int64_t)kt[d];
                sc[(h * G + g) * T + t] = acc;
            }
        }
    }
}

static void own_weigh_plain(const int64_t *p, const int32_t *v_layer, Py_ssize_t KV, Py_ssize_t D, Py_ssize_t G,
                            Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, double *num) {
    for (Py_ssize_t row = 0; row < KV * G; row++) {
        const Py_ssize_t h = row / G;
        int64_t acc[MAX_DIM] = {0};
        for (Py_ssize_t t = t0; t < t1; t++) {
            const int64_t pt = p[row * T + t];
            if (!pt) continue;
            const int32_t *vt = v_layer + (t * KV + h) * D;
            for (Py_ssize_t d = 0; d < D; d++) acc[d] += pt * (int64_t)vt[d];
        }
        for (Py_ssize_t d = 0; d < D; d++) num[row * D + d] = (double)acc[d];  /* |acc| < 2**53: exact */
    }
}

#ifdef HAVE_AVX2_FMA

/* -- AVX2 + FMA, AVX-512 ------------------------------------------------------------------------ */


AVX2_FMA static void own_scores_avx2(const double *q, const int32_t *k_layer, Py_ssize_t KV, Py_ssize_t D,
                                     Py_ssize_t G, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, int64_t *sc) {
    /* Each key row is converted once and serves the G query rows (at most MAX_GROUP, 4 at a time). */
    for (Py_ssize_t h = 0; h < KV; h++)
        for (Py_ssize_t g0 = 0; g0 < G; g0 += 4) {
            const Py_ssize_t rows = G - g0 < 4 ? G - g0 : 4;
            const double *qh = q + (h * G + g0) * D;
            for (Py_ssize_t t = t0; t < t1; t++) {
                const int32_t *kt = k_layer + (t * KV + h) * D;
                __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
                for (Py_ssize_t d = 0; d < D; d += 4) {
                    const __m256d k = _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(kt + d)));
                    for (Py_ssize_t r = 0; r < rows; r++)
                        acc[r] = _mm256_fmadd_pd(_mm256_loadu_pd(qh + r * D + d), k, acc[r]);
                }
                for (Py_ssize_t r = 0; r < rows; r++) {
                    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(acc[r]), _mm256_extractf128_pd(acc[r], 1));
                    s2 = _mm_add_sd(s2, _mm_unpackhi_pd(s2, s2));
                    sc[(h * G + g0 + r) * T + t] = (int64_t)_mm_cvtsd_f64(s2);
                }
            }
        }
}

AVX2_FMA static void own_weigh_avx2(const int64_t *p, const int32_t *v_layer, Py_ssize_t KV, Py_ssize_t D,
                                    Py_ssize_t G, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, double *num) {
    for (Py_ssize_t row = 0; row < KV * G; row++) {
        const Py_ssize_t h = row / G;
        __m256d acc[MAX_DIM / 4];
        for (Py_ssize_t i = 0; i < D / 4; i++) acc[i] = _mm256_setzero_pd();
        for (Py_ssize_t t = t0; t < t1; t++) {
            const int64_t pt = p[row * T + t];
            if (!pt) continue;
            const __m256d pv = _mm256_set1_pd((double)pt);
            const int32_t *vt = v_layer + (t * KV + h) * D;
            for (Py_ssize_t i = 0; i < D / 4; i++)
                acc[i] = _mm256_fmadd_pd(pv, _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(vt + 4 * i))), acc[i]);
        }
        for (Py_ssize_t i = 0; i < D / 4; i++) _mm256_storeu_pd(num + row * D + 4 * i, acc[i]);
    }
}

/* AVX-512: a row's D dims are D/8 vectors, held in registers when D and G are the constants the
 * callers below pass (SmolLM2: D = 64, G = 3), so the compiler unrolls every inner loop. */
AVX512 INLINE void scores_avx512_body(const double *q, const int32_t *k_layer, Py_ssize_t KV, const Py_ssize_t D,
                                      const Py_ssize_t G, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, int64_t *sc) {
    for (Py_ssize_t t = t0; t < t1; t++) {
        for (Py_ssize_t h = 0; h < KV; h++) {
            const int32_t *kt = k_layer + (t * KV + h) * D;
            __m512d k[MAX_DIM / 8];
            for (Py_ssize_t c = 0; c < D / 8; c++) k[c] = _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)(kt + 8 * c)));
            for (Py_ssize_t g = 0; g < G; g++) {
                const double *qg = q + (h * G + g) * D;
                __m512d a0 = _mm512_mul_pd(_mm512_loadu_pd(qg), k[0]), a1 = _mm512_setzero_pd();
                for (Py_ssize_t c = 1; c < D / 8; c++) {  /* two chains: half the FMA latency per row */
                    if (c & 1) a1 = _mm512_fmadd_pd(_mm512_loadu_pd(qg + 8 * c), k[c], a1);
                    else a0 = _mm512_fmadd_pd(_mm512_loadu_pd(qg + 8 * c), k[c], a0);
                }
                sc[(h * G + g) * T + t] = (int64_t)_mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
            }
        }
    }
}

AVX512 static void own_scores_avx512(const double *q, const int32_t *k_layer, Py_ssize_t KV, Py_ssize_t D,
                                     Py_ssize_t G, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, int64_t *sc) {
    if (D == 64 && G == 3) scores_avx512_body(q, k_layer, KV, 64, 3, T, t0, t1, sc);
    else scores_avx512_body(q, k_layer, KV, D, G, T, t0, t1, sc);
}

AVX512 INLINE void weigh_avx512_body(const int64_t *p, const int32_t *v_layer, Py_ssize_t KV, const Py_ssize_t D,
                                     const Py_ssize_t G, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, double *num) {
    for (Py_ssize_t h = 0; h < KV; h++) {  /* one kv head's G rows at a time: G * D / 8 accumulators */
        __m512d acc[MAX_GROUP][MAX_DIM / 8];
        for (Py_ssize_t g = 0; g < G; g++)
            for (Py_ssize_t c = 0; c < D / 8; c++) acc[g][c] = _mm512_setzero_pd();
        const int64_t *ph = p + h * G * T;
        for (Py_ssize_t t = t0; t < t1; t++) {
            int64_t any = 0;
            for (Py_ssize_t g = 0; g < G; g++) any |= ph[g * T + t];
            if (!any) continue;
            __m512d pv[MAX_GROUP];
            for (Py_ssize_t g = 0; g < G; g++) pv[g] = _mm512_set1_pd((double)ph[g * T + t]);
            const int32_t *vt = v_layer + (t * KV + h) * D;
            for (Py_ssize_t c = 0; c < D / 8; c++) {
                const __m512d v = _mm512_cvtepi32_pd(_mm256_loadu_si256((const __m256i *)(vt + 8 * c)));
                for (Py_ssize_t g = 0; g < G; g++) acc[g][c] = _mm512_fmadd_pd(pv[g], v, acc[g][c]);
            }
        }
        for (Py_ssize_t g = 0; g < G; g++)
            for (Py_ssize_t c = 0; c < D / 8; c++) _mm512_storeu_pd(num + (h * G + g) * D + 8 * c, acc[g][c]);
    }
}

AVX512 static void own_weigh_avx512(const int64_t *p, const int32_t *v_layer, Py_ssize_t KV, Py_ssize_t D,
                                    Py_ssize_t G, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, double *num) {
    if (D == 64 && G == 3) weigh_avx512_body(p, v_layer, KV, 64, 3, T, t0, t1, num);
    else weigh_avx512_body(p, v_layer, KV, D, G, T, t0, t1, num);
}

/* The block's maxima of each row's scores, and its weights E16[min((top - s + half) >> shift, last)]
 * with their sum: eight positions per vector (the same integers as the C loops of block_scores
 * and block_weigh; the index is an arithmetic shift of an int64, as there). */
AVX512 static void block_maxima_avx512(const int64_t *sc, Py_ssize_t rows, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1,
                                       int64_t *top) {
    for (Py_ssize_t row = 0; row < rows; row++) {
        const int64_t *x = sc + row * T;
        __m512i m = _mm512_set1_epi64(INT64_MIN);
        Py_ssize_t t = t0;
        for (; t + 8 <= t1; t += 8) m = _mm512_max_epi64(m, _mm512_loadu_si512((const void *)(x + t)));
        int64_t best = _mm512_reduce_max_epi64(m);
        for (; t < t1; t++) best = x[t] > best ? x[t] : best;
        top[row] = best;
    }
}

AVX512 static int64_t block_weights_avx512(const int64_t *sc, int64_t top, int64_t half, int shift, const int64_t *table,
                                           int64_t last, Py_ssize_t t0, Py_ssize_t t1, int64_t *p) {
    const __m512i vtop = _mm512_set1_epi64(top + half), vlast = _mm512_set1_epi64(last);
    const __m128i count = _mm_cvtsi32_si128(shift);
    __m512i sum = _mm512_setzero_si512();
    Py_ssize_t t = t0;
    for (; t + 8 <= t1; t += 8) {  /* top + half - s: the C loop's top - s + half, the same int64 */
        __m512i idx = _mm512_sra_epi64(_mm512_sub_epi64(vtop, _mm512_loadu_si512((const void *)(sc + t))), count);
        __m512i w = _mm512_i64gather_epi64(_mm512_min_epi64(idx, vlast), (const void *)table, 8);
        _mm512_storeu_si512((void *)(p + t), w);
        sum = _mm512_add_epi64(sum, w);
    }
    int64_t total = _mm512_reduce_add_epi64(sum);
    for (; t < t1; t++) {
        int64_t idx = (top - sc[t] + half) >> shift;
        p[t] = table[idx < last ? idx : last];
        total += p[t];
    }
    return total;
}

static int has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

/* -- the entry points --------------------------------------------------------------------------- */

int semcodec_own_path(int vector) {
#ifdef HAVE_AVX2_FMA
    if (vector == OWN_AVX512 && has_avx2_fma() && __builtin_cpu_supports("avx512f")) return OWN_AVX512;
    if (vector >= OWN_AVX2 && has_avx2_fma()) return OWN_AVX2;
#endif
    (void)vector;
    return OWN_PLAIN;
}

void semcodec_own_scores(int path, const double *q, const int32_t *k_layer, Py_ssize_t KV, Py_ssize_t D,
                         Py_ssize_t G, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, int64_t *sc) {
#ifdef HAVE_AVX2_FMA
    if (path == OWN_AVX512) {
        own_scores_avx512(q, k_layer, KV, D, G, T, t0, t1, sc);
        return;
    }
    if (path == OWN_AVX2) {
        own_scores_avx2(q, k_layer, KV, D, G, T, t0, t1, sc);
        return;
    }
#endif
    (void)path;
    own_scores_plain(q, k_layer, KV, D, G, T, t0, t1, sc);
}

void semcodec_own_maxima(int path, const int64_t *sc, Py_ssize_t rows, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1,
                         int64_t *top) {
#ifdef HAVE_AVX2_FMA
    if (path == OWN_AVX512) {
        block_maxima_avx512(sc, rows, T, t0, t1, top);
        return;
    }
#endif
    (void)path;
    for (Py_ssize_t row = 0; row < rows; row++) {
        const int64_t *x = sc + row * T;
        int64_t best = INT64_MIN;
        for (Py_ssize_t t = t0; t < t1; t++) best = x[t] > best ? x[t] : best;
        top[row] = best;
    }
}

int64_t semcodec_own_weights(int path, const int64_t *sc, int64_t top, int64_t half, int shift, const int64_t *table,
                             int64_t last, Py_ssize_t t0, Py_ssize_t t1, int64_t *p) {
#ifdef HAVE_AVX2_FMA
    if (path == OWN_AVX512) return block_weights_avx512(sc, top, half, shift, table, last, t0, t1, p);
#endif
    (void)path;
    int64_t sum = 0;
    for (Py_ssize_t t = t0; t < t1; t++) {
        const int64_t idx = (top - sc[t] + half) >> shift;
        p[t] = table[idx < last ? idx : last];
        sum += p[t];
    }
    return sum;
}

void semcodec_own_weigh(int path, const int64_t *p, const int32_t *v_layer, Py_ssize_t KV, Py_ssize_t D,
                        Py_ssize_t G, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, double *num) {
#ifdef HAVE_AVX2_FMA
    if (path == OWN_AVX512) {
        own_weigh_avx512(p, v_layer, KV, D, G, T, t0, t1, num);
        return;
    }
    if (path == OWN_AVX2) {
        own_weigh_avx2(p, v_layer, KV, D, G, T, t0, t1, num);
        return;
    }
#endif
    (void)path;
    own_weigh_plain(p, v_layer, KV, D, G, T, t0, t1, num);
}
