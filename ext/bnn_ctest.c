/* bnn_ctest.c -- C-level test of bnnlab's kernels, independent of Python.
 *
 * Build (any C11 compiler with the kernels' requirements; see ext/test_cross.sh):
 *     cc -O2 -std=gnu11 -ffp-contract=off -Iext ext/bnn_ctest.c -o bnn_ctest -lpthread -lm
 * Run:  ./bnn_ctest        (exit status 0 = every check passed)
 *
 * At every instruction-set level the CPU has (x86-64: portable, popcnt, avx2, avx512;
 * AArch64: portable, neon), with 1 and 2 threads, on the word-boundary grid
 * (K, C = 1, 63, 64, 65, 127, 128, 129, ...), it checks against scalar references computed
 * from the +-1 values themselves (never from the packed words under test):
 *   - packing of rows (float32, int8) and of NCHW maps into NHWC words, padding bits 0;
 *   - GEMM on both paths (M <= 8 "dot" and M > 8 "panel") with the I32, F32 and BITS
 *     epilogues;
 *   - conv2d (several kernel sizes, strides, +1 / -1 padding, NCHW / NHWC / BITS out);
 *   - both panel kernels where a level has two (x86 AVX2: nibble lookup and hybrid);
 *   - the roofline micro-kernels run and return a positive rate.
 */
#include "bnn_kernels.h"
#include "bnn_roofline.h"
#include <stdio.h>

static int g_fail = 0, g_checks = 0;
static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void) {   /* xorshift64* */
    g_rng ^= g_rng >> 12; g_rng ^= g_rng << 25; g_rng ^= g_rng >> 27;
    return g_rng * 0x2545f4914f6cdd1dULL;
}

static int8_t pm1(void) { return (rnd() >> 33) & 1 ? -1 : 1; }

#define CHECK(cond, ...) do {                                                       \
        g_checks++;                                                                 \
        if (!(cond)) {                                                              \
            if (g_fail < 20) { printf("FAIL %s:%d: ", __FILE__, __LINE__);          \
                               printf(__VA_ARGS__); printf("\n"); }                 \
            g_fail++;                                                               \
        }                                                                           \
    } while (0)

/* Reference packer: bit j of row = (v[j] < 0), LSB first, padding 0. */
static void ref_pack(const int8_t *v, int64_t k, uint64_t *out) {
    const int64_t nw = (k + 63) / 64;
    for (int64_t w = 0; w < nw; w++) out[w] = 0;
    for (int64_t j = 0; j < k; j++)
        if (v[j] < 0) out[j / 64] |= (uint64_t)1 << (j % 64);
}

static const int64_t KS[] = {1, 63, 64, 65, 127, 128, 129, 200, 257};
static const int64_t MS[] = {1, 2, 3, 8, 9, 17};
static const int64_t NS[] = {1, 7, 64, 70};
#define LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* ---------------------------------------------------------------- packing */
static void test_pack(int lvl, int nt) {
    for (int ki = 0; ki < LEN(KS); ki++) {
        const int64_t k = KS[ki], rows = 5, nw = (k + 63) / 64;
        int8_t *v = malloc((size_t)(rows * k));
        float *f = malloc(sizeof(float) * (size_t)(rows * k));
        uint64_t *want = malloc(8 * (size_t)(rows * nw)), *got = malloc(8 * (size_t)(rows * nw));
        for (int64_t i = 0; i < rows * k; i++) {
            v[i] = pm1();
            f[i] = v[i] < 0 ? -(float)(rnd() % 1000) / 7.0f - 1e-3f : (float)(rnd() % 1000) / 7.0f;
        }
        f[0] = 0.0f; v[0] = 1;                          /* sign(0) = +1 */
        if (k > 1) { f[1] = -0.0f; v[1] = 1; }          /* -0.0 packs as +1 */
        for (int64_t r = 0; r < rows; r++) ref_pack(v + r * k, k, want + r * nw);
        for (int dt = 0; dt < 2; dt++) {
            memset(got, 0xab, 8 * (size_t)(rows * nw));
            const int bad = bnn_pack_rows(lvl, dt == 0 ? BNN_DT_F32 : BNN_DT_I8,
                                          dt == 0 ? (const void *)f : (const void *)v, rows, k, got, nt);
            CHECK(!bad, "pack_rows reported NaN (lvl %d, k %lld)", lvl, (long long)k);
            CHECK(!memcmp(got, want, 8 * (size_t)(rows * nw)), "pack_rows %s lvl %d k %lld nt %d",
                  dt == 0 ? "f32" : "i8", lvl, (long long)k, nt);
        }
        /* NCHW (n=2, c=k channels, p=3 pixels) -> NHWC words */
        const int64_t n = 2, p = 3;
        int8_t *x = malloc((size_t)(n * k * p)), *pix = malloc((size_t)k);
        uint64_t *wn = malloc(8 * (size_t)(n * p * nw)), *gn = malloc(8 * (size_t)(n * p * nw));
        for (int64_t i = 0; i < n * k * p; i++) x[i] = pm1();
        for (int64_t img = 0; img < n; img++)
            for (int64_t q = 0; q < p; q++) {
                for (int64_t c = 0; c < k; c++) pix[c] = x[(img * k + c) * p + q];
                ref_pack(pix, k, wn + (img * p + q) * nw);
            }
        memset(gn, 0xab, 8 * (size_t)(n * p * nw));
        bnn_pack_nchw(lvl, BNN_DT_I8, x, n, k, p, gn, nt);
        CHECK(!memcmp(gn, wn, 8 * (size_t)(n * p * nw)), "pack_nchw lvl %d c %lld", lvl, (long long)k);
        free(v); free(f); free(want); free(got); free(x); free(pix); free(wn); free(gn);
    }
}

/* ---------------------------------------------------------------- GEMM */
static void test_gemm(int lvl, int nt) {
    for (int ki = 0; ki < LEN(KS); ki++)
        for (int mi = 0; mi < LEN(MS); mi++)
            for (int ni = 0; ni < LEN(NS); ni++) {
                const int64_t K = KS[ki], M = MS[mi], N = NS[ni], nw = (K + 63) / 64;
                int8_t *a = malloc((size_t)(M * K)), *b = malloc((size_t)(N * K));
                uint64_t *pa = malloc(8 * (size_t)(M * nw)), *pb = malloc(8 * (size_t)(N * nw));
                int32_t *want = malloc(4 * (size_t)(M * N)), *got = malloc(4 * (size_t)(M * N));
                float *gf = malloc(4 * (size_t)(M * N)), *al = malloc(4 * (size_t)N), *bi = malloc(4 * (size_t)N);
                int64_t *lim = malloc(8 * (size_t)N);
                const int64_t ow = (N + 63) / 64;
                uint64_t *flip = calloc((size_t)ow, 8), *gb = calloc((size_t)(M * ow), 8);
                for (int64_t i = 0; i < M * K; i++) a[i] = pm1();
                for (int64_t i = 0; i < N * K; i++) b[i] = pm1();
                for (int64_t i = 0; i < M; i++) ref_pack(a + i * K, K, pa + i * nw);
                for (int64_t j = 0; j < N; j++) {
                    ref_pack(b + j * K, K, pb + j * nw);
                    al[j] = 0.5f + (float)(rnd() % 100) / 37.0f;
                    bi[j] = (float)(rnd() % 100) / 13.0f - 3.0f;
                    lim[j] = (int64_t)(rnd() % (uint64_t)(K + 2)) - 1;
                    if (rnd() & 1) flip[j / 64] |= (uint64_t)1 << (j % 64);
                }
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++) {
                        int32_t s = 0;
                        for (int64_t q = 0; q < K; q++) s += a[i * K + q] * b[j * K + q];
                        want[i * N + j] = s;
                    }
                memset(got, 0, 4 * (size_t)(M * N));
                int rc = bnn_gemm(lvl, pa, M, pb, N, nw, K, BNN_EPI_I32, got, NULL, NULL, NULL, NULL, nt);
                CHECK(rc == 0 && !memcmp(got, want, 4 * (size_t)(M * N)), "gemm i32 lvl %d M %lld N %lld K %lld nt %d",
                      lvl, (long long)M, (long long)N, (long long)K, nt);
                rc = bnn_gemm(lvl, pa, M, pb, N, nw, K, BNN_EPI_F32, gf, al, bi, NULL, NULL, nt);
                int okf = rc == 0;
                for (int64_t i = 0; i < M * N; i++) {
                    const int64_t j = i % N;
                    float e = (float)want[i] * al[j];
                    e = e + bi[j];
                    okf &= gf[i] == e;
                }
                CHECK(okf, "gemm f32 lvl %d M %lld N %lld K %lld", lvl, (long long)M, (long long)N, (long long)K);
                rc = bnn_gemm(lvl, pa, M, pb, N, nw, K, BNN_EPI_BITS, gb, NULL, NULL, lim, flip, nt);
                int okb = rc == 0;
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < N; j++) {
                        const int64_t mism = (K - want[i * N + j]) / 2;
                        const int bit = (mism > lim[j]) ^ (int)((flip[j / 64] >> (j % 64)) & 1);
                        okb &= (int)((gb[i * ow + j / 64] >> (j % 64)) & 1) == bit;
                    }
                for (int64_t i = 0; i < M; i++)          /* bits past N stay 0 */
                    if (N % 64) okb &= (gb[i * ow + ow - 1] >> (N % 64)) == 0;
                CHECK(okb, "gemm bits lvl %d M %lld N %lld K %lld", lvl, (long long)M, (long long)N, (long long)K);
                free(a); free(b); free(pa); free(pb); free(want); free(got); free(gf); free(al); free(bi);
                free(lim); free(flip); free(gb);
            }
}

/* ---------------------------------------------------------------- conv */
typedef struct { int64_t n, c, h, w, o, kh, kw, s, p; int pad_neg; } conv_case;

static void test_conv_case(int lvl, int nt, const conv_case *cc) {
    const int64_t N = cc->n, C = cc->c, H = cc->h, W = cc->w, O = cc->o, kh = cc->kh, kw = cc->kw;
    const int64_t s = cc->s, p = cc->p, CW = (C + 63) / 64;
    const int64_t OH = (H + 2 * p - kh) / s + 1, OW = (W + 2 * p - kw) / s + 1;
    const int64_t K = C * kh * kw, P = OH * OW;
    int8_t *x = malloc((size_t)(N * C * H * W)), *wt = malloc((size_t)(O * C * kh * kw)), *tmp = malloc((size_t)C);
    uint64_t *px = malloc(8 * (size_t)(N * H * W * CW)), *pw = malloc(8 * (size_t)(O * kh * kw * CW));
    int32_t *want = malloc(4 * (size_t)(N * O * P)), *got = malloc(4 * (size_t)(N * O * P));
    const int64_t ow = (O + 63) / 64;
    int64_t *lim = malloc(8 * (size_t)O);
    uint64_t *flip = calloc((size_t)ow, 8), *gb = calloc((size_t)(N * P * ow), 8);
    for (int64_t i = 0; i < N * C * H * W; i++) x[i] = pm1();
    for (int64_t i = 0; i < O * C * kh * kw; i++) wt[i] = pm1();
    for (int64_t o = 0; o < O; o++) {
        lim[o] = (int64_t)(rnd() % (uint64_t)(K + 2)) - 1;
        if (rnd() & 1) flip[o / 64] |= (uint64_t)1 << (o % 64);
    }
    for (int64_t n = 0; n < N; n++)               /* NHWC input words */
        for (int64_t y = 0; y < H; y++)
            for (int64_t q = 0; q < W; q++) {
                for (int64_t c = 0; c < C; c++) tmp[c] = x[((n * C + c) * H + y) * W + q];
                ref_pack(tmp, C, px + ((n * H + y) * W + q) * CW);
            }
    for (int64_t o = 0; o < O; o++)               /* (O, kh, kw, CW) weight words */
        for (int64_t dy = 0; dy < kh; dy++)
            for (int64_t dx = 0; dx < kw; dx++) {
                for (int64_t c = 0; c < C; c++) tmp[c] = wt[((o * C + c) * kh + dy) * kw + dx];
                ref_pack(tmp, C, pw + ((o * kh + dy) * kw + dx) * CW);
            }
    const int padv = cc->pad_neg ? -1 : 1;
    for (int64_t n = 0; n < N; n++)               /* reference, NCHW out */
        for (int64_t o = 0; o < O; o++)
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    int32_t acc = 0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t dy = 0; dy < kh; dy++)
                            for (int64_t dx = 0; dx < kw; dx++) {
                                const int64_t iy = oy * s - p + dy, ix = ox * s - p + dx;
                                const int v = (iy < 0 || iy >= H || ix < 0 || ix >= W) ? padv
                                              : x[((n * C + c) * H + iy) * W + ix];
                                acc += v * wt[((o * C + c) * kh + dy) * kw + dx];
                            }
                    want[((n * O + o) * OH + oy) * OW + ox] = acc;
                }
    int rc = bnn_conv(lvl, px, N, H, W, C, pw, O, kh, kw, s, s, p, p, cc->pad_neg, OH, OW,
                      BNN_EPI_I32, 0, got, NULL, NULL, NULL, NULL, nt);
    CHECK(rc == 0 && !memcmp(got, want, 4 * (size_t)(N * O * P)),
          "conv nchw lvl %d nt %d C %lld O %lld k %lldx%lld s %lld p %lld neg %d", lvl, nt, (long long)C,
          (long long)O, (long long)kh, (long long)kw, (long long)s, (long long)p, cc->pad_neg);
    rc = bnn_conv(lvl, px, N, H, W, C, pw, O, kh, kw, s, s, p, p, cc->pad_neg, OH, OW,
                  BNN_EPI_I32, 1, got, NULL, NULL, NULL, NULL, nt);
    int ok = rc == 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t q = 0; q < P; q++)
            for (int64_t o = 0; o < O; o++) ok &= got[(n * P + q) * O + o] == want[(n * O + o) * P + q];
    CHECK(ok, "conv nhwc lvl %d C %lld O %lld", lvl, (long long)C, (long long)O);
    rc = bnn_conv(lvl, px, N, H, W, C, pw, O, kh, kw, s, s, p, p, cc->pad_neg, OH, OW,
                  BNN_EPI_BITS, 0, gb, NULL, NULL, lim, flip, nt);
    ok = rc == 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t q = 0; q < P; q++)
            for (int64_t o = 0; o < O; o++) {
                const int64_t mism = (K - want[(n * O + o) * P + q]) / 2;
                const int bit = (mism > lim[o]) ^ (int)((flip[o / 64] >> (o % 64)) & 1);
                ok &= (int)((gb[(n * P + q) * ow + o / 64] >> (o % 64)) & 1) == bit;
            }
    CHECK(ok, "conv bits lvl %d C %lld O %lld", lvl, (long long)C, (long long)O);
    free(x); free(wt); free(tmp); free(px); free(pw); free(want); free(got); free(lim); free(flip); free(gb);
}

static void test_conv(int lvl, int nt) {
    static const int64_t CS[] = {1, 63, 64, 65, 129};
    static const int64_t OS[] = {1, 7, 64, 70};
    static const int64_t GEOM[][4] = {{3, 3, 1, 1}, {3, 3, 2, 1}, {1, 1, 1, 0}, {2, 3, 1, 0}, {5, 5, 1, 2}};
    for (int ci = 0; ci < LEN(CS); ci++)
        for (int oi = 0; oi < LEN(OS); oi++)
            for (int g = 0; g < LEN(GEOM); g++)
                for (int neg = 0; neg < 2; neg++) {
                    if (neg && GEOM[g][3] == 0) continue;
                    conv_case cc = {2, CS[ci], 6, 5, OS[oi], GEOM[g][0], GEOM[g][1], GEOM[g][2], GEOM[g][3], neg};
                    test_conv_case(lvl, nt, &cc);
                }
}

/* bnn_fmaf (the software single-rounding fma of the residual post-op) == C99 fmaf, on
 * random triples of every magnitude, exact cancellations and near-ties. */
static void test_fmaf(void) {
    uint64_t st = 0x9e3779b97f4a7c15ULL;
    int bad = 0;
    for (int i = 0; i < 2000000; i++) {
        float v[3];
        for (int q = 0; q < 3; q++) {
            st ^= st << 13; st ^= st >> 7; st ^= st << 17;
            uint32_t bits = (uint32_t)(st >> 11);
            if (i % 4 == 1) bits = (bits & 0x807fffffu) | (((uint32_t)(110 + (st >> 60) * 2)) << 23);
            memcpy(&v[q], &bits, 4);
            if (!isfinite(v[q])) v[q] = 1.0f;
        }
        if (i % 4 == 2) v[2] = -(float)((double)v[0] * (double)v[1]);   /* near cancellation */
        const float want = fmaf(v[0], v[1], v[2]), got = bnn_fmaf(v[0], v[1], v[2]);
        if (memcmp(&want, &got, 4) != 0 && !(want != want && got != got)) bad++;
    }
    CHECK(bad == 0, "bnn_fmaf differs from fmaf on %d of 2000000 triples", bad);
}

int main(void) {
    const int det = bnn_detect_level();
    printf("bnn_ctest: levels available:");
    for (int l = 0; l <= det; l++) printf(" %s", bnn_level_names[l]);
    printf(" (of %d compiled), openmp=%d, pool=%d\n", BNN_N_LEVELS,
#ifdef _OPENMP
           1,
#else
           0,
#endif
           BNN_HAVE_POOL);
    bnn_grain_scale = 0.0;   /* use the requested thread count even on tiny problems */
    test_fmaf();
    for (int lvl = 0; lvl <= det; lvl++) {
        /* both panel kernels where the level has two (x86 AVX2: lookup, hybrid) */
        for (int var = 0; var <= bnn_has_panel_alt(lvl); var++) {
            bnn_set_panel_variant(bnn_has_panel_alt(lvl) ? var : -1);
            for (int nt = 1; nt <= 2; nt++) {
                const int before = g_fail;
                test_pack(lvl, nt);
                test_gemm(lvl, nt);
                test_conv(lvl, nt);
                printf("  %-8s%s %d thread(s): %s\n", bnn_level_names[lvl],
                       bnn_has_panel_alt(lvl) ? (var ? " hybrid" : " lookup") : "", nt,
                       g_fail == before ? "ok" : "FAILED");
            }
        }
        bnn_set_panel_variant(-1);
        if (bnn_rl_supported()) {
            const double r = bnn_rl_binary(lvl, det, 0.002);
            CHECK(r > 0, "roofline binary %s returned %g", bnn_level_names[lvl], r);
        }
    }
    if (bnn_rl_supported()) {
        CHECK(bnn_rl_fp32(BNN_RL_FP32_BASE, 0.002) > 0, "roofline fp32 base");
        CHECK(bnn_rl_clock_hz(0.002) > 0, "roofline clock");
    }
    printf("bnn_ctest: %d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
