# Stub of the PRIVATE compiled module bnnlab._kernels (ext/_kernels.pyx + ext/bnn_*.h).
# Only bnnlab/kernels.py calls it; it validates everything first.  Comments give the C
# buffer types (typed memoryviews, C-contiguous).  Outputs are allocated by the caller;
# "zeroed" outputs are ORed into.  Every function releases the GIL while computing.
import numpy as np

LEVEL_NAMES: tuple[str, ...]  # x86-64: ("portable", "popcnt", "avx2", "avx512"); AArch64: ("portable", "neon")

def level() -> int: ...  # ISA level the next call uses
def detected_level() -> int: ...  # best level the CPU/OS supports
def set_level_cap(cap: int) -> None: ...  # use at most this level (clamped to 0..len(LEVEL_NAMES) - 1)
def tiles(lvl: int) -> dict[str, int]: ...  # dot_mr, dot_nr, panel_mr, panel_nr
def has_panel_alt(lvl: int) -> bool: ...
def set_panel_variant(v: int) -> int: ...  # -1 auto, 0 main, 1 alternative; returns old
def panel_variant(lvl: int) -> int: ...  # 0 main, 1 alternative (calibrates on first use)
def set_grain_scale(scale: float) -> float: ...  # 0: always use n threads; returns old
def set_backend(backend: int) -> int: ...  # 0 pool, 1 OpenMP; returns old
def backend() -> int: ...
def pool_size() -> int: ...  # worker threads started
def set_pool_spin_ns(ns: int) -> int: ...  # idle-worker spin before sleeping; returns old
def pool_stalls() -> int: ...  # jobs that made the pool back off to one thread for 100 ms
def pool_reset_backoff() -> None: ...
def set_pool_backoff(enabled: bool) -> bool: ...  # returns old
def openmp_max_threads() -> int: ...
def openmp_enabled() -> bool: ...

# Register-only peak kernels (ext/bnn_roofline.h); rates per core, 0.0 where unavailable.
FP32_KERNELS: tuple[str, ...]  # ("base", "avx2_fma", "avx512_fma", "neon_fma")
def roofline_supported() -> bool: ...  # False under MSVC (no inline asm)
def roofline_clock_hz(seconds: float) -> float: ...  # dependent-add chain
def roofline_fp32(which: int, seconds: float) -> float: ...  # MAC/s of FP32_KERNELS[which]
def roofline_binary(lvl: int, seconds: float) -> float: ...  # binary MAC/s of ISA level lvl

# x: const {float32|float64|int8|uint8(bool: 0 -> -1)}[:, ::1] (rows, k); out: uint64[:, ::1]
# (rows, ceil(k/64)), fully written.  Returns True if a float x held NaN or inf.
def pack_rows(x: np.ndarray, out: np.ndarray, nt: int) -> bool: ...
# x: const real[:, :, ::1] (N, C, H*W); out: uint64[:, :, ::1] (N, H*W, ceil(C/64)).
def pack_nchw(x: np.ndarray, out: np.ndarray, nt: int) -> bool: ...

# Affine float32 packers: bit = (x * scale + offset < 0), two roundings, no FMA; scale/offset
# const float32[::1] per column (rows) / channel (NCHW).  Return True if x held NaN or inf.
def pack_rows_affine(x: np.ndarray, scale: np.ndarray, offset: np.ndarray, out: np.ndarray,
                     nt: int) -> bool: ...  # x float32[:, ::1] (rows, k); out (rows, ceil(k/64))
def pack_nchw_affine(x: np.ndarray, scale: np.ndarray, offset: np.ndarray, out: np.ndarray,
                     nt: int) -> bool: ...  # x float32[:, :, ::1] (N, C, H*W); out (N, H*W, ceil(C/64))
# x float32[:, :, :, ::1] (N, C, H, W) packed then max-pooled: out uint64 (N, OH, OW, ceil(C/64))
def pack_nchw_affine_pool(x: np.ndarray, scale: np.ndarray, offset: np.ndarray, kh: int, kw: int,
                          sh: int, sw: int, ph: int, pw: int, orw: np.ndarray, out: np.ndarray,
                          nt: int) -> bool: ...
# Max-pool on packed NHWC bits: AND over the window, OR for channels set in orw (ceil(c/64)
# words); out-of-image taps skipped; padding <= kernel / 2; out fully written.
def maxpool_bits(x: np.ndarray, c: int, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int,
                 orw: np.ndarray, out: np.ndarray, nt: int) -> None: ...

# Weight panels (the transposed column groups the blocked kernels read), pre-built once:
# every gemm*/conv* below takes an optional panel (const uint64[::1]) with the column width
# panel_nr it was built for (must be panel_nr(level()), else ValueError).
def panel_nr(lvl: int) -> int: ...
def make_panel(b: np.ndarray, out: np.ndarray, nr: int, nt: int) -> None: ...  # b (N, wlen); out ceil(N/nr)*wlen*nr

# a: const uint64[:, ::1] (M, w), b: const uint64[:, ::1] (N, w), w = ceil(k/64)
def gemm(a: np.ndarray, b: np.ndarray, k: int, out: np.ndarray, nt: int, panel: np.ndarray | None = ...,
         panel_nr: int = ...) -> None: ...  # int32[:, ::1] (M, N)
def gemm_affine(a: np.ndarray, b: np.ndarray, k: int, alpha: np.ndarray, bias: np.ndarray,
                out: np.ndarray, nt: int, panel: np.ndarray | None = ...,
                panel_nr: int = ...) -> None: ...  # const float32[::1] (N,) x2, float32[:, ::1] (M, N)
def gemm_threshold_pack(a: np.ndarray, b: np.ndarray, k: int, lim: np.ndarray, flipw: np.ndarray,
                        out: np.ndarray, nt: int, panel: np.ndarray | None = ...,
                        panel_nr: int = ...) -> None: ...  # const int64[::1] (N,), const uint64[::1]
                                                               # (ceil(N/64),), uint64[:, ::1] zeroed

# x: const uint64[:, :, :, ::1] (N, H, W, ceil(c/64)); w: const uint64[:, :, :, ::1] (O, kh, kw, ceil(c/64))
def conv(x: np.ndarray, c: int, w: np.ndarray, sy: int, sx: int, py: int, px: int, pad_neg: bool,
         out: np.ndarray, nhwc: bool, nt: int, panel: np.ndarray | None = ...,
         panel_nr: int = ...) -> None: ...  # int32[:, :, :, ::1] NCHW or NHWC
def conv_affine(x: np.ndarray, c: int, w: np.ndarray, sy: int, sx: int, py: int, px: int,
                pad_neg: bool, alpha: np.ndarray, bias: np.ndarray, out: np.ndarray, nhwc: bool,
                nt: int, panel: np.ndarray | None = ...,
                panel_nr: int = ...) -> None: ...  # float32 out
# conv_affine then out = post(out) + res, post(v) = fmaf(v, a2, b2) if fma2 else v * a2 + b2
# (per channel); res: const float32 with out's shape and layout.
def conv_affine_res(x: np.ndarray, c: int, w: np.ndarray, sy: int, sx: int, py: int, px: int,
                    pad_neg: bool, alpha: np.ndarray, bias: np.ndarray, a2: np.ndarray,
                    b2: np.ndarray, fma2: bool, res: np.ndarray, out: np.ndarray, nhwc: bool,
                    nt: int, panel: np.ndarray | None = ...,
                    panel_nr: int = ...,
                    bits: np.ndarray | None = ...) -> bool: ...
# out float32[:, ::1] (O, L) = [post](float(d[i]) * alpha[o] + bias[o]); d const int32[::1] (L,)
def affine_values(d: np.ndarray, alpha: np.ndarray, bias: np.ndarray, a2: np.ndarray,
                  b2: np.ndarray, post: bool, fma2: bool, out: np.ndarray) -> None: ...
def conv_threshold_pack(x: np.ndarray, c: int, w: np.ndarray, sy: int, sx: int, py: int, px: int,
                        pad_neg: bool, lim: np.ndarray, flipw: np.ndarray, out: np.ndarray,
                        nt: int, panel: np.ndarray | None = ...,
                        panel_nr: int = ...) -> None: ...  # uint64[:, :, :, ::1] (N, OH, OW, ceil(O/64)) zeroed
# conv_threshold_pack then maxpool_bits (pool geometry q*); out (N, PH, PW, ceil(O/64)), fully
# written (no zeroing needed); orw: ceil(O/64) words
def conv_threshold_pack_pool(x: np.ndarray, c: int, w: np.ndarray, sy: int, sx: int, py: int,
                             px: int, pad_neg: bool, lim: np.ndarray, flipw: np.ndarray, qh: int,
                             qw: int, qsh: int, qsw: int, qph: int, qpw: int, orw: np.ndarray,
                             out: np.ndarray, nt: int, panel: np.ndarray | None = ...,
                             panel_nr: int = ...) -> None: ...
