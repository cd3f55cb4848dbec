/* bnn_kernels.h -- entry points of bnnlab's packed-bit kernels (called from _kernels.pyx).
 *
 * PRIVATE.  Every function trusts its caller: bnnlab/kernels.py has checked dtypes,
 * shapes, contiguity, value ranges and allocated (zeroed where required) outputs.
 *
 * Run-time dispatch: bnn_impl.h is compiled once per ISA level with a target attribute;
 * bnn_level() picks the best level the CPU (and OS) supports, capped by
 * bnn_set_level_cap() (bnnlab.kernels._set_isa / _force_portable, env BNNLAB_ISA).
 * The binary needs no -march flag and runs on any x86-64 (or, portable level only,
 * any other) CPU.
 *
 * Threads: a job is split into deterministic chunks (row tiles, 64-column blocks, ...),
 * about BNN_CHUNKS_PER_THREAD per thread, run by bnnlab's pool (bnn_pool.h: the caller
 * never waits for a worker that has not started) or, if selected, an OpenMP dynamic loop.
 * The thread count is capped by the amount of work.  Each output element (and each
 * packed output word) is written by exactly one chunk, so results never depend on the
 * number of threads or on who ran what.
 */
#ifndef BNN_KERNELS_H
#define BNN_KERNELS_H

#include "bnn_common.h"
#include "bnn_pool.h"
#include "bnn_roofline.h"   /* bnn_rl_now_ns: the clock of the panel-kernel calibration */

#define BNN_LEVEL 0
#include "bnn_impl.h"
#if BNN_X86
#  define BNN_LEVEL 1
#  include "bnn_impl.h"
#  define BNN_LEVEL 2
#  include "bnn_impl.h"
#  define BNN_LEVEL 3
#  include "bnn_impl.h"
static const bnn_impl *const bnn_impls[BNN_N_LEVELS] = {&impl_l0, &impl_l1, &impl_l2, &impl_l3};
static const char *const bnn_level_names[BNN_N_LEVELS] = {"portable", "popcnt", "avx2", "avx512"};
#elif BNN_NEON
#  define BNN_LEVEL 4
#  include "bnn_impl.h"
static const bnn_impl *const bnn_impls[BNN_N_LEVELS] = {&impl_l0, &impl_l4};
static const char *const bnn_level_names[BNN_N_LEVELS] = {"portable", "neon"};
#else
static const bnn_impl *const bnn_impls[BNN_N_LEVELS] = {&impl_l0};
static const char *const bnn_level_names[BNN_N_LEVELS] = {"portable"};
#endif

/* ----------------------------------------------------------------- dispatch */
static int bnn_detected = -1;
static int bnn_cap = BNN_N_LEVELS - 1;

#if BNN_X86 && BNN_MSVC
/* MSVC has no __builtin_cpu_supports: CPUID bits, and XGETBV for the OS-saved state. */
static int bnn_detect_x86_msvc(void) {
    int r[4];
    __cpuid(r, 0);
    const int maxleaf = r[0];
    __cpuid(r, 1);
    const int popcnt = (r[2] >> 23) & 1, osxsave = (r[2] >> 27) & 1, avx = (r[2] >> 28) & 1;
    if (!popcnt) return BNN_LEVEL_PORTABLE;
    if (!osxsave || !avx || maxleaf < 7) return BNN_LEVEL_POPCNT;
    const unsigned long long xcr0 = _xgetbv(0);
    if ((xcr0 & 6) != 6) return BNN_LEVEL_POPCNT;                  /* XMM + YMM state */
    __cpuidex(r, 7, 0);
    if (!((r[1] >> 5) & 1)) return BNN_LEVEL_POPCNT;                /* AVX2 */
    const int f512 = (r[1] >> 16) & 1, bw = (r[1] >> 30) & 1, vl = (r[1] >> 31) & 1;
    const int vpop = (r[2] >> 14) & 1;
    if (f512 && bw && vl && vpop && (xcr0 & 0xe6) == 0xe6) return BNN_LEVEL_AVX512;
    return BNN_LEVEL_AVX2;
}
#endif

static int bnn_detect_level(void) {
    if (bnn_detected >= 0) return bnn_detected;
    int lvl = BNN_LEVEL_PORTABLE;
#if BNN_X86 && BNN_MSVC
    lvl = bnn_detect_x86_msvc();
#elif BNN_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("popcnt")) {
        lvl = BNN_LEVEL_POPCNT;
        if (__builtin_cpu_supports("avx2")) {   /* also checks OS support of the YMM state */
            lvl = BNN_LEVEL_AVX2;
            if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq"))
                lvl = BNN_LEVEL_AVX512;
        }
    }
#elif BNN_NEON
    lvl = BNN_LEVEL_NEON;                       /* Advanced SIMD is part of AArch64 */
#endif
    bnn_detected = lvl;
    return lvl;
}

static int bnn_level(void) {
    int d = bnn_detect_level();
    return d < bnn_cap ? d : bnn_cap;
}

static void bnn_set_level_cap(int cap) {
    if (cap < 0) cap = 0;
    if (cap >= BNN_N_LEVELS) cap = BNN_N_LEVELS - 1;
    bnn_cap = cap;
}

static int bnn_panel_variant(int level);
/* Tile shapes of `level`; p_mr: rows of the panel tile in use (bnn_panel_variant). */
static void bnn_tiles(int level, int *d_mr, int *d_nr, int *p_mr, int *p_nr) {
    const bnn_impl *im = bnn_impls[level];
    *d_mr = im->d_mr; *d_nr = im->d_nr; *p_nr = im->p_nr;
    *p_mr = bnn_panel_variant(level) ? im->p_mr_alt : im->p_mr;
}

static int bnn_openmp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ------------------------------------------------------------------ threads */
/* Use at most one thread per `grain` units of work (waking a thread costs microseconds).
 * bnn_grain_scale multiplies every grain; 0 disables the cap (tests use it to run the
 * multi-threaded partitioning on small problems). */
static double bnn_grain_scale = 1.0;

static int bnn_threads_for(int nt, double work, double grain) {
    if (nt <= 1) return 1;
    if (bnn_grain_scale <= 0.0) return nt;
    double useful = work / (grain * bnn_grain_scale);
    if (useful < 2.0) return 1;
    if (useful < (double)nt) return (int)useful;
    return nt;
}

/* Threading backend: 0 = bnnlab's pool (bnn_pool.h, default), 1 = OpenMP dynamic loop. */
#define BNN_BACKEND_POOL 0
#define BNN_BACKEND_OPENMP 1
#if !BNN_HAVE_POOL && defined(_OPENMP)
static int bnn_backend = BNN_BACKEND_OPENMP;   /* no pthreads (MSVC): OpenMP's threads */
#else
static int bnn_backend = BNN_BACKEND_POOL;     /* single-threaded where neither exists */
#endif

#define BNN_CHUNKS_PER_THREAD 8
#define BNN_MAX_CHUNKS 256            /* bnn_pack_job keeps one flag per chunk */

static int bnn_nchunks(int nt, int64_t units) {
    if (nt <= 1 || units <= 1) return 1;
    int64_t c = (int64_t)nt * BNN_CHUNKS_PER_THREAD;
    if (c > units) c = units;
    if (c > BNN_MAX_CHUNKS) c = BNN_MAX_CHUNKS;
    return (int)c;
}

static void bnn_run_chunks(bnn_chunk_fn fn, void *ctx, int nchunks, int nt) {
    if (nt <= 1 || nchunks <= 1) {
        for (int c = 0; c < nchunks; c++) fn(ctx, c, nchunks);
        return;
    }
#ifdef _OPENMP
    if (bnn_backend == BNN_BACKEND_OPENMP) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int c = 0; c < nchunks; c++) fn(ctx, c, nchunks);
        return;
    }
#endif
    bnn_pool_run(fn, ctx, nchunks, nt);
}

typedef struct { bnn_job_fn f; const bnn_job *job; } bnn_job_call;
static void bnn_job_chunk(void *ctx, int c, int n) {
    const bnn_job_call *jc = (const bnn_job_call *)ctx;
    jc->f(jc->job, c, n);
}

/* Run a kernel job over `units` indivisible work units (row tiles or 64-column blocks);
 * chunk c of n is what the worker computes for (t, T) = (c, n). */
static void bnn_run_job(bnn_job_fn f, const bnn_job *job, int nt, int64_t units) {
    bnn_job_call jc = {f, job};
    bnn_run_chunks(bnn_job_chunk, &jc, bnn_nchunks(nt, units), nt);
}

typedef struct { bnn_pack_fn f; bnn_pack_job *job; } bnn_pack_call;
static void bnn_pack_chunk(void *ctx, int c, int n) {
    const bnn_pack_call *pc = (const bnn_pack_call *)ctx;
    pc->f(pc->job, c, n);
}

static int bnn_run_pack(bnn_pack_fn f, bnn_pack_job *job, int nt, int64_t units) {
    memset(job->bad, 0, sizeof(job->bad));
    bnn_pack_call pc = {f, job};
    bnn_run_chunks(bnn_pack_chunk, &pc, bnn_nchunks(nt, units), nt);
    int bad = 0;
    for (int i = 0; i < BNN_MAX_CHUNKS; i++) bad |= job->bad[i];
    return bad;
}

/* ------------------------------------------------------------------ packing */
/* x: rows x k values (dtype BNN_DT_*), out: rows x ceil(k/64) words (fully written).
 * Returns 1 if a float input held NaN or +-inf, else 0. */
static int bnn_pack_rows(int level, int dtype, const void *x, int64_t rows, int64_t k,
                         uint64_t *out, int nt) {
    bnn_pack_job job;
    job.x = x; job.out = out; job.rows = rows; job.k = k; job.nw = (k + 63) / 64;
    job.n = job.c = job.p = job.cw = 0; job.dtype = dtype;
    job.scale = job.offset = NULL;
    nt = bnn_threads_for(nt, (double)rows * (double)k, 262144.0);
    return bnn_run_pack(bnn_impls[level]->pack_rows[dtype], &job, nt, rows);
}

/* x: N x C x P values (P = H * W), out: N x P x ceil(C/64) words (fully written). */
static int bnn_pack_nchw(int level, int dtype, const void *x, int64_t n, int64_t c, int64_t p,
                         uint64_t *out, int nt) {
    bnn_pack_job job;
    job.x = x; job.out = out; job.rows = job.k = job.nw = 0;
    job.n = n; job.c = c; job.p = p; job.cw = (c + 63) / 64; job.dtype = dtype;
    job.scale = job.offset = NULL;
    nt = bnn_threads_for(nt, (double)n * (double)c * (double)p, 262144.0);
    return bnn_run_pack(bnn_impls[level]->pack_nchw[dtype], &job, nt, n * job.cw * ((p + 255) / 256));
}

/* Affine float32 packing: bit = (x * scale + offset < 0), two float32 roundings (no FMA).
 * Rows: scale/offset per column (k entries); NCHW: per channel (c entries).  Same
 * layouts and return value as bnn_pack_rows / bnn_pack_nchw. */
static int bnn_pack_rows_affine(int level, const float *x, int64_t rows, int64_t k,
                                const float *scale, const float *offset, uint64_t *out, int nt) {
    bnn_pack_job job;
    job.x = x; job.out = out; job.rows = rows; job.k = k; job.nw = (k + 63) / 64;
    job.n = job.c = job.p = job.cw = 0; job.dtype = BNN_DT_F32;
    job.scale = scale; job.offset = offset;
    nt = bnn_threads_for(nt, (double)rows * (double)k, 262144.0);
    return bnn_run_pack(bnn_impls[level]->pack_rows_aff, &job, nt, rows);
}

static int bnn_pack_nchw_affine(int level, const float *x, int64_t n, int64_t c, int64_t p,
                                const float *scale, const float *offset, uint64_t *out, int nt) {
    bnn_pack_job job;
    job.x = x; job.out = out; job.rows = job.k = job.nw = 0;
    job.n = n; job.c = c; job.p = p; job.cw = (c + 63) / 64; job.dtype = BNN_DT_F32;
    job.scale = scale; job.offset = offset;
    nt = bnn_threads_for(nt, (double)n * (double)c * (double)p, 262144.0);
    return bnn_run_pack(bnn_impls[level]->pack_nchw_aff, &job, nt, n * job.cw * ((p + 255) / 256));
}

/* ------------------------------------------------------------------ max-pool on bits */
/* Max-pool of packed NHWC +-1 maps (C channels in CW words per pixel): with bit 1 = -1,
 * the max of a window is the AND of its bits; channels flagged in orw take the min (OR).
 * Taps outside the image are skipped (never win, as torch's -inf padding); a window
 * with no tap inside the image (impossible when padding <= kernel / 2) gives AND = -1,
 * OR = +1.  Bits past C are cleared.  out: N x OH x OW x CW words, fully written. */
typedef struct {
    const uint64_t *x; uint64_t *out; const uint64_t *orw;
    int64_t N, H, W, C, CW, kh, kw, sh, sw, ph, pw, OH, OW;
} bnn_mp_job;

static void bnn_maxpool_chunk(void *ctx, int t, int T_) {
    const bnn_mp_job *j = (const bnn_mp_job *)ctx;
    const int64_t CW = j->CW, rows = j->N * j->OH;
    const int64_t r0 = rows * t / T_, r1 = rows * (t + 1) / T_;
    const uint64_t last = (j->C % 64) ? (((uint64_t)1 << (j->C % 64)) - 1) : ~(uint64_t)0;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t img = r / j->OH, oy = r - img * j->OH;
        const int64_t y0 = oy * j->sh - j->ph;
        const int64_t ylo = bnn_max64(y0, 0), yhi = bnn_min64(y0 + j->kh, j->H);
        for (int64_t ox = 0; ox < j->OW; ox++) {
            const int64_t x0 = ox * j->sw - j->pw;
            const int64_t xlo = bnn_max64(x0, 0), xhi = bnn_min64(x0 + j->kw, j->W);
            uint64_t *o = j->out + ((img * j->OH + oy) * j->OW + ox) * CW;
            for (int64_t w = 0; w < CW; w++) {
                uint64_t a = ~(uint64_t)0, b = 0;
                for (int64_t y = ylo; y < yhi; y++) {
                    const uint64_t *row = j->x + ((img * j->H + y) * j->W) * CW + w;
                    for (int64_t q = xlo; q < xhi; q++) {
                        const uint64_t v = row[q * CW];
                        a &= v; b |= v;
                    }
                }
                const uint64_t f = j->orw[w];
                uint64_t v = (a & ~f) | (b & f);
                if (w == CW - 1) v &= last;
                o[w] = v;
            }
        }
    }
}

static void bnn_maxpool_bits(const uint64_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                             int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                             int64_t OH, int64_t OW, const uint64_t *orw, uint64_t *out, int nt) {
    bnn_mp_job j = {x, out, orw, N, H, W, C, (C + 63) / 64, kh, kw, sh, sw, ph, pw, OH, OW};
    nt = bnn_threads_for(nt, (double)N * OH * OW * j.CW * kh * kw, 262144.0);
    bnn_run_chunks(bnn_maxpool_chunk, &j, bnn_nchunks(nt, N * OH), nt);
}

/* Affine NCHW packing followed by the max-pool, through an internal scratch (the packed
 * map before pooling).  Returns 1 on NaN/inf in x, -1 on allocation failure, else 0. */
static int bnn_pack_nchw_affine_pool(int level, const float *x, int64_t n, int64_t c,
                                     int64_t h, int64_t w, const float *scale,
                                     const float *offset, int64_t kh, int64_t kw, int64_t sh,
                                     int64_t sw, int64_t ph, int64_t pw, int64_t OH, int64_t OW,
                                     const uint64_t *orw, uint64_t *out, int nt) {
    const int64_t cw = (c + 63) / 64;
    uint64_t *tmp = (uint64_t *)bnn_alloc((size_t)n * (size_t)h * (size_t)w * (size_t)cw * 8u);
    if (!tmp) return -1;
    int bad = bnn_pack_nchw_affine(level, x, n, c, h * w, scale, offset, tmp, nt);
    if (!bad) bnn_maxpool_bits(tmp, n, h, w, c, kh, kw, sh, sw, ph, pw, OH, OW, orw, out, nt);
    bnn_free(tmp);
    return bad ? 1 : 0;
}

/* B (N rows x wlen words) -> panel: ceil(N/nr) groups of [wlen][nr] words; missing
 * rows of the last group are zero (their results are computed and discarded). */
typedef struct { const uint64_t *b; uint64_t *panel; int64_t N, wlen, ngroups; int nr; } bnn_panel_job;

static void bnn_panel_chunk(void *ctx, int c, int n) {
    const bnn_panel_job *pj = (const bnn_panel_job *)ctx;
    const int64_t g0 = pj->ngroups * c / n, g1 = pj->ngroups * (c + 1) / n;
    const int64_t wlen = pj->wlen, nr = pj->nr;
    for (int64_t g = g0; g < g1; g++) {
        uint64_t *pg = pj->panel + g * wlen * nr;
        if ((g + 1) * nr <= pj->N && (nr == 4 || nr == 8)) {
            /* full group: contiguous writes, nr reads per word (the panel row stays in L1) */
            const uint64_t *br = pj->b + g * nr * wlen;
            if (nr == 8) {
                int64_t w = 0;
#if BNN_X86
                for (; w + 2 <= wlen; w += 2, pg += 16) {   /* 2 x 2 transposes, SSE2 */
                    for (int r = 0; r < 8; r += 2) {
                        const __m128i u = _mm_loadu_si128((const __m128i *)(br + r * wlen + w));
                        const __m128i v = _mm_loadu_si128((const __m128i *)(br + (r + 1) * wlen + w));
                        _mm_storeu_si128((__m128i *)(pg + r), _mm_unpacklo_epi64(u, v));
                        _mm_storeu_si128((__m128i *)(pg + 8 + r), _mm_unpackhi_epi64(u, v));
                    }
                }
#endif
                for (; w < wlen; w++, pg += 8)
                    for (int r = 0; r < 8; r++) pg[r] = br[r * wlen + w];
            } else {
                for (int64_t w = 0; w < wlen; w++, pg += 4)
                    for (int r = 0; r < 4; r++) pg[r] = br[r * wlen + w];
            }
            continue;
        }
        for (int64_t r = 0; r < nr; r++) {
            const int64_t row = g * nr + r;
            if (row < pj->N) {
                const uint64_t *br = pj->b + row * wlen;
                for (int64_t w = 0; w < wlen; w++) pg[w * nr + r] = br[w];
            } else {
                for (int64_t w = 0; w < wlen; w++) pg[w * nr + r] = 0;
            }
        }
    }
}

/* Fill panel (ceil(N / nr) * wlen * nr words) with the transposed groups of b. */
static void bnn_fill_panel(const uint64_t *b, int64_t N, int64_t wlen, int nr, uint64_t *panel,
                           int nt) {
    const int64_t ngroups = (N + nr - 1) / nr;
    bnn_panel_job pj = {b, panel, N, wlen, ngroups, nr};
    nt = bnn_threads_for(nt, (double)N * (double)wlen, 262144.0);
    bnn_run_chunks(bnn_panel_chunk, &pj, bnn_nchunks(nt, ngroups), nt);
}

static uint64_t *bnn_make_panel(const uint64_t *b, int64_t N, int64_t wlen, int nr, int nt) {
    const int64_t ngroups = (N + nr - 1) / nr;
    uint64_t *panel = (uint64_t *)bnn_alloc((size_t)ngroups * (size_t)wlen * (size_t)nr * 8u);
    if (!panel) return NULL;
    bnn_fill_panel(b, N, wlen, nr, panel, nt);
    return panel;
}

/* Column width of the panel the given ISA level's kernels read. */
static int bnn_panel_nr(int level) { return bnn_impls[level]->p_nr; }

/* ------------------------------------------------------------------ panel kernel choice */
/* A level may carry a second panel kernel (bnn_impl.panel_alt, same panel layout, p_mr_alt-row
 * tiles).  x86 AVX2 does: the hybrid tile (vector nibble lookup on half of the columns,
 * scalar POPCNT on the other half, so the vector and the integer units of the core share
 * the work).  Which one runs is forced by bnn_set_panel_variant (0 = main, 1 = alternative) or,
 * by default (-1), chosen once per process by bnn_calibrate_variant: both run the same small
 * GEMM and 3x3 conv in L1, interleaved, best of 9 each, and the faster one is kept.  Both are
 * exact, so the choice changes only the speed. */
static int bnn_variant_force = -1;
static volatile int bnn_variant_auto[BNN_N_LEVELS];   /* 0 not yet, 1 main, 2 alternative */
static volatile int bnn_variant_trial = -1;       /* set only while calibrating */
static int bnn_calibrate_variant(int level);

static void bnn_set_panel_variant(int v) { bnn_variant_force = v < 0 ? -1 : (v > 0 ? 1 : 0); }

/* 1 if `level` runs its alternative panel kernel (calibrating on first use), else 0. */
static int bnn_panel_variant(int level) {
    if (!bnn_impls[level]->panel_alt) return 0;
    if (bnn_variant_trial >= 0) return bnn_variant_trial;
    if (bnn_variant_force >= 0) return bnn_variant_force;
    if (!bnn_variant_auto[level]) bnn_variant_auto[level] = 1 + bnn_calibrate_variant(level);
    return bnn_variant_auto[level] - 1;
}

static int bnn_has_panel_alt(int level) { return bnn_impls[level]->panel_alt != NULL; }

static void bnn_panel_kernel(int level, bnn_job_fn *f, int *p_mr) {
    const bnn_impl *im = bnn_impls[level];
    if (bnn_panel_variant(level)) { *f = im->panel_alt; *p_mr = im->p_mr_alt; }
    else { *f = im->panel; *p_mr = im->p_mr; }
}

/* ------------------------------------------------------------------ epilogue setup */
static void bnn_epi_init(bnn_epi *e, int mode, int64_t K, void *out, const float *alpha,
                         const float *bias, const int64_t *lim, const uint64_t *flipw) {
    e->mode = mode; e->K = K; e->out = out;
    e->alpha = alpha; e->bias = bias; e->lim = lim; e->flipw = flipw;
}

/* Row pointer / output offset lists of the panel path. */
static int bnn_alloc_rows(bnn_job *job, int64_t M) {
    job->rowptr = (const uint64_t **)bnn_alloc((size_t)M * sizeof(uint64_t *));
    job->rowoff = (int64_t *)bnn_alloc((size_t)M * sizeof(int64_t));
    if (!job->rowptr || !job->rowoff) {
        bnn_free((void *)job->rowptr); bnn_free(job->rowoff);
        return -1;
    }
    return 0;
}

static void bnn_free_rows(bnn_job *job) {
    bnn_free((void *)job->rowptr); bnn_free(job->rowoff);
}

/* ------------------------------------------------------------------ GEMM */
/* out = epilogue(K - 2 * popcount(a_i XOR b_j)), a: M x nw, b: N x nw words; flipw: packed
 * per-column flags (BITS only).
 * I32/F32 out: M x N row-major; BITS out: M x ceil(N/64) words, zeroed by the caller.
 * Returns 0, or -1 if scratch memory could not be allocated. */
static int bnn_gemm_ex(int level, const uint64_t *a, int64_t M, const uint64_t *b, int64_t N,
                       int64_t nw, int64_t K, int mode, void *out, const float *alpha,
                       const float *bias, const int64_t *lim, const uint64_t *flipw,
                       const uint64_t *panel_in, int nt);

static int bnn_gemm(int level, const uint64_t *a, int64_t M, const uint64_t *b, int64_t N,
                    int64_t nw, int64_t K, int mode, void *out, const float *alpha,
                    const float *bias, const int64_t *lim, const uint64_t *flipw, int nt) {
    return bnn_gemm_ex(level, a, M, b, N, nw, K, mode, out, alpha, bias, lim, flipw, NULL, nt);
}

/* bnn_gemm with an optional pre-built panel of b (bnn_fill_panel with this level's
 * bnn_panel_nr), used instead of a transient one when M > 8. */
static int bnn_gemm_ex(int level, const uint64_t *a, int64_t M, const uint64_t *b, int64_t N,
                       int64_t nw, int64_t K, int mode, void *out, const float *alpha,
                       const float *bias, const int64_t *lim, const uint64_t *flipw,
                       const uint64_t *panel_in, int nt) {
    const bnn_impl *im = bnn_impls[level];
    bnn_job job;
    job.rowptr = NULL; job.rowoff = NULL;
    job.rows.base = a; job.rows.M = M; job.rows.nseg = 1; job.rows.seg_stride = 0;
    job.rows.L = nw; job.rows.P = M; job.rows.OW = M;
    job.rows.img_stride = 0; job.rows.row_stride = 0; job.rows.col_stride = nw;
    job.b = b; job.panel = NULL; job.N = N;
    bnn_epi_init(&job.epi, mode, K, out, alpha, bias, lim, flipw);
    job.epi.P = M; job.epi.rs_outer = 0; job.epi.cs = 1;
    job.epi.rs_inner = (mode == BNN_EPI_BITS) ? (N + 63) / 64 : N;
    const double work = (double)M * (double)N * (double)nw;
    if (M <= 8) {
        nt = bnn_threads_for(nt, work, 131072.0);
        bnn_run_job(im->dot, &job, nt, (N + 63) / 64);
        return 0;
    }
    nt = bnn_threads_for(nt, work, 131072.0);
    uint64_t *panel = panel_in ? NULL : bnn_make_panel(b, N, nw, im->p_nr, nt);
    if (!panel_in && !panel) return -1;
    if (bnn_alloc_rows(&job, M)) { bnn_free(panel); return -1; }
    job.panel = panel_in ? panel_in : panel;
    bnn_job_fn pf; int pmr;
    bnn_panel_kernel(level, &pf, &pmr);
    bnn_run_job(pf, &job, nt, (M + pmr - 1) / pmr);
    bnn_free_rows(&job);
    bnn_free(panel);
    return 0;
}

/* ------------------------------------------------------------------ conv */
/* x: N x H x W x CW words (packed NHWC, C channels), w: O x kh x kw x CW words.
 * Output pixel (n, oy, ox) reads input rows oy*sy - py + dy, columns ox*sx - px + dx;
 * outside the image the input is the constant pad pixel: +1 (all bits 0) or, with
 * pad_neg, -1 (bits set for the first C channels only).  K = C * kh * kw.
 * I32/F32 out: NCHW (nhwc = 0) or NHWC (nhwc = 1); BITS out: N x OH x OW x ceil(O/64)
 * words, zeroed by the caller.  Returns 0, or -1 on allocation failure. */
/* ------------------------------------------------------------------ residual post-op */
/* out = post(out) + res, element by element, post(v) = fma2 ? fmaf(v, a2_c, b2_c) :
 * v * a2_c + b2_c (two roundings), channel c of out's layout (N x C x P, or N x P x C with
 * nhwc): an eval BatchNorm and a shortcut add in the order torch runs them, in one
 * contiguous pass over the conv output (res may not alias out).  The single-rounding form
 * uses the FMA instruction where the CPU has it (AVX2 level and up), else bnn_fmaf: the
 * same IEEE result either way. */
typedef struct {
    float *out; const float *res, *a2, *b2;
    int64_t rows, c, p; int nhwc, fma2, hw;
} bnn_post_job;

#if BNN_X86 && !BNN_MSVC
BNN_TARGET("avx2,fma") static void bnn_post_run_fma(float *o, const float *r, int64_t len, float a,
                                                     float b) {
    int64_t i = 0;
    const __m256 av = _mm256_set1_ps(a), bv = _mm256_set1_ps(b);
    for (; i + 8 <= len; i += 8)
        _mm256_storeu_ps(o + i, _mm256_add_ps(_mm256_fmadd_ps(_mm256_loadu_ps(o + i), av, bv),
                                              _mm256_loadu_ps(r + i)));
    for (; i < len; i++)
        _mm_store_ss(o + i, _mm_add_ss(_mm_fmadd_ss(_mm_load_ss(o + i), _mm_set_ss(a), _mm_set_ss(b)),
                                       _mm_load_ss(r + i)));
}

BNN_TARGET("avx2,fma") static void bnn_post_pix_fma(float *o, const float *r, int64_t c,
                                                     const float *a, const float *b) {
    int64_t j = 0;
    for (; j + 8 <= c; j += 8)
        _mm256_storeu_ps(o + j, _mm256_add_ps(_mm256_fmadd_ps(_mm256_loadu_ps(o + j),
                                                              _mm256_loadu_ps(a + j),
                                                              _mm256_loadu_ps(b + j)),
                                              _mm256_loadu_ps(r + j)));
    for (; j < c; j++)
        _mm_store_ss(o + j, _mm_add_ss(_mm_fmadd_ss(_mm_load_ss(o + j), _mm_load_ss(a + j),
                                                    _mm_load_ss(b + j)), _mm_load_ss(r + j)));
}
#endif

static void bnn_post_chunk(void *ctx, int ci, int nc) {
    const bnn_post_job *pj = (const bnn_post_job *)ctx;
    const int64_t r0 = pj->rows * ci / nc, r1 = pj->rows * (ci + 1) / nc;
    for (int64_t row = r0; row < r1; row++) {
        if (!pj->nhwc) {                       /* row = (n, channel): p contiguous values */
            const int64_t ch = row % pj->c;
            float *o = pj->out + row * pj->p;
            const float *r = pj->res + row * pj->p, a = pj->a2[ch], b = pj->b2[ch];
#if BNN_X86 && !BNN_MSVC
            if (pj->hw) { bnn_post_run_fma(o, r, pj->p, a, b); continue; }
#endif
            if (pj->fma2) for (int64_t i = 0; i < pj->p; i++) o[i] = bnn_fmaf(o[i], a, b) + r[i];
            else for (int64_t i = 0; i < pj->p; i++) o[i] = o[i] * a + b + r[i];
        } else {                               /* row = pixel: c contiguous channels */
            float *o = pj->out + row * pj->c;
            const float *r = pj->res + row * pj->c;
#if BNN_X86 && !BNN_MSVC
            if (pj->hw) { bnn_post_pix_fma(o, r, pj->c, pj->a2, pj->b2); continue; }
#endif
            if (pj->fma2) for (int64_t j = 0; j < pj->c; j++) o[j] = bnn_fmaf(o[j], pj->a2[j], pj->b2[j]) + r[j];
            else for (int64_t j = 0; j < pj->c; j++) o[j] = o[j] * pj->a2[j] + pj->b2[j] + r[j];
        }
    }
}

static int bnn_have_fma(void) {
#if BNN_X86 && !BNN_MSVC
    static int cached = -1;
    if (cached < 0) { __builtin_cpu_init(); cached = __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx2"); }
    return cached;
#else
    return 0;
#endif
}

static void bnn_post_add(int level, float *out, const float *res, int64_t N, int64_t C, int64_t P,
                         int nhwc, const float *a2, const float *b2, int fma2, int nt) {
    bnn_post_job pj;
    pj.out = out; pj.res = res; pj.a2 = a2; pj.b2 = b2; pj.c = C; pj.p = P; pj.nhwc = nhwc;
    pj.fma2 = fma2;
    pj.hw = 0;
#if BNN_X86 && !BNN_MSVC
    pj.hw = fma2 && level >= BNN_LEVEL_AVX2 && bnn_have_fma();
#else
    (void)level;
#endif
    pj.rows = nhwc ? N * P : N * C;
    nt = bnn_threads_for(nt, (double)N * (double)C * (double)P, 262144.0);
    bnn_run_chunks(bnn_post_chunk, &pj, bnn_nchunks(nt, pj.rows), nt);
}

static int bnn_conv_ex(int level, const uint64_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                       const uint64_t *w, int64_t O, int64_t kh, int64_t kw, int64_t sy, int64_t sx,
                       int64_t py, int64_t px, int pad_neg, int64_t OH, int64_t OW, int mode,
                       int nhwc, void *out, const float *alpha, const float *bias,
                       const int64_t *lim, const uint64_t *flipw, const float *a2,
                       const float *b2, const float *res, int fma2, uint64_t *bits_out,
                       int *bad, const uint64_t *panel_in, int nt);

static int bnn_conv(int level, const uint64_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                    const uint64_t *w, int64_t O, int64_t kh, int64_t kw, int64_t sy, int64_t sx,
                    int64_t py, int64_t px, int pad_neg, int64_t OH, int64_t OW, int mode, int nhwc,
                    void *out, const float *alpha, const float *bias, const int64_t *lim,
                    const uint64_t *flipw, int nt) {
    return bnn_conv_ex(level, x, N, H, W, C, w, O, kh, kw, sy, sx, py, px, pad_neg, OH, OW, mode,
                       nhwc, out, alpha, bias, lim, flipw, NULL, NULL, NULL, 0, NULL, NULL, NULL,
                       nt);
}

/* bnn_conv with the F32 post-op of bnn_epi (a2, b2, fma2; res: out's shape and layout, or
 * NULL for none; with res, bits_out (N x OH x OW x ceil(O/64) words, zeroed) and bad also
 * receive the outputs' signs and a non-finite flag) and an optional pre-built weight panel (bnn_fill_panel of w, O rows of
 * kh * kw * CW words, with this level's bnn_panel_nr; NULL: a transient one). */
static int bnn_conv_ex(int level, const uint64_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                       const uint64_t *w, int64_t O, int64_t kh, int64_t kw, int64_t sy, int64_t sx,
                       int64_t py, int64_t px, int pad_neg, int64_t OH, int64_t OW, int mode,
                       int nhwc, void *out, const float *alpha, const float *bias,
                       const int64_t *lim, const uint64_t *flipw, const float *a2,
                       const float *b2, const float *res, int fma2, uint64_t *bits_out,
                       int *bad, const uint64_t *panel_in, int nt) {
    const bnn_impl *im = bnn_impls[level];
    const int64_t CW = (C + 63) / 64, Hp = H + 2 * py, Wp = W + 2 * px;
    const int64_t P = OH * OW, M = N * P, wlen = kh * kw * CW;
    const uint64_t *xp = x;
    uint64_t *xpad = NULL;
    if (py > 0 || px > 0) {
        /* Padded copy of the packed input (not an im2col: same size as the input plus a
         * border), so that every tap reads real words and each kernel row is one run. */
        /* one allocation: the padded input, then one pad pixel (CW words) */
        const size_t npad = (size_t)N * (size_t)Hp * (size_t)Wp * (size_t)CW;
        xpad = (uint64_t *)bnn_alloc((npad + (size_t)CW) * 8u);
        if (!xpad) return -1;
        uint64_t *padword = xpad + npad;
        for (int64_t c = 0; c < CW; c++) padword[c] = 0;
        if (pad_neg) {
            for (int64_t c = 0; c < CW; c++) padword[c] = ~(uint64_t)0;
            if (C % 64) padword[CW - 1] = ((uint64_t)1 << (C % 64)) - 1;
        }
        for (int64_t n = 0; n < N; n++) {
            for (int64_t y = 0; y < Hp; y++) {
                uint64_t *dst = xpad + ((n * Hp + y) * Wp) * CW;
                const int64_t iy = y - py;
                if (iy < 0 || iy >= H) {
                    for (int64_t q = 0; q < Wp; q++) memcpy(dst + q * CW, padword, (size_t)CW * 8u);
                } else {
                    for (int64_t q = 0; q < px; q++) memcpy(dst + q * CW, padword, (size_t)CW * 8u);
                    memcpy(dst + px * CW, x + ((n * H + iy) * W) * CW, (size_t)(W * CW) * 8u);
                    for (int64_t q = px + W; q < Wp; q++) memcpy(dst + q * CW, padword, (size_t)CW * 8u);
                }
            }
        }
        xp = xpad;
    }
    const double work = (double)M * (double)O * (double)wlen;
    nt = bnn_threads_for(nt, work, 131072.0);
    uint64_t *panel = panel_in ? NULL : bnn_make_panel(w, O, wlen, im->p_nr, nt);
    if (!panel_in && !panel) { bnn_free(xpad); return -1; }
    bnn_job job;
    if (bnn_alloc_rows(&job, M)) { bnn_free(panel); bnn_free(xpad); return -1; }
    job.rows.base = xp; job.rows.M = M; job.rows.nseg = kh; job.rows.seg_stride = Wp * CW;
    job.rows.L = kw * CW; job.rows.P = P; job.rows.OW = OW;
    job.rows.img_stride = Hp * Wp * CW; job.rows.row_stride = sy * Wp * CW; job.rows.col_stride = sx * CW;
    job.b = NULL; job.panel = panel_in ? panel_in : panel; job.N = O;
    bnn_epi_init(&job.epi, mode, C * kh * kw, out, alpha, bias, lim, flipw);
    job.epi.P = P;
    if (mode == BNN_EPI_BITS) {
        const int64_t ow = (O + 63) / 64;
        job.epi.rs_outer = P * ow; job.epi.rs_inner = ow; job.epi.cs = 1;
    } else if (nhwc) {
        job.epi.rs_outer = P * O; job.epi.rs_inner = O; job.epi.cs = 1;
    } else {
        job.epi.rs_outer = O * P; job.epi.rs_inner = 1; job.epi.cs = P;
    }
    bnn_job_fn pf; int pmr;
    bnn_panel_kernel(level, &pf, &pmr);
    bnn_run_job(pf, &job, nt, (M + pmr - 1) / pmr);
    bnn_free_rows(&job);
    bnn_free(panel);
    bnn_free(xpad);
    if (mode == BNN_EPI_F32 && res) {
        bnn_post_add(level, (float *)out, res, N, O, P, nhwc, a2, b2, fma2, nt);
        if (bits_out && bad && !nhwc)
            *bad = bnn_pack_nchw(level, BNN_DT_F32, out, N, O, P, bits_out, nt);
    }
    return 0;
}

/* BITS conv followed by a max-pool on its packed output (through an internal zeroed
 * scratch): out = maxpool(conv_threshold(x)), N x PH x PW x ceil(O/64) words.
 * Returns 0, or -1 on allocation failure. */
static int bnn_conv_pool(int level, const uint64_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                         const uint64_t *w, int64_t O, int64_t kh, int64_t kw, int64_t sy,
                         int64_t sx, int64_t py, int64_t px, int pad_neg, int64_t OH, int64_t OW,
                         const int64_t *lim, const uint64_t *flipw, int64_t qh, int64_t qw,
                         int64_t qsh, int64_t qsw, int64_t qph, int64_t qpw, int64_t PH, int64_t PW,
                         const uint64_t *orw, const uint64_t *panel_in, uint64_t *out, int nt) {
    const size_t words = (size_t)N * (size_t)OH * (size_t)OW * (size_t)((O + 63) / 64);
    uint64_t *tmp = (uint64_t *)bnn_alloc(words * 8u);
    if (!tmp) return -1;
    memset(tmp, 0, words * 8u);
    int rc = bnn_conv_ex(level, x, N, H, W, C, w, O, kh, kw, sy, sx, py, px, pad_neg, OH, OW,
                         BNN_EPI_BITS, 0, tmp, NULL, NULL, lim, flipw, NULL, NULL, NULL, 0,
                         NULL, NULL, panel_in, nt);
    if (!rc) bnn_maxpool_bits(tmp, N, OH, OW, O, qh, qw, qsh, qsw, qph, qpw, PH, PW, orw, out, nt);
    bnn_free(tmp);
    return rc;
}

/* The F32 epilogue on given dot values: out[o, i] = post(float(d[i]) * alpha[o] + bias[o])
 * (post as bnn_epi when a2 != NULL, without the residual), the same arithmetic as the
 * kernels' epilogue, for checking it against another implementation. */
static void bnn_affine_values(const int32_t *d, int64_t L, int64_t O, const float *alpha,
                              const float *bias, const float *a2, const float *b2, int fma2,
                              float *out) {
    for (int64_t o = 0; o < O; o++) {
        for (int64_t i = 0; i < L; i++) {
            float v = (float)d[i] * alpha[o] + bias[o];
            if (a2) v = fma2 ? bnn_fmaf(v, a2[o], b2[o]) : v * a2[o] + b2[o];
            out[o * L + i] = v;
        }
    }
}

/* One-time choice between a level's two panel kernels (see bnn_panel_variant): a 64 x 64
 * GEMM over 24 words and a 64 -> 64 channel 3x3 conv on an 8 x 8 image, pre-built panels,
 * one thread, the two kernels interleaved, best of 9 runs each; about a millisecond.
 * Returns 1 if the alternative was faster, else 0 (also on allocation failure). */
static int bnn_calibrate_variant(int level) {
    enum { M = 64, NC = 64, NW = 24, C = 64, HW = 8, WL = 9 };
    const int nr = bnn_impls[level]->p_nr;
    uint64_t *a = (uint64_t *)bnn_alloc((M * NW + NC * NW + HW * HW + NC * WL) * 8u);
    int32_t *out = (int32_t *)bnn_alloc((size_t)M * NC * 4u);
    uint64_t *pa = NULL, *pc = NULL;
    int alt = 0;
    if (a && out) {
        uint64_t r = 0x9e3779b97f4a7c15ULL;
        for (int i = 0; i < M * NW + NC * NW + HW * HW + NC * WL; i++) {
            r ^= r >> 12; r ^= r << 25; r ^= r >> 27;
            a[i] = r * 0x2545f4914f6cdd1dULL;
        }
        pa = bnn_make_panel(a + M * NW, NC, NW, nr, 1);
        pc = bnn_make_panel(a + M * NW + NC * NW + HW * HW, NC, WL, nr, 1);
        int64_t best[2] = {INT64_MAX, INT64_MAX};
        for (int rep = 0; pa && pc && rep < 18; rep++) {
            const int v = rep & 1;
            bnn_variant_trial = v;
            const int64_t t0 = bnn_rl_now_ns();
            bnn_gemm_ex(level, a, M, a + M * NW, NC, NW, NW * 64, BNN_EPI_I32, out, NULL, NULL,
                        NULL, NULL, pa, 1);
            bnn_conv_ex(level, a + M * NW + NC * NW, 1, HW, HW, C, a + M * NW + NC * NW + HW * HW,
                        NC, 3, 3, 1, 1, 1, 1, 0, HW, HW, BNN_EPI_I32, 0, out, NULL, NULL, NULL,
                        NULL, NULL, NULL, NULL, 0, NULL, NULL, pc, 1);
            const int64_t dt = bnn_rl_now_ns() - t0;
            if (dt < best[v]) best[v] = dt;
        }
        bnn_variant_trial = -1;
        alt = best[1] < best[0];
    }
    bnn_free(a); bnn_free(out); bnn_free(pa); bnn_free(pc);
    return alt;
}

#endif /* BNN_KERNELS_H */
