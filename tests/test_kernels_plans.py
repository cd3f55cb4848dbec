"""The public kernel plans (prepare_conv2d, prepare_matmul, prepare_pack_nhwc) equal the
one-shot functions bit for bit, on the word-boundary grid, at every ISA level and thread
count; bad arguments live in tests/test_kernels_badinput.py ("pc-", "pm-", "pp-" cases).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import _ref_kernels as ref
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnnlab import kernels as bk

AVAILABLE = bk._available_isas()
C_GRID = [1, 63, 64, 65, 129]             # reduction words: 1, 1, 1, 2, 3
O_GRID = [1, 63, 64, 65]                  # output words of the threshold epilogue
HYP = settings(max_examples=40, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(params=AVAILABLE)
def isa(request):
    bk._set_isa(request.param)
    yield request.param
    bk._set_isa(None)


@pytest.fixture
def eager_threads():
    old = bk._set_grain_scale(0.0)
    yield
    bk._set_grain_scale(old)


def _real(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[:: max(1, x.size // 5)] = 0.0                 # sign(0) = +1
    return x


def _epilogues(rng, o, k):
    """(kwargs of prepare_conv2d/matmul, one-shot call) for every epilogue."""
    thr = rng.integers(-k, k + 1, o) + rng.choice([0.0, 0.5, -0.5], o)
    flip = rng.random(o) < 0.4
    alpha = (rng.random(o) + 0.25).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    return [({}, "int", ()), ({"threshold": thr, "flip": flip}, "threshold", (thr, flip)),
            ({"alpha": alpha, "bias": bias}, "affine", (alpha, bias))]


def _same(a, b):
    if isinstance(a, bk.PackedActivations | bk.PackedBits):
        assert type(a) is type(b) and a.shape == b.shape
        np.testing.assert_array_equal(a.words, b.words)
    else:
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("c", C_GRID)
def test_conv_plan_equals_one_shot_on_word_grid(isa, eager_threads, c):
    rng = np.random.default_rng(c)
    for o in O_GRID:
        x, w = _real(rng, (2, c, 6, 5)), _real(rng, (o, c, 3, 3))
        px, pw = bk.pack_nhwc(x), bk.pack_conv_weights(w)
        for (kw, mode, args), (stride, padding, pad_value) in itertools.product(
                _epilogues(rng, o, c * 9), [(1, 1, 1.0), (2, 1, -1.0), (1, 1, 0.0), (2, 0, 1.0)]):
            geo = {"stride": stride, "padding": padding, "pad_value": pad_value}
            plan = bk.prepare_conv2d(pw, **geo, **kw)
            assert plan.epilogue == mode
            one_shot = {"int": bk.conv2d_packed, "threshold": bk.conv2d_threshold,
                        "affine": bk.conv2d_affine}[mode]
            want = one_shot(px, pw, *args, stride, padding, pad_value)
            for nt in (1, 2):
                _same(plan(px, n_threads=nt), want)
            _same(plan(x), want)                           # real input: packed by sign first
            if mode == "int":
                np.testing.assert_array_equal(want, ref.conv_signs(x, w, stride, padding, pad_value))
            if mode != "threshold":
                nhwc = bk.prepare_conv2d(w, **geo, **kw, layout="nhwc")(torch.from_numpy(x))
                _same(nhwc, np.ascontiguousarray(np.moveaxis(want, 1, -1)))


@pytest.mark.parametrize("o", O_GRID + [130])
def test_conv_plan_with_pool_equals_conv_then_pool(isa, o):
    rng = np.random.default_rng(100 + o)
    x, w = _real(rng, (2, 70, 8, 7)), _real(rng, (o, 70, 3, 3))
    px, pw = bk.pack_nhwc(x), bk.pack_conv_weights(w)
    thr = rng.integers(-100, 100, o).astype(np.float64)
    pool = bk.prepare_maxpool2d(o, 3, 2, 1, or_channels=rng.random(o) < 0.3)
    th = bk.prepare_thresholds(thr, None, channels=o, k=70 * 9)
    for pad_value in (1.0, -1.0, 0.0):
        plan = bk.prepare_conv2d(pw, padding=1, pad_value=pad_value, threshold=th, pool=pool)
        want = bk.maxpool2d_packed(bk.conv2d_threshold(px, pw, th, None, 1, 1, pad_value), pool)
        for nt in (1, 2):
            _same(plan(px, n_threads=nt), want)


def test_conv_plan_serves_several_input_sizes_and_accepts_prepared_epilogues():
    rng = np.random.default_rng(3)
    w = _real(rng, (5, 7, 3, 3))
    aff = bk.prepare_affine(rng.random(5) + 0.5, rng.standard_normal(5), channels=5)
    plan = bk.prepare_conv2d(w, padding=1, alpha=aff)
    assert plan.affine is aff and plan.in_channels == 7 and plan.out_channels == 5
    for hw in [(4, 4), (9, 3), (4, 4), (1, 1)]:
        x = _real(rng, (1, 7, *hw))
        _same(plan(x), bk.conv2d_affine(bk.pack_nhwc(x), plan.weights, aff, None, 1, 1))
    assert "Conv2dPlan" in repr(plan) and "affine" in repr(plan)


@pytest.mark.parametrize("k", C_GRID + [1000])
def test_matmul_plan_equals_one_shot_on_word_grid(isa, eager_threads, k):
    rng = np.random.default_rng(200 + k)
    for m, n in [(1, 1), (3, 63), (8, 64), (9, 65), (17, 130)]:
        a, b = _real(rng, (m, k)), _real(rng, (n, k))
        pa, pb = bk.pack_signs(a), bk.pack_signs(b)
        for kw, mode, args in _epilogues(rng, n, k):
            plan = bk.prepare_matmul(pb, **kw)
            assert plan.epilogue == mode and plan.in_features == k and plan.out_features == n
            one_shot = {"int": bk.xnor_matmul, "threshold": bk.matmul_threshold,
                        "affine": bk.matmul_affine}[mode]
            want = one_shot(pa, pb, *args)
            for nt in (1, 2):
                _same(plan(pa, n_threads=nt), want)
            _same(bk.prepare_matmul(b, **kw)(torch.from_numpy(a)), want)   # real weights, tensor


@pytest.mark.parametrize("c", C_GRID)
def test_pack_plan_equals_pack_functions(isa, c):
    rng = np.random.default_rng(300 + c)
    x = _real(rng, (2, c, 6, 5))
    scale = np.where(rng.random(c) < 0.5, -1.0, 1.0).astype(np.float32)
    offset = rng.standard_normal(c).astype(np.float32)
    pool = bk.prepare_maxpool2d(c, 2, or_channels=rng.random(c) < 0.5)
    _same(bk.prepare_pack_nhwc(c)(x), bk.pack_nhwc(x))
    _same(bk.prepare_pack_nhwc(c)(x.astype(np.float64)), bk.pack_nhwc(x))
    _same(bk.prepare_pack_nhwc(c, pool=pool)(x), bk.maxpool2d_packed(bk.pack_nhwc(x), pool))
    _same(bk.prepare_pack_nhwc(c, scale=scale, offset=offset)(torch.from_numpy(x)),
          bk.pack_nhwc_affine(x, scale, offset))
    _same(bk.prepare_pack_nhwc(c, scale=scale, offset=offset, pool=pool)(x),
          bk.pack_nhwc_affine(x, scale, offset, pool=pool))
    pm1 = np.where(x < 0, -1.0, 1.0).astype(np.float32)
    _same(bk.prepare_pack_nhwc(c, strict=True)(pm1), bk.pack_nhwc(pm1))


@HYP
@given(n=st.integers(1, 2), c=st.integers(1, 140), h=st.integers(1, 7), w=st.integers(1, 7),
       o=st.integers(1, 70), k=st.sampled_from([1, 2, 3]), stride=st.sampled_from([1, 2]),
       padding=st.sampled_from([0, 1]), pad_value=st.sampled_from([1.0, -1.0, 0.0]),
       epi=st.sampled_from([0, 1, 2]), isa_name=st.sampled_from(AVAILABLE),
       seed=st.integers(0, 2**32 - 1))
def test_property_conv_plan_equals_one_shot(eager_threads, n, c, h, w, o, k, stride, padding,
                                            pad_value, epi, isa_name, seed):
    if h + 2 * padding < k or w + 2 * padding < k:
        return
    rng = np.random.default_rng(seed)
    x, wt = _real(rng, (n, c, h, w)), _real(rng, (o, c, k, k))
    px, pw = bk.pack_nhwc(x), bk.pack_conv_weights(wt)
    kw, mode, args = _epilogues(rng, o, c * k * k)[epi]
    one_shot = {"int": bk.conv2d_packed, "threshold": bk.conv2d_threshold,
                "affine": bk.conv2d_affine}[mode]
    bk._set_isa(isa_name)
    try:
        plan = bk.prepare_conv2d(pw, stride=stride, padding=padding, pad_value=pad_value, **kw)
        _same(plan(px, n_threads=2), one_shot(px, pw, *args, stride, padding, pad_value))
    finally:
        bk._set_isa(None)


@HYP
@given(m=st.integers(1, 20), n=st.integers(1, 140), k=st.integers(1, 300),
       epi=st.sampled_from([0, 1, 2]), isa_name=st.sampled_from(AVAILABLE),
       seed=st.integers(0, 2**32 - 1))
def test_property_matmul_plan_equals_reference(eager_threads, m, n, k, epi, isa_name, seed):
    rng = np.random.default_rng(seed)
    a, b = _real(rng, (m, k)), _real(rng, (n, k))
    kw, mode, args = _epilogues(rng, n, k)[epi]
    d = ref.pm1_matmul(a, b)
    bk._set_isa(isa_name)
    try:
        got = bk.prepare_matmul(b, **kw)(a, n_threads=2)
    finally:
        bk._set_isa(None)
    if mode == "int":
        np.testing.assert_array_equal(got, d)
    elif mode == "threshold":
        np.testing.assert_array_equal(bk.unpack_signs(got), ref.threshold_signs(d, *args))
    else:
        np.testing.assert_array_equal(got, ref.affine(d, *args))


def test_packed_inference_uses_only_the_public_kernel_api():
    """bnnlab.packed runs on kernels' public plans: no compiled module, no private helper."""
    root = Path(bk.__file__).parent / "packed"
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "_kernels" not in text and "kernels._" not in text, path.name


@pytest.mark.parametrize("fma", [False, True])
def test_conv_plan_post_affine_and_residual(isa, eager_threads, fma):
    """out = post(alpha * d + bias) + residual: the dot products through the plan's own value
    table, plus the residual (float32 add); the table is NumPy's float32 arithmetic (two
    roundings) or a single-rounding FMA."""
    rng = np.random.default_rng(400 + fma)
    for c, o, hw, stride, pad_value in [(64, 64, 8, 1, 1.0), (65, 70, 7, 2, -1.0), (3, 129, 5, 1, 1.0)]:
        x, w = _real(rng, (2, c, hw, hw)), _real(rng, (o, c, 3, 3))
        alpha = (rng.random(o) + 0.5).astype(np.float32)
        bias = rng.standard_normal(o).astype(np.float32)
        a = rng.standard_normal(o).astype(np.float32)
        b = rng.standard_normal(o).astype(np.float32)
        geo = {"stride": stride, "padding": 1, "pad_value": pad_value}
        plan = bk.prepare_conv2d(w, **geo, alpha=alpha, bias=bias, post_scale=a, post_offset=b,
                                 post_fma=fma)
        d_vals, table = plan.epilogue_values()
        pre = plan.epilogue_values(post=False)[1]
        np.testing.assert_array_equal(pre, d_vals[None, :].astype(np.float32) * alpha[:, None]
                                      + bias[:, None])
        if fma:
            want_t = (pre.astype(np.float64) * a[:, None] + b[:, None]).astype(np.float32)
        else:
            want_t = pre * a[:, None] + b[:, None]
        np.testing.assert_array_equal(table, want_t)
        k = c * 9
        d = ref.conv_signs(x, w, stride, 1, pad_value)                    # (n, o, h, w)
        res = rng.standard_normal(d.shape).astype(np.float32)
        post = np.take_along_axis(table[None], ((d + k) // 2).reshape(d.shape[0], o, -1),
                                  axis=2).reshape(d.shape)                 # post(alpha d + bias)
        want = post + res
        for nt in (1, 2):
            np.testing.assert_array_equal(plan(bk.pack_nhwc(x), residual=res, n_threads=nt), want)
            out, bits = plan(bk.pack_nhwc(x), residual=res, emit_bits=True, n_threads=nt)
            np.testing.assert_array_equal(out, want)
            _same(bits, bk.pack_nhwc(want))                  # the output's signs, same pass
        nhwc = bk.prepare_conv2d(w, **geo, alpha=alpha, bias=bias, post_scale=a, post_offset=b,
                                 post_fma=fma, layout="nhwc")
        res_l = np.ascontiguousarray(np.moveaxis(res, 1, -1))
        np.testing.assert_array_equal(nhwc(x, residual=torch.from_numpy(res_l)),
                                      np.moveaxis(want, 1, -1))
        # a residual alone (no post-op) adds to the plain affine output exactly
        plain = bk.prepare_conv2d(w, **geo, alpha=alpha, bias=bias)
        np.testing.assert_array_equal(plain(x, residual=res), plain(x) + res)
        # a post-op alone: no residual added
        np.testing.assert_array_equal(plan(x), post)


def test_plans_keep_their_weight_panel_per_instruction_set_level(eager_threads):
    """A plan keeps the transposed weight panel of the blocked kernels and rebuilds it when
    the instruction-set level (hence the panel's column width) changes."""
    rng = np.random.default_rng(500)
    x, w = _real(rng, (2, 70, 6, 6)), _real(rng, (65, 70, 3, 3))
    a, b = _real(rng, (12, 200)), _real(rng, (70, 200))
    conv = bk.prepare_conv2d(w, padding=1)
    mm = bk.prepare_matmul(b)
    try:
        for name in list(AVAILABLE) + list(reversed(AVAILABLE)):
            bk._set_isa(name)
            _same(conv(x, n_threads=2), bk.binary_conv2d(x, w, 1, 1))
            _same(mm(a, n_threads=2), ref.pm1_matmul(a, b))
    finally:
        bk._set_isa(None)
