/* Exact int8 x int8 -> int32 weight products for the decode step (semcodec.models.kernels).
 *
 * matmul(x, panels, colsum, out, path=None): out[m, n] = sum_k x[m, k] * w[k, n]
 *     x (M, K) int8, w given in the kernel layout of products.h (`panels`, made once at conversion
 *     and stored in the converted cache, so a memory-mapped matrix is read where it lies) with its
 *     column sums `colsum` (N,) int32, out (M, N) int32; all C-contiguous.
 *
 * Why a layout of its own: one panel is 64 output columns with their K weights in quads of four
 * consecutive rows, front to back. A quad of one column is exactly one int32 lane of vpdpbusd,
 * so a single row's product is one 32-byte load and one vpdpbusd per 8 columns x 4 rows, reading
 * the panel as one sequential stream. On (K, N) rows the same product needed four loads, eight
 * byte/word unpacks and four sign operations per 32 columns x 4 rows to build the quads in
 * registers: measured on the 2-core EPYC (1 thread, every matrix of a step, 134.5 M weights),
 * 12.9 ms on (K, N) against 6.2 ms on panels (21.8 GB/s, near what one core streams).
 *
 * Exactness (bounds.h): |x| <= 127 (checked here on every call: -128 is refused) and
 * |w| <= 127 (the caller checks each matrix once: weights_in_range). Every path adds the same
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
 * - plain: the C loop, int32 sums.
 *
 * Rows: the avx512 path takes rows four (then two) at a time per panel (16 zmm sums, the
 * panel's four 64-byte loads shared by the rows); a last single row, and every row on the
 * 256-bit paths, keeps eight ymm sums (64 columns) and reads the panel once per row (from L1/L2
 * after the first). One row alone runs on 256 bits: in a standalone prototype of a step's
 * products, 6.2 ms against 6.9 with zmm sums on the 2-core EPYC (AVX-512 there executes as two
 * 256-bit halves).
 *
 * Threads: the panels are cut into blocks that a small pool of pthreads (set_threads) and the
 * caller claim one at a time, so a block's sums are computed exactly as without threads and a
 * thread kept waiting by the scheduler holds nobody up. A second caller arriving while the pool
 * is busy runs alone in its own thread. The GIL is released while the products run.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "bounds.h"
#include "products.h"
#include "step.h"
#include "frequencies.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(SEMCODEC_PLAIN_C)
#define HAVE_AVX2 1
#include <immintrin.h>
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11)
#define HAVE_AVXVNNI 1
#endif
#endif

static const char *const PATH_NAMES[] = {"plain", "avx2", "avxvnni", "vnni"};

#define PANEL_BYTES (PANEL_COLUMNS * PANEL_DEPTH)  /* one quad of every column of a panel: 256 bytes */

typedef struct {
    const int8_t *x;       /* (M, K) */
    const int8_t *panels;  /* products.h's layout */
    const int32_t *colsum; /* (N,) */
    int32_t *y;            /* (M, N) */
    Py_ssize_t m, k, n, quads;  /* quads = ceil(K / 4) */
    int path;
} Gemv;

/* Four activation bytes x[0..3] as one int32 lane's bytes (missing ones 0 when fewer than 4 are
 * left; the vector paths are x86: little-endian). A constant-size copy compiles to one load; the
 * tail is built byte by byte, since a libc call in the loop made GCC spill every sum around it. */
static inline int32_t x_quad(const int8_t *x, Py_ssize_t left) {
    int32_t s;
    if (__builtin_expect(left >= 4, 1)) {
        memcpy(&s, x, 4);
        return s;
    }
    uint32_t u = 0;
    for (Py_ssize_t i = 0; i < left; i++) u |= (uint32_t)(uint8_t)x[i] << (8 * i);
    return (int32_t)u;
}

static inline const int8_t *panel_at(const Gemv *g, Py_ssize_t p) { return g->panels + p * g->quads * PANEL_BYTES; }

/* The panel's columns that exist: 64, or fewer in the last panel. */
static inline Py_ssize_t panel_width(const Gemv *g, Py_ssize_t p) {
    Py_ssize_t left = g->n - p * PANEL_COLUMNS;
    return left < PANEL_COLUMNS ? left : PANEL_COLUMNS;
}

/* Row r's 64 sums of panel p into y (the columns that exist). */
static inline void put_sums(const Gemv *g, Py_ssize_t r, Py_ssize_t p, const int32_t *sums) {
    memcpy(g->y + r * g->n + p * PANEL_COLUMNS, sums, (size_t)panel_width(g, p) * sizeof(int32_t));
}

/* -- plain C ----------------------------------------------------------------------------- */

static void panel_plain(const Gemv *g, Py_ssize_t p) {
    const int8_t *w = panel_at(g, p);
    for (Py_ssize_t r = 0; r < g->m; r++) {
        const int8_t *x = g->x + r * g->k;
        int32_t sums[PANEL_COLUMNS] = {0};
        for (Py_ssize_t k = 0; k < g->k; k++) {
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
AVX2 static inline __m256i offset8(const Gemv *g, Py_ssize_t p, int c0) {
    const Py_ssize_t width = panel_width(g, p);
    if (c0 + 8 <= width)
        return _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(g->colsum + p * PANEL_COLUMNS + c0)), 7);
    int32_t cs[8] = {0};
    for (int c = c0; c < width && c < c0 + 8; c++) cs[c - c0] = g->colsum[p * PANEL_COLUMNS + c];
    return _mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)cs), 7);
}

/* One row, 256-bit: eight sums of 8 columns; DOT adds a quad of u8 x s8 products per lane. */
#define ROW_BODY(NAME, TARGET, DOT)                                                                  \
    TARGET static void NAME(const Gemv *g, Py_ssize_t p, Py_ssize_t r) {                            \
        const int8_t *w = panel_at(g, p), *x = g->x + r * g->k;                                     \
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0; \
        for (Py_ssize_t j = 0; j < g->quads; j++, w += PANEL_BYTES) {                               \
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

/* Four rows of panel p, 512-bit: the panel's quad of 64 columns is four zmm loads, each shared
 * by the four rows' sums (16 zmm, named one by one: GCC spilled an array of them every quad). */
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
VNNI static inline __m512i offset16(const Gemv *g, Py_ssize_t p, int c0) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(offset8(g, p, c0)), offset8(g, p, c0 + 8), 1);
}
VNNI static void rows4_vnni(const Gemv *g, Py_ssize_t p, Py_ssize_t r0) {
    const int8_t *w = panel_at(g, p);
    const int8_t *x0 = g->x + r0 * g->k, *x1 = x0 + g->k, *x2 = x1 + g->k, *x3 = x2 + g->k;
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
            a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    for (Py_ssize_t j = 0; j < g->quads; j++, w += PANEL_BYTES) {
        const Py_ssize_t left = g->k - 4 * j;
        const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
        const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);
        const __m512i b0 = _mm512_set1_epi32(x_quad(x0 + 4 * j, left) ^ XOR_128);
        const __m512i b1 = _mm512_set1_epi32(x_quad(x1 + 4 * j, left) ^ XOR_128);
        const __m512i b2 = _mm512_set1_epi32(x_quad(x2 + 4 * j, left) ^ XOR_128);
        const __m512i b3 = _mm512_set1_epi32(x_quad(x3 + 4 * j, left) ^ XOR_128);
        DOT4(0, b0);
        DOT4(1, b1);
        DOT4(2, b2);
        DOT4(3, b3);
    }
    const __m512i off0 = offset16(g, p, 0), off1 = offset16(g, p, 16), off2 = offset16(g, p, 32),
                  off3 = offset16(g, p, 48);
    PUT4(0)
    PUT4(1)
    PUT4(2)
    PUT4(3)
}

/* Two rows of panel p: rows4_vnni's loop for rows 0 and 1 (8 zmm sums). */
VNNI static void rows2_vnni(const Gemv *g, Py_ssize_t p, Py_ssize_t r0) {
    const int8_t *w = panel_at(g, p);
    const int8_t *x0 = g->x + r0 * g->k, *x1 = x0 + g->k;
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00,
            a13 = a00;
    for (Py_ssize_t j = 0; j < g->quads; j++, w += PANEL_BYTES) {
        const Py_ssize_t left = g->k - 4 * j;
        const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64);
        const __m512i w2 = _mm512_loadu_si512(w + 128), w3 = _mm512_loadu_si512(w + 192);
        const __m512i b0 = _mm512_set1_epi32(x_quad(x0 + 4 * j, left) ^ XOR_128);
        const __m512i b1 = _mm512_set1_epi32(x_quad(x1 + 4 * j, left) ^ XOR_128);
        DOT4(0, b0);
        DOT4(1, b1);
    }
    const __m512i off0 = offset16(g, p, 0), off1 = offset16(g, p, 16), off2 = offset16(g, p, 32),
                  off3 = offset16(g, p, 48);
    PUT4(0)
    PUT4(1)
}

/* Rows four at a time, then two, then one (a single row: 256-bit, the fastest for one stream here). */
VNNI static void panel_vnni(const Gemv *g, Py_ssize_t p) {
    Py_ssize_t r = 0;
    for (; r + 4 <= g->m; r += 4) rows4_vnni(g, p, r);
    if (r + 2 <= g->m) {
        rows2_vnni(g, p, r);
        r += 2;
    }
    if (r < g->m) row_vnni(g, p, r);
}

#ifdef HAVE_AVXVNNI
#define AVXVNNI __attribute__((target("avx2,avxvnni")))
AVXVNNI static inline __m256i dot_avxvnni(__m256i acc, __m256i ux, __m256i w) {
    return _mm256_dpbusd_avx_epi32(acc, ux, w);
}
ROW_BODY(row_avxvnni, AVXVNNI, dot_avxvnni)
static void panel_avxvnni(const Gemv *g, Py_ssize_t p) {
    for (Py_ssize_t r = 0; r < g->m; r++) row_avxvnni(g, p, r);
}
#endif

/* AVX2 without VNNI: |x| times sign(w, x), pairs in int16 (no offset: it would saturate). */
AVX2 static void row_avx2(const Gemv *g, Py_ssize_t p, Py_ssize_t r) {
    const int8_t *w = panel_at(g, p), *x = g->x + r * g->k;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_si256();
    for (Py_ssize_t j = 0; j < g->quads; j++, w += PANEL_BYTES) {
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
static void panel_avx2(const Gemv *g, Py_ssize_t p) {
    for (Py_ssize_t r = 0; r < g->m; r++) row_avx2(g, p, r);
}

static int cpu_has(int level) {
    __builtin_cpu_init();
    switch (level) {
    case PATH_VNNI:
        return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx2");
#ifdef HAVE_AVXVNNI
    case PATH_AVXVNNI: return __builtin_cpu_supports("avxvnni") && __builtin_cpu_supports("avx2");
#endif
    case PATH_AVX2: return __builtin_cpu_supports("avx2");
    case PATH_PLAIN: return 1;
    default: return 0;
    }
}
#else
static int cpu_has(int level) { return level == PATH_PLAIN; }
#endif

static void gemv_panel(const Gemv *g, Py_ssize_t p) {
    switch (g->path) {
#ifdef HAVE_AVX2
    case PATH_VNNI: panel_vnni(g, p); return;
#ifdef HAVE_AVXVNNI
    case PATH_AVXVNNI: panel_avxvnni(g, p); return;
#endif
    case PATH_AVX2: panel_avx2(g, p); return;
#endif
    default: panel_plain(g, p);
    }
}

/* -- the thread pool ----------------------------------------------------------------------- */

/* Work is handed out in blocks claimed one at a time (a compare-and-swap on one word holding the
 * job's number and the next block), so a thread the scheduler keeps waiting costs nothing: the
 * others, the caller included, take its blocks (on a busy machine a fixed split waited a whole
 * time slice for its slowest part). A block is always computed whole by one thread, so the
 * integers are the same however the blocks are shared. */
#define MAX_THREADS 64
typedef void (*BlockFn)(void *arg, long block);

static struct {
    pthread_mutex_t mu, call;       /* mu guards sleeping and waking; call: one caller at a time */
    pthread_cond_t wake, done;
    int started;                    /* worker threads running (ids 1 .. started) */
    int threads;                    /* threads a call uses, the caller's included */
    unsigned long gen;              /* the job's number, bumped for each job */
    unsigned long long claim;       /* (job number mod 2**32) << 32 | next block */
    long blocks, finished;          /* blocks of the job, and how many are done */
    BlockFn fn;
    void *arg;
    long spin_ns;                   /* how long an idle worker polls before sleeping */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 1, 0, 0, 0, 0, NULL, NULL, 50000};

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static inline void relax(void) {
#ifdef HAVE_AVX2
    _mm_pause();
#endif
}

/* Claim and compute blocks of job `job` until none is left (or the job is no longer current:
 * then the claim fails, and nothing of a finished job is touched). */
static void take_blocks(unsigned long job) {
    const unsigned long long tag = (unsigned long long)(job & 0xffffffffUL) << 32;
    for (;;) {
        unsigned long long c = __atomic_load_n(&pool.claim, __ATOMIC_ACQUIRE);
        if ((c & 0xffffffff00000000ULL) != tag || (long)(c & 0xffffffffULL) >= __atomic_load_n(&pool.blocks, __ATOMIC_ACQUIRE))
            return;
        if (!__atomic_compare_exchange_n(&pool.claim, &c, c + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
        pool.fn(pool.arg, (long)(c & 0xffffffffULL));  /* the job stays put until its blocks are done */
        if (__atomic_add_fetch(&pool.finished, 1, __ATOMIC_ACQ_REL) == pool.blocks) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.mu);
        }
    }
}

static unsigned long start_gen[MAX_THREADS];  /* each worker's first `seen`: the job number when it was made */

static void *worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    unsigned long seen = start_gen[id];  /* a job posted before this thread ran is still seen as new */
    for (;;) {
        unsigned long g = __atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE);
        if (g == seen) {  /* poll a little (calls come in quick succession within a step), then sleep */
            long until = now_ns() + __atomic_load_n(&pool.spin_ns, __ATOMIC_RELAXED);
            for (int i = 0; g == seen; i++) {
                relax();
                g = __atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE);
                if ((i & 63) == 63 && now_ns() > until) break;
            }
            if (g == seen) {
                pthread_mutex_lock(&pool.mu);
                while (pool.gen == seen) pthread_cond_wait(&pool.wake, &pool.mu);
                g = pool.gen;
                pthread_mutex_unlock(&pool.mu);
            }
        }
        seen = g;
        take_blocks(g);
    }
    return NULL;
}

/* A forked child has no workers: start afresh (the parent's locks may be held by threads that
 * do not exist there). */
static void pool_after_fork(void) {
    pthread_mutex_init(&pool.mu, NULL);
    pthread_mutex_init(&pool.call, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.started = 0;
    pool.threads = 1;
}

static int pool_grow(int threads) {
    pthread_mutex_lock(&pool.call);
    while (pool.started + 1 < threads) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        start_gen[pool.started + 1] = pool.gen;  /* no job runs: we hold pool.call */
        int err = pthread_create(&t, &attr, worker, (void *)(intptr_t)(pool.started + 1));
        pthread_attr_destroy(&attr);
        if (err) break;
        pool.started++;
    }
    pool.threads = threads < pool.started + 1 ? threads : pool.started + 1;
    pthread_mutex_unlock(&pool.call);
    return pool.threads;
}

/* fn(arg, b) for b in [0, blocks): the caller and the pool's workers take blocks in turn. */
static void run_blocks(BlockFn fn, void *arg, long blocks, int threads) {
    if (threads > 1 && blocks > 1 && pool.started && pthread_mutex_trylock(&pool.call) == 0) {
        unsigned long job = pool.gen + 1;
        pool.fn = fn;
        pool.arg = arg;
        __atomic_store_n(&pool.finished, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&pool.blocks, blocks, __ATOMIC_RELEASE);
        __atomic_store_n(&pool.claim, (unsigned long long)(job & 0xffffffffUL) << 32, __ATOMIC_RELEASE);
        pthread_mutex_lock(&pool.mu);
        __atomic_store_n(&pool.gen, job, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.mu);
        take_blocks(job);
        long until = now_ns() + 200000;
        for (int i = 0; __atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE) < blocks; i++) {
            relax();
            if ((i & 63) == 63 && now_ns() > until) {
                pthread_mutex_lock(&pool.mu);
                while (__atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE) < blocks) pthread_cond_wait(&pool.done, &pool.mu);
                pthread_mutex_unlock(&pool.mu);
                break;
            }
        }
        pthread_mutex_unlock(&pool.call);
        return;
    }
    for (long b = 0; b < blocks; b++) fn(arg, b);  /* one thread, or the pool is busy (another caller) */
}

typedef struct {
    const Gemv *g;
    Py_ssize_t width;  /* panels per block */
} GemvJob;

static void gemv_block(void *arg, long block) {
    const GemvJob *job = (const GemvJob *)arg;
    const Py_ssize_t panels = (job->g->n + PANEL_COLUMNS - 1) / PANEL_COLUMNS;
    Py_ssize_t p0 = block * job->width, p1 = p0 + job->width < panels ? p0 + job->width : panels;
    for (Py_ssize_t p = p0; p < p1; p++) gemv_panel(job->g, p);
}

#define MIN_BLOCK_WEIGHTS 32768  /* a block reads at least this many weights (smaller products: one block) */

/* -- Python bindings -------------------------------------------------------------------------- */

static int parse_path(const char *path, int *level);
static int choose_path(int want);

/* products.h: the products for native callers (step.c), without the GIL. */
void semcodec_products(const int8_t *x, const Weights *w, int32_t *y, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                       int level) {
    if (!m || !n) return;
    if (!k) {
        memset(y, 0, (size_t)(m * n) * sizeof(int32_t));
        return;
    }
    Gemv g = {x, w->panels, w->colsum, y, m, k, n, (k + PANEL_DEPTH - 1) / PANEL_DEPTH, level};
    /* about 4 blocks per thread, each a whole number of panels and at least MIN_BLOCK_WEIGHTS weights */
    const int threads = pool.threads;
    const Py_ssize_t panels = (n + PANEL_COLUMNS - 1) / PANEL_COLUMNS;
    Py_ssize_t width = (panels + 4 * threads - 1) / (4 * threads);
    const Py_ssize_t least = (MIN_BLOCK_WEIGHTS + k * PANEL_COLUMNS - 1) / (k * PANEL_COLUMNS);
    width = width > least ? width : least;
    GemvJob job = {&g, width};
    run_blocks(gemv_block, &job, (long)((panels + width - 1) / width), threads);
}

void semcodec_run_blocks(void (*fn)(void *arg, long block), void *arg, long blocks) {
    run_blocks(fn, arg, blocks, pool.threads);
}

int semcodec_products_level(const char *path, int *level) {
    int want;
    if (parse_path(path, &want) < 0) return -1;
    *level = choose_path(want);
    return 0;
}

/* b is a C-contiguous array of `ndim` dimensions whose items are `itemsize` bytes of one of `formats`. */
static int check_buffer(const Py_buffer *b, const char *what, int ndim, Py_ssize_t itemsize, const char *formats) {
    const char *f = b->format ? b->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (b->ndim != ndim || b->itemsize != itemsize || strlen(f) != 1 || !strchr(formats, *f)) {
        PyErr_Format(PyExc_TypeError, "%s must be a %d-d C-contiguous %s array", what, ndim,
                     itemsize == 1 ? "int8" : "int32");
        return -1;
    }
    return 0;
}

static int parse_path(const char *path, int *level) {
    if (path == NULL) {
        *level = PATH_VNNI;
        return 0;
    }
    for (int i = 0; i <= PATH_VNNI; i++)
        if (!strcmp(path, PATH_NAMES[i])) {
            *level = i;
            return 0;
        }
    PyErr_Format(PyExc_ValueError, "unknown path %s (vnni, avxvnni, avx2 or plain)", path);
    return -1;
}

/* The widest path this CPU runs, at most `want` (avxvnni is not below vnni: a CPU may have either). */
static int choose_path(int want) {
    for (int level = want; level > PATH_PLAIN; level--)
        if (cpu_has(level)) return level;
    return PATH_PLAIN;
}

static PyObject *matmul(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x_obj, *p_obj, *c_obj, *out_obj;
    const char *path = NULL;
    if (!PyArg_ParseTuple(args, "OOOO|z:matmul", &x_obj, &p_obj, &c_obj, &out_obj, &path)) return NULL;
    int want;
    if (parse_path(path, &want) < 0) return NULL;
    Py_buffer b[4];
    PyObject *objs[4] = {x_obj, p_obj, c_obj, out_obj};
    int got = 0;
    PyObject *result = NULL;
    for (; got < 4; got++)
        if (PyObject_GetBuffer(objs[got], &b[got], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (got == 3 ? PyBUF_WRITABLE : 0)) < 0)
            goto done;
    if (check_buffer(&b[0], "x", 2, 1, "b") < 0 || check_buffer(&b[1], "panels", 4, 1, "b") < 0 ||
        check_buffer(&b[2], "colsum", 1, 4, "il") < 0 || check_buffer(&b[3], "out", 2, 4, "il") < 0)
        goto done;
    const Py_ssize_t m = b[0].shape[0], k = b[0].shape[1], n = b[3].shape[1];
    const Py_ssize_t *ps = b[1].shape;
    if (b[3].shape[0] != m || b[2].shape[0] != n || ps[0] != (n + PANEL_COLUMNS - 1) / PANEL_COLUMNS ||
        ps[1] != (k + PANEL_DEPTH - 1) / PANEL_DEPTH || ps[2] != PANEL_COLUMNS || ps[3] != PANEL_DEPTH) {
        PyErr_Format(PyExc_ValueError,
                     "shapes x (%zd, %zd), panels (%zd, %zd, %zd, %zd), colsum (%zd,), out (%zd, %zd) do not match", m,
                     k, ps[0], ps[1], ps[2], ps[3], b[2].shape[0], b[3].shape[0], n);
        goto done;
    }
    if (k > MAX_INNER) {
        PyErr_Format(PyExc_ValueError, "inner dimension %zd exceeds %d (int32 sums could wrap)", k, MAX_INNER);
        goto done;
    }
    const int8_t *x = (const int8_t *)b[0].buf;
    for (Py_ssize_t i = 0; i < m * k; i++)
        if (x[i] < -ACT_MAX) {
            PyErr_SetString(PyExc_ValueError, "activations must lie in [-127, 127]");
            goto done;
        }
    const int level = choose_path(want);
    const Weights w = {(const int8_t *)b[1].buf, (const int32_t *)b[2].buf};
    Py_BEGIN_ALLOW_THREADS
    semcodec_products(x, &w, (int32_t *)b[3].buf, m, k, n, level);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    while (got > 0) PyBuffer_Release(&b[--got]);
    return result;
}

static PyObject *weights_in_range(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    const char *f = b.format ? b.format : "B";
    if (b.itemsize != 1 || strcmp(f, "b")) {
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_TypeError, "weights must be a C-contiguous int8 array");
        return NULL;
    }
    const int8_t *w = (const int8_t *)b.buf;
    int low = 0;
    Py_BEGIN_ALLOW_THREADS
    int8_t least = 0;
    for (Py_ssize_t i = 0; i < b.len; i++) least = w[i] < least ? w[i] : least;
    low = least < -WEIGHT_MAX;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyBool_FromLong(!low);
}

static PyObject *set_threads(PyObject *self, PyObject *arg) {
    (void)self;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must lie in [1, %d]", MAX_THREADS);
        return NULL;
    }
    int got;
    Py_BEGIN_ALLOW_THREADS
    got = pool_grow((int)n);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(got);
}

static PyObject *get_threads(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    return PyLong_FromLong(pool.threads);
}

static PyObject *set_spin(PyObject *self, PyObject *arg) {
    (void)self;
    long us = PyLong_AsLong(arg);
    if (us == -1 && PyErr_Occurred()) return NULL;
    if (us < 0 || us > 1000000) {
        PyErr_SetString(PyExc_ValueError, "spin must lie in [0, 1000000] microseconds");
        return NULL;
    }
    __atomic_store_n(&pool.spin_ns, us * 1000, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyObject *vector_paths(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (int level = PATH_VNNI; level >= PATH_PLAIN; level--)
        if (cpu_has(level)) {
            PyObject *name = PyUnicode_FromString(PATH_NAMES[level]);
            if (!name || PyList_Append(out, name) < 0) {
                Py_XDECREF(name);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(name);
        }
    return out;
}

static PyMethodDef methods[] = {
    {"matmul", matmul, METH_VARARGS,
     "matmul(x, panels, colsum, out, path=None): out[m, n] = sum_k x[m, k] w[k, n] exactly; x (M, K) int8 in "
     "[-127, 127], w (K, N) int8 in [-127, 127] given as its panels (kernels.panel_layout; check once with "
     "weights_in_range) and its column sums colsum (N,) int32, out (M, N) int32; all C-contiguous. "
     "path: the widest code path to use (vnni, avxvnni, avx2, plain; default the widest this CPU runs)."},
    {"weights_in_range", weights_in_range, METH_O, "weights_in_range(w): True when no entry of int8 w is -128."},
    {"set_threads", set_threads, METH_O, "set_threads(n): use n threads (the caller's included); returns the count."},
    {"threads", get_threads, METH_NOARGS, "The threads a product uses (the caller's included)."},
    {"set_spin", set_spin, METH_O, "set_spin(us): how long an idle worker polls for the next product before sleeping."},
    {"vector_paths", vector_paths, METH_NOARGS, "The code paths this CPU runs, widest first (always ends in 'plain')."},
    {"step_model", semcodec_step_model, METH_VARARGS, SEMCODEC_STEP_MODEL_DOC},
    {"step", semcodec_step, METH_VARARGS, SEMCODEC_STEP_DOC},
    {"step_many", semcodec_step_many, METH_VARARGS, SEMCODEC_STEP_MANY_DOC},
    {"frequencies", semcodec_frequencies, METH_VARARGS, SEMCODEC_FREQUENCIES_DOC},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "semcodec.models._products",
    "Exact int8 x int8 -> int32 weight products (see semcodec.models.kernels.NativeProducts).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__products(void) {
    static int once = 0;
    if (!once) {
        pthread_atfork(NULL, NULL, pool_after_fork);
        once = 1;
    }
    return PyModule_Create(&module);
}
