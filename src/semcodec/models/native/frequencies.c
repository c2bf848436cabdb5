/* Frequency tables from logits (SPEC section 5, step 6), the numpy reference's arithmetic in its
 * order (semcodec.models.exact.ExactLM.frequencies), each row alone (rows spread over the pool):
 *
 *   pass 1: m = max l (a logit that is not finite: return False, numpy decides);
 *           n_j = rint(min((m - l_j) * scale, L - 1)) (binary64: one subtraction, one product by a
 *           power of two, both exact or correctly rounded as numpy's); e_j = table[n_j], kept in
 *           out; the sum of e and the first index of the largest e;
 *   pass 2: g_j = floor(e_j * free / sum) (int64, both non-negative: C's division is floor),
 *           free = 2**precision_bits - V; the remainder free - sum(g) goes to the first largest e;
 *           f_j = g_j + 1.
 *
 * rint is libm's under the process's rounding mode, checked to be round-to-nearest-even where the
 * runtime loads (semcodec.models.exact), as numpy's rint is; the build has -ffp-contract=off. */
#define PY_SSIZE_T_CLEAN
#include "frequencies.h"
#include "buffers.h"
#include "products.h"

#include <math.h>
#include <stdint.h>

/* Where a row's logits come from: given (logits), or made from the output head's exact products
 * as ExactLM._matmul makes them, l_j = ((double)acc_j * x_scale) * w_scale_j (two correctly
 * rounded products in that order, no contraction: numpy's astype and two in-place multiplies). */
typedef struct {
    const double *logits;    /* (N, V), or NULL: from acc */
    const int32_t *acc;      /* (N, V) */
    const double *x_scale;   /* (N,) */
    const double *w_scale;   /* (V,) */
} Source;

static inline __attribute__((always_inline)) double logit(const Source *src, Py_ssize_t row, Py_ssize_t V,
                                                          Py_ssize_t j, const int from_products) {
    if (from_products) return ((double)src->acc[row * V + j] * src->x_scale[row]) * src->w_scale[j];
    return src->logits[row * V + j];
}

/* One row's table; 0 (out undefined) when a logit is not finite. Always inlined with a constant
 * from_products, so each caller is its own loop with no test in it. */
static inline __attribute__((always_inline)) int row_tables(const Source *src, Py_ssize_t row, Py_ssize_t V,
                                                            const int64_t *table, Py_ssize_t L, double scale,
                                                            int64_t free_mass, int32_t *out,
                                                            const int from_products) {
    double m = logit(src, row, V, 0, from_products);
    for (Py_ssize_t j = 0; j < V; j++) {
        const double l = logit(src, row, V, j, from_products);
        if (!isfinite(l)) return 0;
        if (l > m) m = l;
    }
    const double last = (double)(L - 1);
    int64_t total = 0, best = -1;
    Py_ssize_t first = 0;
    for (Py_ssize_t j = 0; j < V; j++) {
        double d = (m - logit(src, row, V, j, from_products)) * scale;
        if (d > last) d = last; /* np.minimum; d >= 0 */
        const int64_t e = table[(Py_ssize_t)rint(d)];
        out[j] = (int32_t)e;
        total += e;
        if (e > best) best = e, first = j;
    }
    int64_t given = 0;
    for (Py_ssize_t j = 0; j < V; j++) {
        const int64_t g = (int64_t)out[j] * free_mass / total;
        out[j] = (int32_t)g;
        given += g;
    }
    out[first] += (int32_t)(free_mass - given);
    for (Py_ssize_t j = 0; j < V; j++) out[j] += 1;
    return 1;
}

/* Rows are independent: each is computed from its own logits into its own table, so handing
 * them to the products' thread pool (products.h) changes no bit. */
typedef struct {
    Source src;
    Py_ssize_t V;
    const int64_t *table;
    Py_ssize_t L;
    double scale;
    int64_t free_mass;
    int32_t *out;
    int not_finite; /* set (atomically) by any row with a logit that is not finite */
} RowsJob;

#define ROW_BLOCK(NAME, FROM_PRODUCTS)                                                                 \
    static void NAME(void *arg, long row) {                                                           \
        RowsJob *job = (RowsJob *)arg;                                                                \
        if (__atomic_load_n(&job->not_finite, __ATOMIC_RELAXED)) return; /* numpy redoes every row */ \
        if (!row_tables(&job->src, row, job->V, job->table, job->L, job->scale, job->free_mass,        \
                        job->out + row * job->V, FROM_PRODUCTS))                                      \
            __atomic_store_n(&job->not_finite, 1, __ATOMIC_RELEASE);                                  \
    }
ROW_BLOCK(row_block_logits, 0)
ROW_BLOCK(row_block_products, 1)

/* What an entry point wants of one argument: a C-contiguous view with `ndim` dimensions and
 * items of `kind` (holds), writable or not; `name` is what a refusal calls it. */
typedef struct {
    int writable;
    char kind;
    int ndim;
    const char *name;
} Want;

static void release_views(Py_buffer *views, int n) {
    while (n > 0) PyBuffer_Release(&views[--n]);
}

/* Views of objs[0 .. n) as `want` says; 0 with an exception set and none held if one fails. */
static int get_views(PyObject *const *objs, const Want *want, Py_buffer *views, int n) {
    for (int i = 0; i < n; i++) {
        const Want *w = &want[i];
        const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (w->writable ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objs[i], &views[i], flags) < 0) {
            release_views(views, i);
            return 0;
        }
        if (views[i].ndim != w->ndim || !holds(&views[i], w->kind)) {
            PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous %d-d %s array", w->name, w->ndim,
                         w->kind == 'd' ? "float64" : w->kind == 'q' ? "int64" : "int32");
            release_views(views, i + 1);
            return 0;
        }
    }
    return 1;
}

/* The checks both entry points share, then every row on the pool. */
static PyObject *run_tables(RowsJob *job, void (*block)(void *, long), Py_ssize_t N, Py_buffer *tv, Py_buffer *ov,
                            int bits) {
    const Py_ssize_t V = job->V, L = tv->shape[0];
    const int64_t *table = tv->buf;
    int bad = ov->shape[0] != N || ov->shape[1] != V || V < 1 || L < 1 || bits < 1 || bits > 30 ||
              V >= ((Py_ssize_t)1 << bits) || !(job->scale > 0);
    for (Py_ssize_t i = 0; !bad && i < L; i++) bad = table[i] < 0 || table[i] > ((int64_t)1 << bits);
    if (!bad) bad = table[0] < 1; /* the largest e of every row is table[0] > 0: the sum is positive */
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "frequencies: shapes, table or precision out of bounds");
        return NULL;
    }
    job->table = table;
    job->L = L;
    job->free_mass = ((int64_t)1 << bits) - V;
    job->out = ov->buf;
    Py_BEGIN_ALLOW_THREADS
    semcodec_run_blocks(block, job, (long)N);  /* rows on the products' pool: each row alone */
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(!__atomic_load_n(&job->not_finite, __ATOMIC_ACQUIRE));
}

PyObject *semcodec_frequencies(PyObject *self, PyObject *args) {
    (void)self;
    static const Want want[3] = {{0, 'd', 2, "logits"}, {0, 'q', 1, "table"}, {1, 'i', 2, "out"}};
    PyObject *objs[3];
    double scale;
    int bits;
    if (!PyArg_ParseTuple(args, "OOdiO", &objs[0], &objs[1], &scale, &bits, &objs[2])) return NULL;
    Py_buffer v[3];
    if (!get_views(objs, want, v, 3)) return NULL;
    RowsJob job = {{v[0].buf, NULL, NULL, NULL}, v[0].shape[1], NULL, 0, scale, 0, NULL, 0};
    PyObject *res = run_tables(&job, row_block_logits, v[0].shape[0], &v[1], &v[2], bits);
    release_views(v, 3);
    return res;
}

PyObject *semcodec_head_frequencies(PyObject *self, PyObject *args) {
    (void)self;
    static const Want want[5] = {{0, 'i', 2, "acc"}, {0, 'd', 1, "x_scale"}, {0, 'd', 1, "w_scale"},
                                 {0, 'q', 1, "table"}, {1, 'i', 2, "out"}};
    PyObject *objs[5];
    double scale;
    int bits;
    if (!PyArg_ParseTuple(args, "OOOOdiO", &objs[0], &objs[1], &objs[2], &objs[3], &scale, &bits, &objs[4]))
        return NULL;
    Py_buffer v[5];
    if (!get_views(objs, want, v, 5)) return NULL;
    PyObject *res = NULL;
    if (v[1].shape[0] != v[0].shape[0] || v[2].shape[0] != v[0].shape[1]) {
        PyErr_SetString(PyExc_ValueError, "head_frequencies: x_scale must be (N,) and w_scale (V,) for acc (N, V)");
    } else {
        RowsJob job = {{NULL, v[0].buf, v[1].buf, v[2].buf}, v[0].shape[1], NULL, 0, scale, 0, NULL, 0};
        res = run_tables(&job, row_block_products, v[0].shape[0], &v[3], &v[4], bits);
    }
    release_views(v, 5);
    return res;
}
