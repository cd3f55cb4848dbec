"""bnnlab.kernels against naive NumPy/torch oracles (tests/_ref_kernels.py).

Every ISA level the CPU supports (portable C, POPCNT, AVX2, AVX-512) is exercised through
the private switch ``bnnlab.kernels._set_isa``; multi-threaded runs force the threads on
small problems with ``_set_grain_scale(0)``.  Bad arguments live in
tests/test_kernels_badinput.py (run in a subprocess).
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading

import _ref_kernels as ref
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnlab import kernels as bk

ALL_ISAS = ("portable", "popcnt", "avx2", "avx512", "neon")   # neon: the AArch64 level
AVAILABLE = bk._available_isas()
K_GRID = [1, 63, 64, 65, 127, 128, 129, 200, 1000]
M_GRID = [1, 2, 3, 8, 9, 17]              # 1..8: small-M (GEMV-like) path; 9, 17: blocked path
N_GRID = [1, 7, 64, 70]
HYP = settings(max_examples=40, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _isa_params():
    return [pytest.param(n, marks=pytest.mark.skipif(n not in AVAILABLE, reason=f"CPU lacks {n}"), id=n)
            for n in ALL_ISAS]


@pytest.fixture(params=_isa_params())
def isa(request):
    bk._set_isa(request.param)
    yield request.param
    bk._set_isa(None)


@pytest.fixture
def eager_threads():
    """Use every requested thread even on tiny problems (exercises the partitioning)."""
    old = bk._set_grain_scale(0.0)
    yield
    bk._set_grain_scale(old)


@pytest.fixture(params=["pool", "openmp"])
def backend(request):
    if request.param == "openmp" and not bk.kernel_info()["openmp"]:
        pytest.skip("extension built without OpenMP (BNNLAB_OPENMP=0 or no OpenMP compiler)")
    old = bk._set_threading(request.param)
    yield request.param
    bk._set_threading(old)


def _real(rng, shape, dtype=np.float32, zeros=True):
    x = rng.standard_normal(shape).astype(dtype)
    if zeros and x.size > 2:
        flat = x.reshape(-1)
        flat[:: max(1, flat.size // 7)] = 0.0                  # sign(0) = +1
        if dtype in (np.float32, np.float64):
            flat[1] = -0.0                                     # -0.0 is not < 0: +1
    return x


# ----------------------------------------------------------------------------- packing
def test_reference_packers_agree():
    rng = np.random.default_rng(0)
    x = _real(rng, (5, 131))
    np.testing.assert_array_equal(ref.pack_rows(x), ref.pack_rows_fast(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.bool_])
def test_pack_signs_matches_reference_on_word_grid(isa, dtype):
    rng = np.random.default_rng(1)
    for k in K_GRID:
        if dtype == np.bool_:
            x = rng.random((3, k)) < 0.5
        elif dtype == np.int8:
            x = rng.integers(-3, 4, size=(3, k)).astype(np.int8)
        else:
            x = _real(rng, (3, k), dtype)
        p = bk.pack_signs(x)
        assert p.words.dtype == np.uint64 and p.words.flags.c_contiguous
        assert p.shape == (3, k) and p.rows == 3 and p.k == k
        np.testing.assert_array_equal(p.words, ref.pack_rows(x) if k < 200 else ref.pack_rows_fast(x))


def test_bool_true_means_plus_one():
    x = np.array([[True, False, True]])
    np.testing.assert_array_equal(bk.unpack_signs(bk.pack_signs(x)), [[1.0, -1.0, 1.0]])


@pytest.mark.parametrize("k", K_GRID)
def test_real_bits_set_and_padding_bits_zero(k):
    words = bk.pack_signs(-np.ones((2, k), np.float32)).words     # every real bit is 1
    used = k % 64 or 64
    assert np.all(words[:, :-1] == np.uint64(2**64 - 1))
    assert np.all(words[:, -1] == np.uint64((1 << used) - 1))
    assert np.all(bk.pack_signs(np.ones((2, k), np.float32)).words == 0)


@pytest.mark.parametrize("k", K_GRID)
def test_unpack_inverts_pack_on_pm1(k):
    rng = np.random.default_rng(k)
    x = np.where(rng.random((4, k)) < 0.5, -1.0, 1.0).astype(np.float32)
    p = bk.pack_signs(x, strict=True)
    for dtype in (np.float32, np.float64, np.int8):
        got = bk.unpack_signs(p, dtype=dtype)
        assert got.dtype == dtype and got.shape == (4, k)
        np.testing.assert_array_equal(got, x.astype(dtype))


def test_pack_accepts_torch_noncontiguous_and_grad_inputs():
    rng = np.random.default_rng(2)
    x = _real(rng, (6, 150))
    want = ref.pack_rows_fast(x)
    np.testing.assert_array_equal(bk.pack_signs(torch.from_numpy(x)).words, want)
    np.testing.assert_array_equal(bk.pack_signs(torch.from_numpy(x).requires_grad_()).words, want)
    # non-contiguous views are copied (documented): numpy slices and a transposed tensor
    big = _real(rng, (6, 300))
    np.testing.assert_array_equal(bk.pack_signs(big[:, ::2]).words, ref.pack_rows_fast(big[:, ::2]))
    t = torch.from_numpy(x.T.copy()).T
    assert not t.is_contiguous()
    np.testing.assert_array_equal(bk.pack_signs(t).words, want)
    neg = -torch.from_numpy(x)
    np.testing.assert_array_equal(bk.pack_signs(neg).words, ref.pack_rows_fast(-x))


def test_packed_bits_memory_is_exactly_ceil_k_over_64_words_per_row():
    for k in K_GRID + [4096, 4097]:
        w = bk.pack_signs(np.random.default_rng(k).standard_normal((10, k)).astype(np.float32))
        assert w.nbytes == 10 * (-(-k // 64)) * 8
        assert w.words.nbytes == w.nbytes
        assert w.words.base is None or w.words.base.nbytes == w.nbytes   # nothing bigger held
    cw = bk.pack_conv_weights(np.ones((8, 65, 3, 3), np.float32))
    assert cw.nbytes == 8 * 3 * 3 * 2 * 8
    assert cw.words.base is None or cw.words.base.nbytes == cw.nbytes


def test_packed_bits_accepts_valid_words_and_reports_shape():
    x = np.array([[0.5, -2.0, 0.0], [-1.0, -1.0, -1.0]], np.float32)
    p = bk.PackedBits(ref.pack_rows(x), 3)
    assert (p.rows, p.k, p.shape, p.nbytes) == (2, 3, (2, 3), 16)
    assert p.words[0, 0] == 2 and p.words[1, 0] == 7
    assert "PackedBits" in repr(p)


def test_pack_nhwc_and_weights_match_reference(isa):
    rng = np.random.default_rng(3)
    for c in (1, 63, 64, 65, 130):
        x = _real(rng, (2, c, 3, 5))
        px = bk.pack_nhwc(x)
        assert px.shape == (2, c, 3, 5) and px.words.shape == (2, 3, 5, -(-c // 64))
        np.testing.assert_array_equal(px.words, ref.pack_nhwc(x))
        np.testing.assert_array_equal(bk.unpack_nhwc(px), ref.sign(x))
        w = _real(rng, (4, c, 3, 2))
        pw = bk.pack_conv_weights(w)
        assert pw.shape == (4, c, 3, 2) and pw.kernel_size == (3, 2) and pw.out_channels == 4
        np.testing.assert_array_equal(pw.words, ref.pack_conv_weights(w))
        np.testing.assert_array_equal(bk.unpack_conv_weights(pw), ref.sign(w))
    for dtype in (np.float64, np.int8):
        x = (_real(rng, (1, 70, 2, 2)) * 3).astype(dtype)
        np.testing.assert_array_equal(bk.pack_nhwc(x).words, ref.pack_nhwc(x))
    xb = rng.random((1, 70, 2, 3)) < 0.5
    np.testing.assert_array_equal(bk.pack_nhwc(xb).words, ref.pack_nhwc(ref.sign(xb)))


@pytest.mark.parametrize("c", [1, 32, 33, 64, 65, 130])
def test_pack_nhwc_float32_blocks_and_nonfinite(isa, c):
    """float32 NCHW packing over 16-pixel vector blocks and their tails (AVX2), several
    256-pixel blocks and two images; NaN/+-inf anywhere is reported."""
    rng = np.random.default_rng(c)
    for n, h, w in [(2, 7, 7), (1, 17, 17), (1, 4, 4)]:
        x = _real(rng, (n, c, h, w))
        np.testing.assert_array_equal(bk.pack_nhwc(x).words, ref.pack_nhwc(x))
        for bad in (np.nan, np.inf, -np.inf):
            y = x.copy()
            y.reshape(-1)[rng.integers(0, y.size)] = bad
            with pytest.raises(ValueError, match="NaN|inf"):
                bk.pack_nhwc(y)


@pytest.mark.parametrize("c", [64, 128, 3, 70])
def test_flatten_nhwc_feeds_a_dense_layer_in_hwc_order(c):
    rng = np.random.default_rng(c)
    x = _real(rng, (2, c, 3, 2))
    flat = bk.flatten_nhwc(bk.pack_nhwc(x))
    assert flat.shape == (2, 3 * 2 * c)
    hwc = np.moveaxis(x, 1, -1).reshape(2, -1)
    np.testing.assert_array_equal(flat.words, ref.pack_rows_fast(hwc))
    dense = _real(rng, (5, c * 3 * 2))                                   # torch (c, h, w) order
    permuted = dense.reshape(5, c, 3, 2).transpose(0, 2, 3, 1).reshape(5, -1)
    np.testing.assert_array_equal(bk.xnor_matmul(flat, bk.pack_signs(permuted)),
                                  ref.pm1_matmul(x.reshape(2, -1), dense))


def test_tiny_negative_float64_packs_as_minus_one():
    x = np.array([[-1e-300, 1e-300, -0.0, 0.0]], np.float64)    # float32 would round to -0.0
    np.testing.assert_array_equal(bk.unpack_signs(bk.pack_signs(x)), [[-1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(bk.unpack_nhwc(bk.pack_nhwc(x.reshape(1, 4, 1, 1))).ravel(),
                                  [-1.0, 1.0, 1.0, 1.0])


def test_strict_accepts_pm1_and_bool():
    # the same bits as without strict: bit 1 <=> -1 (bool: True is +1, False is -1)
    assert bk.pack_signs(np.array([[1, -1, 1]], np.int8), strict=True).words.tolist() == [[0b010]]
    assert bk.pack_signs(np.array([[True, False]]), strict=True).words.tolist() == [[0b10]]
    a = bk.pack_nhwc(-np.ones((1, 2, 2, 2)), strict=True)
    assert a.shape == (1, 2, 2, 2) and (a.words == 0b11).all()
    w = bk.pack_conv_weights(np.ones((1, 2, 1, 1), np.float32), strict=True)
    assert w.shape == (1, 2, 1, 1) and (w.words == 0).all()
    with pytest.raises(ValueError, match="only -1 and \\+1"):
        bk.pack_signs(np.array([[1.0, 0.5]], np.float32), strict=True)


# ----------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("k", K_GRID)
def test_xnor_matmul_equals_pm1_matmul_on_grid(isa, eager_threads, k):
    rng = np.random.default_rng(k)
    a_all = _real(rng, (max(M_GRID), k))
    b_all = _real(rng, (max(N_GRID), k))
    pa_all, pb_all = bk.pack_signs(a_all), bk.pack_signs(b_all)
    for m, n in itertools.product(M_GRID, N_GRID):
        pa = bk.PackedBits(np.ascontiguousarray(pa_all.words[:m]), k)
        pb = bk.PackedBits(np.ascontiguousarray(pb_all.words[:n]), k)
        want = ref.pm1_matmul(a_all[:m], b_all[:n])
        for nt in (1, 2):
            got = bk.xnor_matmul(pa, pb, n_threads=nt)
            assert got.dtype == np.int32 and got.shape == (m, n)
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} m={m} n={n} k={k} threads={nt}")


def test_binary_matmul_on_real_inputs_and_prepacked_weights(isa):
    rng = np.random.default_rng(4)
    a, b = _real(rng, (5, 300)), _real(rng, (33, 300), np.float64)
    want = ref.pm1_matmul(a, b)
    np.testing.assert_array_equal(bk.binary_matmul(a, b), want)
    np.testing.assert_array_equal(bk.binary_matmul(torch.from_numpy(a), bk.pack_signs(b)), want)
    np.testing.assert_array_equal(bk.binary_matmul(bk.pack_signs(a), b, n_threads=2), want)


def test_large_shapes_agree_across_isas_threads_and_backends(eager_threads, backend):
    rng = np.random.default_rng(5)
    a, b = bk.pack_signs(_real(rng, (131, 515))), bk.pack_signs(_real(rng, (97, 515)))
    want = ref.pm1_matmul(bk.unpack_signs(a), bk.unpack_signs(b))
    for name in AVAILABLE:
        bk._set_isa(name)
        try:
            for nt in (1, 2, 3):
                np.testing.assert_array_equal(bk.xnor_matmul(a, b, n_threads=nt), want, err_msg=name)
        finally:
            bk._set_isa(None)


def _thresholds(rng, d, n):
    """Thresholds on and between attainable dot values, plus the infinities."""
    picks = d[rng.integers(0, d.shape[0], n), np.arange(n)].astype(np.float64)
    thr = picks + rng.choice([0.0, 0.5, -0.5, 0.25, -1.0], n)
    thr[rng.random(n) < 0.1] = np.inf
    thr[rng.random(n) < 0.1] = -np.inf
    return thr


@pytest.mark.parametrize("k", [1, 63, 64, 65, 200])
def test_matmul_threshold_packs_the_thresholded_signs(isa, eager_threads, k):
    rng = np.random.default_rng(10 + k)
    for m, n in [(1, 1), (3, 63), (8, 64), (9, 65), (17, 130)]:
        a, b = _real(rng, (m, k)), _real(rng, (n, k))
        d = ref.pm1_matmul(a, b)
        thr = _thresholds(rng, d, n)
        flip = rng.random(n) < 0.4
        want = ref.threshold_signs(d, thr, flip)
        for nt in (1, 2):
            out = bk.matmul_threshold(bk.pack_signs(a), bk.pack_signs(b), thr, flip, n_threads=nt)
            assert isinstance(out, bk.PackedBits) and out.shape == (m, n)
            np.testing.assert_array_equal(bk.unpack_signs(out), want, err_msg=f"{isa} {m}x{n}x{k}")
            np.testing.assert_array_equal(out.words, ref.pack_rows_fast(want))    # padding bits 0
        # torch threshold/flip; scalar threshold, no flip, real input a
        out = bk.matmul_threshold(bk.pack_signs(a), bk.pack_signs(b), torch.from_numpy(thr),
                                  torch.from_numpy(flip))
        np.testing.assert_array_equal(bk.unpack_signs(out), want)
        prepared = bk.prepare_thresholds(thr, flip, channels=n, k=k)
        out = bk.matmul_threshold(bk.pack_signs(a), bk.pack_signs(b), prepared)
        np.testing.assert_array_equal(bk.unpack_signs(out), want)
        out = bk.matmul_threshold(a, bk.pack_signs(b), 0.0)
        np.testing.assert_array_equal(bk.unpack_signs(out), ref.threshold_signs(d, 0.0))


def test_matmul_affine_equals_float32_reference(isa, eager_threads):
    rng = np.random.default_rng(11)
    for m, n, k in [(1, 5, 64), (4, 70, 129), (12, 33, 1000)]:
        a, b = _real(rng, (m, k)), _real(rng, (n, k))
        alpha = rng.random(n).astype(np.float32) + 0.1
        bias = rng.standard_normal(n).astype(np.float32)
        d = ref.pm1_matmul(a, b)
        for nt in (1, 2):
            got = bk.matmul_affine(bk.pack_signs(a), bk.pack_signs(b), alpha, bias, n_threads=nt)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, ref.affine(d, alpha, bias))
        np.testing.assert_array_equal(bk.matmul_affine(a, bk.pack_signs(b), 2.0),
                                      ref.affine(d, np.full(n, 2.0), np.zeros(n)))


# ----------------------------------------------------------------------------- conv
CONV_SHAPES = [  # N, C, H, W, O, kh, kw
    (1, 1, 3, 3, 1, 3, 3),
    (2, 3, 7, 6, 5, 3, 3),
    (1, 63, 5, 5, 33, 3, 3),
    (1, 64, 6, 5, 64, 1, 1),
    (2, 65, 5, 6, 70, 3, 3),
    (1, 130, 6, 6, 9, 5, 5),
    (1, 20, 5, 7, 4, 3, 1),
]


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_binary_conv2d_equals_torch_conv_of_signs(isa, eager_threads, shape):
    n, c, h, w, o, kh, kw = shape
    rng = np.random.default_rng(sum(shape))
    x, wt = _real(rng, (n, c, h, w)), _real(rng, (o, c, kh, kw))
    px, pw = bk.pack_nhwc(x), bk.pack_conv_weights(wt)
    for stride, padding, pad_value in itertools.product([1, 2], [0, 1, 2], [1.0, -1.0, 0.0]):
        if h + 2 * padding < kh or w + 2 * padding < kw:
            continue
        want = ref.conv_signs(x, wt, stride, padding, pad_value)
        for nt in (1, 2):
            got = bk.conv2d_packed(px, pw, stride, padding, pad_value, n_threads=nt)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} s={stride} p={padding} v={pad_value}")
        got = bk.conv2d_packed(px, pw, stride, padding, pad_value, layout="nhwc", n_threads=2)
        np.testing.assert_array_equal(got, want.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(bk.binary_conv2d(torch.from_numpy(x), torch.from_numpy(wt), 1, 1, -1.0),
                                  ref.conv_signs(x, wt, 1, 1, -1.0))


def test_conv_rectangular_stride_and_padding():
    rng = np.random.default_rng(6)
    x, w = _real(rng, (1, 5, 9, 8)), _real(rng, (3, 5, 3, 2))
    got = bk.binary_conv2d(x, w, stride=(2, 1), padding=(1, 2), pad_value=-1.0)
    xs = torch.nn.functional.pad(torch.from_numpy(ref.sign(x)), (2, 2, 1, 1), value=-1.0)
    want = torch.nn.functional.conv2d(xs, torch.from_numpy(ref.sign(w)), stride=(2, 1)).numpy()
    np.testing.assert_array_equal(got, want.astype(np.int32))


def test_conv_threshold_and_affine_epilogues(isa, eager_threads):
    rng = np.random.default_rng(7)
    for (n, c, h, w, o) in [(1, 3, 5, 5, 1), (2, 64, 5, 4, 65), (1, 70, 6, 6, 130)]:
        x, wt = _real(rng, (n, c, h, w)), _real(rng, (o, c, 3, 3))
        px, pw = bk.pack_nhwc(x), bk.pack_conv_weights(wt)
        d = ref.conv_signs(x, wt, 1, 1, -1.0)                          # (n, o, h, w)
        d_last = np.moveaxis(d, 1, -1)                                  # channels last
        thr = _thresholds(rng, d_last.reshape(-1, o), o)
        flip = rng.random(o) < 0.5
        want = np.moveaxis(ref.threshold_signs(d_last, thr, flip), -1, 1)
        alpha = (rng.random(o) + 0.5).astype(np.float32)
        bias = rng.standard_normal(o).astype(np.float32)
        want_f = np.moveaxis(ref.affine(d_last, alpha, bias), -1, 1)
        for nt in (1, 2):
            out = bk.conv2d_threshold(px, pw, thr, flip, 1, 1, -1.0, n_threads=nt)
            assert isinstance(out, bk.PackedActivations) and out.shape == (n, o, h, w)
            prepared = bk.prepare_thresholds(thr, flip, channels=o, k=c * 9)
            again = bk.conv2d_threshold(px, pw, prepared, None, 1, 1, -1.0, n_threads=nt)
            np.testing.assert_array_equal(again.words, out.words)
            np.testing.assert_array_equal(bk.unpack_nhwc(out), want)
            np.testing.assert_array_equal(out.words, ref.pack_nhwc(want))       # padding bits 0
            got = bk.conv2d_affine(px, pw, alpha, bias, 1, 1, -1.0, n_threads=nt)
            np.testing.assert_array_equal(got, want_f)
            got = bk.conv2d_affine(px, pw, alpha, bias, 1, 1, -1.0, layout="nhwc", n_threads=nt)
            np.testing.assert_array_equal(got, np.moveaxis(want_f, 1, -1))


def test_two_binary_convs_in_a_row_stay_packed():
    """conv -> BN -> sign -> conv on packed bits == the float torch pipeline (BN folded)."""
    rng = np.random.default_rng(8)
    x = _real(rng, (2, 16, 8, 8))
    w1, w2 = _real(rng, (24, 16, 3, 3)), _real(rng, (8, 24, 3, 3))
    gamma = rng.standard_normal(24)              # negative entries: flipped channels
    beta, mean, var = rng.standard_normal(24), rng.standard_normal(24) * 3, rng.random(24) + 0.5
    s = gamma / np.sqrt(var + 1e-5)
    t = beta - s * mean
    # reference in float64: y = s * conv + t, then sign (sign(0) = +1), then conv 2
    d1 = ref.conv_signs(x, w1, 1, 1, 1.0).astype(np.float64)
    h = ref.sign(s[None, :, None, None] * d1 + t[None, :, None, None])
    want = ref.conv_signs(h, w2, 2, 1, 1.0)
    # packed: the threshold epilogue emits conv 2's packed input directly
    thr = np.where(s != 0, -t / np.where(s != 0, s, 1), np.where(t >= 0, -np.inf, np.inf))
    hp = bk.conv2d_threshold(bk.pack_nhwc(x), bk.pack_conv_weights(w1), thr, s < 0, 1, 1, 1.0)
    np.testing.assert_array_equal(bk.unpack_nhwc(hp), h)
    np.testing.assert_array_equal(bk.conv2d_packed(hp, bk.pack_conv_weights(w2), 2, 1, 1.0), want)


# ----------------------------------------------------------------------------- properties
@st.composite
def _matrices(draw):
    m, n, k = draw(st.integers(1, 20)), draw(st.integers(1, 20)), draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return _real(rng, (m, k)), _real(rng, (n, k))


@HYP
@given(st.integers(1, 12), st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_property_pack_unpack_round_trip_and_zero_padding(rows, k, seed):
    rng = np.random.default_rng(seed)
    pm1 = np.where(rng.random((rows, k)) < 0.5, -1.0, 1.0).astype(np.float32)
    p = bk.pack_signs(pm1)
    np.testing.assert_array_equal(bk.unpack_signs(p), pm1)
    if k % 64:
        assert not np.any(p.words[:, -1] >> np.uint64(k % 64))
    real = _real(rng, (rows, k), np.float64)
    np.testing.assert_array_equal(bk.pack_signs(real).words, ref.pack_rows_fast(real))


@HYP
@given(_matrices(), st.sampled_from(AVAILABLE), st.sampled_from([1, 2]))
def test_property_xnor_matmul_equals_numpy(eager_threads, ab, isa_name, nt):
    a, b = ab
    bk._set_isa(isa_name)
    try:
        got = bk.xnor_matmul(bk.pack_signs(a), bk.pack_signs(b), n_threads=nt)
    finally:
        bk._set_isa(None)
    np.testing.assert_array_equal(got, ref.pm1_matmul(a, b))


@HYP
@given(n=st.integers(1, 2), c=st.integers(1, 70), h=st.integers(1, 7), w=st.integers(1, 7),
       o=st.integers(1, 9), k=st.sampled_from([1, 3, 5]), stride=st.sampled_from([1, 2]),
       padding=st.sampled_from([0, 1, 2]), pad_value=st.sampled_from([1.0, -1.0]),
       isa_name=st.sampled_from(AVAILABLE), seed=st.integers(0, 2**32 - 1))
def test_property_conv_equals_torch_conv_with_pad_value(eager_threads, n, c, h, w, o, k, stride,
                                                        padding, pad_value, isa_name, seed):
    if h + 2 * padding < k or w + 2 * padding < k:
        return
    rng = np.random.default_rng(seed)
    x, wt = _real(rng, (n, c, h, w)), _real(rng, (o, c, k, k))
    bk._set_isa(isa_name)
    try:
        got = bk.binary_conv2d(x, wt, stride, padding, pad_value, n_threads=2)
    finally:
        bk._set_isa(None)
    np.testing.assert_array_equal(got, ref.conv_signs(x, wt, stride, padding, pad_value))


# ----------------------------------------------------------------------------- panel kernels
def _with_panel_alt():
    """The levels with two panel kernels (x86 AVX2) this CPU has."""
    return [pytest.param(n, marks=pytest.mark.skipif(
        n not in AVAILABLE or not bk._kernels.has_panel_alt(AVAILABLE.index(n)),
        reason=f"CPU lacks {n}"), id=n) for n in ("avx2",)]


def _both_panel_kernels(fn, *args, **kwargs):
    """fn(*args, **kwargs) with the main and with the alternative panel kernel of the level."""
    outs = []
    for name in ("main", "alt"):
        old = bk._set_panel_kernel(name)
        try:
            outs.append(fn(*args, **kwargs))
        finally:
            bk._set_panel_kernel(old)
    return outs


@pytest.mark.parametrize("isa_name", _with_panel_alt())
@pytest.mark.parametrize("nt", [1, 2])
def test_panel_kernels_agree_on_gemm_and_conv(eager_threads, isa_name, nt):
    """AVX2's two panel kernels (nibble lookup; hybrid lookup + scalar POPCNT, chosen by a
    calibration) give identical results: odd row counts (1-row edge tiles), column counts
    around the 8-wide groups, reductions past the 31-word byte-count limit, every epilogue."""
    rng = np.random.default_rng(12)
    bk._set_isa(isa_name)
    try:
        for m, n, k in [(9, 7, 63), (17, 8, 64), (33, 70, 129), (10, 64, 2000), (11, 9, 4100)]:
            a, b = _real(rng, (m, k)), _real(rng, (n, k))
            pa, pb = bk.pack_signs(a), bk.pack_signs(b)
            want = ref.pm1_matmul(a, b)
            for got in _both_panel_kernels(bk.xnor_matmul, pa, pb, n_threads=nt):
                np.testing.assert_array_equal(got, want, err_msg=f"{m}x{n}x{k}")
            th = rng.integers(-k, k, n).astype(np.float64)
            g0, g1 = _both_panel_kernels(bk.matmul_threshold, pa, pb, th, n_threads=nt)
            np.testing.assert_array_equal(g0.words, g1.words)
            al, bi = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
            g0, g1 = _both_panel_kernels(bk.matmul_affine, pa, pb, al, bi, n_threads=nt)
            np.testing.assert_array_equal(g0, g1)
        for nb, c, hw, o, kk, stride, pad in [(2, 64, 5, 8, 3, 1, 1), (1, 63, 7, 9, 3, 1, 1),
                                              (2, 65, 6, 16, 3, 2, 1), (1, 3, 9, 70, 3, 1, 0),
                                              (1, 700, 4, 8, 3, 1, 1), (3, 64, 3, 7, 1, 1, 0)]:
            x, w = _real(rng, (nb, c, hw, hw)), _real(rng, (o, c, kk, kk))
            px, pw = bk.pack_nhwc(x), bk.pack_conv_weights(w)
            want = ref.conv_signs(x, w, stride, pad, -1.0)
            for layout in ("nchw", "nhwc"):
                g0, g1 = _both_panel_kernels(bk.conv2d_packed, px, pw, stride, pad, -1.0, layout=layout,
                                             n_threads=nt)
                np.testing.assert_array_equal(g0, g1)
            np.testing.assert_array_equal(np.asarray(g0).transpose(0, 3, 1, 2), want)
            th = rng.integers(-9 * c, 9 * c, o).astype(np.float64)
            g0, g1 = _both_panel_kernels(bk.conv2d_threshold, px, pw, th, None, stride, pad, 1.0, n_threads=nt)
            np.testing.assert_array_equal(g0.words, g1.words)
            al, bi = rng.standard_normal(o).astype(np.float32), rng.standard_normal(o).astype(np.float32)
            g0, g1 = _both_panel_kernels(bk.conv2d_affine, px, pw, al, bi, stride, pad, 1.0, n_threads=nt)
            np.testing.assert_array_equal(g0, g1)
    finally:
        bk._set_isa(None)


def test_panel_kernel_choice_is_reported_and_settable():
    info = bk.kernel_info()
    assert info["panel_kernel"] in ("main", "lookup", "hybrid")
    old = bk._set_panel_kernel("main")
    try:
        if bk._kernels.has_panel_alt(bk._kernels.level()):
            assert bk.kernel_info()["panel_kernel"] == "lookup"
            bk._set_panel_kernel("alt")
            assert bk.kernel_info()["panel_kernel"] == "hybrid"
        with pytest.raises(ValueError, match="name"):
            bk._set_panel_kernel("fast")
    finally:
        bk._set_panel_kernel(old)


# ----------------------------------------------------------------------------- threads, info
def test_num_threads_default_follows_torch_until_set():
    old = torch.get_num_threads()
    try:
        bk.set_num_threads(None)
        torch.set_num_threads(1)
        assert bk.get_num_threads() == 1
        bk.set_num_threads(3)
        assert bk.get_num_threads() == 3 and bk.kernel_info()["num_threads_source"] == "set_num_threads"
        bk.set_num_threads(None)
        assert bk.get_num_threads() == torch.get_num_threads()
    finally:
        torch.set_num_threads(old)
        bk.set_num_threads(None)


def test_concurrent_callers_get_correct_results(eager_threads):
    """Kernels release the GIL; a second caller while the pool is busy runs alone."""
    rng = np.random.default_rng(9)
    a, b = bk.pack_signs(_real(rng, (40, 700))), bk.pack_signs(_real(rng, (50, 700)))
    want = ref.pm1_matmul(bk.unpack_signs(a), bk.unpack_signs(b))
    errors = []

    def work():
        for _ in range(30):
            if not np.array_equal(bk.xnor_matmul(a, b, n_threads=2), want):
                errors.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(bk, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 5


def test_kernel_info_reports_the_cpu():
    info = bk.kernel_info()
    for key in ("isa", "isa_detected", "avx2_available", "avx2_used", "avx512_vpopcntdq_available",
                "portable_forced", "openmp", "threading", "omp_max_threads", "num_threads", "tiles"):
        assert key in info
    assert info["isa"] in ALL_ISAS and not info["portable_forced"]
    if sys.platform.startswith("linux") and os.path.exists("/proc/cpuinfo"):
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo")
                      if line.startswith("flags")), [])
        assert info["avx2_available"] == ("avx2" in flags)
        assert info["avx512_vpopcntdq_available"] == ("avx512_vpopcntdq" in flags and "avx512bw" in flags
                                                      and "avx512vl" in flags)
    bk._force_portable(True)
    try:
        forced = bk.kernel_info()
        assert forced["isa"] == "portable" and not forced["avx2_used"]
        assert forced["portable_forced"] == (info["isa_detected"] != "portable")
    finally:
        bk._force_portable(False)
    assert bk.kernel_info()["isa"] == info["isa_detected"]


CHILD = r"""
import os, json, numpy as np
from bnnlab import kernels as bk
bk._set_grain_scale(0)
rng = np.random.default_rng(0)
a = rng.standard_normal((20, 300)).astype(np.float32)
want = (np.where(a >= 0, 1, -1) @ np.where(a >= 0, 1, -1).T).tolist()
p = bk.pack_signs(a)
bk.xnor_matmul(p, p, n_threads=2)                    # start the pool in the parent
pid = os.fork()
if pid == 0:                                         # child: pool state reset, still works
    ok = bk.xnor_matmul(p, p, n_threads=2).tolist() == want
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(json.dumps({"isa": bk.kernel_info()["isa"], "child": os.waitstatus_to_exitcode(status)}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_env_isa_switch_and_fork_safety():
    env = dict(os.environ, BNNLAB_ISA="portable")
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()[-1]
    assert '"isa": "portable"' in out and '"child": 0' in out


# ------------------------------------------------------------------ affine packers, bit pooling
C_GRID = [1, 63, 64, 65, 129]


def _scales(rng, c):
    """Per-channel scales with ±1 (the PackedSign case), 0 (constant channels) and others."""
    s = rng.choice(np.array([1.0, -1.0, 0.0, 0.5, -3.0, 1e-3], np.float32), c)
    return s, rng.standard_normal(c).astype(np.float32)


@pytest.mark.parametrize("k", C_GRID + [200])
def test_pack_rows_affine_equals_numpy_float32(isa, k):
    rng = np.random.default_rng(100 + k)
    x = _real(rng, (5, k))
    s, o = _scales(rng, k)
    got = bk.pack_rows_affine(x, s, o)
    assert got.k == k and got.words.shape == (5, bk.n_words(k))
    np.testing.assert_array_equal(got.words, ref.pack_rows_fast(ref.affine_signs(x, s, o, axis=1)))


@pytest.mark.parametrize("c", C_GRID)
def test_pack_nhwc_affine_equals_numpy_float32(isa, c):
    rng = np.random.default_rng(200 + c)
    x = _real(rng, (2, c, 5, 3))
    s, o = _scales(rng, c)
    got = bk.pack_nhwc_affine(torch.from_numpy(x), s, o)
    assert got.shape == (2, c, 5, 3)
    np.testing.assert_array_equal(got.words, ref.pack_nhwc(ref.affine_signs(x, s, o, axis=1)))


def test_affine_packers_break_exact_ties_as_sign0_plus1(isa):
    # z = x*s + o is exactly 0 (+0 or -0) on a tie: +1; one float32 ulp on the other side: -1
    u = np.array([0.3, -7.25, 1e-30, 0.0, 3.4e38, -1.5e-45], np.float32)   # incl. denormal
    c = u.shape[0]
    below, above = np.nextafter(u, np.float32(-np.inf)), np.nextafter(u, np.float32(np.inf))
    x = np.stack([u, below, above, -u, -below, -above]).astype(np.float32)   # (6, c)
    o = (-u).astype(np.float32)                       # z = s*x - u: sign of s*x - u exactly
    for s in (1.0, -1.0):
        want = np.where(s * x.astype(np.float64) >= u, 1.0, -1.0)             # exact comparison
        np.testing.assert_array_equal(bk.pack_rows_affine(x, np.full(c, s), o).words,
                                      ref.pack_rows_fast(want))
        nchw = np.ascontiguousarray(x.T[None, :, :, None])                   # (1, c, 6, 1)
        np.testing.assert_array_equal(bk.pack_nhwc_affine(nchw, np.full(c, s), o).words,
                                      ref.pack_nhwc(want.T[None, :, :, None]))


def test_affine_packers_accept_prepared_affine_and_threads(eager_threads):
    rng = np.random.default_rng(3)
    x = _real(rng, (3, 70, 9, 9))
    s, o = _scales(rng, 70)
    aff = bk.prepare_affine(s, o, channels=70)
    want = bk.pack_nhwc_affine(x, s, o, n_threads=1).words
    np.testing.assert_array_equal(bk.pack_nhwc_affine(x, aff, n_threads=2).words, want)
    rows = x.reshape(-1, 70)
    np.testing.assert_array_equal(bk.pack_rows_affine(rows, aff, n_threads=2).words,
                                  bk.pack_rows_affine(rows, s, o, n_threads=1).words)
    # offset=None means zeros: the plain sign packer
    np.testing.assert_array_equal(bk.pack_rows_affine(rows, 1.0).words, bk.pack_signs(rows).words)


_POOLS = [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 1)),
          ((1, 1), (1, 1), (0, 0))]


@pytest.mark.parametrize("c", C_GRID)
@pytest.mark.parametrize("geom", _POOLS, ids=["2x2s2", "3x3s2p1", "2x3s12p1", "1x1"])
def test_maxpool2d_packed_equals_max_and_min_pool(c, geom):
    rng = np.random.default_rng(300 + c)
    x = rng.standard_normal((2, c, 7, 6)).astype(np.float32)
    flags = rng.random(c) < 0.4
    spec = bk.prepare_maxpool2d(c, *geom, or_channels=flags)
    got = bk.maxpool2d_packed(bk.pack_nhwc(x), spec)
    want = ref.maxpool_pm1(ref.sign(x), *geom, or_channels=flags)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.words, ref.pack_nhwc(want))
    # the fused affine pack + pool gives the same bits as pack then pool
    s, o = _scales(rng, c)
    fused = bk.pack_nhwc_affine(x, s, o, pool=spec)
    want2 = ref.maxpool_pm1(ref.affine_signs(x, s, o, axis=1), *geom, or_channels=flags)
    np.testing.assert_array_equal(fused.words, ref.pack_nhwc(want2))


@pytest.mark.parametrize("o_ch", [1, 63, 64, 65, 129])
def test_conv2d_threshold_with_pool_equals_conv_then_pool(isa, o_ch):
    rng = np.random.default_rng(400 + o_ch)
    x, w = rng.standard_normal((2, 5, 8, 7)), rng.standard_normal((o_ch, 5, 3, 3))
    thr = rng.integers(-8, 9, o_ch).astype(np.float64)
    flip = rng.random(o_ch) < 0.3
    flags = rng.random(o_ch) < 0.4
    spec = bk.prepare_maxpool2d(o_ch, 2, 2, 1, or_channels=flags)
    got = bk.conv2d_threshold(bk.pack_nhwc(x), bk.pack_conv_weights(w), thr, flip, 1, 1, -1.0,
                              pool=spec)
    d = ref.conv_signs(x, w, 1, 1, -1.0)                                  # (N, O, H, W)
    signs = np.moveaxis(ref.threshold_signs(np.moveaxis(d, 1, 3), thr, flip), 3, 1)
    want = ref.maxpool_pm1(signs, (2, 2), (2, 2), (1, 1), or_channels=flags)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got.words, ref.pack_nhwc(want))


def test_trusted_constructors_skip_checks():
    w = np.zeros((2, 1), np.uint64)
    p = bk.PackedBits.trusted(w, 3)
    assert np.shares_memory(p.words, w) and p.shape == (2, 3)   # no copy
    assert not p.words.flags.writeable
    a = bk.PackedActivations.trusted(np.zeros((1, 2, 2, 1), np.uint64), 5)
    assert a.shape == (1, 5, 2, 2)


@pytest.mark.parametrize("make", [
    lambda: bk.PackedBits(np.array([[0b111]], np.uint64), 3),
    lambda: bk.PackedActivations(np.array([[[[0b111]]]], np.uint64), 3),
    lambda: bk.PackedConvWeights(np.array([[[[0b111]]]], np.uint64), 3),
])
def test_validated_words_are_read_only(make):
    # issue 8, defect 4: setting a padding bit after validation changed a dot product
    p = make()
    with pytest.raises(ValueError, match="read-only"):
        p.words[..., -1] |= np.uint64(1 << 5)


def test_validated_words_are_a_copy_of_the_callers_array():
    w = np.array([[0b011]], np.uint64)
    a = bk.PackedBits(w, 3)
    w[0, 0] |= np.uint64(1 << 5)                     # a padding bit in the caller's array
    b = bk.pack_signs(np.ones((1, 3), np.float32))
    assert bk.xnor_matmul(b, a)[0, 0] == 3 - 2 * 2   # unchanged: two -1 entries, no extra bit


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_zero_padding_epilogues_equal_torch(shape):
    # issue 8, defect 7: torch's zero padding of the binarised input, reproduced exactly
    n, c, h, w, o, kh, kw = shape
    rng = np.random.default_rng(sum(shape) + 1)
    x, wt = _real(rng, (n, c, h, w)), _real(rng, (o, c, kh, kw))
    px, pw = bk.pack_nhwc(x), bk.pack_conv_weights(wt)
    for stride, padding in itertools.product([1, 2], [1, 2]):
        if h + 2 * padding < kh or w + 2 * padding < kw:
            continue
        d = ref.conv_signs(x, wt, stride, padding, 0.0)
        thr = rng.integers(-6, 7, o).astype(np.float64) + rng.choice([0.0, 0.5], o)
        flip = rng.random(o) < 0.5
        bits = bk.conv2d_threshold(px, pw, thr, flip, stride, padding, 0.0)
        want = np.where(flip[None, :, None, None], d <= thr[None, :, None, None],
                        d >= thr[None, :, None, None])
        np.testing.assert_array_equal(bk.unpack_nhwc(bits) > 0, want)
        prepared = bk.prepare_thresholds(thr, flip, channels=o, k=c * kh * kw)
        np.testing.assert_array_equal(
            bk.conv2d_threshold(px, pw, prepared, None, stride, padding, 0.0).words, bits.words)
        alpha, bias = _real(rng, (o,)), _real(rng, (o,))
        y = bk.conv2d_affine(px, pw, alpha, bias, stride, padding, 0.0)
        np.testing.assert_array_equal(
            y, d.astype(np.float32) * alpha[None, :, None, None] + bias[None, :, None, None])
        corr = bk.zero_padding_correction(pw, (h, w), stride, padding)
        np.testing.assert_array_equal(ref.conv_signs(x, wt, stride, padding, 1.0) - corr[None], d)
