/* bnn_common.h -- shared types of bnnlab's packed-bit kernels (see ext/README.md).
 *
 * PRIVATE.  Everything here trusts its caller (bnnlab/kernels.py validates shapes,
 * dtypes, contiguity and values before any of it runs).
 *
 * Bit layout: element j of a row lives in word j / 64, bit j % 64 (LSB first);
 * bit 1 <=> value -1 (x < 0, so sign(0) = +1); bits past the row length are 0.
 * For two rows of K elements:  dot = K - 2 * popcount(a XOR b).
 */
#ifndef BNN_COMMON_H
#define BNN_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
#  include <immintrin.h>
#  define BNN_X86 1
#else
#  define BNN_X86 0
#endif
#if (defined(__aarch64__) || defined(_M_ARM64)) && (defined(__ARM_NEON) || defined(_M_ARM64))
#  include <arm_neon.h>
#  define BNN_NEON 1          /* Advanced SIMD is mandatory on AArch64 */
#else
#  define BNN_NEON 0
#endif
#if defined(_MSC_VER) && !defined(__clang__)
#  define BNN_MSVC 1          /* MSVC: no GCC attributes/builtins; intrinsics need no target */
#  include <intrin.h>
#else
#  define BNN_MSVC 0
#endif
#if defined(_WIN32)
#  include <malloc.h>         /* _aligned_malloc / _aligned_free */
#endif
#ifdef _OPENMP
#  include <omp.h>
#endif

#define BNN_LEVEL_PORTABLE 0   /* plain C, SWAR popcount                      */
#define BNN_LEVEL_POPCNT   1   /* scalar, hardware POPCNT                      */
#define BNN_LEVEL_AVX2     2   /* AVX2: vpshufb nibble lookup + vpsadbw        */
#define BNN_LEVEL_AVX512   3   /* AVX-512F/BW/VL + VPOPCNTDQ                   */
#define BNN_LEVEL_NEON     1   /* AArch64 Advanced SIMD: vcnt + widening adds  */
/* Levels are indices into bnn_impls[] / bnn_level_names[], which differ per architecture:
 * x86-64 portable, popcnt, avx2, avx512; AArch64 portable, neon; anything else portable. */
#if BNN_X86
#  define BNN_N_LEVELS     4
#elif BNN_NEON
#  define BNN_N_LEVELS     2
#else
#  define BNN_N_LEVELS     1
#endif

#define BNN_EPI_I32  0   /* out[p, j] = K - 2 * mismatches (int32)                       */
#define BNN_EPI_F32  1   /* out[p, j] = (float)dot * alpha[j] + bias[j] (float32)        */
#define BNN_EPI_BITS 2   /* bit j of row p = (mismatches > lim[j]) XOR flip_j (uint64)   */

#define BNN_CAT_(a, b) a##_##b
#define BNN_CAT(a, b) BNN_CAT_(a, b)
#if BNN_MSVC
#  define BNN_UNROLL
#  define BNN_INLINE static __forceinline
#  define BNN_ALIGN64 __declspec(align(64))
#  define BNN_TARGET(s)
#elif defined(__clang__)
#  define BNN_UNROLL _Pragma("unroll 16")
#  define BNN_INLINE static inline __attribute__((always_inline))
#  define BNN_ALIGN64 __attribute__((aligned(64)))
#  define BNN_TARGET(s) __attribute__((target(s)))
#else
#  define BNN_UNROLL _Pragma("GCC unroll 16")
#  define BNN_INLINE static inline __attribute__((always_inline))
#  define BNN_ALIGN64 __attribute__((aligned(64)))
#  define BNN_TARGET(s) __attribute__((target(s)))
#endif

/* Where the output of row p, column j goes:
 *   off(p) = (p / P) * rs_outer + (p % P) * rs_inner,   element = out[off(p) + j * cs]
 * (for BITS: word off(p) + j / 64, bit j % 64; cs unused). */
typedef struct {
    int mode;
    int64_t K;
    void *out;
    int64_t P, rs_outer, rs_inner, cs;
    const float *alpha, *bias;       /* F32: per column                              */
    const int64_t *lim;              /* BITS: per column                             */
    const uint64_t *flipw;           /* BITS: packed flags, bit j = flip of column j */
} bnn_epi;

/* fmaf(x, y, z) (one rounding) without an FMA instruction or a libm call: x*y is exact in
 * double; the double sum is made round-to-odd (TwoSum error, then the last bit set toward
 * it), so the final rounding to float is correct (53 >= 24 + 2 bits). Needs
 * -ffp-contract=off (the TwoSum must not be contracted). */
BNN_INLINE float bnn_fmaf(float x, float y, float z) {
    const double p = (double)x * (double)y, dz = (double)z;
    double t = p + dz;
    const double zz = t - p, err = (p - (t - zz)) + (dz - zz);
    if (err != 0.0 && isfinite(t)) {
        uint64_t u;
        memcpy(&u, &t, 8);
        if (!(u & 1)) {                       /* even: step to the odd neighbour toward err */
            u += ((err > 0.0) == (t > 0.0)) ? 1 : (uint64_t)-1;
            memcpy(&t, &u, 8);
        }
    }
    return (float)t;
}


/* The "A" operand: M rows; row p is nseg segments of L words, segment s at
 * ptr(p) + s * seg_stride, with
 *   ptr(p) = base + (p / P) * img_stride + ((p % P) / OW) * row_stride + ((p % P) % OW) * col_stride.
 * A GEMM row: nseg = 1, L = nw, P = OW = M, col_stride = nw.
 * A conv output pixel: nseg = kh segments of kw * CW words in the padded NHWC input. */
typedef struct {
    const uint64_t *base;
    int64_t M, nseg, seg_stride, L;
    int64_t P, OW, img_stride, row_stride, col_stride;
} bnn_rows;

typedef struct {
    bnn_rows rows;
    const uint64_t *b;       /* dot path: N rows of rows.L words (rows.nseg == 1)            */
    const uint64_t *panel;   /* panel path: ceil(N / NR) groups of [nseg * L][NR] words      */
    const uint64_t **rowptr; /* panel path: M row pointers (each thread fills its own rows)   */
    int64_t *rowoff;         /* panel path: M output offsets                                 */
    int64_t N;
    bnn_epi epi;
} bnn_job;

/* Packing jobs (rows of k values -> rows of ceil(k/64) words, or NCHW -> NHWC words). */
typedef struct {
    const void *x;
    uint64_t *out;
    int64_t rows, k, nw;            /* rows layout                                  */
    int64_t n, c, p, cw;            /* NCHW layout: n images, c channels, p pixels  */
    int dtype;                      /* BNN_DT_*                                     */
    const float *scale, *offset;    /* affine packers: per column (rows) / channel   */
    int bad[256];                   /* per chunk: saw NaN/inf                       */
} bnn_pack_job;

#define BNN_DT_F32  0
#define BNN_DT_F64  1
#define BNN_DT_I8   2   /* bit = x < 0                                                 */
#define BNN_DT_BOOL 3   /* bit = !x  (True means +1, False means -1)                   */

typedef void (*bnn_job_fn)(const bnn_job *, int, int);
typedef void (*bnn_pack_fn)(bnn_pack_job *, int, int);

/* One ISA level's kernels and tile shapes. */
typedef struct {
    bnn_job_fn dot, panel;
    bnn_pack_fn pack_rows[4], pack_nchw[4];   /* indexed by BNN_DT_* */
    bnn_pack_fn pack_rows_aff, pack_nchw_aff; /* float32, bit = x * s + o < 0        */
    int d_mr, d_nr, p_mr, p_nr;
    bnn_job_fn panel_alt;                     /* NULL, or a second panel kernel (same panel  */
    int p_mr_alt;                             /* layout, p_mr_alt-row tiles); see bnn_kernels.h */
} bnn_impl;

BNN_INLINE int64_t bnn_min64(int64_t a, int64_t b) { return a < b ? a : b; }
BNN_INLINE int64_t bnn_max64(int64_t a, int64_t b) { return a > b ? a : b; }

BNN_INLINE const uint64_t *bnn_row_ptr(const bnn_rows *r, int64_t p) {
    int64_t img = p / r->P, q = p - img * r->P, oy = q / r->OW, ox = q - oy * r->OW;
    return r->base + img * r->img_stride + oy * r->row_stride + ox * r->col_stride;
}

BNN_INLINE int64_t bnn_out_off(const bnn_epi *e, int64_t p) {
    int64_t img = p / e->P;
    return img * e->rs_outer + (p - img * e->P) * e->rs_inner;
}

/* Software popcount for the portable level (no POPCNT instruction assumed). */
BNN_INLINE uint64_t bnn_popcount_swar(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (x * 0x0101010101010101ULL) >> 56;
}

/* 64-byte aligned scratch; size rounded up as aligned_alloc requires.  Release with
 * bnn_free (Windows' CRT has no aligned_alloc: _aligned_malloc needs _aligned_free). */
static inline void *bnn_alloc(size_t bytes) {
    size_t n = (bytes + 63) & ~(size_t)63;
#if defined(_WIN32)
    return _aligned_malloc(n ? n : 64, 64);
#else
    return aligned_alloc(64, n ? n : 64);
#endif
}

static inline void bnn_free(void *p) {
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

/* Hardware popcount of one word (POPCNT level; callers run only where the CPU has it). */
#if BNN_MSVC && BNN_X86
#  define BNN_POPCNT64(x) ((uint64_t)__popcnt64(x))
#else
#  define BNN_POPCNT64(x) ((uint64_t)__builtin_popcountll(x))
#endif

/* c0..c3 += popcount(x ^ b[0..3]) for four words b[0..3] in memory: scalar load, XOR,
 * POPCNT, add, on the integer units (the AVX2 hybrid panel tiles in bnn_impl.h and their
 * roofline micro-kernel in bnn_roofline.h).  x86 GCC / clang: inline asm, because compilers
 * otherwise pack these scalar sums into vector lanes; MSVC (and any other target): plain C.
 * Callers run it only where the CPU has POPCNT.  BNN_SCALAR4_ASM(o0..o3) is its text with the
 * words at byte offsets o0..o3 (string literals) from %[bp]; _OUT / _IN its operands, for an
 * asm block that does more in the same statement (bnn_impl.h's 3x3 tile). */
#if BNN_X86 && !BNN_MSVC
#  define BNN_SCALAR4_ASM(o0, o1, o2, o3)                                                 \
        "movq " o0 "(%[bp]), %[t]\n\txorq %[xx], %[t]\n\tpopcntq %[t], %[t]\n\taddq %[t], %[d0]\n\t" \
        "movq " o1 "(%[bp]), %[t]\n\txorq %[xx], %[t]\n\tpopcntq %[t], %[t]\n\taddq %[t], %[d1]\n\t" \
        "movq " o2 "(%[bp]), %[t]\n\txorq %[xx], %[t]\n\tpopcntq %[t], %[t]\n\taddq %[t], %[d2]\n\t" \
        "movq " o3 "(%[bp]), %[t]\n\txorq %[xx], %[t]\n\tpopcntq %[t], %[t]\n\taddq %[t], %[d3]"
#  define BNN_SCALAR4_OUT(c0, c1, c2, c3, tmp)                                            \
        [d0] "+r"(c0), [d1] "+r"(c1), [d2] "+r"(c2), [d3] "+r"(c3), [t] "=&r"(tmp)
/* The base pointer as %[bp], and the nbytes read from it as a memory input (so the compiler
 * knows the asm reads them); the word x is the caller's operand %[xx] ("r", or an "=&r"
 * output where the asm loads it itself). */
#  define BNN_SCALAR4_IN(ptr, nbytes) [bp] "r"(ptr), "m"(*(const uint8_t(*)[nbytes])(const void *)(ptr))
#  define BNN_SCALAR4(c0, c1, c2, c3, x, b) do {                                          \
        uint64_t t_;                                                                      \
        __asm__(BNN_SCALAR4_ASM("", "8", "16", "24") : BNN_SCALAR4_OUT(c0, c1, c2, c3, t_) \
                : [xx] "r"(x), BNN_SCALAR4_IN(b, 32));                                    \
    } while (0)
#else
#  define BNN_SCALAR4(c0, c1, c2, c3, x, b) do {                                          \
        c0 += BNN_POPCNT64((x) ^ (b)[0]); c1 += BNN_POPCNT64((x) ^ (b)[1]);              \
        c2 += BNN_POPCNT64((x) ^ (b)[2]); c3 += BNN_POPCNT64((x) ^ (b)[3]); } while (0)
#endif

#endif /* BNN_COMMON_H */
