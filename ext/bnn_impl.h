/* bnn_impl.h -- the packed-bit kernels, written once and compiled once per ISA level.
 *
 * PRIVATE: included by bnn_kernels.h with BNN_LEVEL defined (0 portable, 1 POPCNT,
 * 2 AVX2, 3 AVX-512 VPOPCNTDQ).  Each inclusion defines functions with the suffix
 * _l<BNN_LEVEL> and the matching __attribute__((target(...))), so one binary holds
 * every variant and bnn_kernels.h picks one at run time (no -march flags needed).
 *
 * Vector abstraction (VT holds VW uint64 lanes):
 *   V_ZERO() V_LOAD(p) V_LOADN(p, n: 1..VW-1 lanes, rest 0) V_BCAST(u64) V_XOR(a, b)
 *   V_POPACC(acc, x): acc + per-lane popcount(x)     V_HSUM(v): sum of lanes
 *   V_STORE(p, v)
 *
 * Two micro-kernels (both trust their caller completely):
 *   dot tile   (small M, GEMV-like): MR rows of A x D_NR rows of B, vectorised along K,
 *              horizontal sums at the end.  B rows stream from memory once.
 *   panel tile (large M, conv): MR rows of A x P_NR columns, vectorised across columns:
 *              each A word is broadcast and XORed with P_NR column words of a
 *              pre-transposed "panel" of B, so there is no horizontal sum and no K tail.
 *              Conv rows are gathered on the fly (kh segments of kw*CW contiguous words
 *              in the padded NHWC input): no im2col buffer.
 */
#ifndef BNN_LEVEL
#  error "define BNN_LEVEL before including bnn_impl.h"
#endif

#if BNN_LEVEL == 3
/* ------------------------------------------------------------ AVX-512 VPOPCNTDQ */
#  define SFX l3
#  define BNN_ATTR BNN_TARGET("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,avx,popcnt")
#  define VT __m512i
#  define VW 8
#  define V_ZERO() _mm512_setzero_si512()
#  define V_LOAD(p) _mm512_loadu_si512((const void *)(p))
#  define V_LOADN(p, n) _mm512_maskz_loadu_epi64((__mmask8)((1u << (n)) - 1u), (const void *)(p))
#  define V_BCAST(x) _mm512_set1_epi64((long long)(x))
#  define V_XOR(a, b) _mm512_xor_si512((a), (b))
#  define V_POPACC(acc, x) _mm512_add_epi64((acc), _mm512_popcnt_epi64(x))
#  define V_HSUM(v) ((uint64_t)_mm512_reduce_add_epi64(v))
#  define V_STORE(p, v) _mm512_storeu_si512((void *)(p), (v))
#  define D_MR 2
#  define D_NR 8
#  define P_MR 6
#  define P_NV 4
/* Sums of the lanes of a[0..7], stored as out[0..7] (transpose-and-add tree). */
BNN_INLINE BNN_ATTR void bnn_hsum_row_l3(const __m512i *a, uint64_t *out) {
    __m512i t0 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[0], a[1]), _mm512_unpackhi_epi64(a[0], a[1]));
    __m512i t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[2], a[3]), _mm512_unpackhi_epi64(a[2], a[3]));
    __m512i t2 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[4], a[5]), _mm512_unpackhi_epi64(a[4], a[5]));
    __m512i t3 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[6], a[7]), _mm512_unpackhi_epi64(a[6], a[7]));
    __m512i u0 = _mm512_add_epi64(_mm512_shuffle_i64x2(t0, t1, 0x88), _mm512_shuffle_i64x2(t0, t1, 0xdd));
    __m512i u1 = _mm512_add_epi64(_mm512_shuffle_i64x2(t2, t3, 0x88), _mm512_shuffle_i64x2(t2, t3, 0xdd));
    __m512i r = _mm512_add_epi64(_mm512_shuffle_i64x2(u0, u1, 0x88), _mm512_shuffle_i64x2(u0, u1, 0xdd));
    _mm512_storeu_si512((void *)out, r);
}
#  define V_HSUM_ROW(a, out) bnn_hsum_row_l3((a), (out))
#elif BNN_LEVEL == 2
/* ------------------------------------------------------------ AVX2 */
#  define SFX l2
#  define BNN_ATTR BNN_TARGET("avx2,avx,popcnt")
#  define VT __m256i
#  define VW 4
#  define V_ZERO() _mm256_setzero_si256()
#  define V_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#  define V_LOADN(p, n) _mm256_maskload_epi64((const long long *)(p), \
        _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(n)), _mm256_setr_epi64x(0, 1, 2, 3)))
#  define V_BCAST(x) _mm256_set1_epi64x((long long)(x))
#  define V_XOR(a, b) _mm256_xor_si256((a), (b))
#  define V_POPACC(acc, x) bnn_popacc_l2((acc), (x))
#  define V_HSUM(v) bnn_hsum_l2(v)
#  define V_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#  define D_MR 2
#  define D_NR 4
#  define P_MR 4
#  define P_NV 2
#  define V_HSUM_ROW(a, out) bnn_hsum_row_l2((a), (out))
/* Per 64-bit lane popcount: nibble lookup with vpshufb, byte sums with vpsadbw. */
BNN_INLINE BNN_ATTR __m256i bnn_popacc_l2(__m256i acc, __m256i x) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(x, m4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m4);
    __m256i c = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
    return _mm256_add_epi64(acc, _mm256_sad_epu8(c, _mm256_setzero_si256()));
}
BNN_INLINE BNN_ATTR uint64_t bnn_hsum_l2(__m256i v) {
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return (uint64_t)_mm_cvtsi128_si64(s) + (uint64_t)_mm_extract_epi64(s, 1);
}
/* Sums of the lanes of a[0..3], stored as out[0..3]. */
BNN_INLINE BNN_ATTR void bnn_hsum_row_l2(const __m256i *a, uint64_t *out) {
    __m256i t0 = _mm256_add_epi64(_mm256_unpacklo_epi64(a[0], a[1]), _mm256_unpackhi_epi64(a[0], a[1]));
    __m256i t1 = _mm256_add_epi64(_mm256_unpacklo_epi64(a[2], a[3]), _mm256_unpackhi_epi64(a[2], a[3]));
    __m256i r = _mm256_add_epi64(_mm256_permute2x128_si256(t0, t1, 0x20), _mm256_permute2x128_si256(t0, t1, 0x31));
    _mm256_storeu_si256((__m256i *)out, r);
}
#elif BNN_LEVEL == 4
/* ------------------------------------------------------------ AArch64 NEON */
#  define SFX l4
#  define BNN_ATTR
#  define VT uint64x2_t
#  define VW 2
#  define V_ZERO() vdupq_n_u64(0)
#  define V_LOAD(p) vld1q_u64((const uint64_t *)(p))
#  define V_LOADN(p, n) vcombine_u64(vld1_u64((const uint64_t *)(p)), vdup_n_u64(0))   /* n == 1 */
#  define V_BCAST(x) vdupq_n_u64((uint64_t)(x))
#  define V_XOR(a, b) veorq_u64((a), (b))
#  define V_POPACC(acc, x) vpadalq_u32((acc), vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u64(x)))))
#  define V_HSUM(v) (vgetq_lane_u64((v), 0) + vgetq_lane_u64((v), 1))
#  define V_STORE(p, v) vst1q_u64((uint64_t *)(p), (v))
#  define D_MR 2
#  define D_NR 4
#  define P_MR 4
#  define P_NV 4
#elif BNN_LEVEL == 1
/* ------------------------------------------------------------ scalar, POPCNT */
#  define SFX l1
#  define BNN_ATTR BNN_TARGET("popcnt")
#  define VT uint64_t
#  define VW 1
#  define V_ZERO() ((uint64_t)0)
#  define V_LOAD(p) (*(p))
#  define V_LOADN(p, n) (*(p))
#  define V_BCAST(x) ((uint64_t)(x))
#  define V_XOR(a, b) ((a) ^ (b))
#  define V_POPACC(acc, x) ((acc) + BNN_POPCNT64(x))
#  define V_HSUM(v) (v)
#  define V_STORE(p, v) (*(p) = (v))
#  define D_MR 2
#  define D_NR 4
#  define P_MR 2
#  define P_NV 4
#elif BNN_LEVEL == 0
/* ------------------------------------------------------------ portable C */
#  define SFX l0
#  define BNN_ATTR
#  define VT uint64_t
#  define VW 1
#  define V_ZERO() ((uint64_t)0)
#  define V_LOAD(p) (*(p))
#  define V_LOADN(p, n) (*(p))
#  define V_BCAST(x) ((uint64_t)(x))
#  define V_XOR(a, b) ((a) ^ (b))
#  define V_POPACC(acc, x) ((acc) + bnn_popcount_swar(x))
#  define V_HSUM(v) (v)
#  define V_STORE(p, v) (*(p) = (v))
#  define D_MR 2
#  define D_NR 4
#  define P_MR 2
#  define P_NV 4
#else
#  error "unknown BNN_LEVEL"
#endif

#define P_NR (P_NV * VW)
#define FN(name) BNN_CAT(name, SFX)

#if (64 % P_NR) != 0 || (64 % D_NR) != 0
#  error "tile widths must divide 64 so that a tile's output bits share one word"
#endif

/* ------------------------------------------------------------------ epilogue */
/* Bits j (0 <= j < nr <= 64) of the result: (int64)c[j] > lim[j]. */
BNN_INLINE BNN_ATTR uint64_t FN(cmp_bits)(const uint64_t *c, const int64_t *lim, int nr) {
    uint64_t bits = 0;
#if BNN_LEVEL == 3
    for (int j = 0; j < nr; j += 8) {
        const __mmask8 m = (__mmask8)(nr - j >= 8 ? 0xffu : ((1u << (nr - j)) - 1u));
        __m512i cv = _mm512_maskz_loadu_epi64(m, c + j), lv = _mm512_maskz_loadu_epi64(m, lim + j);
        bits |= (uint64_t)_mm512_mask_cmpgt_epi64_mask(m, cv, lv) << j;
    }
#elif BNN_LEVEL == 2
    int j = 0;
    for (; j + 4 <= nr; j += 4) {
        __m256i cv = _mm256_loadu_si256((const __m256i *)(c + j));
        __m256i lv = _mm256_loadu_si256((const __m256i *)(lim + j));
        bits |= (uint64_t)(unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(cv, lv))) << j;
    }
    for (; j < nr; j++) bits |= (uint64_t)((int64_t)c[j] > lim[j]) << j;
#else
    for (int j = 0; j < nr; j++) bits |= (uint64_t)((int64_t)c[j] > lim[j]) << j;
#endif
    return bits;
}

#if BNN_LEVEL == 2
/* I32 NCHW output of a full 2 x 8 hybrid tile (ldc 8) whose two rows are adjacent pixels:
 * each column's two values as one 64-bit store (r: row 0, column 0; cs: the channel stride).
 * The hybrid worker calls it directly (decided once per chunk, not per tile). */
BNN_INLINE BNN_ATTR void FN(store_nchw_2x8)(int64_t K, const uint64_t *cnt, int32_t *r, int64_t cs) {
    const __m256i kk = _mm256_set1_epi64x((long long)K);
    BNN_UNROLL for (int h = 0; h < 2; h++) {
        const __m256i c0 = _mm256_loadu_si256((const __m256i *)(cnt + 4 * h));
        const __m256i c1 = _mm256_loadu_si256((const __m256i *)(cnt + 8 + 4 * h));
        const __m256i v0 = _mm256_sub_epi64(kk, _mm256_add_epi64(c0, c0));
        const __m256i v1 = _mm256_sub_epi64(kk, _mm256_add_epi64(c1, c1));
        const __m256i v = _mm256_blend_epi32(v0, _mm256_slli_epi64(v1, 32), 0xaa);
        const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
        int32_t *q = r + 4 * h * cs;
        _mm_storel_epi64((__m128i *)q, lo);
        _mm_storeh_pd((double *)(q + cs), _mm_castsi128_pd(lo));
        _mm_storel_epi64((__m128i *)(q + 2 * cs), hi);
        _mm_storeh_pd((double *)(q + 3 * cs), _mm_castsi128_pd(hi));
    }
}
#endif

/* cnt: mr x nr mismatch counts with leading dimension ldc, for output rows with offsets
 * off[0..mr-1] and columns j0 .. j0 + nr - 1 (a tile never straddles a 64-column word). */
BNN_INLINE BNN_ATTR void FN(epilogue)(const int EPI_MR, const bnn_epi *e, const uint64_t *cnt, int ldc,
                                      const int64_t *off, int mr, int64_t j0, int nr) {
    const int64_t K = e->K, cs = e->cs;
    if (e->mode == BNN_EPI_BITS) {
        uint64_t *o = (uint64_t *)e->out;
        const uint64_t keep = nr >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << nr) - 1);
        const uint64_t fm = (e->flipw[j0 >> 6] >> (j0 & 63)) & keep;
        for (int i = 0; i < mr; i++) {
            const uint64_t bits = (FN(cmp_bits)(cnt + (int64_t)i * ldc, e->lim + j0, nr) ^ fm) & keep;
            o[off[i] + (j0 >> 6)] |= bits << (j0 & 63);
        }
        return;
    }
    const int f32 = (e->mode == BNN_EPI_F32);
    const float *al = f32 ? e->alpha + j0 : NULL, *bi = f32 ? e->bias + j0 : NULL;
    if (cs == 1) {   /* row-major / NHWC: each row's columns are contiguous */
        for (int i = 0; i < mr; i++) {
            const uint64_t *c = cnt + (int64_t)i * ldc;
            if (f32) {
                float *r = (float *)e->out + off[i] + j0;
                for (int j = 0; j < nr; j++) r[j] = (float)(int32_t)(K - 2 * (int64_t)c[j]) * al[j] + bi[j];
            } else {
                int32_t *r = (int32_t *)e->out + off[i] + j0;
                for (int j = 0; j < nr; j++) r[j] = (int32_t)(K - 2 * (int64_t)c[j]);
            }
        }
    } else if (mr == EPI_MR && off[mr - 1] - off[0] == mr - 1 && !f32) {   /* NCHW, full tile */
        for (int j = 0; j < nr; j++) {
            const uint64_t *c = cnt + j;
            int32_t *r = (int32_t *)e->out + off[0] + (j0 + j) * cs;
            BNN_UNROLL for (int i = 0; i < EPI_MR; i++) r[i] = (int32_t)(K - 2 * (int64_t)c[(int64_t)i * ldc]);
        }
    } else if (off[mr - 1] - off[0] == mr - 1) {   /* NCHW, rows are adjacent pixels */
        for (int j = 0; j < nr; j++) {
            const uint64_t *c = cnt + j;
            const int64_t base = off[0] + (j0 + j) * cs;
            if (f32) {
                float *r = (float *)e->out + base;
                for (int i = 0; i < mr; i++) r[i] = (float)(int32_t)(K - 2 * (int64_t)c[(int64_t)i * ldc]) * al[j] + bi[j];
            } else {
                int32_t *r = (int32_t *)e->out + base;
                for (int i = 0; i < mr; i++) r[i] = (int32_t)(K - 2 * (int64_t)c[(int64_t)i * ldc]);
            }
        }
    } else {         /* NCHW across an image boundary */
        for (int i = 0; i < mr; i++) {
            const uint64_t *c = cnt + (int64_t)i * ldc;
            for (int j = 0; j < nr; j++) {
                const int64_t d = K - 2 * (int64_t)c[j], at = off[i] + (j0 + j) * cs;
                if (f32) ((float *)e->out)[at] = (float)(int32_t)d * al[j] + bi[j];
                else ((int32_t *)e->out)[at] = (int32_t)d;
            }
        }
    }
}

/* ------------------------------------------------------------------ dot tile */
BNN_INLINE BNN_ATTR void FN(dot_tile_t)(const int MR, const uint64_t *const *ap,
                                        const uint64_t *const *bp, int64_t nw, uint64_t *cnt) {
    VT acc[D_MR][D_NR];
    BNN_UNROLL for (int i = 0; i < MR; i++)
        BNN_UNROLL for (int j = 0; j < D_NR; j++) acc[i][j] = V_ZERO();
    int64_t w = 0;
    for (; w + VW <= nw; w += VW) {
        VT bv[D_NR];
        BNN_UNROLL for (int j = 0; j < D_NR; j++) bv[j] = V_LOAD(bp[j] + w);
        BNN_UNROLL for (int i = 0; i < MR; i++) {
            VT av = V_LOAD(ap[i] + w);
            BNN_UNROLL for (int j = 0; j < D_NR; j++) acc[i][j] = V_POPACC(acc[i][j], V_XOR(av, bv[j]));
        }
    }
#if VW > 1
    if (w < nw) {
        const int n = (int)(nw - w);
        VT bv[D_NR];
        BNN_UNROLL for (int j = 0; j < D_NR; j++) bv[j] = V_LOADN(bp[j] + w, n);
        BNN_UNROLL for (int i = 0; i < MR; i++) {
            VT av = V_LOADN(ap[i] + w, n);
            BNN_UNROLL for (int j = 0; j < D_NR; j++) acc[i][j] = V_POPACC(acc[i][j], V_XOR(av, bv[j]));
        }
    }
#endif
#ifdef V_HSUM_ROW
    BNN_UNROLL for (int i = 0; i < MR; i++) V_HSUM_ROW(acc[i], cnt + i * D_NR);
#else
    BNN_UNROLL for (int i = 0; i < MR; i++)
        BNN_UNROLL for (int j = 0; j < D_NR; j++) cnt[i * D_NR + j] = V_HSUM(acc[i][j]);
#endif
}

static BNN_ATTR void FN(dot_tile)(int mr, const uint64_t *const *ap, const uint64_t *const *bp,
                                  int64_t nw, uint64_t *cnt) {
    switch (mr) {
    case 1: FN(dot_tile_t)(1, ap, bp, nw, cnt); break;
#if D_MR >= 2
    case 2: FN(dot_tile_t)(2, ap, bp, nw, cnt); break;
#endif
#if D_MR >= 3
    case 3: FN(dot_tile_t)(3, ap, bp, nw, cnt); break;
#endif
#if D_MR >= 4
    case 4: FN(dot_tile_t)(4, ap, bp, nw, cnt); break;
#endif
    default: break;
    }
}

/* Small-M GEMM: chunk t of T owns a 64-aligned range of B rows (output columns), so
 * BITS output words are never shared between chunks.  B streams once; A stays in L1. */
static BNN_ATTR void FN(dot_worker)(const bnn_job *job, int t, int T) {
    const int64_t M = job->rows.M, N = job->N, nw = job->rows.L;
    const uint64_t *a = job->rows.base, *b = job->b;
    const int64_t nchunks = (N + 63) / 64;
    const int64_t j0 = (nchunks * t / T) * 64, j1 = bnn_min64((nchunks * (t + 1) / T) * 64, N);
    uint64_t cnt[D_MR * D_NR];
    const uint64_t *ap[D_MR], *bp[D_NR];
    int64_t off[D_MR];
    for (int64_t j = j0; j < j1; j += D_NR) {
        const int nr = (int)bnn_min64(D_NR, j1 - j);
        for (int r = 0; r < D_NR; r++) bp[r] = b + bnn_min64(j + r, N - 1) * nw;  /* edge: repeat */
        for (int64_t i = 0; i < M; i += D_MR) {
            const int mr = (int)bnn_min64(D_MR, M - i);
            for (int r = 0; r < mr; r++) { ap[r] = a + (i + r) * nw; off[r] = bnn_out_off(&job->epi, i + r); }
            FN(dot_tile)(mr, ap, bp, nw, cnt);
            FN(epilogue)(D_MR, &job->epi, cnt, D_NR, off, mr, j, nr);
        }
    }
}

/* ---------------------------------------------------------------- panel tile */
BNN_INLINE BNN_ATTR void FN(panel_tile_t)(const int MR, const uint64_t *const *ap, int64_t nseg,
                                          int64_t seg_stride, int64_t L, const uint64_t *pg,
                                          uint64_t *cnt) {
#if BNN_LEVEL == 2 || BNN_LEVEL == 4
    /* AVX2 / NEON: per-byte counts (AVX2: vpshufb nibble lookup; NEON: vcnt) accumulate
     * in bytes for up to 31 words (31 * 8 = 248 < 256), then one fold (vpsadbw; NEON:
     * pairwise widening adds) moves them into 64-bit lanes. */
#  if BNN_LEVEL == 2
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    typedef __m256i B8;
#    define B8_ZERO() _mm256_setzero_si256()
#    define B8_CNTADD(a8, y) _mm256_add_epi8(_mm256_add_epi8((a8), _mm256_shuffle_epi8(lut, _mm256_and_si256((y), m4))), \
                                             _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16((y), 4), m4)))
#    define B8_FOLD(acc, a8) _mm256_add_epi64((acc), _mm256_sad_epu8((a8), _mm256_setzero_si256()))
#  else
    typedef uint8x16_t B8;
#    define B8_ZERO() vdupq_n_u8(0)
#    define B8_CNTADD(a8, y) vaddq_u8((a8), vcntq_u8(vreinterpretq_u8_u64(y)))
#    define B8_FOLD(acc, a8) vpadalq_u32((acc), vpaddlq_u16(vpaddlq_u8(a8)))
#  endif
    /* The 64-bit sums live in cnt (memory: only touched at a fold), so the inner loop keeps
     * just the byte accumulators, the B vectors and the constants in registers (16 ymm). */
    BNN_UNROLL for (int i = 0; i < MR; i++)
        BNN_UNROLL for (int v = 0; v < P_NV; v++) V_STORE(cnt + i * P_NR + v * VW, V_ZERO());
    B8 a8[P_MR][P_NV];
    BNN_UNROLL for (int i = 0; i < MR; i++)
        BNN_UNROLL for (int v = 0; v < P_NV; v++) a8[i][v] = B8_ZERO();
    int pending = 0;   /* words in the byte accumulators (<= 31) */
    for (int64_t s = 0; s < nseg; s++) {
        const uint64_t *pw = pg + s * L * P_NR;
        const uint64_t *as[P_MR];
        BNN_UNROLL for (int i = 0; i < MR; i++) as[i] = ap[i] + s * seg_stride;
        for (int64_t w0 = 0; w0 < L; w0 += 31) {
            const int64_t w1 = bnn_min64(L, w0 + 31);
            if (pending + (int)(w1 - w0) > 31) {
                BNN_UNROLL for (int i = 0; i < MR; i++)
                    BNN_UNROLL for (int v = 0; v < P_NV; v++) {
                        uint64_t *c = cnt + i * P_NR + v * VW;
                        V_STORE(c, B8_FOLD(V_LOAD(c), a8[i][v]));
                        a8[i][v] = B8_ZERO();
                    }
                pending = 0;
            }
            pending += (int)(w1 - w0);
            for (int64_t w = w0; w < w1; w++) {
                VT bv[P_NV];
                BNN_UNROLL for (int v = 0; v < P_NV; v++) bv[v] = V_LOAD(pw + w * P_NR + v * VW);
                BNN_UNROLL for (int i = 0; i < MR; i++) {
                    const VT x = V_BCAST(as[i][w]);
                    BNN_UNROLL for (int v = 0; v < P_NV; v++) a8[i][v] = B8_CNTADD(a8[i][v], V_XOR(x, bv[v]));
                }
            }
        }
    }
    BNN_UNROLL for (int i = 0; i < MR; i++)
        BNN_UNROLL for (int v = 0; v < P_NV; v++) {
            uint64_t *c = cnt + i * P_NR + v * VW;
            V_STORE(c, B8_FOLD(V_LOAD(c), a8[i][v]));
        }
#  undef B8_ZERO
#  undef B8_CNTADD
#  undef B8_FOLD
#else
    VT acc[P_MR][P_NV];
    BNN_UNROLL for (int i = 0; i < MR; i++)
        BNN_UNROLL for (int v = 0; v < P_NV; v++) acc[i][v] = V_ZERO();
    for (int64_t s = 0; s < nseg; s++) {
        const uint64_t *pw = pg + s * L * P_NR;
        const uint64_t *as[P_MR];
        BNN_UNROLL for (int i = 0; i < MR; i++) as[i] = ap[i] + s * seg_stride;
        for (int64_t w = 0; w < L; w++) {
            VT bv[P_NV];
            BNN_UNROLL for (int v = 0; v < P_NV; v++) bv[v] = V_LOAD(pw + w * P_NR + v * VW);
            BNN_UNROLL for (int i = 0; i < MR; i++) {
                VT x = V_BCAST(as[i][w]);
                BNN_UNROLL for (int v = 0; v < P_NV; v++) acc[i][v] = V_POPACC(acc[i][v], V_XOR(x, bv[v]));
            }
        }
    }
    BNN_UNROLL for (int i = 0; i < MR; i++)
        BNN_UNROLL for (int v = 0; v < P_NV; v++) V_STORE(cnt + i * P_NR + v * VW, acc[i][v]);
#endif
}

#if BNN_LEVEL == 2
/* The four scalar column sums of a hybrid tile row as one vector, for one 32-byte store, so
 * that the epilogue's 32-byte loads of cnt are forwarded from it (from four 8-byte stores they
 * cannot be: the load waits until the stores reach L1).  Used by the 3x3 tile, where it saves
 * a few % of a 64@56 conv; in the general tile (longer rows) it measured no faster. */
#  define HY_SET4(c0, c1, c2, c3) _mm256_set_epi64x((long long)(c3), (long long)(c2), (long long)(c1), (long long)(c0))
/* AVX2 hybrid tile: 2 rows x 8 columns; columns 0-3 by the vector nibble lookup (FP pipes),
 * columns 4-7 by scalar POPCNT (integer ALUs), so the two kinds of units work in parallel
 * (on Zen 1 they overlap partly: ~62 MAC/cycle against 49 for the lookup tile's mix). */
BNN_INLINE BNN_ATTR void FN(panel_tile_hyb_t)(const int MR, const uint64_t *const *ap, int64_t nseg,
                                              int64_t seg_stride, int64_t L, const uint64_t *pg,
                                              uint64_t *cnt) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
#  define HY_CNTADD(a8, y) _mm256_add_epi8(_mm256_add_epi8((a8), _mm256_shuffle_epi8(lut, _mm256_and_si256((y), m4))), \
                                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16((y), 4), m4)))
#  define HY_FOLD(acc, a8) _mm256_add_epi64((acc), _mm256_sad_epu8((a8), _mm256_setzero_si256()))
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, e0 = s0, e1 = s0;
    uint64_t c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
    /* The panel words are contiguous across segments; the A pointers jump between them.
     * Byte counts hold at most 31 words, so fold before a run that would exceed that. */
    const uint64_t *bw = pg, *a0 = ap[0], *a1 = ap[MR - 1];
    const int64_t jump = seg_stride - L;
    int64_t pending = 0;
    for (int64_t s = 0; s < nseg; s++) {
        for (int64_t w0 = 0; w0 < L; w0 += 31) {
            const int64_t run = bnn_min64(L - w0, 31);
            if (pending + run > 31) {
                s0 = HY_FOLD(s0, e0); e0 = _mm256_setzero_si256();
                if (MR > 1) { s1 = HY_FOLD(s1, e1); e1 = _mm256_setzero_si256(); }
                pending = 0;
            }
            pending += run;
            const uint64_t *const a0e = a0 + run;
            do {
                const __m256i bv = _mm256_loadu_si256((const __m256i *)bw);
                const uint64_t x0 = *a0;
                e0 = HY_CNTADD(e0, _mm256_xor_si256(_mm256_set1_epi64x((long long)x0), bv));
                BNN_SCALAR4(c00, c01, c02, c03, x0, bw + 4);
                if (MR > 1) {
                    const uint64_t x1 = *a1;
                    e1 = HY_CNTADD(e1, _mm256_xor_si256(_mm256_set1_epi64x((long long)x1), bv));
                    BNN_SCALAR4(c10, c11, c12, c13, x1, bw + 4);
                }
                bw += 8; a0++; a1++;
            } while (a0 != a0e);
        }
        a0 += jump; a1 += jump;
    }
    _mm256_storeu_si256((__m256i *)cnt, HY_FOLD(s0, e0));
    cnt[4] = c00; cnt[5] = c01; cnt[6] = c02; cnt[7] = c03;
    if (MR > 1) {
        _mm256_storeu_si256((__m256i *)(cnt + 8), HY_FOLD(s1, e1));
        cnt[12] = c10; cnt[13] = c11; cnt[14] = c12; cnt[15] = c13;
    }
#  undef HY_CNTADD
#  undef HY_FOLD
}
#  if !BNN_MSVC
/* The hybrid tile of a 3x3 conv with C <= 64 (one word per pixel, 9 word steps): straight-line,
 * no fold (9 < 31 words).  Each row and step is one asm block, the lookup half and
 * BNN_SCALAR4's scalar half: written with intrinsics, the fully unrolled steps are
 * interleaved by the compiler into register spills. */
#    define HY_STEP(e, c0, c1, c2, c3, a, b) do {                                         \
        __m256i y_, h_;                                                                   \
        uint64_t x_, t_;                                                                  \
        __asm__("vpbroadcastq %[am], %[y]\n\tmovq %[am], %[xx]\n\tvpxor (%[bp]), %[y], %[y]\n\t" \
                "vpsrlw $4, %[y], %[h]\n\tvpand %[m4], %[y], %[y]\n\t"                     \
                "vpand %[m4], %[h], %[h]\n\tvpshufb %[y], %[lut], %[y]\n\t"                \
                "vpshufb %[h], %[lut], %[h]\n\tvpaddb %[y], %[ee], %[ee]\n\t"              \
                "vpaddb %[h], %[ee], %[ee]\n\t" BNN_SCALAR4_ASM("32", "40", "48", "56")  \
                : [ee] "+x"(e), [y] "=&x"(y_), [h] "=&x"(h_), [xx] "=&r"(x_),              \
                  BNN_SCALAR4_OUT(c0, c1, c2, c3, t_)                                     \
                : [am] "m"(a), [lut] "x"(lut), [m4] "x"(m4), BNN_SCALAR4_IN(b, 64));       \
    } while (0)
BNN_INLINE BNN_ATTR void FN(panel_tile_hyb_3x3)(const uint64_t *a0, const uint64_t *a1, int64_t ss,
                                                const uint64_t *pg, uint64_t *cnt) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i e0 = _mm256_setzero_si256(), e1 = e0;
    uint64_t c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
    BNN_UNROLL for (int s = 0; s < 3; s++)
        BNN_UNROLL for (int w = 0; w < 3; w++) {
            const uint64_t *b = pg + 8 * (3 * s + w);
            HY_STEP(e0, c00, c01, c02, c03, a0[s * ss + w], b);
            HY_STEP(e1, c10, c11, c12, c13, a1[s * ss + w], b);
        }
    _mm256_storeu_si256((__m256i *)cnt, _mm256_sad_epu8(e0, _mm256_setzero_si256()));
    _mm256_storeu_si256((__m256i *)(cnt + 4), HY_SET4(c00, c01, c02, c03));
    _mm256_storeu_si256((__m256i *)(cnt + 8), _mm256_sad_epu8(e1, _mm256_setzero_si256()));
    _mm256_storeu_si256((__m256i *)(cnt + 12), HY_SET4(c10, c11, c12, c13));
}
#    undef HY_STEP
#  endif
static BNN_ATTR void FN(panel_tile_hyb)(int mr, const uint64_t *const *ap, int64_t nseg,
                                        int64_t seg_stride, int64_t L, const uint64_t *pg, uint64_t *cnt) {
    if (mr == 1) FN(panel_tile_hyb_t)(1, ap, nseg, seg_stride, L, pg, cnt);
#  if !BNN_MSVC
    else if (nseg == 3 && L == 3) FN(panel_tile_hyb_3x3)(ap[0], ap[1], seg_stride, pg, cnt);   /* 3x3, C <= 64 */
#  else
    else if (nseg == 3 && L == 3) FN(panel_tile_hyb_t)(2, ap, 3, seg_stride, 3, pg, cnt);
#  endif
    else FN(panel_tile_hyb_t)(2, ap, nseg, seg_stride, L, pg, cnt);
}
#  undef HY_SET4
#endif

static BNN_ATTR void FN(panel_tile)(int mr, const uint64_t *const *ap, int64_t nseg,
                                    int64_t seg_stride, int64_t L, const uint64_t *pg, uint64_t *cnt) {
    switch (mr) {
    case 1: FN(panel_tile_t)(1, ap, nseg, seg_stride, L, pg, cnt); break;
    case 2: FN(panel_tile_t)(2, ap, nseg, seg_stride, L, pg, cnt); break;
#if P_MR >= 3
    case 3: FN(panel_tile_t)(3, ap, nseg, seg_stride, L, pg, cnt); break;
#endif
#if P_MR >= 4
    case 4: FN(panel_tile_t)(4, ap, nseg, seg_stride, L, pg, cnt); break;
#endif
#if P_MR >= 5
    case 5: FN(panel_tile_t)(5, ap, nseg, seg_stride, L, pg, cnt); break;
#endif
#if P_MR >= 6
    case 6: FN(panel_tile_t)(6, ap, nseg, seg_stride, L, pg, cnt); break;
#endif
    default: break;
    }
}

/* Large-M GEMM and conv: chunk t of T owns a contiguous range of row tiles (output
 * rows/pixels), so no two chunks write the same output element or word.  The chunk
 * first lists its rows' input pointers and output offsets (job->rowptr/rowoff, no
 * division in the hot loop), then processes its rows in blocks of about 256 KiB of A,
 * each block meeting every column group of the panel while it sits in L2. */
BNN_INLINE BNN_ATTR void FN(panel_worker_t)(const bnn_job *job, int t, int T, const int PMR, const int HYB) {
    const bnn_rows *R = &job->rows;
    const int64_t M = R->M, N = job->N, wlen = R->nseg * R->L;
    const int64_t ntiles = (M + PMR - 1) / PMR;
    const int64_t t0 = ntiles * t / T, t1 = ntiles * (t + 1) / T;
    if (t0 >= t1) return;
    const int64_t ngroups = (N + P_NR - 1) / P_NR;
    const uint64_t **rowptr = job->rowptr;
    int64_t *rowoff = job->rowoff;
    {   /* rows p0 .. p1 - 1: one division, then increments */
        const int64_t p0 = t0 * PMR, p1 = bnn_min64(t1 * PMR, M);
        int64_t img = p0 / R->P, q = p0 - img * R->P, oy = q / R->OW, ox = q - oy * R->OW;
        const int64_t eimg = p0 / job->epi.P;
        int64_t eq = p0 - eimg * job->epi.P, eoff = eimg * job->epi.rs_outer;
        for (int64_t p = p0; p < p1; p++) {
            rowptr[p] = R->base + img * R->img_stride + oy * R->row_stride + ox * R->col_stride;
            rowoff[p] = eoff + eq * job->epi.rs_inner;
            if (++ox == R->OW) { ox = 0; if (++oy * R->OW == R->P) { oy = 0; img++; } }
            if (++eq == job->epi.P) { eq = 0; eoff += job->epi.rs_outer; }
        }
    }
    int64_t blk = (256 * 1024) / bnn_max64(1, wlen * 8 * PMR);
    if (blk < 1) blk = 1;
    BNN_ALIGN64 uint64_t cnt[P_MR * P_NR];
#if BNN_LEVEL == 2
    /* the hybrid tile's I32 NCHW output, decided once per chunk */
    const int nchw2 = HYB && job->epi.mode == BNN_EPI_I32 && job->epi.cs != 1;
    const int64_t K = job->epi.K, cs = job->epi.cs;
#endif
    for (int64_t b0 = t0; b0 < t1; b0 += blk) {
        const int64_t b1 = bnn_min64(b0 + blk, t1);
        for (int64_t g = 0; g < ngroups; g++) {
            const uint64_t *pg = job->panel + g * wlen * P_NR;
            const int64_t j = g * P_NR;
            const int nr = (int)bnn_min64(P_NR, N - j);
#if BNN_LEVEL == 2
            int32_t *const ocol = nchw2 ? (int32_t *)job->epi.out + j * cs : NULL;
#endif
            for (int64_t tile = b0; tile < b1; tile++) {
                const int64_t p0 = tile * PMR;
                const int mr = (int)bnn_min64(PMR, M - p0);
#if BNN_LEVEL == 2
                if (HYB) FN(panel_tile_hyb)(mr, rowptr + p0, R->nseg, R->seg_stride, R->L, pg, cnt);
                else
#endif
                FN(panel_tile)(mr, rowptr + p0, R->nseg, R->seg_stride, R->L, pg, cnt);
#if BNN_LEVEL == 2
                if (nchw2 && mr == 2 && nr == 8 && rowoff[p0 + 1] - rowoff[p0] == 1) {
                    FN(store_nchw_2x8)(K, cnt, ocol + rowoff[p0], cs);
                    continue;
                }
#endif
                FN(epilogue)(PMR, &job->epi, cnt, P_NR, rowoff + p0, mr, j, nr);
            }
        }
    }
}

static BNN_ATTR void FN(panel_worker)(const bnn_job *job, int t, int T) {
    FN(panel_worker_t)(job, t, T, P_MR, 0);
}

#if BNN_LEVEL == 2
/* The hybrid tile's worker: 2-row tiles (bnn_impl.p_mr_alt), same panel (P_NR = 8). */
static BNN_ATTR void FN(panel_worker_hyb)(const bnn_job *job, int t, int T) {
    FN(panel_worker_t)(job, t, T, 2, 1);
}
#endif

/* ------------------------------------------------------------------ packing */
#define BNN_NEG_F32(v) ((v) < 0.0f)
#define BNN_BAD_F32(v) (!(fabsf(v) <= FLT_MAX))
#define BNN_NEG_F64(v) ((v) < 0.0)
#define BNN_BAD_F64(v) (!(fabs(v) <= DBL_MAX))
#define BNN_NEG_I8(v) ((v) < 0)
#define BNN_BAD_I8(v) 0
#define BNN_NEG_BOOL(v) ((v) == 0)
#define BNN_BAD_BOOL(v) 0

/* Rows of k values -> rows of nw words.  Chunk t packs a contiguous range of rows. */
#define BNN_DEFINE_PACK_ROWS(NAME, T, NEG, BAD)                                           \
static BNN_ATTR void FN(NAME)(bnn_pack_job *job, int t, int T_) {                         \
    const int64_t rows = job->rows, k = job->k, nw = job->nw;                             \
    const int64_t r0 = rows * t / T_, r1 = rows * (t + 1) / T_;                           \
    int bad = 0;                                                                          \
    for (int64_t r = r0; r < r1; r++) {                                                   \
        const T *xr = (const T *)job->x + r * k;                                          \
        uint64_t *o = job->out + r * nw;                                                  \
        for (int64_t wi = 0; wi < nw; wi++) {                                             \
            const int64_t j0 = wi * 64, jn = bnn_min64(64, k - j0);                       \
            uint64_t word = 0;                                                            \
            for (int64_t j = 0; j < jn; j++) {                                            \
                T v = xr[j0 + j];                                                         \
                word |= (uint64_t)(NEG(v)) << j;                                          \
                bad |= BAD(v);                                                            \
            }                                                                             \
            o[wi] = word;                                                                 \
        }                                                                                 \
    }                                                                                     \
    job->bad[t] = bad;                                                                    \
}

#if BNN_LEVEL == 2 || BNN_LEVEL == 3
/* One word from n <= 64 float32 values x[j * stride] (bit j = x < 0): the explicit-SIMD
 * packers' scalar tails.  Sets *bad if any value is NaN or +-inf. */
BNN_INLINE BNN_ATTR uint64_t FN(word_f32)(const float *x, int64_t stride, int64_t n, int *bad) {
    uint64_t word = 0;
    int b = 0;
    for (int64_t j = 0; j < n; j++) {
        const float v = x[j * stride];
        word |= (uint64_t)BNN_NEG_F32(v) << j;
        b |= BNN_BAD_F32(v);
    }
    *bad |= b;
    return word;
}

/* float32 rows, explicit SIMD: compare < 0 to a bit mask, 8 or 16 values at a time. */
static BNN_ATTR void FN(pack_rows_f32)(bnn_pack_job *job, int t, int T_) {
    const int64_t rows = job->rows, k = job->k, nw = job->nw;
    const int64_t r0 = rows * t / T_, r1 = rows * (t + 1) / T_;
    const int64_t kfull = k & ~(int64_t)63;
    int bad = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = (const float *)job->x + r * k;
        uint64_t *o = job->out + r * nw;
        for (int64_t j0 = 0; j0 < kfull; j0 += 64) {
            uint64_t word = 0;
#  if BNN_LEVEL == 3
            const __m512 zero = _mm512_setzero_ps(), inf = _mm512_set1_ps(INFINITY);
            for (int q = 0; q < 4; q++) {
                __m512 v = _mm512_loadu_ps(xr + j0 + 16 * q);
                __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
                __mmask16 fin = _mm512_cmp_ps_mask(_mm512_abs_ps(v), inf, _CMP_LT_OQ);
                word |= (uint64_t)neg << (16 * q);
                bad |= (fin != 0xffff);
            }
#  else
            const __m256 zero = _mm256_setzero_ps(), inf = _mm256_set1_ps(INFINITY);
            const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
            int finall = 0xff;
            for (int q = 0; q < 8; q++) {
                __m256 v = _mm256_loadu_ps(xr + j0 + 8 * q);
                int neg = _mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ));
                finall &= _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(v, absmask), inf, _CMP_LT_OQ));
                word |= (uint64_t)(unsigned)neg << (8 * q);
            }
            bad |= (finall != 0xff);
#  endif
            o[j0 >> 6] = word;
        }
        if (kfull < k) o[kfull >> 6] = FN(word_f32)(xr + kfull, 1, k - kfull, &bad);
    }
    job->bad[t] = bad;
}
#else
BNN_DEFINE_PACK_ROWS(pack_rows_f32, float, BNN_NEG_F32, BNN_BAD_F32)
#endif
BNN_DEFINE_PACK_ROWS(pack_rows_f64, double, BNN_NEG_F64, BNN_BAD_F64)
BNN_DEFINE_PACK_ROWS(pack_rows_i8, int8_t, BNN_NEG_I8, BNN_BAD_I8)
BNN_DEFINE_PACK_ROWS(pack_rows_bool, uint8_t, BNN_NEG_BOOL, BNN_BAD_BOOL)

/* NCHW values -> NHWC words: out[(n * p + pix) * cw + c / 64] bit c % 64.  Work items are
 * (image, word, block of 256 pixels); chunk t takes a contiguous range of them.  The
 * inner loop runs over contiguous pixels, which the compiler vectorises per ISA level. */
#define BNN_NCHW_PB 256
#define BNN_DEFINE_PACK_NCHW(NAME, T, NEG, BAD)                                           \
static BNN_ATTR void FN(NAME)(bnn_pack_job *job, int t, int T_) {                         \
    const int64_t N = job->n, C = job->c, P = job->p, CW = job->cw;                       \
    const int64_t nblk = (P + BNN_NCHW_PB - 1) / BNN_NCHW_PB, items = N * CW * nblk;      \
    const int64_t i0 = items * t / T_, i1 = items * (t + 1) / T_;                         \
    uint64_t tmp[BNN_NCHW_PB];                                                            \
    int bad = 0;                                                                          \
    for (int64_t it = i0; it < i1; it++) {                                                \
        const int64_t n = it / (CW * nblk), rem = it - n * CW * nblk;                     \
        const int64_t wi = rem / nblk, p0 = (rem - wi * nblk) * BNN_NCHW_PB;              \
        const int64_t pb = bnn_min64(BNN_NCHW_PB, P - p0);                                \
        const int64_t c0 = wi * 64, c1 = bnn_min64(C, c0 + 64);                           \
        for (int64_t q = 0; q < pb; q++) tmp[q] = 0;                                      \
        for (int64_t c = c0; c < c1; c++) {                                               \
            const T *xr = (const T *)job->x + (n * C + c) * P + p0;                       \
            const uint64_t bit = (uint64_t)1 << (c - c0);                                 \
            int b = 0;                                                                    \
            for (int64_t q = 0; q < pb; q++) {                                            \
                T v = xr[q];                                                              \
                tmp[q] |= NEG(v) ? bit : 0;                                               \
                b |= BAD(v);                                                              \
            }                                                                             \
            bad |= b;                                                                     \
        }                                                                                 \
        uint64_t *o = job->out + (n * P + p0) * CW + wi;                                  \
        for (int64_t q = 0; q < pb; q++) o[q * CW] = tmp[q];                              \
    }                                                                                     \
    job->bad[t] = bad;                                                                    \
}
#if BNN_LEVEL == 2
/* float32 NCHW -> NHWC words, explicit AVX2: 16 pixels at a time, channel bits ORed into
 * 32-bit lanes (channels 0-31 and 32-63 of the word), then interleaved into 64-bit words.
 * Non-finite values are caught by accumulating x - x (0 for finite x, NaN otherwise). */
BNN_INLINE BNN_ATTR void FN(store_words8)(uint64_t *o, int64_t CW, __m256i lo, __m256i hi) {
    const __m256i a = _mm256_unpacklo_epi32(lo, hi), b = _mm256_unpackhi_epi32(lo, hi);
    const __m256i w0 = _mm256_permute2x128_si256(a, b, 0x20), w1 = _mm256_permute2x128_si256(a, b, 0x31);
    if (CW == 1) {
        _mm256_storeu_si256((__m256i *)o, w0);
        _mm256_storeu_si256((__m256i *)(o + 4), w1);
    } else {
        BNN_ALIGN64 uint64_t tmp[8];
        _mm256_store_si256((__m256i *)tmp, w0);
        _mm256_store_si256((__m256i *)(tmp + 4), w1);
        for (int k = 0; k < 8; k++) o[k * CW] = tmp[k];
    }
}

static BNN_ATTR void FN(pack_nchw_f32)(bnn_pack_job *job, int t, int T_) {
    const int64_t N = job->n, C = job->c, P = job->p, CW = job->cw;
    const int64_t nblk = (P + BNN_NCHW_PB - 1) / BNN_NCHW_PB, items = N * CW * nblk;
    const int64_t i0 = items * t / T_, i1 = items * (t + 1) / T_;
    const __m256 zero = _mm256_setzero_ps();
    __m256 badv = zero;
    int bad = 0;
    for (int64_t it = i0; it < i1; it++) {
        const int64_t n = it / (CW * nblk), rem = it - n * CW * nblk;
        const int64_t wi = rem / nblk, p0 = (rem - wi * nblk) * BNN_NCHW_PB;
        const int64_t pb = bnn_min64(BNN_NCHW_PB, P - p0);
        const int64_t c0 = wi * 64, nc = bnn_min64(C, c0 + 64) - c0;
        const float *xb = (const float *)job->x + (n * C + c0) * P + p0;
        uint64_t *o = job->out + (n * P + p0) * CW + wi;
        int64_t q = 0;
        for (; q + 16 <= pb; q += 16) {
            __m256i l0 = _mm256_setzero_si256(), l1 = l0, h0 = l0, h1 = l0;
            __m256i bit = _mm256_set1_epi32(1);
            const int64_t nlo = bnn_min64(nc, 32);
            for (int64_t c = 0; c < nlo; c++) {
                const __m256 v0 = _mm256_loadu_ps(xb + c * P + q), v1 = _mm256_loadu_ps(xb + c * P + q + 8);
                l0 = _mm256_or_si256(l0, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(v0, zero, _CMP_LT_OQ)), bit));
                l1 = _mm256_or_si256(l1, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(v1, zero, _CMP_LT_OQ)), bit));
                badv = _mm256_or_ps(badv, _mm256_or_ps(_mm256_sub_ps(v0, v0), _mm256_sub_ps(v1, v1)));
                bit = _mm256_add_epi32(bit, bit);
            }
            bit = _mm256_set1_epi32(1);
            for (int64_t c = 32; c < nc; c++) {
                const __m256 v0 = _mm256_loadu_ps(xb + c * P + q), v1 = _mm256_loadu_ps(xb + c * P + q + 8);
                h0 = _mm256_or_si256(h0, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(v0, zero, _CMP_LT_OQ)), bit));
                h1 = _mm256_or_si256(h1, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(v1, zero, _CMP_LT_OQ)), bit));
                badv = _mm256_or_ps(badv, _mm256_or_ps(_mm256_sub_ps(v0, v0), _mm256_sub_ps(v1, v1)));
                bit = _mm256_add_epi32(bit, bit);
            }
            FN(store_words8)(o + q * CW, CW, l0, h0);
            FN(store_words8)(o + (q + 8) * CW, CW, l1, h1);
        }
        for (; q < pb; q++)   /* the block's last pb % 16 pixels */
            o[q * CW] = FN(word_f32)(xb + q, P, nc, &bad);
    }
    bad |= _mm256_movemask_ps(_mm256_cmp_ps(badv, badv, _CMP_UNORD_Q)) != 0;
    job->bad[t] = bad;
}
#else
BNN_DEFINE_PACK_NCHW(pack_nchw_f32, float, BNN_NEG_F32, BNN_BAD_F32)
#endif
BNN_DEFINE_PACK_NCHW(pack_nchw_f64, double, BNN_NEG_F64, BNN_BAD_F64)
BNN_DEFINE_PACK_NCHW(pack_nchw_i8, int8_t, BNN_NEG_I8, BNN_BAD_I8)
BNN_DEFINE_PACK_NCHW(pack_nchw_bool, uint8_t, BNN_NEG_BOOL, BNN_BAD_BOOL)

/* Affine float32 packers: bit = (x * scale + offset < 0), the product and the sum each
 * rounded to float32 (no FMA: the build uses -ffp-contract=off), i.e. exactly NumPy's
 * float32 `x * scale + offset < 0`.  scale/offset are per column (rows) or per channel
 * (NCHW).  NaN/inf in x is reported (the result itself is never NaN for finite x, s, o). */
static BNN_ATTR void FN(pack_rows_aff)(bnn_pack_job *job, int t, int T_) {
    const int64_t rows = job->rows, k = job->k, nw = job->nw;
    const int64_t r0 = rows * t / T_, r1 = rows * (t + 1) / T_;
    const float *sc = job->scale, *of = job->offset;
    int bad = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = (const float *)job->x + r * k;
        uint64_t *o = job->out + r * nw;
        for (int64_t wi = 0; wi < nw; wi++) {
            const int64_t j0 = wi * 64, jn = bnn_min64(64, k - j0);
            uint64_t word = 0;
            for (int64_t j = 0; j < jn; j++) {
                const float v = xr[j0 + j];
                float z = v * sc[j0 + j];
                z = z + of[j0 + j];
                word |= (uint64_t)(z < 0.0f) << j;
                bad |= BNN_BAD_F32(v);
            }
            o[wi] = word;
        }
    }
    job->bad[t] = bad;
}

static BNN_ATTR void FN(pack_nchw_aff)(bnn_pack_job *job, int t, int T_) {
    const int64_t N = job->n, C = job->c, P = job->p, CW = job->cw;
    const int64_t nblk = (P + BNN_NCHW_PB - 1) / BNN_NCHW_PB, items = N * CW * nblk;
    const int64_t i0 = items * t / T_, i1 = items * (t + 1) / T_;
    uint64_t tmp[BNN_NCHW_PB];
    int bad = 0;
    for (int64_t it = i0; it < i1; it++) {
        const int64_t n = it / (CW * nblk), rem = it - n * CW * nblk;
        const int64_t wi = rem / nblk, p0 = (rem - wi * nblk) * BNN_NCHW_PB;
        const int64_t pb = bnn_min64(BNN_NCHW_PB, P - p0);
        const int64_t c0 = wi * 64, c1 = bnn_min64(C, c0 + 64);
        for (int64_t q = 0; q < pb; q++) tmp[q] = 0;
        for (int64_t c = c0; c < c1; c++) {
            const float *xr = (const float *)job->x + (n * C + c) * P + p0;
            const float s = job->scale[c], off = job->offset[c];
            const uint64_t bit = (uint64_t)1 << (c - c0);
            int b = 0;
            for (int64_t q = 0; q < pb; q++) {
                const float v = xr[q];
                float z = v * s;
                z = z + off;
                tmp[q] |= (z < 0.0f) ? bit : 0;
                b |= BNN_BAD_F32(v);
            }
            bad |= b;
        }
        uint64_t *o = job->out + (n * P + p0) * CW + wi;
        for (int64_t q = 0; q < pb; q++) o[q * CW] = tmp[q];
    }
    job->bad[t] = bad;
}

/* ------------------------------------------------------------------ table */
static const bnn_impl FN(impl) = {
    FN(dot_worker), FN(panel_worker),
    {FN(pack_rows_f32), FN(pack_rows_f64), FN(pack_rows_i8), FN(pack_rows_bool)},
    {FN(pack_nchw_f32), FN(pack_nchw_f64), FN(pack_nchw_i8), FN(pack_nchw_bool)},
    FN(pack_rows_aff), FN(pack_nchw_aff),
    D_MR, D_NR, P_MR, P_NR,
#if BNN_LEVEL == 2
    FN(panel_worker_hyb), 2,
#else
    NULL, 0,
#endif
};

/* ------------------------------------------------------------------ cleanup */
#undef SFX
#undef BNN_ATTR
#undef VT
#undef VW
#undef V_ZERO
#undef V_LOAD
#undef V_LOADN
#undef V_BCAST
#undef V_XOR
#undef V_POPACC
#undef V_HSUM
#undef V_STORE
#undef V_HSUM_ROW
#undef D_MR
#undef D_NR
#undef P_MR
#undef P_NV
#undef P_NR
#undef FN
#undef BNN_DEFINE_PACK_ROWS
#undef BNN_DEFINE_PACK_NCHW
#undef BNN_NCHW_PB
#undef BNN_NEG_F32
#undef BNN_BAD_F32
#undef BNN_NEG_F64
#undef BNN_BAD_F64
#undef BNN_NEG_I8
#undef BNN_BAD_I8
#undef BNN_NEG_BOOL
#undef BNN_BAD_BOOL
#undef BNN_LEVEL
