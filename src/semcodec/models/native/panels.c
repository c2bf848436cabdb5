/* The weight products' kernels on the panel layout (panels.h), one function per code path and
 * nothing else: no Python, no threads (products.c hands panels out to its pool).
 *
 * Why a layout of its own: one panel is 64 output columns with their K weights in quads of four
 * consecutive rows, front to back. A quad of one column is exactly one int32 lane of vpdpbusd,
 * so a single row's product is one 32-byte load and one vpdpbusd per 8 columns x 4 rows, reading
 * the panel as one sequential stream. On (K, N) rows the same product needed four loads, eight
 * byte/word unpacks and four sign operations per 32 columns x 4 rows to build the quads in
 * registers: measured on the 2-core EPYC (1 thread, every matrix of a step, 134.5 M weights),
 * 12.9 ms on (K, N) against 6.2 ms on panels (21.8 GB/s, near what one core streams).
 *
 * Exactness (bounds.h): |x| <= 127 and |w| <= 127 (-128 never: the caller checks both) and
 * K <= MAX_INNER. Every path adds the same
 * integers, each sum below 2**31 in magnitude, in int32 lanes that neither saturate nor wrap,
 * so the result is the exact integer whatever the order:
 *
 * - vnni (AVX512-VNNI) and avxvnni (VEX vpdpbusd), the *offset* form: x + 128 (in [1, 255], the
 *   byte x ^ 0x80) as u8 times w as s8; vpdpbusd adds four products into the int32 lane without
 *   saturation (the non-"s" form), |lane| <= K * 255 * 127 < 2**31 for K <= MAX_INNER; then
 *   sum_k (x + 128) w - 128 * colsum = sum_k x w. Padding (K past a quad, N past a panel) holds
 *   zero weights, so a padded x byte (128) adds nothing.
 * - avx2 (vpmaddubsw saturates int16 pairs, so no offset): |x| as u8 times sign(w, x) as s8;
 *   each int16 lane is the sum of two products, |.| <= 2 * 127 * 127 = 32258 <= 32767;
 *   vpmaddwd with ones adds the pairs into int32 and vpaddd accumulates (<= K * 16129).
 * - neon (arm64 with the dot-product extension, sdot): signed x times signed w, four products
 *   per int32 lane without saturation (sdot widens), |lane| <= K * 16129; no offset, no sign.
 * - plain: the C loop, int32 sums.
 *
 * Rows: the avx512 path takes rows four (then two) at a time per panel (16 zmm sums, the
 * panel's four 64-byte loads shared by the rows); a last single row, and every row on the
 * 256-bit paths, keeps eight ymm sums (64 columns) and reads the panel once per row (from L1/L2
 * after the first). One row alone runs on 256 bits: in a standalone prototype of a step's
 * products, 6.2 ms against 6.9 with zmm sums on the 2-core EPYC (AVX-512 there executes as two
 * 256-bit halves). neon keeps sixteen 128-bit sums (64 columns) per row.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "panels.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(SEMCODEC_PLAIN_C)
#define HAVE_AVX2 1
#include <immintrin.h>
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11)
#define HAVE_AVXVNNI 1
#endif
#endif

#if defined(__GNUC__) && defined(__aarch64__) && defined(__ARM_NEON) && !defined(SEMCODEC_PLAIN_C) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HAVE_NEON_DOT 1
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#endif

#define PANEL_BYTES (PANEL_COLUMNS * PANEL_DEPTH)  /* one quad of every column of a panel: 256 bytes */

/* Four activation bytes x[0..3] as one int32 lane's bytes (missing ones 0 when fewer than 4 are
 * left; the vector paths run little-endian: x86, and arm64 only when little-endian). A constant-size copy compiles to one load; the
 * tail is built byte by byte, since a libc call in the loop made GCC spill every sum around it. */
static inline int32_t x_quad(const int8_t *x, ptrdiff_t left) {
    int32_t s;
    if (__builtin_expect(left >= 4, 1)) {
        memcpy(&s, x, 4);
        return s;
    }
    uint32_t u = 0;
    for (ptrdiff_t i = 0; i < left; i++) u |= (uint32_t)(uint8_t)x[i] << (8 * i);
    return (int32_t)u;
}

static inline const int8_t *panel_at(const Gemv *g, ptrdiff_t p) { return g->panels + p * g->quads * PANEL_BYTES; }

/* The panel's columns that exist: 64, or fewer in the last panel. */
static inline ptrdiff_t panel_width(const Gemv *g, ptrdiff_t p) {
    ptrdiff_t left = g->n - p * PANEL_COLUMNS;
    return left < PANEL_COLUMNS ? left : PANEL_COLUMNS;
}

/* Row r's 64 sums of panel p into y (the columns that exist). */
static inline void put_sums(const Gemv *g, ptrdiff_t r, ptrdiff_t p, const int32_t *sums) {
    memcpy(g->y + r * g->n + p * PANEL_COLUMNS, sums, (size_t)panel_width(g, p) * sizeof(int32_t));
}

/* -- plain C ----------------------------------------------------------------------------- */

static void panel_plain(const Gemv *g, ptrdiff_t p) {
    const int8_t *w = panel_at(g, p);
    for (ptrdiff_t r = 0; r < g->m; r++) {
        const int8_t *x = g->x + r * g->k;
        int32_t sums[PANEL_COLUMNS] = {0};
        for (ptrdiff_t k = 0; k < g->k; k++) {
            const int32_t xv = x[k];
            if (!xv) continue;
            const int8_t *wk = w + (k / 4) * PANEL_BYTES + k % 4;  /* column c's weight: wk[4 c] */
            for (int c = 0; c < PANEL_COLUMNS; c++) sums[c] += xv * (int32_t)wk[PANEL_DEPTH * c];
        }
        put_sums(g, r, p, sums);
    }
}

/* -- vector paths ------------------------------------------------------------------------ */

#ifdef HAVE_AVX2
#define AVX2 __attribute__((target("avx2")))
#define VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni")))
#define XOR_128 ((int32_t)0x80808080)  /* x ^ 0x80 per byte: x + 128 as u8 */

/* 128 * colsum of panel p's columns c0 .. c0 + 7 (zero past N). */
AVX2 static inline __m256i offset8(const Gemv *g, ptrdiff_t p, int c0) {
    const ptrdiff_t width = panel_width(g, p);
    if (c0 + 8 <= width)
        return _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(g->colsum + p * PANEL_COLUMNS + c0)), 7);
    int32_t cs[8] = {0};
    for (int c = c0; c < width && c < c0 + 8; c++) cs[c - c0] = g->colsum[p * PANEL_COLUMNS + c];
    return _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)cs), 7);
}

/* One row, 256-bit: eight sums of 8 columns; DOT adds a quad of u8 x s8 products per lane. */
#define ROW_BODY(NAME, TARGET, DOT)                                                                  \
    TARGET static void NAME(const Gemv *g, ptrdiff_t p, ptrdiff_t r) {                            \
        const int8_t *w = panel_at(g, p), *x = g->x + r * g->k;                                     \
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0; \
        for (ptrdiff_t j = 0; j < g->quads; j++, w += PANEL_BYTES) {                               \
            const int32_t xq = x_quad(x + 4 * j, g->k - 4 * j);                                     \
            const __m256i bx = _mm256_set1_epi32(xq ^ XOR_128);                                     \
            a0 = DOT(a0, bx, _mm256_loadu_si256((const __m256i *)w));                               \
            a1 = DOT(a1, bx, _mm256_loadu_si256((const __m256i *)(w + 32)));                        \
            a2 = DOT(a2, bx, _mm256_loadu_si256((const __m256i *)(w + 64)));                        \
            a3 = DOT(a3, bx, _mm256_loadu_si256((const __m256i *)(w + 96)));                        \
            a4 = DOT(a4, bx, _mm256_loadu_si256((const __m256i *)(w + 128)));                       \
            a5 = DOT(a5, bx, _mm256_loadu_si256((const __m256i *)(w + 160)));                       \
            a6 = DOT(a6, bx, _mm256_loadu_si256((const __m256i *)(w + 192)));                       \
            a7 = DOT(a7, bx, _mm256_loadu_si256((const __m256i *)(w + 224)));                       \
        }                                                                                           \
        int32_t sums[PANEL_COLUMNS];                                                                \
        __m256i *s = (__m256i *)sums;                                                               \
        _mm256_storeu_si256(s + 0, _mm256_sub_epi32(a0, offset8(g, p, 0)));                         \
        _mm256_storeu_si256(s + 1, _mm256_sub_epi32(a1, offset8(g, p, 8)));                         \
        _mm256_storeu_si256(s + 2, _mm256_sub_epi32(a2, offset8(g, p, 16)));                        \
        _mm256_storeu_si256(s + 3, _mm256_sub_epi32(a3, offset8(g, p, 24)));                        \
        _mm256_storeu_si256(s + 4, _mm256_sub_epi32(a4, offset8(g, p, 32)));                        \
        _mm256_storeu_si256(s + 5, _mm256_sub_epi32(a5, offset8(g, p, 40)));                        \
        _mm256_storeu_si256(s + 6, _mm256_sub_epi32(a6, offset8(g, p, 48)));                        \
        _mm256_storeu_si256(s + 7, _mm256_sub_epi32(a7, offset8(g, p, 56)));                        \
        put_sums(g, r, p, sums);                                                                    \
    }

VNNI static inline __m256i dot_vnni(__m256i acc, __m256i ux, __m256i w) { return _mm256_dpbusd_epi32(acc, ux, w); }
ROW_BODY(row_vnni, VNNI, dot_vnni)

/* Four (four = 1) or two (four = 0) rows of panel p, 512-bit: the panel's quad of 64 columns is
 * four zmm loads, each shared by the rows' sums (16 or 8 zmm, named one by one: GCC spilled an
 * array of them every quad). Always inlined with a constant `four`, so each caller compiles to
 * its own loop with no test in it. */
#define DOT4(r, b)                                                                                   \
    a##r##0 = _mm512_dpbusd_epi32(a##r##0, b, w0), a##r##1 = _mm512_dpbusd_epi32(a##r##1, b, w1), \
    a##r##2 = _mm512_dpbusd_epi32(a##r##2, b, w2), a##r##3 = _mm512_dpbusd_epi32(a##r##3, b, w3)
#define PUT4(r)                                                                                      \
    {                                                                                               \
        int32_t sums[PANEL_COLUMNS];                                                                \
        _mm512_storeu_si512(sums, _mm512_sub_epi32(a##r##0, off0));                                 \
        _mm512_storeu_si512(sums + 16, _mm512_sub_epi32(a##r##1, off1));                            \
        _mm512_storeu_si512(sums + 32, _mm512_sub_epi32(a##r##2, off2));                            \
        _mm512_storeu_si512(sums + 48, _mm512_sub_epi32(a##r##3, off3));                            \
        put_sums(g, r0 + r, p, sums);                                                               \
    }
VNNI static inline __m512i offset16(const Gemv *g, ptrdiff_t p, int c0) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(offset8(g, p, c0)), offset8(g, p, c0 + 8), 1);
}
VNNI static inline __attribute__((always_inline)) void rows_vnni(const Gemv *g, ptrdiff_t p, ptrdiff_t r0,
                                                                 const int four) {
    const int8_t *w = panel_at(g, p);
    const int8_t *x0 = g->x + r0 * g->k, *x1 = x0 + g->k;
    const int8_t *x2 = four ? x1 + g->k : x1, *x3 = four ? x2 + g->k : x1;  /* rows 2, 3 only with four */
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
            a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    for (ptrdiff_t j = 0; j < g->quads; j++, w += PANEL_BYTES) {
        const ptrdiff_t left = g->k - 4 * j;
        const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
        const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);
        const __m512i b0 = _mm512_set1_epi32(x_quad(x0 + 4 * j, left) ^ XOR_128);
        const __m512i b1 = _mm512_set1_epi32(x_quad(x1 + 4 * j, left) ^ XOR_128);
        DOT4(0, b0);
        DOT4(1, b1);
        if (four) {
            const __m512i b2 = _mm512_set1_epi32(x_quad(x2 + 4 * j, left) ^ XOR_128);
            const __m512i b3 = _mm512_set1_epi32(x_quad(x3 + 4 * j, left) ^ XOR_128);
            DOT4(2, b2);
            DOT4(3, b3);
        }
    }
    const __m512i off0 = offset16(g, p, 0), off1 = offset16(g, p, 16), off2 = offset16(g, p, 32),
                  off3 = offset16(g, p, 48);
    PUT4(0)
    PUT4(1)
    if (four) {
        PUT4(2)
        PUT4(3)
    }
}
VNNI static void rows4_vnni(const Gemv *g, ptrdiff_t p, ptrdiff_t r0) { rows_vnni(g, p, r0, 1); }
VNNI static void rows2_vnni(const Gemv *g, ptrdiff_t p, ptrdiff_t r0) { rows_vnni(g, p, r0, 0); }

/* Rows four at a time, then two, then one (a single row: 256-bit, the fastest for one stream here). */
VNNI static void panel_vnni(const Gemv *g, ptrdiff_t p) {
    ptrdiff_t r = 0;
    for (; r + 4 <= g->m; r += 4) rows4_vnni(g, p, r);
    if (r + 2 <= g->m) {
        rows2_vnni(g, p, r);
        r += 2;
    }
    if (r < g->m) row_vnni(g, p, r);
}

#ifdef HAVE_AVXVNNI
#ifdef SEMCODEC_EMULATE_AVXVNNI
/* Tests only (tests/native/panels_check.c): no CPU or emulator here has AVX-VNNI (QEMU's TCG
 * lacks it), so the harness builds this path with vpdpbusd done exactly in AVX2: each byte
 * widened to int16 (u8 zero-, s8 sign-extended), vpmaddwd adds pairs into int32 (|.| <= 2 * 255
 * * 128), vphaddd adds pairs of pairs, a permute puts the quads in lane order, and the add
 * wraps like vpdpbusd. Everything else the path runs is what a CPU with AVX-VNNI runs. */
#define AVXVNNI AVX2
AVXVNNI static inline __m256i dot_avxvnni(__m256i acc, __m256i ux, __m256i w) {
    const __m256i lo = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(ux)),
                                         _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w)));
    const __m256i hi = _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(ux, 1)),
                                         _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1)));
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);  /* vphaddd: q0 q1 q4 q5 | q2 q3 q6 q7 */
    const __m256i quads = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(lo, hi), order);
    return _mm256_add_epi32(acc, quads);
}
#define CPU_HAS_AVXVNNI 1
#else
#define AVXVNNI __attribute__((target("avx2,avxvnni")))
AVXVNNI static inline __m256i dot_avxvnni(__m256i acc, __m256i ux, __m256i w) {
    return _mm256_dpbusd_avx_epi32(acc, ux, w);
}
#define CPU_HAS_AVXVNNI __builtin_cpu_supports("avxvnni")
#endif
ROW_BODY(row_avxvnni, AVXVNNI, dot_avxvnni)
static void panel_avxvnni(const Gemv *g, ptrdiff_t p) {
    for (ptrdiff_t r = 0; r < g->m; r++) row_avxvnni(g, p, r);
}
#endif

/* AVX2 without VNNI: |x| times sign(w, x), pairs in int16 (no offset: it would saturate). */
AVX2 static void row_avx2(const Gemv *g, ptrdiff_t p, ptrdiff_t r) {
    const int8_t *w = panel_at(g, p), *x = g->x + r * g->k;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_si256();
    for (ptrdiff_t j = 0; j < g->quads; j++, w += PANEL_BYTES) {
        const __m256i sx = _mm256_set1_epi32(x_quad(x + 4 * j, g->k - 4 * j)), ax = _mm256_abs_epi8(sx);
        for (int i = 0; i < 8; i++) {
            const __m256i sw = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w + 32 * i)), sx);
            a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), ones));
        }
    }
    int32_t sums[PANEL_COLUMNS];
    for (int i = 0; i < 8; i++) _mm256_storeu_si256((__m256i *)(sums + 8 * i), a[i]);
    put_sums(g, r, p, sums);
}
static void panel_avx2(const Gemv *g, ptrdiff_t p) {
    for (ptrdiff_t r = 0; r < g->m; r++) row_avx2(g, p, r);
}

int semcodec_panels_cpu_has(int level) {
    __builtin_cpu_init();
    switch (level) {
    case PATH_VNNI:
        return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx2");
#ifdef HAVE_AVXVNNI
    case PATH_AVXVNNI: return CPU_HAS_AVXVNNI && __builtin_cpu_supports("avx2");
#endif
    case PATH_AVX2: return __builtin_cpu_supports("avx2");
    case PATH_PLAIN: return 1;
    default: return 0;
    }
}
#elif defined(HAVE_NEON_DOT)
#ifdef __clang__
#define NEON_DOT __attribute__((target("dotprod")))
#else
#define NEON_DOT __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
/* One row, sixteen int32x4 sums of 4 columns: the 256 bytes of a quad of the panel are 16 loads,
 * each multiplied by the row's 4 activation bytes repeated in every lane (sdot: 4 signed
 * products added into each lane). Named one by one so that no sum lives on the stack. */
#define SDOT(i) a##i = vdotq_s32(a##i, vld1q_s8(w + 16 * i), bx)
#define SUMS(i) vst1q_s32(sums + 4 * i, a##i)
NEON_DOT static void row_neon(const Gemv *g, ptrdiff_t p, ptrdiff_t r) {
    const int8_t *w = panel_at(g, p), *x = g->x + r * g->k;
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0,
              a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
    for (ptrdiff_t j = 0; j < g->quads; j++, w += PANEL_BYTES) {
        const int8x16_t bx = vreinterpretq_s8_s32(vdupq_n_s32(x_quad(x + 4 * j, g->k - 4 * j)));
        SDOT(0), SDOT(1), SDOT(2), SDOT(3), SDOT(4), SDOT(5), SDOT(6), SDOT(7);
        SDOT(8), SDOT(9), SDOT(10), SDOT(11), SDOT(12), SDOT(13), SDOT(14), SDOT(15);
    }
    int32_t sums[PANEL_COLUMNS];
    SUMS(0), SUMS(1), SUMS(2), SUMS(3), SUMS(4), SUMS(5), SUMS(6), SUMS(7);
    SUMS(8), SUMS(9), SUMS(10), SUMS(11), SUMS(12), SUMS(13), SUMS(14), SUMS(15);
    put_sums(g, r, p, sums);
}
static void panel_neon(const Gemv *g, ptrdiff_t p) {
    for (ptrdiff_t r = 0; r < g->m; r++) row_neon(g, p, r);
}

static int neon_dot(void) {
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int has = 0;
    size_t size = sizeof has;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &has, &size, NULL, 0) == 0 && has;
#elif defined(__ARM_FEATURE_DOTPROD)
    return 1;  /* the build targets it */
#else
    return 0;
#endif
}

int semcodec_panels_cpu_has(int level) { return level == PATH_PLAIN || (level == PATH_NEON && neon_dot()); }
#else
int semcodec_panels_cpu_has(int level) { return level == PATH_PLAIN; }
#endif

void semcodec_panel(const Gemv *g, ptrdiff_t p) {
    switch (g->path) {
#ifdef HAVE_AVX2
    case PATH_VNNI: panel_vnni(g, p); return;
#ifdef HAVE_AVXVNNI
    case PATH_AVXVNNI: panel_avxvnni(g, p); return;
#endif
    case PATH_AVX2: panel_avx2(g, p); return;
#endif
#ifdef HAVE_NEON_DOT
    case PATH_NEON: panel_neon(g, p); return;
#endif
    default: panel_plain(g, p);
    }
}
