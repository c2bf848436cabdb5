/* The weight products of products.c for other native kernels (step.c).
 *
 * The kernel layout of a (K, N) int8 weight matrix w (made once at conversion:
 * semcodec.models.kernels.panel_layout, stored in the converted cache):
 *     panels[p][j][c][i] = w[4 j + i][64 p + c], 0 where 4 j + i >= K or 64 p + c >= N,
 *     shape (ceil(N / 64), ceil(K / 4), 64, 4) int8, C order; colsum[n] = sum_k w[k][n] int32.
 * A panel is PANEL_COLUMNS = 64 output columns, its weights in quads of PANEL_DEPTH = 4
 * consecutive rows (one quad of one column: one int32 lane of vpdpbusd), read front to back.
 *
 * semcodec_products(x, w, y, m, k, n, level): y[m, n] = sum_k x[m, k] w[k, n], exact int32
 *     x (M, K) int8 in [-ACT_MAX, ACT_MAX], w's panels and column sums (entries in
 *     [-WEIGHT_MAX, WEIGHT_MAX]; the caller has checked both: bounds.h), y (M, N) int32, all
 *     C-contiguous; K <= MAX_INNER.
 *     Runs on the pool of products.c (set_threads); call it without the GIL.
 * semcodec_run_blocks(fn, arg, blocks): fn(arg, b) for every b in [0, blocks), shared by the
 *     same pool (each block whole on one thread); without the GIL.
 * semcodec_products_level(path, &level): the code path for a path name (NULL: the widest this
 *     CPU runs), capped by what the CPU has; -1 with a Python exception for an unknown name.
 */
#ifndef SEMCODEC_NATIVE_PRODUCTS_H
#define SEMCODEC_NATIVE_PRODUCTS_H

#include <Python.h>
#include <stdint.h>

/* The code paths, narrowest first (products.c's PATH_NAMES: "plain", "avx2", "avxvnni", "vnni"). */
enum { PATH_PLAIN = 0, PATH_AVX2 = 1, PATH_AVXVNNI = 2, PATH_VNNI = 3 };

#define PANEL_COLUMNS 64
#define PANEL_DEPTH 4

typedef struct {
    const int8_t *panels;   /* the layout above */
    const int32_t *colsum;  /* (N,) */
} Weights;

void semcodec_products(const int8_t *x, const Weights *w, int32_t *y, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                       int level);
void semcodec_run_blocks(void (*fn)(void *arg, long block), void *arg, long blocks);
int semcodec_products_level(const char *path, int *level);

#endif
