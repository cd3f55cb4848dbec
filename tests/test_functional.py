"""bnnlab.functional against the NumPy oracles in tests/_ref_quant.py."""
from __future__ import annotations

import math

import _ref_quant as ref
import numpy as np
import pytest
import torch

from bnnlab import functional as BF

DTYPES = [torch.float32, torch.float64]
SHAPES = [(48,), (4, 12), (2, 3, 2, 4)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def _np(t):
    return t.detach().cpu().numpy()


def _grid(shape, dtype, clip=1.0):
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    return torch.from_numpy(ref.grid(shape, np_dtype, clip))


# --------------------------------------------------------------------------- sign
def test_sign_tie_rule_is_plus_one():
    x = torch.tensor([-0.0, 0.0, 1e-45, -1e-45, -3.0, 3.0])
    assert BF.sign(x).tolist() == [1.0, 1.0, 1.0, -1.0, -1.0, 1.0]
    assert torch.sign(x)[0] == 0  # the reason BF.sign exists


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                   torch.int32, torch.int64])
def test_sign_matches_reference_and_keeps_dtype(dtype):
    x = torch.tensor([-3, -1, 0, 1, 2, 7]).to(dtype)
    y = BF.sign(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y.double().numpy(), ref.sign(x.double().numpy()))


@pytest.mark.parametrize("fn", [BF.sign, BF.ste_sign, BF.approx_sign, BF.swish_sign,
                                BF.ste_heaviside])
def test_nan_propagates(fn):
    y = fn(torch.tensor([float("nan"), -1.0, 1.0]))
    assert math.isnan(y[0]) and not torch.isnan(y[1:]).any()


def test_sign_has_no_gradient_path():
    x = torch.randn(5, requires_grad=True)
    assert not BF.sign(x).requires_grad


# --------------------------------------------------------------------------- forward/backward table
def _rsign_fwd(x, tau=0.25):
    return ref.sign((x - x.dtype.type(tau)).astype(x.dtype))


def _rsign_grad(x, tau=0.25, c=1.0):
    return ref.ste_grad((x - x.dtype.type(tau)).astype(x.dtype), c)


# (id, function, grid clip (where the edges are placed), forward_ref, grad_ref)
FUNCS = [
    ("ste_sign", BF.ste_sign, 1.0, ref.sign, ref.ste_grad),
    ("ste_sign-c0.5", lambda x: BF.ste_sign(x, 0.5), 0.5, ref.sign, lambda x: ref.ste_grad(x, 0.5)),
    ("ste_sign-c0", lambda x: BF.ste_sign(x, 0.0), 1.0, ref.sign, lambda x: ref.ste_grad(x, 0.0)),
    ("ste_sign-noclip", lambda x: BF.ste_sign(x, None), 1.0, ref.sign,
     lambda x: ref.ste_grad(x, None)),
    ("approx_sign", BF.approx_sign, 1.0, ref.sign, ref.approx_sign_grad),
    ("swish_sign", BF.swish_sign, 1.0, ref.sign, ref.swish_sign_grad),
    ("swish_sign-b2", lambda x: BF.swish_sign(x, beta=2.0), 1.0, ref.sign,
     lambda x: ref.swish_sign_grad(x, 2.0)),
    ("ste_heaviside", BF.ste_heaviside, 1.0, ref.heaviside, ref.ste_grad),
    ("ste_heaviside-c2", lambda x: BF.ste_heaviside(x, 2.0), 2.0, ref.heaviside,
     lambda x: ref.ste_grad(x, 2.0)),
    ("ste_heaviside-noclip", lambda x: BF.ste_heaviside(x, None), 1.0, ref.heaviside,
     lambda x: ref.ste_grad(x, None)),
    ("magnitude_aware_sign", BF.magnitude_aware_sign, 1.0, ref.magnitude_aware_sign,
     ref.magnitude_aware_sign_grad),
    ("magnitude_aware_sign-c0.5", lambda w: BF.magnitude_aware_sign(w, 0.5), 0.5,
     ref.magnitude_aware_sign, lambda w: ref.magnitude_aware_sign_grad(w, 0.5)),
    ("stochastic_sign-eval", lambda x: BF.stochastic_sign(x, "normal", training=False), 1.0,
     ref.sign, ref.ste_grad),
    ("stochastic_sign-scale0", lambda x: BF.stochastic_sign(x, "laplace", scale=0.0), 1.0,
     ref.sign, ref.ste_grad),
    ("rsign-scalar", lambda x: BF.rsign(x, 0.25), 1.0, _rsign_fwd, _rsign_grad),
    ("scaled_sign", lambda x: BF.scaled_sign(x, 1.3), 1.0, lambda x: 1.3 * ref.sign(x),
     lambda x: 1.3 * ref.ste_grad(x)),
    ("scaled_sign-noclip", lambda x: BF.scaled_sign(x, -0.5, None), 1.0,
     lambda x: -0.5 * ref.sign(x), lambda x: -0.5 * ref.ste_grad(x, None)),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, fn, clip, forward_ref, grad_ref", FUNCS, ids=[f[0] for f in FUNCS])
def test_forward_matches_reference(name, fn, clip, forward_ref, grad_ref, dtype, shape):
    x = _grid(shape, dtype, clip)
    y = fn(x)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_allclose(_np(y), forward_ref(_np(x)), **TOL[dtype])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, fn, clip, forward_ref, grad_ref", FUNCS, ids=[f[0] for f in FUNCS])
def test_backward_is_the_documented_surrogate(name, fn, clip, forward_ref, grad_ref, dtype, shape):
    x0 = _grid(shape, dtype, clip)
    x = x0.clone().requires_grad_()
    dy = torch.randn(shape, dtype=dtype)
    fn(x).backward(dy)
    assert x.grad.dtype == dtype
    np.testing.assert_allclose(_np(x.grad), _np(dy).astype(np.float64) * grad_ref(_np(x0)),
                               **TOL[dtype])
    torch.testing.assert_close(x.detach(), x0, rtol=0, atol=0)  # input untouched


def test_grid_really_contains_the_edges():
    x = _np(_grid((48,), torch.float32))
    assert (x == 0).sum() >= 2 and np.signbit(x[x == 0]).any()  # +0.0 and -0.0
    assert {1.0, -1.0} <= set(x.tolist())
    assert (np.abs(x) > 1).any() and np.abs(x)[np.abs(x) > 1].min() == np.nextafter(
        np.float32(1), np.float32(2))


# --------------------------------------------------------------------------- surrogate = derivative of the primitive
_XS = np.linspace(-3.0, 3.0, 121) + 0.0137  # no point within 1e-3 of a kink


@pytest.mark.parametrize("fn, primitive", [
    (BF.ste_sign, ref.hardtanh),
    (lambda x: BF.ste_sign(x, 0.5), lambda x: ref.hardtanh(x, 0.5)),
    (BF.approx_sign, ref.approx_sign_primitive),
    (BF.swish_sign, ref.swish_sign_primitive),
    (lambda x: BF.swish_sign(x, 2.0), lambda x: ref.swish_sign_primitive(x, 2.0)),
    (BF.ste_heaviside, ref.hardtanh),  # larq's Heaviside STE: d/dx clip(x, -1, 1)
], ids=["ste", "ste-c0.5", "approx", "swish", "swish-b2", "heaviside"])
def test_surrogate_is_the_derivative_of_the_documented_primitive(fn, primitive):
    x = torch.tensor(_XS, requires_grad=True)
    fn(x).sum().backward()
    h = 1e-6
    numeric = (primitive(_XS + h) - primitive(_XS - h)) / (2 * h)
    np.testing.assert_allclose(_np(x.grad), numeric, rtol=1e-5, atol=1e-5)


def test_swish_surrogate_is_negative_in_its_tails_and_unclipped():
    g = ref.swish_sign_grad(np.array([0.0, 0.3, 1.0, 3.0]))
    assert g[0] == pytest.approx(5.0) and g[2] < 0 and g[3] < 0  # sanity of the oracle itself
    x = torch.tensor([0.0, 0.3, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    BF.swish_sign(x).sum().backward()
    np.testing.assert_allclose(_np(x.grad), g, rtol=1e-12)


# --------------------------------------------------------------------------- smooth parts: gradcheck
def test_scaled_sign_gradcheck_on_scale():
    x = torch.randn(3, 5, dtype=torch.float64)
    scalar = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    per_row = torch.rand(3, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: BF.scaled_sign(x, s), (scalar,))
    assert torch.autograd.gradcheck(lambda s: BF.scaled_sign(x, s), (per_row,))


def test_scaled_sign_scale_gradient_is_sum_of_dy_times_sign():
    x = torch.tensor([-2.0, -0.0, 0.5, 3.0], dtype=torch.float64)
    s = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    dy = torch.tensor([1.0, 2.0, -3.0, 0.5], dtype=torch.float64)
    BF.scaled_sign(x, s).backward(dy)
    assert s.grad.item() == pytest.approx(float(np.sum(_np(dy) * ref.sign(_np(x)))))


def test_xnor_weight_scale_gradcheck():
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    w = (w + 0.1 * torch.where(w >= 0, 1.0, -1.0).double()).requires_grad_()  # |w| >= 0.1
    assert torch.autograd.gradcheck(BF.xnor_weight_scale, (w,))


@pytest.mark.parametrize("shape", [(5,), (4, 7), (3, 2, 5), (6, 3, 3, 3)], ids=str)
def test_xnor_weight_scale_matches_reference(shape):
    w = torch.randn(shape, dtype=torch.float64)
    alpha = BF.xnor_weight_scale(w)
    assert alpha.shape == ((shape[0],) + (1,) * (len(shape) - 1))
    np.testing.assert_allclose(_np(alpha), ref.xnor_scale(_np(w)), rtol=1e-12)


def test_xnor_weight_scale_detach():
    w = torch.randn(4, 6, requires_grad=True)
    assert BF.xnor_weight_scale(w).requires_grad
    assert not BF.xnor_weight_scale(w, detach=True).requires_grad


def test_magnitude_aware_sign_outputs_plus_minus_alpha_per_output_channel():
    w = torch.randn(5, 3, 3, 3)
    y = BF.magnitude_aware_sign(w)
    alpha = ref.xnor_scale(_np(w)).reshape(5)
    for o in range(5):
        np.testing.assert_allclose(np.unique(np.abs(_np(y[o]))), [alpha[o]], rtol=1e-6)


# --------------------------------------------------------------------------- rsign
@pytest.mark.parametrize("shape, channel_dim", [((6, 3), 1), ((2, 3, 4, 4), 1), ((2, 4, 4, 3), -1),
                                                ((3, 5), 0)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rsign_per_channel_threshold(shape, channel_dim, dtype):
    c = shape[channel_dim]
    tau0 = (torch.arange(c, dtype=dtype) - c // 2) * 0.25  # dyadic, hits exact ties below
    bshape = [1] * len(shape)
    bshape[channel_dim] = c
    x0 = (torch.randint(-8, 9, shape) * 0.125).to(dtype)  # many elements exactly at tau or tau +- 1
    tau = tau0.clone().requires_grad_()
    x = x0.clone().requires_grad_()
    dy = torch.randn(shape, dtype=dtype)
    BF.rsign(x, tau, channel_dim=channel_dim).backward(dy)

    u = _np(x0) - _np(tau0).reshape(bshape)
    y_ref = ref.sign(u)
    np.testing.assert_array_equal(_np(BF.rsign(x0, tau0, channel_dim=channel_dim)), y_ref)
    gx = _np(dy) * ref.ste_grad(u)
    np.testing.assert_allclose(_np(x.grad), gx, **TOL[dtype])
    axes = tuple(i for i in range(len(shape)) if i != channel_dim % len(shape))
    np.testing.assert_allclose(_np(tau.grad), -gx.sum(axis=axes), **TOL[dtype])
    assert (u == 0).any()  # the tie rule was exercised


def test_rsign_threshold_gradient_equals_numeric_gradient_of_hardtanh_surrogate():
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    tau = torch.tensor([0.3, -0.2, 0.05], dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 5, dtype=torch.float64)  # a fixed linear read-out
    (BF.rsign(x, tau) * w).sum().backward()

    def f(t):
        return float(np.sum(_np(w) * ref.hardtanh(_np(x) - t.reshape(1, 3, 1))))

    t0, h, numeric = _np(tau.detach()), 1e-6, []
    for c in range(3):
        e = np.zeros(3)
        e[c] = h
        numeric.append((f(t0 + e) - f(t0 - e)) / (2 * h))
    np.testing.assert_allclose(_np(tau.grad), numeric, rtol=1e-5, atol=1e-6)


def test_rsign_bad_threshold_and_channel_dim():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="threshold"):
        BF.rsign(x, torch.zeros(4))
    with pytest.raises(ValueError, match="channel_dim"):
        BF.rsign(x, torch.zeros(3), channel_dim=3)
    with pytest.raises(TypeError, match="channel_dim"):
        BF.rsign(x, torch.zeros(3), channel_dim=1.0)


# --------------------------------------------------------------------------- stochastic sign
_X_LEVELS = np.array([-1.5, -0.7, -0.2, 0.0, 0.3, 0.9, 1.6])
_N = 20_000


@pytest.mark.parametrize("noise, scale", [("uniform", 1.0), ("uniform", 0.5), ("normal", 1.0),
                                          ("normal", 2.0), ("laplace", 1.0), ("laplace", 0.5)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stochastic_sign_probability_matches_noise_cdf(noise, scale, dtype):
    x = torch.tensor(_X_LEVELS, dtype=dtype)[:, None].expand(-1, _N)
    g = torch.Generator().manual_seed(1234)
    y = BF.stochastic_sign(x, noise, scale, generator=g)
    assert ((y == 1) | (y == -1)).all()
    p_hat = _np((y == 1).to(torch.float64).mean(dim=1))
    np.testing.assert_allclose(p_hat, ref.p_plus_one(_X_LEVELS, noise, scale), atol=0.015)


@pytest.mark.parametrize("noise", BF.NOISES)
def test_stochastic_sign_draws_fresh_noise_per_element_and_per_call(noise):
    x = torch.zeros(_N)
    g = torch.Generator().manual_seed(7)
    y1 = BF.stochastic_sign(x, noise, generator=g)
    y2 = BF.stochastic_sign(x, noise, generator=g)
    assert abs((y1 == 1).float().mean().item() - 0.5) < 0.015      # P(eps >= 0) = 1/2
    assert abs((y1 == y2).float().mean().item() - 0.5) < 0.015     # calls independent
    assert abs((y1[1:] == y1[:-1]).float().mean().item() - 0.5) < 0.015  # elements independent


@pytest.mark.parametrize("noise", BF.NOISES)
def test_stochastic_sign_draws_are_independent_along_every_dim(noise):
    y = BF.stochastic_sign(torch.zeros(4, 60, 70), noise, generator=torch.Generator().manual_seed(9))
    for dim in range(3):
        a, b = y.narrow(dim, 0, y.shape[dim] - 1), y.narrow(dim, 1, y.shape[dim] - 1)
        assert abs((a == b).float().mean().item() - 0.5) < 0.02, dim  # no noise shared along dim


def test_stochastic_sign_generator_makes_it_reproducible():
    x = torch.randn(100)
    a = BF.stochastic_sign(x, "laplace", generator=torch.Generator().manual_seed(3))
    b = BF.stochastic_sign(x, "laplace", generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("noise", BF.NOISES)
def test_stochastic_sign_eval_is_deterministic_sign(noise):
    x = _grid((48,), torch.float32)
    for _ in range(3):
        np.testing.assert_array_equal(_np(BF.stochastic_sign(x, noise, training=False)),
                                      ref.sign(_np(x)))


@pytest.mark.parametrize("noise", BF.NOISES)
def test_stochastic_sign_gradient_is_ste_on_x_not_on_the_noisy_value(noise):
    x0 = _grid((4, 12), torch.float64)
    x = x0.clone().requires_grad_()
    dy = torch.randn(4, 12, dtype=torch.float64)
    BF.stochastic_sign(x, noise, scale=3.0).backward(dy)
    np.testing.assert_array_equal(_np(x.grad), _np(dy) * ref.ste_grad(_np(x0)))


# --------------------------------------------------------------------------- validation, no in-place
@pytest.mark.parametrize("call, argname", [
    (lambda x: BF.ste_sign(x, -1.0), "clip_value"),
    (lambda x: BF.ste_sign(x, float("nan")), "clip_value"),
    (lambda x: BF.ste_sign(x, float("inf")), "clip_value"),
    (lambda x: BF.ste_heaviside(x, -0.5), "clip_value"),
    (lambda x: BF.magnitude_aware_sign(x, -1.0), "clip_value"),
    (lambda x: BF.stochastic_sign(x, clip_value=-1.0), "clip_value"),
    (lambda x: BF.rsign(x, 0.0, -1.0), "clip_value"),
    (lambda x: BF.scaled_sign(x, 1.0, -1.0), "clip_value"),
    (lambda x: BF.swish_sign(x, 0.0), "beta"),
    (lambda x: BF.swish_sign(x, -5.0), "beta"),
    (lambda x: BF.stochastic_sign(x, "gumbel"), "noise"),
    (lambda x: BF.stochastic_sign(x, scale=-1.0), "scale"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(call, argname):
    with pytest.raises(ValueError, match=argname):
        call(torch.randn(3, 4))


@pytest.mark.parametrize("call, argname", [
    (lambda x: BF.ste_sign(x, "1"), "clip_value"),
    (lambda x: BF.swish_sign(x, None), "beta"),
    (lambda x: BF.stochastic_sign(x, scale="1"), "scale"),
])
def test_bad_argument_types_raise_type_error_naming_the_argument(call, argname):
    with pytest.raises(TypeError, match=argname):
        call(torch.randn(3, 4))


@pytest.mark.parametrize("fn", [BF.ste_sign, BF.approx_sign, BF.swish_sign, BF.ste_heaviside,
                                BF.magnitude_aware_sign, lambda x: BF.stochastic_sign(x),
                                lambda x: BF.rsign(x, torch.zeros(12, requires_grad=True)),
                                lambda x: BF.scaled_sign(x, torch.ones((), requires_grad=True))])
def test_no_in_place_modification_of_the_input(fn):
    x0 = torch.randn(4, 12)
    x = x0.clone().requires_grad_()
    version = x._version
    fn(x).sum().backward()
    assert x._version == version
    torch.testing.assert_close(x.detach(), x0, rtol=0, atol=0)


# --------------------------------------------------------------------------- official ReActNet gradients
def _official_hard_binary_weight(w):
    """The official ReActNet / Bi-Real ``HardBinaryConv`` weight, copied as it is written."""
    scaling_factor = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True).detach()
    binary_weights_no_grad = scaling_factor * torch.sign(w)
    cliped_weights = torch.clamp(w, -1.0, 1.0)
    return binary_weights_no_grad.detach() - cliped_weights.detach() + cliped_weights


def _official_binary_activation(x):
    """The official ReActNet ``BinaryActivation``, copied as it is written."""
    out_forward = torch.sign(x)
    mask1, mask2, mask3 = x < -1, x < 0, x < 1
    out1 = (-1) * mask1.type(x.dtype) + (x * x + 2 * x) * (1 - mask1.type(x.dtype))
    out2 = out1 * mask2.type(x.dtype) + (-x * x + 2 * x) * (1 - mask2.type(x.dtype))
    out3 = out2 * mask3.type(x.dtype) + 1 * (1 - mask3.type(x.dtype))
    return out_forward.detach() - out3.detach() + out3


@pytest.mark.parametrize("scale_gradient", [True, False])
def test_magnitude_aware_sign_gradient_formula(scale_gradient):
    w = (torch.randn(4, 3, 3, 3, dtype=torch.float64) * 1.5).requires_grad_()
    g = torch.randn_like(w)
    q = BF.magnitude_aware_sign(w, scale_gradient=scale_gradient)
    q.backward(g)
    alpha = w.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(q.detach(), alpha * torch.where(w >= 0, 1.0, -1.0).double())
    mask = (w.detach().abs() <= 1).double()
    expected = g * mask * (alpha if scale_gradient else 1.0)
    torch.testing.assert_close(w.grad, expected)


def test_magnitude_aware_sign_unscaled_is_the_official_code():
    w = (torch.randn(6, 4, 3, 3, dtype=torch.float64) * 1.5)
    w.view(-1)[::5] = 1.0  # the clip boundary: clamp passes the gradient there, and so do we
    w.requires_grad_()
    w2 = w.detach().clone().requires_grad_()
    g = torch.randn_like(w)
    BF.magnitude_aware_sign(w, scale_gradient=False).backward(g)
    nonzero = w2.detach() != 0  # torch.sign(0) = 0 in the official code; ours is +1
    out = _official_hard_binary_weight(w2)
    out.backward(g)
    # (the detach trick a - c + c rounds, so equal up to float64 rounding)
    torch.testing.assert_close(BF.magnitude_aware_sign(w.detach(), scale_gradient=False)[nonzero],
                               out.detach()[nonzero])
    torch.testing.assert_close(w.grad, w2.grad)


def test_rsign_approx_sign_gradient_formula_and_official_code():
    x = (torch.randn(5, 3, 4, 4, dtype=torch.float64) * 1.2).requires_grad_()
    tau = torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(x)
    BF.rsign(x, tau, gradient="approx_sign").backward(g)
    t = x.detach() - tau.detach().view(1, -1, 1, 1)
    d = torch.where(t.abs() <= 1, 2 - 2 * t.abs(), torch.zeros_like(t))
    torch.testing.assert_close(x.grad, g * d)
    torch.testing.assert_close(tau.grad, -(g * d).sum(dim=(0, 2, 3)))
    # the official code: LearnableBias (x + b, b = -tau) then BinaryActivation
    x2 = x.detach().clone().requires_grad_()
    _official_binary_activation(x2 - tau.detach().view(1, -1, 1, 1)).backward(g)
    torch.testing.assert_close(x.grad, x2.grad)


def test_rsign_gradient_is_validated():
    with pytest.raises(ValueError, match="gradient"):
        BF.rsign(torch.zeros(2, 3), torch.zeros(3), gradient="approx")
