/* The weight products' kernels (panels.c): int8 x int8 -> int32 on the panel layout, one code
 * path per function, without Python or threads. Bounds: bounds.h.
 *
 * Layout of a (K, N) int8 weight matrix w (made once at conversion:
 * semcodec.models.kernels.panel_layout, stored in the converted cache):
 *     panels[p][j][c][i] = w[4 j + i][64 p + c], 0 where 4 j + i >= K or 64 p + c >= N,
 *     shape (ceil(N / 64), ceil(K / 4), 64, 4) int8, C order; colsum[n] = sum_k w[k][n] int32.
 * A panel is PANEL_COLUMNS = 64 output columns, its weights in quads of PANEL_DEPTH = 4
 * consecutive rows (one quad of one column: one int32 lane of vpdpbusd or sdot), read front to
 * back. Panel buffers should be 64-byte aligned (the cache's are): any alignment is correct.
 *
 * semcodec_panel(g, p): y[r][64 p + c] = sum_k x[r][k] w[k][64 p + c] for every row r < M and
 *     every column of panel p that exists (< N), exact int32, on code path g->path, which the
 *     caller has checked with semcodec_panels_cpu_has. x in [-ACT_MAX, ACT_MAX], w in
 *     [-WEIGHT_MAX, WEIGHT_MAX], K <= MAX_INNER (the caller checks all three).
 * semcodec_panels_cpu_has(path): whether this CPU (and this build) runs the path.
 */
#ifndef SEMCODEC_NATIVE_PANELS_H
#define SEMCODEC_NATIVE_PANELS_H

#include <stddef.h>
#include <stdint.h>

#define PANEL_COLUMNS 64
#define PANEL_DEPTH 4

/* The code paths, narrowest first (products.c's PATH_NAMES); NEON is arm64's only vector path. */
enum { PATH_PLAIN = 0, PATH_AVX2 = 1, PATH_AVXVNNI = 2, PATH_VNNI = 3, PATH_NEON = 4 };

typedef struct {
    const int8_t *x;       /* (M, K) */
    const int8_t *panels;  /* the layout above */
    const int32_t *colsum; /* (N,) */
    int32_t *y;            /* (M, N) */
    ptrdiff_t m, k, n, quads;  /* quads = ceil(K / 4) */
    int path;
} Gemv;

void semcodec_panel(const Gemv *g, ptrdiff_t p);
int semcodec_panels_cpu_has(int level);

#endif
