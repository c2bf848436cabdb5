/* The weight products of products.c for other native kernels (step.c).
 *
 * The layout of the weights and the code paths: panels.h.
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

#include "panels.h"

typedef struct {
    const int8_t *panels;   /* panels.h's layout */
    const int32_t *colsum;  /* (N,) */
} Weights;

void semcodec_products(const int8_t *x, const Weights *w, int32_t *y, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n,
                       int level);
void semcodec_run_blocks(void (*fn)(void *arg, long block), void *arg, long blocks);
int semcodec_products_level(const char *path, int *level);

#endif
