"""Naive NumPy / torch oracles for bnnlab.kernels.  Test-only; never import bnnlab here.

Everything is written the obvious way (Python loops over bits, float64 torch convs), so
that it is easy to believe and independent of the code under test.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from _ref_sign import sign as _ref_sign

WORD = 64


def sign(x) -> np.ndarray:
    """sign with sign(0) = +1 (also for -0.0); bool: True -> +1, False -> -1; float64."""
    return _ref_sign(x, dtype=np.float64)


def pack_rows(x) -> np.ndarray:
    """Bit j % 64 of word j // 64 of row r is 1 iff sign(x[r, j]) == -1 (loops over bits)."""
    s = sign(x)
    rows, k = s.shape
    nw = -(-k // WORD)
    out = np.zeros((rows, nw), dtype=np.uint64)
    for r in range(rows):
        for j in range(k):
            if s[r, j] < 0:
                out[r, j // WORD] |= np.uint64(1) << np.uint64(j % WORD)
    return out


def pack_rows_fast(x) -> np.ndarray:
    """Same as pack_rows via np.packbits (for larger inputs); cross-checked against it."""
    s = sign(x)
    rows, k = s.shape
    nw = -(-k // WORD)
    bits = np.zeros((rows, nw * WORD), dtype=np.uint8)
    bits[:, :k] = s < 0
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64).reshape(rows, nw)


def pack_nhwc(x) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, ceil(C/64)) words, channels along the bits."""
    n, c, h, w = np.asarray(x).shape
    rows = np.ascontiguousarray(np.moveaxis(np.asarray(x), 1, 3)).reshape(n * h * w, c)
    return pack_rows_fast(rows).reshape(n, h, w, -(-c // WORD))


def pack_conv_weights(w) -> np.ndarray:
    """(O, C, kh, kw) -> (O, kh, kw, ceil(C/64)) words."""
    o, c, kh, kw = np.asarray(w).shape
    rows = np.ascontiguousarray(np.transpose(np.asarray(w), (0, 2, 3, 1))).reshape(o * kh * kw, c)
    return pack_rows_fast(rows).reshape(o, kh, kw, -(-c // WORD))


def pm1_matmul(a, b) -> np.ndarray:
    """sign(a) @ sign(b).T in exact integers."""
    return (sign(a).astype(np.int64) @ sign(b).astype(np.int64).T).astype(np.int32)


def conv_signs(x, w, stride=1, padding=0, pad_value=1.0) -> np.ndarray:
    """torch conv2d of the signs, the binarised input padded with pad_value.

    float32 is exact here: every partial sum is an integer of magnitude < 2**24."""
    assert np.asarray(w)[0].size < 2**24
    xs = torch.from_numpy(sign(x)).float()
    ws = torch.from_numpy(sign(w)).float()
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    xs = F.pad(xs, (pw, pw, ph, ph), value=float(pad_value))
    old = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny convs: torch's OpenMP threads only add latency
    try:
        return F.conv2d(xs, ws, stride=stride).round().numpy().astype(np.int32)
    finally:
        torch.set_num_threads(old)


def threshold_signs(d, threshold, flip=None) -> np.ndarray:
    """+1 where d >= threshold (or d <= threshold where flip), else -1; column-wise."""
    d = np.asarray(d, dtype=np.float64)
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), d.shape[-1:])
    fl = np.zeros(d.shape[-1], bool) if flip is None else np.broadcast_to(np.asarray(flip, bool), d.shape[-1:])
    plus = np.where(fl, d <= thr, d >= thr)
    return np.where(plus, 1.0, -1.0)


def affine(d, alpha, bias) -> np.ndarray:
    """float32(d) * alpha, rounded, + bias, rounded (NumPy float32 arithmetic, no FMA)."""
    d32 = np.asarray(d).astype(np.float32)
    return (d32 * np.asarray(alpha, np.float32)) + np.asarray(bias, np.float32)


def affine_signs(x, scale, offset, axis) -> np.ndarray:
    """±1 of fl(fl(x * scale) + offset) in float32 (sign(0) = +1); scale/offset broadcast
    along ``axis`` (NumPy float32 arithmetic: two roundings, no FMA)."""
    x = np.asarray(x, np.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    s = np.asarray(scale, np.float32).reshape(shape)
    o = np.asarray(offset, np.float32).reshape(shape)
    z = (x * s) + o
    return np.where(z < 0, -1.0, 1.0).astype(np.float32)


def maxpool_pm1(v, kernel_size, stride, padding, or_channels=None) -> np.ndarray:
    """Max-pool of ±1 maps (N, C, H, W) by loops; channels flagged in ``or_channels`` take
    the min; taps outside the image are ignored (torch's -inf padding)."""
    v = np.asarray(v)
    n, c, h, w = v.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    flags = np.zeros(c, bool) if or_channels is None else np.asarray(or_channels, bool)
    out = np.empty((n, c, oh, ow), v.dtype)
    for b in range(n):
        for ch in range(c):
            for y in range(oh):
                for x in range(ow):
                    taps = [v[b, ch, yy, xx]
                            for yy in range(y * sh - ph, y * sh - ph + kh)
                            for xx in range(x * sw - pw, x * sw - pw + kw)
                            if 0 <= yy < h and 0 <= xx < w]
                    out[b, ch, y, x] = min(taps) if flags[ch] else max(taps)
    return out
