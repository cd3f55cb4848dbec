# cython: language_level=3, cdivision=True
"""Packed-bit XNOR-popcount kernels of bnnlab.  PRIVATE: call through ``bnnlab.kernels``.

Bit layout (ext/README.md): element j of a row lives in word j // 64, bit j % 64 (least
significant first); bit 1 <=> value -1 (x < 0, so sign(0) = +1); bits past the row
length are 0 in every operand, so for rows of K elements

    dot(a, b) = K - 2 * popcount(a XOR b)

needs no correction.  Conv activations are packed NHWC: for each pixel, C channel bits
in ceil(C / 64) words; conv weights are packed per (out_channel, kh, kw) over C_in.

Every function trusts its caller: bnnlab.kernels checks dtypes, ranks, contiguity, value
ranges and sizes, and allocates the outputs (zeroed where a kernel ORs bits into them)
*before* calling in here.  The cheap shape checks below are a second line of defence
against direct calls, not the API's validation.  The C code lives in ext/bnn_*.h.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

cdef extern from "bnn_kernels.h" nogil:
    int BNN_EPI_I32
    int BNN_EPI_F32
    int BNN_EPI_BITS
    int BNN_N_LEVELS
    const char *bnn_level_names[]
    int bnn_level()
    int bnn_detect_level()
    void bnn_set_level_cap(int cap)
    void bnn_tiles(int level, int *d_mr, int *d_nr, int *p_mr, int *p_nr)
    int bnn_openmp_max_threads()
    double bnn_grain_scale
    int bnn_backend
    int bnn_pool_spin_ns
    int bnn_pool_size()
    int64_t bnn_pool_stalls
    void bnn_pool_reset_backoff()
    int bnn_pool_backoff_enabled
    int bnn_pack_rows(int level, int dtype, const void *x, int64_t rows, int64_t k,
                      uint64_t *out, int nt)
    int bnn_pack_nchw(int level, int dtype, const void *x, int64_t n, int64_t c, int64_t p,
                      uint64_t *out, int nt)
    int bnn_pack_rows_affine(int level, const float *x, int64_t rows, int64_t k,
                             const float *scale, const float *offset, uint64_t *out, int nt)
    int bnn_pack_nchw_affine(int level, const float *x, int64_t n, int64_t c, int64_t p,
                             const float *scale, const float *offset, uint64_t *out, int nt)
    int bnn_pack_nchw_affine_pool(int level, const float *x, int64_t n, int64_t c, int64_t h,
                                  int64_t w, const float *scale, const float *offset,
                                  int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
                                  int64_t pw, int64_t OH, int64_t OW, const uint64_t *orw,
                                  uint64_t *out, int nt)
    void bnn_maxpool_bits(const uint64_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                          int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                          int64_t OH, int64_t OW, const uint64_t *orw, uint64_t *out, int nt)
    int bnn_conv_pool(int level, const uint64_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                      const uint64_t *w, int64_t O, int64_t kh, int64_t kw, int64_t sy,
                      int64_t sx, int64_t py, int64_t px, int pad_neg, int64_t OH, int64_t OW,
                      const int64_t *lim, const uint64_t *flipw, int64_t qh, int64_t qw,
                      int64_t qsh, int64_t qsw, int64_t qph, int64_t qpw, int64_t PH, int64_t PW,
                      const uint64_t *orw, const uint64_t *panel_in, uint64_t *out, int nt)
    int bnn_gemm_ex(int level, const uint64_t *a, int64_t M, const uint64_t *b, int64_t N,
                    int64_t nw, int64_t K, int mode, void *out, const float *alpha,
                    const float *bias, const int64_t *lim, const uint64_t *flipw,
                    const uint64_t *panel_in, int nt)
    int bnn_panel_nr(int level)
    void bnn_set_panel_variant(int v)
    int bnn_panel_variant(int level)
    int bnn_has_panel_alt(int level)
    int bnn_variant_force
    void bnn_fill_panel(const uint64_t *b, int64_t N, int64_t wlen, int nr, uint64_t *panel, int nt)
    int bnn_gemm(int level, const uint64_t *a, int64_t M, const uint64_t *b, int64_t N,
                 int64_t nw, int64_t K, int mode, void *out, const float *alpha,
                 const float *bias, const int64_t *lim, const uint64_t *flipw, int nt)
    int bnn_conv_ex(int level, const uint64_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                    const uint64_t *w, int64_t O, int64_t kh, int64_t kw, int64_t sy, int64_t sx,
                    int64_t py, int64_t px, int pad_neg, int64_t OH, int64_t OW, int mode,
                    int nhwc, void *out, const float *alpha, const float *bias,
                    const int64_t *lim, const uint64_t *flipw, const float *a2,
                    const float *b2, const float *res, int fma2, uint64_t *bits_out,
                    int *bad, const uint64_t *panel_in, int nt)
    void bnn_affine_values(const int32_t *d, int64_t L, int64_t O, const float *alpha,
                           const float *bias, const float *a2, const float *b2, int fma2,
                           float *out)
    int bnn_conv(int level, const uint64_t *x, int64_t N, int64_t H, int64_t W, int64_t C,
                 const uint64_t *w, int64_t O, int64_t kh, int64_t kw, int64_t sy, int64_t sx,
                 int64_t py, int64_t px, int pad_neg, int64_t OH, int64_t OW, int mode,
                 int nhwc, void *out, const float *alpha, const float *bias,
                 const int64_t *lim, const uint64_t *flipw, int nt)

cdef extern from "bnn_roofline.h" nogil:
    int BNN_RL_FP32_N
    int bnn_rl_supported()
    double bnn_rl_clock_hz(double seconds)
    int bnn_rl_fp32_available(int which)
    double bnn_rl_fp32(int which, double seconds)
    double bnn_rl_binary(int level, int detected, double seconds)

ctypedef fused real_t:
    float
    double
    signed char      # int8: bit = x < 0
    unsigned char    # bool viewed as uint8: bit = (x == 0), i.e. True means +1


# ---------------------------------------------------------------- dispatch / info
LEVEL_NAMES = tuple(bnn_level_names[i].decode() for i in range(BNN_N_LEVELS))


def level():
    """ISA level the next call will use: an index of LEVEL_NAMES (x86-64: portable, popcnt,
    avx2, avx512; AArch64: portable, neon)."""
    return bnn_level()


def detected_level():
    """Best ISA level this CPU and OS support."""
    return bnn_detect_level()


def set_level_cap(int cap):
    """Use at most ISA level ``cap`` (clamped to 0..len(LEVEL_NAMES) - 1) from the next call on."""
    bnn_set_level_cap(cap)


def tiles(int lvl):
    """Register-tile shapes of level ``lvl``: dict(dot_mr, dot_nr, panel_mr, panel_nr), the
    panel tile's rows for the panel kernel in use (AVX2: 4 lookup, 2 hybrid)."""
    cdef int d_mr, d_nr, p_mr, p_nr
    if lvl < 0 or lvl >= BNN_N_LEVELS:
        raise ValueError(f"lvl must be in 0..{BNN_N_LEVELS - 1}, got {lvl}")
    bnn_tiles(lvl, &d_mr, &d_nr, &p_mr, &p_nr)
    return {"dot_mr": d_mr, "dot_nr": d_nr, "panel_mr": p_mr, "panel_nr": p_nr}


def has_panel_alt(int lvl):
    """Whether level ``lvl`` has a second panel kernel (x86 AVX2: the hybrid tile)."""
    if lvl < 0 or lvl >= BNN_N_LEVELS:
        raise ValueError(f"lvl must be in 0..{BNN_N_LEVELS - 1}, got {lvl}")
    return bool(bnn_has_panel_alt(lvl))


def set_panel_variant(int v):
    """-1: choose by the one-time calibration (default), 0: main panel kernel, 1: the
    alternative where the level has one.  Returns the previous setting."""
    cdef int old = bnn_variant_force
    bnn_set_panel_variant(v)
    return old


def panel_variant(int lvl):
    """The panel kernel level ``lvl`` runs now (0 main, 1 alternative); calibrates on first use."""
    if lvl < 0 or lvl >= BNN_N_LEVELS:
        raise ValueError(f"lvl must be in 0..{BNN_N_LEVELS - 1}, got {lvl}")
    with nogil:
        r = bnn_panel_variant(lvl)
    return r


def set_grain_scale(double scale):
    """Scale the work-per-thread grain (0 = always use the requested thread count);
    returns the previous value.  For tests of the threaded partitioning."""
    global bnn_grain_scale
    cdef double old = bnn_grain_scale
    bnn_grain_scale = scale
    return old


def set_backend(int backend):
    """0: bnnlab's thread pool (default), 1: OpenMP dynamic loop.  Returns the previous."""
    global bnn_backend
    cdef int old = bnn_backend
    if backend not in (0, 1):
        raise ValueError(f"backend must be 0 (pool) or 1 (openmp), got {backend}")
    bnn_backend = backend
    return old


def backend():
    """Current threading backend: 0 pool, 1 OpenMP."""
    return bnn_backend


def pool_size():
    """Number of worker threads the pool has started (the caller is not counted)."""
    return bnn_pool_size()


def pool_stalls():
    """Jobs after which the pool backed off to one thread for 100 ms (caller waited on a
    descheduled worker for over a quarter of the job)."""
    return bnn_pool_stalls


def pool_reset_backoff():
    """Forget a pending back-off (tests, benchmarks)."""
    bnn_pool_reset_backoff()


def set_pool_backoff(bint enabled):
    """Enable/disable the adaptive back-off (tests); returns the previous setting."""
    global bnn_pool_backoff_enabled
    cdef bint old = bnn_pool_backoff_enabled
    bnn_pool_backoff_enabled = enabled
    bnn_pool_reset_backoff()
    return old


def set_pool_spin_ns(int ns):
    """How long an idle pool worker spins before sleeping; returns the previous value."""
    global bnn_pool_spin_ns
    cdef int old = bnn_pool_spin_ns
    bnn_pool_spin_ns = max(0, ns)
    return old


def openmp_max_threads():
    """omp_get_max_threads(), or 1 when built without OpenMP."""
    return bnn_openmp_max_threads()


cdef extern from *:
    """
    #ifdef _OPENMP
    #define BNN_OPENMP_ON 1
    #else
    #define BNN_OPENMP_ON 0
    #endif
    """
    int BNN_OPENMP_ON



def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(BNN_OPENMP_ON)


# ---------------------------------------------------------------- roofline
FP32_KERNELS = ("base", "avx2_fma", "avx512_fma", "neon_fma")


def roofline_supported():
    """True when the register-only peak kernels are compiled in (GCC/clang builds)."""
    return bool(bnn_rl_supported())


def roofline_clock_hz(double seconds):
    """Core clock (Hz) from a chain of dependent adds; 0.0 when unsupported."""
    cdef double r
    with nogil:
        r = bnn_rl_clock_hz(seconds)
    return r


def roofline_fp32(int which, double seconds):
    """Peak fp32 MAC/s of FP32_KERNELS[which]; 0.0 when this CPU/build lacks it."""
    cdef double r
    if which < 0 or which >= BNN_RL_FP32_N:
        raise ValueError(f"which must be in 0..{BNN_RL_FP32_N - 1}, got {which}")
    with nogil:
        r = bnn_rl_fp32(which, seconds)
    return r


def roofline_binary(int lvl, double seconds):
    """Peak binary MAC/s (XOR-popcount, 64 MACs per word pair) of ISA level ``lvl``;
    0.0 when this CPU lacks the level."""
    cdef double r
    cdef int det = bnn_detect_level()
    if lvl < 0 or lvl >= BNN_N_LEVELS:
        raise ValueError(f"lvl must be in 0..{BNN_N_LEVELS - 1}, got {lvl}")
    with nogil:
        r = bnn_rl_binary(lvl, det, seconds)
    return r


# ---------------------------------------------------------------- packing
cdef inline int _dtype_code(const real_t *x) noexcept nogil:
    """The packers' element-type code of x: float 0, double 1, int8 2, uint8 (bool) 3."""
    if real_t is float:
        return 0
    elif real_t is double:
        return 1
    elif real_t is "signed char":
        return 2
    return 3


def pack_rows(const real_t[:, ::1] x, uint64_t[:, ::1] out, int nt):
    """out[r] = packed sign bits of x[r]; returns True if a float x held NaN or inf.
    out: (rows, ceil(k / 64)), every word written."""
    cdef int64_t rows = x.shape[0], k = x.shape[1]
    cdef int bad, lvl = bnn_level()
    if out.shape[0] != rows or out.shape[1] != (k + 63) // 64 or rows < 1 or k < 1 or nt < 1:
        raise ValueError("pack_rows: inconsistent shapes")
    with nogil:
        bad = bnn_pack_rows(lvl, _dtype_code(&x[0, 0]), &x[0, 0], rows, k, &out[0, 0], nt)
    return bool(bad)


def pack_nchw(const real_t[:, :, ::1] x, uint64_t[:, :, ::1] out, int nt):
    """x: (N, C, H*W) values -> out: (N, H*W, ceil(C / 64)) words (packed NHWC).
    Returns True if a float x held NaN or inf."""
    cdef int64_t n = x.shape[0], c = x.shape[1], p = x.shape[2]
    cdef int bad, lvl = bnn_level()
    if (out.shape[0] != n or out.shape[1] != p or out.shape[2] != (c + 63) // 64
            or n < 1 or c < 1 or p < 1 or nt < 1):
        raise ValueError("pack_nchw: inconsistent shapes")
    with nogil:
        bad = bnn_pack_nchw(lvl, _dtype_code(&x[0, 0, 0]), &x[0, 0, 0], n, c, p,
                            &out[0, 0, 0], nt)
    return bool(bad)


def pack_rows_affine(const float[:, ::1] x, const float[::1] scale, const float[::1] offset,
                     uint64_t[:, ::1] out, int nt):
    """Bit j of row r = (x[r, j] * scale[j] + offset[j] < 0), float32, two roundings.
    out: (rows, ceil(k / 64)), fully written.  Returns True if x held NaN or inf."""
    cdef int64_t rows = x.shape[0], k = x.shape[1]
    cdef int bad, lvl = bnn_level()
    if (out.shape[0] != rows or out.shape[1] != (k + 63) // 64 or rows < 1 or k < 1 or nt < 1
            or scale.shape[0] != k or offset.shape[0] != k):
        raise ValueError("pack_rows_affine: inconsistent shapes")
    with nogil:
        bad = bnn_pack_rows_affine(lvl, &x[0, 0], rows, k, &scale[0], &offset[0], &out[0, 0], nt)
    return bool(bad)


def pack_nchw_affine(const float[:, :, ::1] x, const float[::1] scale, const float[::1] offset,
                     uint64_t[:, :, ::1] out, int nt):
    """x: (N, C, H*W) float32 -> out: (N, H*W, ceil(C / 64)) words, bit c of a pixel =
    (x * scale[c] + offset[c] < 0).  Returns True if x held NaN or inf."""
    cdef int64_t n = x.shape[0], c = x.shape[1], p = x.shape[2]
    cdef int bad, lvl = bnn_level()
    if (out.shape[0] != n or out.shape[1] != p or out.shape[2] != (c + 63) // 64
            or n < 1 or c < 1 or p < 1 or nt < 1 or scale.shape[0] != c or offset.shape[0] != c):
        raise ValueError("pack_nchw_affine: inconsistent shapes")
    with nogil:
        bad = bnn_pack_nchw_affine(lvl, &x[0, 0, 0], n, c, p, &scale[0], &offset[0],
                                   &out[0, 0, 0], nt)
    return bool(bad)


cdef int _check_pool(int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                     int64_t ph, int64_t pw, int64_t *oh, int64_t *ow) except -1:
    if (kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0 or 2 * ph > kh
            or 2 * pw > kw or h + 2 * ph < kh or w + 2 * pw < kw):
        raise ValueError("maxpool: inconsistent pooling geometry")
    oh[0] = (h + 2 * ph - kh) // sh + 1
    ow[0] = (w + 2 * pw - kw) // sw + 1
    return 0


def pack_nchw_affine_pool(const float[:, :, :, ::1] x, const float[::1] scale,
                          const float[::1] offset, int64_t kh, int64_t kw, int64_t sh,
                          int64_t sw, int64_t ph, int64_t pw, const uint64_t[::1] orw,
                          uint64_t[:, :, :, ::1] out, int nt):
    """pack_nchw_affine of x (N, C, H, W) then maxpool_bits: out (N, OH, OW, ceil(C/64)),
    fully written.  Returns True if x held NaN or inf."""
    cdef int64_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3], oh, ow
    cdef int bad, lvl = bnn_level()
    if n < 1 or c < 1 or h < 1 or w < 1 or nt < 1 or scale.shape[0] != c or \
            offset.shape[0] != c or orw.shape[0] != (c + 63) // 64:
        raise ValueError("pack_nchw_affine_pool: inconsistent shapes")
    _check_pool(h, w, kh, kw, sh, sw, ph, pw, &oh, &ow)
    if out.shape[0] != n or out.shape[1] != oh or out.shape[2] != ow or \
            out.shape[3] != (c + 63) // 64:
        raise ValueError("pack_nchw_affine_pool: out has the wrong shape")
    with nogil:
        bad = bnn_pack_nchw_affine_pool(lvl, &x[0, 0, 0, 0], n, c, h, w, &scale[0], &offset[0],
                                        kh, kw, sh, sw, ph, pw, oh, ow, &orw[0],
                                        &out[0, 0, 0, 0], nt)
    if bad < 0:
        raise MemoryError("pack_nchw_affine_pool: could not allocate scratch memory")
    return bool(bad)


def maxpool_bits(const uint64_t[:, :, :, ::1] x, int64_t c, int64_t kh, int64_t kw, int64_t sh,
                 int64_t sw, int64_t ph, int64_t pw, const uint64_t[::1] orw,
                 uint64_t[:, :, :, ::1] out, int nt):
    """Max-pool of packed NHWC bits: AND over the window (OR where orw has the channel's
    bit); out-of-image taps skipped; bits past c cleared.  out (N, OH, OW, ceil(c/64))."""
    cdef int64_t oh, ow, cw = (c + 63) // 64
    if (x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] < 1 or c < 1 or x.shape[3] != cw
            or orw.shape[0] != cw or nt < 1):
        raise ValueError("maxpool_bits: inconsistent shapes")
    _check_pool(x.shape[1], x.shape[2], kh, kw, sh, sw, ph, pw, &oh, &ow)
    if out.shape[0] != x.shape[0] or out.shape[1] != oh or out.shape[2] != ow or out.shape[3] != cw:
        raise ValueError("maxpool_bits: out has the wrong shape")
    with nogil:
        bnn_maxpool_bits(&x[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], c, kh, kw, sh, sw,
                         ph, pw, oh, ow, &orw[0], &out[0, 0, 0, 0], nt)


# ---------------------------------------------------------------- GEMM
cdef int _check_gemm(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, int64_t k, int nt) except -1:
    if (a.shape[0] < 1 or b.shape[0] < 1 or k < 1 or a.shape[1] != (k + 63) // 64
            or b.shape[1] != a.shape[1] or nt < 1):
        raise ValueError("gemm: inconsistent shapes")
    return 0


cdef int _check_panel(const uint64_t[::1] panel, int panel_nr, int lvl, int64_t n,
                      int64_t wlen) except -1:
    """A pre-built panel must be laid out for the level about to run (its column width)."""
    cdef int nr = bnn_panel_nr(lvl)
    if panel_nr != nr or panel.shape[0] != ((n + nr - 1) // nr) * wlen * nr:
        raise ValueError("panel: built for another instruction-set level or shape")
    return 0


def panel_nr(int lvl):
    """Column width of the weight panel that level lvl's kernels read."""
    return bnn_panel_nr(lvl)


def make_panel(const uint64_t[:, ::1] b, uint64_t[::1] out, int nr, int nt):
    """out = the transposed panel of b (N rows of wlen words) for column width nr:
    ceil(N / nr) * wlen * nr words, fully written."""
    cdef int64_t n = b.shape[0], wlen = b.shape[1]
    if nr < 1 or n < 1 or wlen < 1 or out.shape[0] != ((n + nr - 1) // nr) * wlen * nr:
        raise ValueError("make_panel: inconsistent shapes")
    with nogil:
        bnn_fill_panel(&b[0, 0], n, wlen, nr, &out[0], nt)


def gemm(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, int64_t k, int32_t[:, ::1] out, int nt,
         const uint64_t[::1] panel=None, int panel_nr=0):
    """out[i, j] = k - 2 * popcount(a[i] XOR b[j]); out (a rows, b rows) int32."""
    _check_gemm(a, b, k, nt)
    if out.shape[0] != a.shape[0] or out.shape[1] != b.shape[0]:
        raise ValueError("gemm: out has the wrong shape")
    cdef int rc, lvl = bnn_level()
    cdef const uint64_t *pp = NULL
    if panel is not None:
        _check_panel(panel, panel_nr, lvl, b.shape[0], b.shape[1])
        pp = &panel[0]
    with nogil:
        rc = bnn_gemm_ex(lvl, &a[0, 0], a.shape[0], &b[0, 0], b.shape[0], a.shape[1], k,
                         BNN_EPI_I32, &out[0, 0], NULL, NULL, NULL, NULL, pp, nt)
    if rc:
        raise MemoryError("gemm: could not allocate scratch memory")


def gemm_affine(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, int64_t k,
                const float[::1] alpha, const float[::1] bias, float[:, ::1] out, int nt,
                const uint64_t[::1] panel=None, int panel_nr=0):
    """out[i, j] = float(dot) * alpha[j] + bias[j] (float32, two roundings)."""
    _check_gemm(a, b, k, nt)
    if (out.shape[0] != a.shape[0] or out.shape[1] != b.shape[0]
            or alpha.shape[0] != b.shape[0] or bias.shape[0] != b.shape[0]):
        raise ValueError("gemm_affine: inconsistent shapes")
    cdef int rc, lvl = bnn_level()
    cdef const uint64_t *pp = NULL
    if panel is not None:
        _check_panel(panel, panel_nr, lvl, b.shape[0], b.shape[1])
        pp = &panel[0]
    with nogil:
        rc = bnn_gemm_ex(lvl, &a[0, 0], a.shape[0], &b[0, 0], b.shape[0], a.shape[1], k,
                         BNN_EPI_F32, &out[0, 0], &alpha[0], &bias[0], NULL, NULL, pp, nt)
    if rc:
        raise MemoryError("gemm_affine: could not allocate scratch memory")


def gemm_threshold_pack(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, int64_t k,
                        const int64_t[::1] lim, const uint64_t[::1] flipw, uint64_t[:, ::1] out, int nt,
                        const uint64_t[::1] panel=None, int panel_nr=0):
    """Bit j of out row i = (popcount(a[i] XOR b[j]) > lim[j]) XOR (bit j of flipw); out
    must be zeroed, shape (a rows, ceil(b rows / 64)); flipw: ceil(b rows / 64) words."""
    _check_gemm(a, b, k, nt)
    if (out.shape[0] != a.shape[0] or out.shape[1] != (b.shape[0] + 63) // 64
            or lim.shape[0] != b.shape[0] or flipw.shape[0] != (b.shape[0] + 63) // 64):
        raise ValueError("gemm_threshold_pack: inconsistent shapes")
    cdef int rc, lvl = bnn_level()
    cdef const uint64_t *pp = NULL
    if panel is not None:
        _check_panel(panel, panel_nr, lvl, b.shape[0], b.shape[1])
        pp = &panel[0]
    with nogil:
        rc = bnn_gemm_ex(lvl, &a[0, 0], a.shape[0], &b[0, 0], b.shape[0], a.shape[1], k,
                         BNN_EPI_BITS, &out[0, 0], NULL, NULL, &lim[0], &flipw[0], pp, nt)
    if rc:
        raise MemoryError("gemm_threshold_pack: could not allocate scratch memory")


# ---------------------------------------------------------------- conv
cdef int _check_conv(const uint64_t[:, :, :, ::1] x, int64_t c, const uint64_t[:, :, :, ::1] w,
                     int64_t sy, int64_t sx, int64_t py, int64_t px, int nt,
                     int64_t *oh, int64_t *ow) except -1:
    cdef int64_t cw = (c + 63) // 64
    if (x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] < 1 or c < 1 or x.shape[3] != cw
            or w.shape[0] < 1 or w.shape[1] < 1 or w.shape[2] < 1 or w.shape[3] != cw
            or sy < 1 or sx < 1 or py < 0 or px < 0 or nt < 1
            or x.shape[1] + 2 * py < w.shape[1] or x.shape[2] + 2 * px < w.shape[2]):
        raise ValueError("conv: inconsistent shapes")
    oh[0] = (x.shape[1] + 2 * py - w.shape[1]) // sy + 1
    ow[0] = (x.shape[2] + 2 * px - w.shape[2]) // sx + 1
    return 0


def conv(const uint64_t[:, :, :, ::1] x, int64_t c, const uint64_t[:, :, :, ::1] w,
         int64_t sy, int64_t sx, int64_t py, int64_t px, bint pad_neg,
         int32_t[:, :, :, ::1] out, bint nhwc, int nt, const uint64_t[::1] panel=None,
         int panel_nr=0):
    """Binary conv2d, int32 out (N, O, OH, OW), or (N, OH, OW, O) when nhwc."""
    cdef int64_t oh, ow
    _check_conv(x, c, w, sy, sx, py, px, nt, &oh, &ow)
    if out.shape[0] != x.shape[0] or out.shape[1 if not nhwc else 3] != w.shape[0] or \
            out.shape[2 if not nhwc else 1] != oh or out.shape[3 if not nhwc else 2] != ow:
        raise ValueError("conv: out has the wrong shape")
    cdef int rc, lvl = bnn_level()
    cdef const uint64_t *pp = NULL
    if panel is not None:
        _check_panel(panel, panel_nr, lvl, w.shape[0], w.shape[1] * w.shape[2] * w.shape[3])
        pp = &panel[0]
    with nogil:
        rc = bnn_conv_ex(lvl, &x[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], c,
                      &w[0, 0, 0, 0], w.shape[0], w.shape[1], w.shape[2], sy, sx, py, px,
                      pad_neg, oh, ow, BNN_EPI_I32, nhwc, &out[0, 0, 0, 0],
                      NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, pp, nt)
    if rc:
        raise MemoryError("conv: could not allocate scratch memory")


def conv_affine(const uint64_t[:, :, :, ::1] x, int64_t c, const uint64_t[:, :, :, ::1] w,
                int64_t sy, int64_t sx, int64_t py, int64_t px, bint pad_neg,
                const float[::1] alpha, const float[::1] bias,
                float[:, :, :, ::1] out, bint nhwc, int nt, const uint64_t[::1] panel=None,
                int panel_nr=0):
    """Binary conv2d with out = float(dot) * alpha[o] + bias[o] (float32)."""
    cdef int64_t oh, ow
    _check_conv(x, c, w, sy, sx, py, px, nt, &oh, &ow)
    if out.shape[0] != x.shape[0] or out.shape[1 if not nhwc else 3] != w.shape[0] or \
            out.shape[2 if not nhwc else 1] != oh or out.shape[3 if not nhwc else 2] != ow or \
            alpha.shape[0] != w.shape[0] or bias.shape[0] != w.shape[0]:
        raise ValueError("conv_affine: inconsistent shapes")
    cdef int rc, lvl = bnn_level()
    cdef const uint64_t *pp = NULL
    if panel is not None:
        _check_panel(panel, panel_nr, lvl, w.shape[0], w.shape[1] * w.shape[2] * w.shape[3])
        pp = &panel[0]
    with nogil:
        rc = bnn_conv_ex(lvl, &x[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], c,
                      &w[0, 0, 0, 0], w.shape[0], w.shape[1], w.shape[2], sy, sx, py, px,
                      pad_neg, oh, ow, BNN_EPI_F32, nhwc, &out[0, 0, 0, 0],
                      &alpha[0], &bias[0], NULL, NULL, NULL, NULL, NULL, 0, NULL, NULL, pp, nt)
    if rc:
        raise MemoryError("conv_affine: could not allocate scratch memory")


def conv_affine_res(const uint64_t[:, :, :, ::1] x, int64_t c, const uint64_t[:, :, :, ::1] w,
                    int64_t sy, int64_t sx, int64_t py, int64_t px, bint pad_neg,
                    const float[::1] alpha, const float[::1] bias, const float[::1] a2,
                    const float[::1] b2, bint fma2, const float[:, :, :, ::1] res,
                    float[:, :, :, ::1] out, bint nhwc, int nt,
                    const uint64_t[::1] panel=None, int panel_nr=0,
                    uint64_t[:, :, :, ::1] bits=None):
    """conv_affine followed by out = post(out) + res (post: a2, b2, fma2 per channel; res
    with out's shape, not aliasing out).  With bits (N, OH, OW, ceil(O / 64)), zeroed: also
    the signs of out, packed (bit 1 = out < 0).  Returns True if out holds NaN or inf
    (checked only with bits)."""
    cdef int64_t oh, ow
    _check_conv(x, c, w, sy, sx, py, px, nt, &oh, &ow)
    if out.shape[0] != x.shape[0] or out.shape[1 if not nhwc else 3] != w.shape[0] or \
            out.shape[2 if not nhwc else 1] != oh or out.shape[3 if not nhwc else 2] != ow or \
            alpha.shape[0] != w.shape[0] or bias.shape[0] != w.shape[0] or \
            a2.shape[0] != w.shape[0] or b2.shape[0] != w.shape[0] or \
            res.shape[0] != out.shape[0] or res.shape[1] != out.shape[1] or \
            res.shape[2] != out.shape[2] or res.shape[3] != out.shape[3]:
        raise ValueError("conv_affine_res: inconsistent shapes")
    cdef int bad = 0
    cdef uint64_t *bp = NULL
    if bits is not None:
        if bits.shape[0] != x.shape[0] or bits.shape[1] != oh or bits.shape[2] != ow or \
                bits.shape[3] != (w.shape[0] + 63) // 64:
            raise ValueError("conv_affine_res: bits has the wrong shape")
        bp = &bits[0, 0, 0, 0]
    cdef int rc, lvl = bnn_level()
    cdef const uint64_t *pp = NULL
    if panel is not None:
        _check_panel(panel, panel_nr, lvl, w.shape[0], w.shape[1] * w.shape[2] * w.shape[3])
        pp = &panel[0]
    with nogil:
        rc = bnn_conv_ex(lvl, &x[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], c,
                         &w[0, 0, 0, 0], w.shape[0], w.shape[1], w.shape[2], sy, sx, py, px,
                         pad_neg, oh, ow, BNN_EPI_F32, nhwc, &out[0, 0, 0, 0],
                         &alpha[0], &bias[0], NULL, NULL, &a2[0], &b2[0], &res[0, 0, 0, 0],
                         fma2, bp, &bad, pp, nt)
    if rc:
        raise MemoryError("conv_affine_res: could not allocate scratch memory")
    return bad != 0


def affine_values(const int32_t[::1] d, const float[::1] alpha, const float[::1] bias,
                  const float[::1] a2, const float[::1] b2, bint post, bint fma2,
                  float[:, ::1] out):
    """out[o, i] = post(float(d[i]) * alpha[o] + bias[o]): the F32 epilogue's arithmetic
    (post only when post is True)."""
    cdef int64_t o = alpha.shape[0], n = d.shape[0]
    if bias.shape[0] != o or a2.shape[0] != o or b2.shape[0] != o or out.shape[0] != o \
            or out.shape[1] != n or n < 1 or o < 1:
        raise ValueError("affine_values: inconsistent shapes")
    with nogil:
        bnn_affine_values(&d[0], n, o, &alpha[0], &bias[0], &a2[0] if post else NULL, &b2[0],
                          fma2, &out[0, 0])


def conv_threshold_pack(const uint64_t[:, :, :, ::1] x, int64_t c, const uint64_t[:, :, :, ::1] w,
                        int64_t sy, int64_t sx, int64_t py, int64_t px, bint pad_neg,
                        const int64_t[::1] lim, const uint64_t[::1] flipw,
                        uint64_t[:, :, :, ::1] out, int nt, const uint64_t[::1] panel=None,
                        int panel_nr=0):
    """Binary conv2d whose output channel o becomes bit o of the next layer's packed NHWC
    input: bit = (mismatches > lim[o]) XOR (bit o of flipw).  out (N, OH, OW, ceil(O / 64)),
    zeroed; flipw: ceil(O / 64) words."""
    cdef int64_t oh, ow
    _check_conv(x, c, w, sy, sx, py, px, nt, &oh, &ow)
    if out.shape[0] != x.shape[0] or out.shape[1] != oh or out.shape[2] != ow or \
            out.shape[3] != (w.shape[0] + 63) // 64 or lim.shape[0] != w.shape[0] or \
            flipw.shape[0] != (w.shape[0] + 63) // 64:
        raise ValueError("conv_threshold_pack: inconsistent shapes")
    cdef int rc, lvl = bnn_level()
    cdef const uint64_t *pp = NULL
    if panel is not None:
        _check_panel(panel, panel_nr, lvl, w.shape[0], w.shape[1] * w.shape[2] * w.shape[3])
        pp = &panel[0]
    with nogil:
        rc = bnn_conv_ex(lvl, &x[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], c,
                      &w[0, 0, 0, 0], w.shape[0], w.shape[1], w.shape[2], sy, sx, py, px,
                      pad_neg, oh, ow, BNN_EPI_BITS, 0, &out[0, 0, 0, 0],
                      NULL, NULL, &lim[0], &flipw[0], NULL, NULL, NULL, 0, NULL, NULL, pp, nt)
    if rc:
        raise MemoryError("conv_threshold_pack: could not allocate scratch memory")


def conv_threshold_pack_pool(const uint64_t[:, :, :, ::1] x, int64_t c,
                             const uint64_t[:, :, :, ::1] w, int64_t sy, int64_t sx, int64_t py,
                             int64_t px, bint pad_neg, const int64_t[::1] lim,
                             const uint64_t[::1] flipw, int64_t qh, int64_t qw, int64_t qsh,
                             int64_t qsw, int64_t qph, int64_t qpw, const uint64_t[::1] orw,
                             uint64_t[:, :, :, ::1] out, int nt,
                             const uint64_t[::1] panel=None, int panel_nr=0):
    """conv_threshold_pack followed by maxpool_bits on its output (no Python in between).
    out (N, PH, PW, ceil(O / 64)), fully written; orw: ceil(O / 64) words."""
    cdef int64_t oh, ow, ph, pw, o = w.shape[0], ocw = (w.shape[0] + 63) // 64
    _check_conv(x, c, w, sy, sx, py, px, nt, &oh, &ow)
    if lim.shape[0] != o or flipw.shape[0] != ocw or orw.shape[0] != ocw:
        raise ValueError("conv_threshold_pack_pool: inconsistent shapes")
    _check_pool(oh, ow, qh, qw, qsh, qsw, qph, qpw, &ph, &pw)
    if out.shape[0] != x.shape[0] or out.shape[1] != ph or out.shape[2] != pw or out.shape[3] != ocw:
        raise ValueError("conv_threshold_pack_pool: out has the wrong shape")
    cdef int rc, lvl = bnn_level()
    cdef const uint64_t *pp = NULL
    if panel is not None:
        _check_panel(panel, panel_nr, lvl, o, w.shape[1] * w.shape[2] * w.shape[3])
        pp = &panel[0]
    with nogil:
        rc = bnn_conv_pool(lvl, &x[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], c,
                           &w[0, 0, 0, 0], o, w.shape[1], w.shape[2], sy, sx, py, px, pad_neg,
                           oh, ow, &lim[0], &flipw[0], qh, qw, qsh, qsw, qph, qpw, ph, pw,
                           &orw[0], pp, &out[0, 0, 0, 0], nt)
    if rc:
        raise MemoryError("conv_threshold_pack_pool: could not allocate scratch memory")
