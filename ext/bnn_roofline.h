/* bnn_roofline.h -- register-only micro-kernels that measure this machine's peaks.
 *
 * PRIVATE (called from _kernels.pyx for `python -m bnnlab bench`, and by bnn_ctest.c).
 *
 * Each kernel keeps its operands in registers and runs one instruction mix in a loop with
 * enough independent accumulators to cover the latencies, so its rate is the throughput
 * ceiling of that mix on this core -- the "peak" the kernels' efficiency is measured against:
 *
 *   fp32  (MAC/s)   fused multiply-add chains: AVX-512F (16 lanes), AVX2+FMA (8 lanes),
 *                   NEON vfmaq (4 lanes); "base" = scalar multiply + add (what a build
 *                   without -march gets from plain C on x86-64: SSE2).
 *   binary (MAC/s)  one 64-bit word pair = 64 binary MACs, per ISA level of bnn_impl.h:
 *                   portable  XOR + SWAR popcount (12 ops) + add
 *                   popcnt    XOR + POPCNT + add
 *                   avx2      XOR + nibble lookup (and, shift, and, 2x vpshufb) + 2 byte adds,
 *                             vpsadbw + add every 31 steps (the lookup panel kernel's mix), or
 *                             the hybrid tile's mix (half of the word pairs by that lookup,
 *                             half by scalar XOR + POPCNT + add), whichever is faster
 *                   avx512    XOR + VPOPCNTQ + add
 *                   neon      EOR + CNT + byte add, widening adds every 31 steps
 *   clock (Hz)      a chain of dependent 64-bit adds (latency 1 cycle on every x86-64 and
 *                   AArch64 core): the frequency the core actually runs at now.
 *
 * Operands are passed through an empty asm statement every step ("the value may have
 * changed"), so the compiler cannot hoist the XORs or fold the chains, and no instruction
 * is added.  That needs GCC/clang inline asm: under MSVC every function returns 0
 * (bnn_rl_supported() == 0) and the bench reports no efficiency.
 */
#ifndef BNN_ROOFLINE_H
#define BNN_ROOFLINE_H

#include "bnn_common.h"
#if defined(_WIN32)
#  include <windows.h>
#else
#  include <time.h>
#endif

#if BNN_MSVC
#  define BNN_RL_OK 0
#else
#  define BNN_RL_OK 1
#endif

#define BNN_RL_FP32_BASE   0
#define BNN_RL_FP32_AVX2   1
#define BNN_RL_FP32_AVX512 2
#define BNN_RL_FP32_NEON   3
#define BNN_RL_FP32_N      4

static int bnn_rl_supported(void) { return BNN_RL_OK; }

static int64_t bnn_rl_now_ns(void) {
#if defined(_WIN32)
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (int64_t)((double)c.QuadPart * 1e9 / (double)f.QuadPart);
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
}

#if BNN_RL_OK
#  define BNN_RL_KEEP_R(v) __asm__ __volatile__("" : "+r"(v))
#  if BNN_X86
#    define BNN_RL_KEEP_X(v) __asm__ __volatile__("" : "+x"(v))
#    define BNN_RL_KEEP_V(v) __asm__ __volatile__("" : "+v"(v))
#  elif BNN_NEON
#    define BNN_RL_KEEP_W(v) __asm__ __volatile__("" : "+w"(v))
#  endif
#endif

/* A kernel runs `iters` loop trips and returns the work done (MACs, or adds for the clock)
 * plus a value that depends on every result (so nothing is dead code). */
typedef double (*bnn_rl_fn)(int64_t iters, uint64_t *sink);

/* Best rate (work per second) over many short runs (about 0.5 ms each) for about `seconds`
 * in total: on a shared machine a short run often escapes preemption, a long one rarely. */
static double bnn_rl_measure(bnn_rl_fn fn, double seconds) {
    uint64_t sink = 0;
    int64_t iters = 256;
    const double run = seconds > 0.005 ? 0.0005 : (seconds > 0 ? seconds / 10 : 0.0005);
    for (;;) {                                   /* calibrate: one run >= run / 2 */
        const int64_t t0 = bnn_rl_now_ns();
        fn(iters, &sink);
        const double dt = (double)(bnn_rl_now_ns() - t0) * 1e-9;
        if (dt >= run / 2 || iters > ((int64_t)1 << 40)) break;
        iters *= 2;
    }
    double best = 0;
    const int64_t start = bnn_rl_now_ns();
    int r = 0;
    do {
        const int64_t t0 = bnn_rl_now_ns();
        const double work = fn(iters, &sink);
        const double dt = (double)(bnn_rl_now_ns() - t0) * 1e-9;
        if (dt > 0 && work / dt > best) best = work / dt;
    } while (++r < 3 || (double)(bnn_rl_now_ns() - start) * 1e-9 < seconds);
    if (sink == 0x5eed5eed5eedULL) best += 1e-300;   /* keep sink alive */
    return best;
}

#if BNN_RL_OK
/* ------------------------------------------------------------------ clock */
static double bnn_rl_clock_k(int64_t iters, uint64_t *sink) {
    uint64_t x = *sink;
    for (int64_t i = 0; i < iters; i++) {
#  define BNN_RL_ADD1 x += 1; BNN_RL_KEEP_R(x);
        BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1
        BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1 BNN_RL_ADD1
#  undef BNN_RL_ADD1
    }
    *sink = x;
    return 16.0 * (double)iters;
}

/* ------------------------------------------------------------------ fp32 */
static double bnn_rl_fp32_base_k(int64_t iters, uint64_t *sink) {
    float acc[8], m = 0.999f, c = 1e-3f;
    for (int j = 0; j < 8; j++) acc[j] = (float)j;
    for (int64_t i = 0; i < iters; i++) {
        for (int j = 0; j < 8; j++) { float p = acc[j] * m; acc[j] = p + c; }
    }
    float s = 0;
    for (int j = 0; j < 8; j++) s += acc[j];
    *sink += (uint64_t)(s != 12345.0f);
    return 8.0 * (double)iters;
}

#  if BNN_X86
BNN_TARGET("avx2,fma,avx")
static double bnn_rl_fp32_avx2_k(int64_t iters, uint64_t *sink) {
    __m256 acc[12], m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
    for (int j = 0; j < 12; j++) acc[j] = _mm256_set1_ps((float)j);
    for (int64_t i = 0; i < iters; i++) {
        BNN_UNROLL for (int j = 0; j < 12; j++) acc[j] = _mm256_fmadd_ps(acc[j], m, c);
    }
    __m256 s = acc[0];
    for (int j = 1; j < 12; j++) s = _mm256_add_ps(s, acc[j]);
    *sink += (uint64_t)(_mm256_cvtss_f32(s) != 12345.0f);
    return 12.0 * 8.0 * (double)iters;
}

BNN_TARGET("avx512f,avx2,fma,avx")
static double bnn_rl_fp32_avx512_k(int64_t iters, uint64_t *sink) {
    __m512 acc[16], m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
    for (int j = 0; j < 16; j++) acc[j] = _mm512_set1_ps((float)j);
    for (int64_t i = 0; i < iters; i++) {
        BNN_UNROLL for (int j = 0; j < 16; j++) acc[j] = _mm512_fmadd_ps(acc[j], m, c);
    }
    __m512 s = acc[0];
    for (int j = 1; j < 16; j++) s = _mm512_add_ps(s, acc[j]);
    *sink += (uint64_t)(_mm512_reduce_add_ps(s) != 12345.0f);
    return 16.0 * 16.0 * (double)iters;
}
#  endif

#  if BNN_NEON
static double bnn_rl_fp32_neon_k(int64_t iters, uint64_t *sink) {
    float32x4_t acc[12], m = vdupq_n_f32(0.999f), c = vdupq_n_f32(1e-3f);
    for (int j = 0; j < 12; j++) acc[j] = vdupq_n_f32((float)j);
    for (int64_t i = 0; i < iters; i++) {
        BNN_UNROLL for (int j = 0; j < 12; j++) acc[j] = vfmaq_f32(c, acc[j], m);
    }
    float32x4_t s = acc[0];
    for (int j = 1; j < 12; j++) s = vaddq_f32(s, acc[j]);
    *sink += (uint64_t)(vgetq_lane_f32(s, 0) != 12345.0f);
    return 12.0 * 4.0 * (double)iters;
}
#  endif

/* ------------------------------------------------------------------ binary */
/* Scalar levels: 2 x 3 word pairs per step, 6 accumulators. */
#  define BNN_RL_SCALAR_K(NAME, ATTR, POP)                                               \
ATTR static double NAME(int64_t iters, uint64_t *sink) {                                 \
    uint64_t a0 = 0x0123456789abcdefULL ^ *sink, a1 = 0xfedcba9876543210ULL;             \
    uint64_t b0 = 0x5555aaaa3333ccccULL, b1 = 0x0f0f0f0ff0f0f0f0ULL, b2 = 0x1234567812345678ULL; \
    uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0;                             \
    for (int64_t i = 0; i < iters; i++) {                                                \
        c0 += POP(a0 ^ b0); c1 += POP(a0 ^ b1); c2 += POP(a0 ^ b2);                      \
        c3 += POP(a1 ^ b0); c4 += POP(a1 ^ b1); c5 += POP(a1 ^ b2);                      \
        BNN_RL_KEEP_R(a0); BNN_RL_KEEP_R(a1);                                            \
        BNN_RL_KEEP_R(b0); BNN_RL_KEEP_R(b1); BNN_RL_KEEP_R(b2);                         \
    }                                                                                    \
    *sink += c0 + c1 + c2 + c3 + c4 + c5;                                                \
    return 6.0 * 64.0 * (double)iters;                                                   \
}
BNN_RL_SCALAR_K(bnn_rl_bin_portable_k, , bnn_popcount_swar)
#  if BNN_X86
#    define BNN_RL_POPCNT(x) ((uint64_t)__builtin_popcountll(x))
BNN_RL_SCALAR_K(bnn_rl_bin_popcnt_k, BNN_TARGET("popcnt"), BNN_RL_POPCNT)
#    undef BNN_RL_POPCNT

/* AVX2: the panel kernel's tile and mix -- 4 A words (broadcast loads from a 32-word table in
 * L1, as the kernel broadcasts them from its rows) x 2 B vectors (registers) = 8 byte
 * accumulators; every 31 steps all folds go into one 64-bit accumulator (16 ymm, no spills). */
BNN_TARGET("avx2,avx,popcnt")
static double bnn_rl_bin_avx2_k(int64_t iters, uint64_t *sink) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    uint64_t tab[4 * 32];
    for (int j = 0; j < 4 * 32; j++) tab[j] = (0x0123456789abcdefULL ^ *sink) * (uint64_t)(2 * j + 1);
    __m256i b[2] = {_mm256_set1_epi64x(0x5555aaaa3333ccccLL), _mm256_set1_epi64x(0x0f0f0f0ff0f0f0f0LL)};
    __m256i acc = _mm256_setzero_si256(), a8[8];
    for (int j = 0; j < 8; j++) a8[j] = _mm256_setzero_si256();
    for (int64_t i = 0; i < iters; i++) {
        const uint64_t *t = tab;
        for (int s = 0; s < 31; s++, t += 4) {
            BNN_UNROLL for (int r = 0; r < 4; r++) {
                const __m256i x = _mm256_set1_epi64x((long long)t[r]);
                BNN_UNROLL for (int v = 0; v < 2; v++) {
                    const __m256i y = _mm256_xor_si256(x, b[v]);
                    __m256i *q = &a8[r * 2 + v];
                    *q = _mm256_add_epi8(*q, _mm256_shuffle_epi8(lut, _mm256_and_si256(y, m4)));
                    *q = _mm256_add_epi8(*q, _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(y, 4), m4)));
                }
            }
            BNN_RL_KEEP_X(b[0]); BNN_RL_KEEP_X(b[1]);
        }
        BNN_UNROLL for (int j = 0; j < 8; j++) {
            acc = _mm256_add_epi64(acc, _mm256_sad_epu8(a8[j], _mm256_setzero_si256()));
            a8[j] = _mm256_setzero_si256();
        }
    }
    *sink += (uint64_t)_mm256_extract_epi64(acc, 0);
    return 31.0 * 8.0 * 256.0 * (double)iters;
}

/* AVX2 hybrid: the hybrid panel tile's mix (bnn_impl.h) -- per step 2 A words from a table
 * in L1, each broadcast for the vector half and used as a scalar for the other: 2 rows x 1 B
 * vector (register) = 2 byte accumulators by nibble lookup, and 2 rows x 4 B words (read
 * from L1, as the kernel reads its panel) = 8 scalar POPCNT sums; folds every 31 steps. */
BNN_TARGET("avx2,avx,popcnt")
static double bnn_rl_bin_avx2hyb_k(int64_t iters, uint64_t *sink) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    uint64_t tab[2 * 31], bs[4];
    for (int j = 0; j < 2 * 31; j++) tab[j] = (0x0123456789abcdefULL ^ *sink) * (uint64_t)(2 * j + 1);
    for (int j = 0; j < 4; j++) bs[j] = 0x5555aaaa3333ccccULL * (uint64_t)(j + 3);
    __m256i bv = _mm256_set1_epi64x(0x0f0f0f0ff0f0f0f0LL), acc = _mm256_setzero_si256();
    __m256i e0 = acc, e1 = acc;
    uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0;
#    define BNN_RL_CNTADD(a8, y) _mm256_add_epi8(_mm256_add_epi8((a8), _mm256_shuffle_epi8(lut, _mm256_and_si256((y), m4))), \
                                                 _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16((y), 4), m4)))
    for (int64_t i = 0; i < iters; i++) {
        const uint64_t *t = tab;
        for (int s = 0; s < 31; s++, t += 2) {
            const uint64_t x0 = t[0], x1 = t[1];
            e0 = BNN_RL_CNTADD(e0, _mm256_xor_si256(_mm256_set1_epi64x((long long)x0), bv));
            BNN_SCALAR4(c0, c1, c2, c3, x0, bs);
            e1 = BNN_RL_CNTADD(e1, _mm256_xor_si256(_mm256_set1_epi64x((long long)x1), bv));
            BNN_SCALAR4(c4, c5, c6, c7, x1, bs);
            BNN_RL_KEEP_X(bv);
        }
        acc = _mm256_add_epi64(acc, _mm256_add_epi64(_mm256_sad_epu8(e0, _mm256_setzero_si256()),
                                                     _mm256_sad_epu8(e1, _mm256_setzero_si256())));
        e0 = e1 = _mm256_setzero_si256();
    }
#    undef BNN_RL_CNTADD
    *sink += (uint64_t)_mm256_extract_epi64(acc, 0) + c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7;
    return 31.0 * 16.0 * 64.0 * (double)iters;
}

/* AVX-512 VPOPCNTDQ: 3 A x 4 B = 12 accumulators. */
BNN_TARGET("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,avx,popcnt")
static double bnn_rl_bin_avx512_k(int64_t iters, uint64_t *sink) {
    __m512i a[3], b[4], acc[12];
    for (int j = 0; j < 3; j++) a[j] = _mm512_set1_epi64((long long)(0x0123456789abcdefULL * (uint64_t)(j + 1) ^ *sink));
    for (int j = 0; j < 4; j++) b[j] = _mm512_set1_epi64((long long)(0x5555aaaa3333ccccULL + (uint64_t)j));
    for (int j = 0; j < 12; j++) acc[j] = _mm512_setzero_si512();
    for (int64_t i = 0; i < iters; i++) {
        BNN_UNROLL for (int j = 0; j < 12; j++)
            acc[j] = _mm512_add_epi64(acc[j], _mm512_popcnt_epi64(_mm512_xor_si512(a[j / 4], b[j % 4])));
        BNN_RL_KEEP_V(a[0]); BNN_RL_KEEP_V(a[1]); BNN_RL_KEEP_V(a[2]);
        BNN_RL_KEEP_V(b[0]); BNN_RL_KEEP_V(b[1]); BNN_RL_KEEP_V(b[2]); BNN_RL_KEEP_V(b[3]);
    }
    __m512i s = acc[0];
    for (int j = 1; j < 12; j++) s = _mm512_add_epi64(s, acc[j]);
    *sink += (uint64_t)_mm512_reduce_add_epi64(s);
    return 12.0 * 512.0 * (double)iters;
}
#  endif

#  if BNN_NEON
/* NEON: 2 broadcast A words x 4 B vectors = 8 byte accumulators. */
static double bnn_rl_bin_neon_k(int64_t iters, uint64_t *sink) {
    uint64x2_t a[2] = {vdupq_n_u64(0x0123456789abcdefULL ^ *sink), vdupq_n_u64(0xfedcba9876543210ULL)};
    uint64x2_t b[4] = {vdupq_n_u64(0x5555aaaa3333ccccULL), vdupq_n_u64(0x0f0f0f0ff0f0f0f0ULL),
                       vdupq_n_u64(0x1234567812345678ULL), vdupq_n_u64(0x0ff00ff00ff00ff0ULL)};
    uint64x2_t acc = vdupq_n_u64(0);
    uint8x16_t a8[8];
    for (int j = 0; j < 8; j++) a8[j] = vdupq_n_u8(0);
    for (int64_t i = 0; i < iters; i++) {
        for (int s = 0; s < 31; s++) {
            BNN_UNROLL for (int j = 0; j < 8; j++)
                a8[j] = vaddq_u8(a8[j], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(a[j / 4], b[j % 4]))));
            BNN_RL_KEEP_W(a[0]); BNN_RL_KEEP_W(a[1]);
            BNN_RL_KEEP_W(b[0]); BNN_RL_KEEP_W(b[1]); BNN_RL_KEEP_W(b[2]); BNN_RL_KEEP_W(b[3]);
        }
        BNN_UNROLL for (int j = 0; j < 8; j++) {
            acc = vpadalq_u32(acc, vpaddlq_u16(vpaddlq_u8(a8[j])));
            a8[j] = vdupq_n_u8(0);
        }
    }
    *sink += vgetq_lane_u64(acc, 0);
    return 31.0 * 8.0 * 128.0 * (double)iters;
}
#  endif
#endif /* BNN_RL_OK */

/* ------------------------------------------------------------------ entry points */
/* Core clock in Hz (0 if unsupported). */
static double bnn_rl_clock_hz(double seconds) {
#if BNN_RL_OK
    return bnn_rl_measure(bnn_rl_clock_k, seconds);
#else
    (void)seconds;
    return 0.0;
#endif
}

/* 1 if the fp32 kernel `which` (BNN_RL_FP32_*) can run on this build and CPU. */
static int bnn_rl_fp32_available(int which) {
#if !BNN_RL_OK
    (void)which;
    return 0;
#else
    if (which == BNN_RL_FP32_BASE) return 1;
#  if BNN_X86
    __builtin_cpu_init();
    if (which == BNN_RL_FP32_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (which == BNN_RL_FP32_AVX512) return __builtin_cpu_supports("avx512f");
#  endif
#  if BNN_NEON
    if (which == BNN_RL_FP32_NEON) return 1;
#  endif
    return 0;
#endif
}

/* Peak fp32 MAC/s of kernel `which`; 0 when unavailable. */
static double bnn_rl_fp32(int which, double seconds) {
    if (!bnn_rl_fp32_available(which)) return 0.0;
#if BNN_RL_OK
    switch (which) {
    case BNN_RL_FP32_BASE: return bnn_rl_measure(bnn_rl_fp32_base_k, seconds);
#  if BNN_X86
    case BNN_RL_FP32_AVX2: return bnn_rl_measure(bnn_rl_fp32_avx2_k, seconds);
    case BNN_RL_FP32_AVX512: return bnn_rl_measure(bnn_rl_fp32_avx512_k, seconds);
#  endif
#  if BNN_NEON
    case BNN_RL_FP32_NEON: return bnn_rl_measure(bnn_rl_fp32_neon_k, seconds);
#  endif
    default: break;
    }
#endif
    (void)seconds;
    return 0.0;
}

/* Peak binary MAC/s of ISA level `level` (an index of bnn_level_names); 0 when the CPU
 * lacks it.  `detected` is bnn_detect_level(). */
static double bnn_rl_binary(int level, int detected, double seconds) {
    if (level < 0 || level > detected) return 0.0;
#if BNN_RL_OK
    if (level == BNN_LEVEL_PORTABLE) return bnn_rl_measure(bnn_rl_bin_portable_k, seconds);
#  if BNN_X86
    if (level == BNN_LEVEL_POPCNT) return bnn_rl_measure(bnn_rl_bin_popcnt_k, seconds);
    if (level == BNN_LEVEL_AVX2) {   /* the level's two panel kernels: the better mix */
        const double lookup = bnn_rl_measure(bnn_rl_bin_avx2_k, seconds / 2);
        const double hybrid = bnn_rl_measure(bnn_rl_bin_avx2hyb_k, seconds / 2);
        return lookup > hybrid ? lookup : hybrid;
    }
    if (level == BNN_LEVEL_AVX512) return bnn_rl_measure(bnn_rl_bin_avx512_k, seconds);
#  elif BNN_NEON
    if (level == BNN_LEVEL_NEON) return bnn_rl_measure(bnn_rl_bin_neon_k, seconds);
#  endif
#endif
    (void)seconds;
    return 0.0;
}

#endif /* BNN_ROOFLINE_H */
