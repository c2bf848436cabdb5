/* The bounds every native kernel of semcodec relies on (SPEC §5, steps 2 and 4), in one place.
 *
 * Products (products.c): weights int8 with |w| <= WEIGHT_MAX = 127 (requantised rows, SPEC §5
 * step 1; -128 never occurs, and the kernels' argument checks refuse it), activations int8
 * with |x| <= ACT_MAX = 127 (SPEC §5 step 2 uses at most 127). One product:
 * |x w| <= 127 * 127 = 16129 < 2**14. A pair of products: <= 32258 <= 32767, so an int16
 * pair sum (vpmaddubsw on |x| and sign(w, x)) never saturates. The VNNI paths multiply the
 * offset byte x + 128 (<= 255) by w and subtract 128 * colsum afterwards: a lane's running sum
 * is at most K * 255 * 127 = K * 32385 in magnitude, below 2**31 for K <= MAX_INNER = 66311
 * (the true sum, <= K * 16129, is smaller still); the format's widest is 1536 (< 2**24 even,
 * SPEC §5 step 2), so int32 accumulators never wrap and every order of addition gives the
 * same integer.
 *
 * Attention over a prefix (prefix.c): |q|, |k| <= QK_LIMIT = 2**20 - 1, D <= MAX_DIM = 64:
 * |q.k| < 64 * 2**40 = 2**46; 0 <= p <= P_MAX = 2**16 and |v| <= V_LIMIT = 2**24 - 1 over
 * T <= MAX_POSITIONS = 8191 positions: |sum p v| < 2**53 (exact in float64); the softmax
 * index (top - s + 2**(shift-1)) >> shift: top - s < 2**47 and shift <= MAX_SHIFT = 40 keep
 * it far inside int64.
 *
 * Never build with -ffast-math: it links crtfastmath (flush-to-zero for the whole process) and
 * allows non-IEEE reassociation of float64 sums; the sources refuse to compile under it. */
#ifndef SEMCODEC_NATIVE_BOUNDS_H
#define SEMCODEC_NATIVE_BOUNDS_H

#if defined(__FAST_MATH__)
#error "semcodec's native kernels must not be built with -ffast-math (IEEE arithmetic is part of the format)"
#endif

#define WEIGHT_MAX 127
#define ACT_MAX 127
#define MAX_INNER 66311      /* K * 255 * 127 < 2**31 (the offset form of the VNNI paths) */

#define QK_LIMIT ((1 << 20) - 1)
#define V_LIMIT ((1 << 24) - 1)
#define P_MAX (1 << 16)
#define MAX_POSITIONS 8191   /* T * 2**40 < 2**53 */
#define MAX_DIM 64           /* D * 2**40 <= 2**46 */
#define MAX_GROUP 8          /* query heads per kv head (SmolLM2-135M: 3): the step's register blocks */
#define MAX_SHIFT 40
#define SCORE_LIMIT ((int64_t)1 << 46)  /* |q.k| < 2**46: the largest own_max attend accepts */

#endif
