/* Attention over a text's own keys and values (own_attention.c), for the decode step (step.c),
 * one block of positions [t0, t1) of one layer at a time.
 *
 * Layouts (C-contiguous): q (KV, G, D) float64 holding integers |q| <= QK_LIMIT (row g of kv head
 * h is query head h G + g); k_layer, v_layer (positions, KV, D) int32, one layer of the cache,
 * |k| <= QK_LIMIT, |v| <= V_LIMIT; sc and p (KV G, T) int64, position t of head r at r T + t;
 * num (KV G, D) float64. Bounds (bounds.h): D <= MAX_DIM and a multiple of 8, G <= 8,
 * T <= MAX_POSITIONS; weights 0 <= p <= P_MAX.
 *
 *   scores   sc[r, t] = q[r] . k[t, r / G]                          for t in [t0, t1), exact int64
 *   maxima   top[r] = max over t in [t0, t1) of sc[r, t]           (rows = KV G)
 *   weights  p[r, t] = table[min((top - sc[r, t] + half) >> shift, last)]; returns their sum
 *   weigh    num[r, d] = sum over t in [t0, t1) of p[r, t] v[t, r / G, d]   (exact: < 2**53)
 *
 * path: OWN_PLAIN (C, int64), OWN_AVX2 (AVX2 + FMA, float64 on the same integers), OWN_AVX512;
 * semcodec_own_path caps a wanted path by what the CPU runs. Every path gives the same integers.
 */
#ifndef SEMCODEC_NATIVE_OWN_ATTENTION_H
#define SEMCODEC_NATIVE_OWN_ATTENTION_H

#include <Python.h>
#include <stdint.h>

enum { OWN_PLAIN = 0, OWN_AVX2 = 1, OWN_AVX512 = 2 };

int semcodec_own_path(int want);
void semcodec_own_scores(int path, const double *q, const int32_t *k_layer, Py_ssize_t KV, Py_ssize_t D, Py_ssize_t G,
                         Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, int64_t *sc);
void semcodec_own_maxima(int path, const int64_t *sc, Py_ssize_t rows, Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1,
                         int64_t *top);
int64_t semcodec_own_weights(int path, const int64_t *sc, int64_t top, int64_t half, int shift, const int64_t *table,
                             int64_t last, Py_ssize_t t0, Py_ssize_t t1, int64_t *p);
void semcodec_own_weigh(int path, const int64_t *p, const int32_t *v_layer, Py_ssize_t KV, Py_ssize_t D, Py_ssize_t G,
                        Py_ssize_t T, Py_ssize_t t0, Py_ssize_t t1, double *num);

#endif
