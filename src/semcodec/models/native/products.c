/* Exact int8 x int8 -> int32 weight products for the decode step (semcodec.models.kernels).
 *
 * matmul(x, w, out, path=None): out[m, n] = sum_k x[m, k] * w[k, n]
 *     x (M, K) int8, w (K, N) int8 (the converted cache's own layout, used in place: a
 *     memory-mapped matrix is read where it lies), out (M, N) int32; all C-contiguous.
 *
 * Exactness (bounds.h): |x| <= 127 (checked here on every call: -128 is refused) and
 * |w| <= 127 (the caller checks each matrix once: weights_in_range). Every path adds the same
 * integers, each sum below 2**31 in magnitude, in int32 lanes that neither saturate nor wrap,
 * so the result is the exact integer whatever the order:
 *
 * - avx2: four weight rows are interleaved in registers into byte quads (w[k..k+3, n]) and
 *   multiplied with vpmaddubsw(|x| as u8, sign(w, x) as s8): each int16 lane is the sum of two
 *   products, |.| <= 2 * 127 * 127 = 32258 <= 32767, so it never saturates; vpmaddwd with ones
 *   adds the two pairs into int32 (<= 64516) and vpaddd accumulates (<= K * 16129 < 2**31).
 * - avxvnni (VEX vpdpbusd) and vnni (AVX512-VNNI, 256-bit EVEX vpdpbusd): the same quads and
 *   operands; vpdpbusd adds the four u8 x s8 products into the int32 lane without saturation
 *   (the non-"s" form), the same integers as the avx2 path.
 * - plain: the C loop, int32 sums.
 *
 * Threads: the columns are cut into blocks (whole numbers of 32 columns) that a small pool of
 * pthreads (set_threads) and the caller claim one at a time, so a block's sums are computed
 * exactly as without threads and a thread kept waiting by the scheduler holds nobody up.
 * A second caller arriving while the pool is busy runs alone in its own thread. The GIL is
 * released while the products run.
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

#define BLOCK 32  /* columns per vector block (one 256-bit register of bytes per weight row) */

typedef struct {
    const int8_t *x, *w;
    int32_t *y;
    Py_ssize_t m, k, n;
    int path;
} Gemv;

/* -- plain C ----------------------------------------------------------------------------- */

static void gemv_plain(const Gemv *g, Py_ssize_t c0, Py_ssize_t c1) {
    for (Py_ssize_t r = 0; r < g->m; r++) {
        int32_t *y = g->y + r * g->n;
        const int8_t *x = g->x + r * g->k;
        for (Py_ssize_t c = c0; c < c1; c++) y[c] = 0;
        for (Py_ssize_t k = 0; k < g->k; k++) {
            int32_t xv = x[k];
            if (!xv) continue;
            const int8_t *w = g->w + k * g->n;
            for (Py_ssize_t c = c0; c < c1; c++) y[c] += xv * (int32_t)w[c];
        }
    }
}

/* -- vector paths ------------------------------------------------------------------------ */

#ifdef HAVE_AVX2
/* One loop body for every vector path; DOT(acc, ax, sw) adds the four products of each int32
 * lane's u8 quad ax (|x|) and s8 quad sw (sign(w, x)) to acc.
 *
 * Per 32 columns and 4 weight rows: r0..r3 hold w[k + j, c .. c + 31]; the byte and word
 * unpacks give q0..q3, whose int32 lanes are the quads (w[k, n], .., w[k + 3, n]) of columns
 * {c+0..3, c+16..19}, {c+4..7, c+20..23}, {c+8..11, c+24..27}, {c+12..15, c+28..31} (the unpacks
 * work within 128-bit halves); the stores put the halves back in column order.
 *
 * Loop order: CHUNK weight rows at a time across the part's whole column range, the partial
 * sums kept in `out` between chunks (int32: exact, the same integers in another order). Each
 * chunk reads CHUNK rows front to back (a few sequential streams, one page per 4 KB), where a
 * column block down all K rows would touch a new page at every row of a wide matrix (the
 * 49152-column output head). The chunk's quads of a 32-column block are interleaved once and
 * serve every row of x. A single row of a matrix of at most PANEL_MAX_N columns (every layer's)
 * goes down all K rows per column block instead (rows at most 8 KB apart: the stride prefetcher
 * follows, helped by a software prefetch PREFETCH_QUADS quads ahead), its sums kept in registers:
 * measured 17.5 -> 12.6 ms per step's products with the quad load below, then 10.2 -> 8.8 ms
 * with the prefetch (down 2.3 -> 1.6 ms, gate_up 4.5 -> 3.9 ms), on the 2-core EPYC (1 thread;
 * the 49152-column head stays in chunks: as a panel it took 3.6 ms instead of 2.4). A K not
 * divisible by 4 ends with a quad whose missing rows are zero vectors (no read past the matrix)
 * and whose missing x bytes are 0. */
#define CHUNK 16
/* Four activation bytes x[0..3] as one int32 (missing ones 0 when fewer than 4 are left); a
 * constant-size copy compiles to one load, where a variable size was a libc call per quad. */
static inline int32_t x_quad(const int8_t *x, Py_ssize_t left) {
    int32_t s = 0;
    if (left >= 4)
        memcpy(&s, x, 4);
    else
        memcpy(&s, x, (size_t)left);
    return s;
}
#define PREFETCH_QUADS 16  /* a single row's panel prefetches the quad of rows this far ahead */
#define PANEL_MAX_N 8192  /* widest matrix whose single-row product runs down all K per column block */
/* Partial sums of 32 columns between column order (in `out`) and the lanes' order (a0..a3). */
#define LOAD_ACC(y)                                                                                  \
    {                                                                                               \
        __m256i y0 = _mm256_loadu_si256((const __m256i *)(y)), y1 = _mm256_loadu_si256((const __m256i *)((y) + 8)); \
        __m256i y2 = _mm256_loadu_si256((const __m256i *)((y) + 16)), y3 = _mm256_loadu_si256((const __m256i *)((y) + 24)); \
        a0 = _mm256_permute2x128_si256(y0, y2, 0x20);                                               \
        a1 = _mm256_permute2x128_si256(y0, y2, 0x31);                                               \
        a2 = _mm256_permute2x128_si256(y1, y3, 0x20);                                               \
        a3 = _mm256_permute2x128_si256(y1, y3, 0x31);                                               \
    }
#define STORE_ACC(y)                                                                                 \
    {                                                                                               \
        _mm256_storeu_si256((__m256i *)(y), _mm256_permute2x128_si256(a0, a1, 0x20));               \
        _mm256_storeu_si256((__m256i *)((y) + 8), _mm256_permute2x128_si256(a2, a3, 0x20));         \
        _mm256_storeu_si256((__m256i *)((y) + 16), _mm256_permute2x128_si256(a0, a1, 0x31));        \
        _mm256_storeu_si256((__m256i *)((y) + 24), _mm256_permute2x128_si256(a2, a3, 0x31));        \
    }
#define GEMV_BODY(NAME, TARGET, DOT)                                                                 \
    TARGET static void NAME(const Gemv *g, Py_ssize_t c0, Py_ssize_t c1) {                          \
        const Py_ssize_t K = g->k, N = g->n, M = g->m;                                              \
        const Py_ssize_t cv = c0 + (c1 - c0) / BLOCK * BLOCK; /* vector blocks end here */          \
        const Py_ssize_t span = M == 1 && N <= PANEL_MAX_N ? K : CHUNK;                             \
        for (Py_ssize_t k0 = 0; k0 < K; k0 += span) {                                               \
            const Py_ssize_t k1 = k0 + span < K ? k0 + span : K, quads = (k1 - k0 + 3) / 4;         \
            for (Py_ssize_t c = c0; c < cv; c += BLOCK) {                                           \
                __m256i qb[CHUNK / 4][4];                                                           \
                const int8_t *wp = g->w + k0 * N + c;                                               \
                const int one = M == 1;                                                             \
                __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;                     \
                if (one && k0) LOAD_ACC(g->y + c)                                                   \
                for (Py_ssize_t j = 0; j < quads; j++, wp += 4 * N) {                               \
                    const Py_ssize_t left = k1 - k0 - 4 * j;                                        \
                    __m256i r0 = _mm256_loadu_si256((const __m256i *)wp);                           \
                    __m256i r1 = left > 1 ? _mm256_loadu_si256((const __m256i *)(wp + N)) : _mm256_setzero_si256(); \
                    __m256i r2 = left > 2 ? _mm256_loadu_si256((const __m256i *)(wp + 2 * N)) : _mm256_setzero_si256(); \
                    __m256i r3 = left > 3 ? _mm256_loadu_si256((const __m256i *)(wp + 3 * N)) : _mm256_setzero_si256(); \
                    __m256i lo01 = _mm256_unpacklo_epi8(r0, r1), hi01 = _mm256_unpackhi_epi8(r0, r1); \
                    __m256i lo23 = _mm256_unpacklo_epi8(r2, r3), hi23 = _mm256_unpackhi_epi8(r2, r3); \
                    __m256i q0 = _mm256_unpacklo_epi16(lo01, lo23), q1 = _mm256_unpackhi_epi16(lo01, lo23); \
                    __m256i q2 = _mm256_unpacklo_epi16(hi01, hi23), q3 = _mm256_unpackhi_epi16(hi01, hi23); \
                    if (one) {                                                                      \
                        if (PREFETCH_QUADS && j + PREFETCH_QUADS < quads) {                         \
                            const char *pf = (const char *)(wp + PREFETCH_QUADS * 4 * N);           \
                            _mm_prefetch(pf, _MM_HINT_T0);                                          \
                            _mm_prefetch(pf + N, _MM_HINT_T0);                                      \
                            _mm_prefetch(pf + 2 * N, _MM_HINT_T0);                                  \
                            _mm_prefetch(pf + 3 * N, _MM_HINT_T0);                                  \
                        }                                                                           \
                        const int32_t s = x_quad(g->x + k0 + 4 * j, left);                         \
                        __m256i sx = _mm256_set1_epi32(s), ax = _mm256_abs_epi8(sx);                \
                        a0 = DOT(a0, ax, _mm256_sign_epi8(q0, sx));                                 \
                        a1 = DOT(a1, ax, _mm256_sign_epi8(q1, sx));                                 \
                        a2 = DOT(a2, ax, _mm256_sign_epi8(q2, sx));                                 \
                        a3 = DOT(a3, ax, _mm256_sign_epi8(q3, sx));                                 \
                    } else {                                                                        \
                        qb[j][0] = q0, qb[j][1] = q1, qb[j][2] = q2, qb[j][3] = q3;                 \
                    }                                                                               \
                }                                                                                   \
                if (one) {                                                                          \
                    STORE_ACC(g->y + c)                                                             \
                    continue;                                                                       \
                }                                                                                   \
                for (Py_ssize_t r = 0; r < M; r++) {                                                \
                    int32_t *y = g->y + r * N + c;                                                  \
                    const int8_t *x = g->x + r * K + k0;                                            \
                    a0 = a1 = a2 = a3 = _mm256_setzero_si256();                                     \
                    if (k0) LOAD_ACC(y)                                                             \
                    for (Py_ssize_t j = 0; j < quads; j++) {                                        \
                        const Py_ssize_t left = k1 - k0 - 4 * j;                                    \
                        const int32_t s = x_quad(x + 4 * j, left);                                  \
                        __m256i sx = _mm256_set1_epi32(s), ax = _mm256_abs_epi8(sx);                \
                        a0 = DOT(a0, ax, _mm256_sign_epi8(qb[j][0], sx));                           \
                        a1 = DOT(a1, ax, _mm256_sign_epi8(qb[j][1], sx));                           \
                        a2 = DOT(a2, ax, _mm256_sign_epi8(qb[j][2], sx));                           \
                        a3 = DOT(a3, ax, _mm256_sign_epi8(qb[j][3], sx));                           \
                    }                                                                               \
                    STORE_ACC(y)                                                                    \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
        if (cv < c1) gemv_plain(g, cv, c1); /* fewer than 32 columns left */                        \
    }
#define AVX2 __attribute__((target("avx2")))
AVX2 static inline __m256i dot_avx2(__m256i acc, __m256i ax, __m256i sw) {
    /* pairs: |.| <= 32258, no saturation; then int32 sums of the two pairs */
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1)));
}
GEMV_BODY(gemv_avx2, AVX2, dot_avx2)

#define VNNI __attribute__((target("avx2,avx512f,avx512vl,avx512vnni")))
VNNI static inline __m256i dot_vnni(__m256i acc, __m256i ax, __m256i sw) { return _mm256_dpbusd_epi32(acc, ax, sw); }
GEMV_BODY(gemv_vnni, VNNI, dot_vnni)

#ifdef HAVE_AVXVNNI
#define AVXVNNI __attribute__((target("avx2,avxvnni")))
AVXVNNI static inline __m256i dot_avxvnni(__m256i acc, __m256i ax, __m256i sw) {
    return _mm256_dpbusd_avx_epi32(acc, ax, sw);
}
GEMV_BODY(gemv_avxvnni, AVXVNNI, dot_avxvnni)
#endif

static int cpu_has(int level) {
    __builtin_cpu_init();
    switch (level) {
    case PATH_VNNI:
        return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2");
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

static void gemv_columns(const Gemv *g, Py_ssize_t c0, Py_ssize_t c1) {
    switch (g->path) {
#ifdef HAVE_AVX2
    case PATH_VNNI: gemv_vnni(g, c0, c1); return;
#ifdef HAVE_AVXVNNI
    case PATH_AVXVNNI: gemv_avxvnni(g, c0, c1); return;
#endif
    case PATH_AVX2: gemv_avx2(g, c0, c1); return;
#endif
    default: gemv_plain(g, c0, c1);
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
    Py_ssize_t width;  /* columns per block: a multiple of BLOCK */
} GemvJob;

static void gemv_block(void *arg, long block) {
    const GemvJob *job = (const GemvJob *)arg;
    Py_ssize_t c0 = block * job->width, c1 = c0 + job->width < job->g->n ? c0 + job->width : job->g->n;
    gemv_columns(job->g, c0, c1);
}

#define MIN_BLOCK_WEIGHTS 32768  /* a block reads at least this many weights (smaller products: one block) */

/* -- Python bindings -------------------------------------------------------------------------- */

static int parse_path(const char *path, int *level);
static int choose_path(int want);

/* products.h: the products for native callers (step.c), without the GIL. */
void semcodec_products(const int8_t *x, const int8_t *w, int32_t *y, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                       int level) {
    if (!m || !n) return;
    if (!k) {
        memset(y, 0, (size_t)(m * n) * sizeof(int32_t));
        return;
    }
    Gemv g = {x, w, y, m, k, n, level};
    /* about 4 blocks per thread, each a whole number of 32-column blocks and at least
     * MIN_BLOCK_WEIGHTS weights */
    int threads = pool.threads;
    Py_ssize_t width = (n + 4 * threads - 1) / (4 * threads);
    Py_ssize_t least = (MIN_BLOCK_WEIGHTS + k - 1) / k;
    width = width > least ? width : least;
    width = (width + BLOCK - 1) / BLOCK * BLOCK;
    GemvJob job = {&g, width};
    run_blocks(gemv_block, &job, (long)((n + width - 1) / width), threads);
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

static int check_buffer(const Py_buffer *b, const char *what, Py_ssize_t itemsize, const char *formats) {
    const char *f = b->format ? b->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (b->ndim != 2 || b->itemsize != itemsize || strlen(f) != 1 || !strchr(formats, *f)) {
        PyErr_Format(PyExc_TypeError, "%s must be a 2-d C-contiguous %s array", what,
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
    PyObject *x_obj, *w_obj, *out_obj;
    const char *path = NULL;
    if (!PyArg_ParseTuple(args, "OOO|z:matmul", &x_obj, &w_obj, &out_obj, &path)) return NULL;
    int want;
    if (parse_path(path, &want) < 0) return NULL;
    Py_buffer xb, wb, ob;
    if (PyObject_GetBuffer(x_obj, &xb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(w_obj, &wb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&xb);
        return NULL;
    }
    if (PyObject_GetBuffer(out_obj, &ob, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&xb);
        PyBuffer_Release(&wb);
        return NULL;
    }
    PyObject *result = NULL;
    if (check_buffer(&xb, "x", 1, "b") < 0 || check_buffer(&wb, "w", 1, "b") < 0 ||
        check_buffer(&ob, "out", 4, "il"))
        goto done;
    Py_ssize_t m = xb.shape[0], k = xb.shape[1], n = wb.shape[1];
    if (wb.shape[0] != k || ob.shape[0] != m || ob.shape[1] != n) {
        PyErr_Format(PyExc_ValueError, "shapes x (%zd, %zd), w (%zd, %zd), out (%zd, %zd) do not match", m, k,
                     wb.shape[0], n, ob.shape[0], ob.shape[1]);
        goto done;
    }
    if (k > MAX_INNER) {
        PyErr_Format(PyExc_ValueError, "inner dimension %zd exceeds %d (int32 sums could wrap)", k, MAX_INNER);
        goto done;
    }
    const int8_t *x = (const int8_t *)xb.buf;
    for (Py_ssize_t i = 0; i < m * k; i++)
        if (x[i] < -ACT_MAX) {
            PyErr_SetString(PyExc_ValueError, "activations must lie in [-127, 127]");
            goto done;
        }
    const int level = choose_path(want);
    Py_BEGIN_ALLOW_THREADS
    semcodec_products(x, (const int8_t *)wb.buf, (int32_t *)ob.buf, m, k, n, level);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&xb);
    PyBuffer_Release(&wb);
    PyBuffer_Release(&ob);
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
     "matmul(x, w, out, path=None): out[m, n] = sum_k x[m, k] w[k, n] exactly; x (M, K) int8 in [-127, 127], "
     "w (K, N) int8 in [-127, 127] (check once with weights_in_range), out (M, N) int32; all C-contiguous. "
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
