/* Exact int8 x int8 -> int32 weight products for the decode step (semcodec.models.kernels):
 * the Python module, the thread pool and the checks around the kernels of panels.c.
 *
 * matmul(x, panels, colsum, out, path=None): out[m, n] = sum_k x[m, k] * w[k, n]
 *     x (M, K) int8, w given in the kernel layout of panels.h (`panels`, made once at conversion
 *     and stored in the converted cache, so a memory-mapped matrix is read where it lies) with its
 *     column sums `colsum` (N,) int32, out (M, N) int32; all C-contiguous.
 *
 * Exactness (bounds.h): |x| <= 127 (checked here on every call: -128 is refused), |w| <= 127
 * (the caller checks each matrix once: weights_in_range) and K <= MAX_INNER (checked here);
 * panels.c's opening comment gives each path's argument.
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

static const char *const PATH_NAMES[] = {"plain", "avx2", "avxvnni", "vnni", "neon"};  /* panels.h's order */

/* A spinning thread's pause (kinder to a sibling hyperthread). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
static inline void relax(void) { __builtin_ia32_pause(); }
#elif defined(__GNUC__) && defined(__aarch64__)
static inline void relax(void) { __asm__ __volatile__("yield"); }
#else
static inline void relax(void) {}
#endif

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
    for (Py_ssize_t p = p0; p < p1; p++) semcodec_panel(job->g, p);
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
        *level = PATH_NEON;
        return 0;
    }
    for (int i = 0; i <= PATH_NEON; i++)
        if (!strcmp(path, PATH_NAMES[i])) {
            *level = i;
            return 0;
        }
    PyErr_Format(PyExc_ValueError, "unknown path %s (neon, vnni, avxvnni, avx2 or plain)", path);
    return -1;
}

/* The widest path this CPU runs, at most `want` (avxvnni is not below vnni: a CPU may have either). */
static int choose_path(int want) {
    for (int level = want; level > PATH_PLAIN; level--)
        if (semcodec_panels_cpu_has(level)) return level;
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
    for (int level = PATH_NEON; level >= PATH_PLAIN; level--)
        if (semcodec_panels_cpu_has(level)) {
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
     "path: the widest code path to use (neon, vnni, avxvnni, avx2, plain; default the widest this CPU runs)."},
    {"weights_in_range", weights_in_range, METH_O, "weights_in_range(w): True when no entry of int8 w is -128."},
    {"set_threads", set_threads, METH_O, "set_threads(n): use n threads (the caller's included); returns the count."},
    {"threads", get_threads, METH_NOARGS, "The threads a product uses (the caller's included)."},
    {"set_spin", set_spin, METH_O, "set_spin(us): how long an idle worker polls for the next product before sleeping."},
    {"vector_paths", vector_paths, METH_NOARGS, "The code paths this CPU runs, widest first (always ends in 'plain')."},
    {"step_model", semcodec_step_model, METH_VARARGS, SEMCODEC_STEP_MODEL_DOC},
    {"step", semcodec_step, METH_VARARGS, SEMCODEC_STEP_DOC},
    {"step_many", semcodec_step_many, METH_VARARGS, SEMCODEC_STEP_MANY_DOC},
    {"frequencies", semcodec_frequencies, METH_VARARGS, SEMCODEC_FREQUENCIES_DOC},
    {"head_frequencies", semcodec_head_frequencies, METH_VARARGS, SEMCODEC_HEAD_FREQUENCIES_DOC},
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
