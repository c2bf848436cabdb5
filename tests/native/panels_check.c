/* Every code path of native/panels.c this CPU runs against exact int64 sums, without Python: the
 * check tests/test_native_products.py compiles and runs natively and, where a cross compiler and
 * qemu are installed, for arm64 under emulation (the NEON sdot path, which no CI machine here
 * runs natively); and built with -DSEMCODEC_EMULATE_AVXVNNI, the AVX-VNNI path with its one
 * instruction done exactly in AVX2 (no CPU or emulator here has AVX-VNNI).
 *
 * Cases: the format's worst case (|x| = |w| = 127 of one sign over K = 1536), mixed signs, the
 * model's shapes, and random shapes with tails in K (not a multiple of 4) and N (not of 64),
 * 1 to 9 rows. Prints one line per path; exits 1 on any mismatch, 2 when only plain C runs
 * (so a caller can tell a vector path was never checked).
 *
 *     cc -O2 -Isrc/semcodec/models/native tests/native/panels_check.c src/semcodec/models/native/panels.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "panels.h"

static const char *const NAMES[] = {"plain", "avx2", "avxvnni", "vnni", "neon"};

static uint64_t state = 0x9E3779B97F4A7C15ull;
static int8_t random_byte(void) {  /* in [-127, 127] */
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return (int8_t)((int)(state % 255) - 127);
}

/* panels.h's layout of w (K, N), zero-padded, 64-byte aligned. */
static int8_t *lay_out(const int8_t *w, ptrdiff_t k, ptrdiff_t n, ptrdiff_t *quads) {
    const ptrdiff_t q = (k + PANEL_DEPTH - 1) / PANEL_DEPTH, panels = (n + PANEL_COLUMNS - 1) / PANEL_COLUMNS;
    const size_t bytes = (size_t)(panels * q * PANEL_COLUMNS * PANEL_DEPTH);
    int8_t *out = aligned_alloc(64, (bytes + 63) / 64 * 64);
    memset(out, 0, bytes);
    for (ptrdiff_t p = 0; p < panels; p++)
        for (ptrdiff_t j = 0; j < q; j++)
            for (ptrdiff_t c = 0; c < PANEL_COLUMNS; c++)
                for (ptrdiff_t i = 0; i < PANEL_DEPTH; i++) {
                    const ptrdiff_t row = PANEL_DEPTH * j + i, col = PANEL_COLUMNS * p + c;
                    if (row < k && col < n)
                        out[((p * q + j) * PANEL_COLUMNS + c) * PANEL_DEPTH + i] = w[row * n + col];
                }
    *quads = q;
    return out;
}

/* 1 when every path agrees with the int64 sums on x (M, K) and w (K, N). */
static int check(const int8_t *x, const int8_t *w, ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, int *ran) {
    int64_t *want = calloc((size_t)(m * n), sizeof(int64_t));
    int32_t *colsum = calloc((size_t)n, sizeof(int32_t)), *y = malloc((size_t)(m * n) * sizeof(int32_t));
    for (ptrdiff_t r = 0; r < m; r++)
        for (ptrdiff_t kk = 0; kk < k; kk++)
            for (ptrdiff_t c = 0; c < n; c++) want[r * n + c] += (int64_t)x[r * k + kk] * w[kk * n + c];
    for (ptrdiff_t kk = 0; kk < k; kk++)
        for (ptrdiff_t c = 0; c < n; c++) colsum[c] += w[kk * n + c];
    ptrdiff_t quads;
    int8_t *panels = lay_out(w, k, n, &quads);
    int ok = 1;
    for (int path = PATH_PLAIN; path <= PATH_NEON; path++) {
        if (!semcodec_panels_cpu_has(path)) continue;
        ran[path] = 1;
        Gemv g = {x, panels, colsum, y, m, k, n, quads, path};
        memset(y, 0x55, (size_t)(m * n) * sizeof(int32_t));
        for (ptrdiff_t p = 0; p < (n + PANEL_COLUMNS - 1) / PANEL_COLUMNS; p++) semcodec_panel(&g, p);
        for (ptrdiff_t i = 0; i < m * n; i++)
            if (y[i] != want[i]) {
                printf("MISMATCH %s m=%td k=%td n=%td at %td: %d != %lld\n", NAMES[path], m, k, n, i, y[i],
                       (long long)want[i]);
                ok = 0;
                break;
            }
    }
    free(want), free(colsum), free(y), free(panels);
    return ok;
}

int main(void) {
    int ran[PATH_NEON + 1] = {0}, ok = 1;
    static int8_t x[9 * 1536], w[1536 * 3072];
    /* worst cases: every product +-127 * 127 of one sign, then signs that would saturate pairs */
    for (int sign = 0; sign < 2; sign++) {
        const ptrdiff_t m = 5, k = 1536, n = 200;
        for (ptrdiff_t i = 0; i < m * k; i++) x[i] = (int8_t)(i / k % 2 ? -127 : 127);
        for (ptrdiff_t i = 0; i < k * n; i++) w[i] = (int8_t)(sign && i % 3 == 1 ? -127 : 127);
        ok &= check(x, w, m, k, n, ran);
    }
    const ptrdiff_t shapes[][3] = {{1, 576, 960}, {2, 576, 576}, {3, 576, 3072}, {4, 1536, 576}, {9, 576, 130}};
    for (int s = 0; s < 5; s++) {
        for (ptrdiff_t i = 0; i < shapes[s][0] * shapes[s][1]; i++) x[i] = random_byte();
        for (ptrdiff_t i = 0; i < shapes[s][1] * shapes[s][2]; i++) w[i] = random_byte();
        ok &= check(x, w, shapes[s][0], shapes[s][1], shapes[s][2], ran);
    }
    for (int t = 0; t < 300; t++) {
        const ptrdiff_t m = 1 + (ptrdiff_t)(state % 9), k = 1 + (ptrdiff_t)((state >> 8) % 90),
                        n = 1 + (ptrdiff_t)((state >> 20) % 200);
        for (ptrdiff_t i = 0; i < m * k; i++) x[i] = random_byte();
        for (ptrdiff_t i = 0; i < k * n; i++) w[i] = random_byte();
        ok &= check(x, w, m, k, n, ran);
    }
    int vector = 0;
    for (int path = PATH_PLAIN; path <= PATH_NEON; path++)
        if (ran[path]) {
            printf("%s: %s\n", NAMES[path], ok ? "exact" : "see above");
            vector |= path != PATH_PLAIN;
        }
    return ok ? (vector ? 0 : 2) : 1;
}
