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

static int row_tables(const double *l, Py_ssize_t V, const int64_t *table, Py_ssize_t L, double scale,
                      int64_t free_mass, int32_t *out) {
    double m = l[0];
    for (Py_ssize_t j = 0; j < V; j++) {
        if (!isfinite(l[j])) return 0;
        if (l[j] > m) m = l[j];
    }
    const double last = (double)(L - 1);
    int64_t total = 0, best = -1;
    Py_ssize_t first = 0;
    for (Py_ssize_t j = 0; j < V; j++) {
        double d = (m - l[j]) * scale;
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
    const double *logits;
    Py_ssize_t V;
    const int64_t *table;
    Py_ssize_t L;
    double scale;
    int64_t free_mass;
    int32_t *out;
    int not_finite; /* set (atomically) by any row with a logit that is not finite */
} RowsJob;

static void row_block(void *arg, long row) {
    RowsJob *job = (RowsJob *)arg;
    if (__atomic_load_n(&job->not_finite, __ATOMIC_RELAXED)) return; /* numpy redoes every row */
    if (!row_tables(job->logits + row * job->V, job->V, job->table, job->L, job->scale, job->free_mass,
                    job->out + row * job->V))
        __atomic_store_n(&job->not_finite, 1, __ATOMIC_RELEASE);
}

/* A C-contiguous view of `obj` with `ndim` dimensions and items of `kind` (holds). */
static int get_buffer(PyObject *obj, Py_buffer *view, int writable, char kind, int ndim, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return 0;
    if (view->ndim != ndim || !holds(view, kind)) {
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous %d-d %s array", name, ndim,
                     kind == 'd' ? "float64" : kind == 'q' ? "int64" : "int32");
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

PyObject *semcodec_frequencies(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *lo, *to, *oo;
    double scale;
    int bits;
    if (!PyArg_ParseTuple(args, "OOdiO", &lo, &to, &scale, &bits, &oo)) return NULL;
    Py_buffer lv, tv, ov;
    if (!get_buffer(lo, &lv, 0, 'd', 2, "logits")) return NULL;
    if (!get_buffer(to, &tv, 0, 'q', 1, "table")) {
        PyBuffer_Release(&lv);
        return NULL;
    }
    if (!get_buffer(oo, &ov, 1, 'i', 2, "out")) {
        PyBuffer_Release(&lv);
        PyBuffer_Release(&tv);
        return NULL;
    }
    const Py_ssize_t N = lv.shape[0], V = lv.shape[1], L = tv.shape[0];
    const int64_t *table = tv.buf;
    int bad = ov.shape[0] != N || ov.shape[1] != V || V < 1 || L < 1 || bits < 1 || bits > 30 ||
              V >= ((Py_ssize_t)1 << bits) || !(scale > 0);
    for (Py_ssize_t i = 0; !bad && i < L; i++) bad = table[i] < 0 || table[i] > ((int64_t)1 << bits);
    if (!bad) bad = table[0] < 1; /* the largest e of every row is table[0] > 0: the sum is positive */
    if (bad) {
        PyBuffer_Release(&lv);
        PyBuffer_Release(&tv);
        PyBuffer_Release(&ov);
        PyErr_SetString(PyExc_ValueError, "frequencies: shapes, table or precision out of bounds");
        return NULL;
    }
    RowsJob job = {lv.buf, V, table, L, scale, ((int64_t)1 << bits) - V, ov.buf, 0};
    Py_BEGIN_ALLOW_THREADS
    semcodec_run_blocks(row_block, &job, (long)N);  /* rows on the products' pool: each row alone */
    Py_END_ALLOW_THREADS
    const int ok = !__atomic_load_n(&job.not_finite, __ATOMIC_ACQUIRE);
    PyBuffer_Release(&lv);
    PyBuffer_Release(&tv);
    PyBuffer_Release(&ov);
    return PyBool_FromLong(ok);
}
