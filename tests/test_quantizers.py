"""bnnlab.quantizers: every BY_NAME entry against the NumPy oracles, the registry, get_quantizer."""
from __future__ import annotations

import copy

import _ref_quant as ref
import numpy as np
import pytest
import torch
from torch import nn

from bnnlab import functional as BF
from bnnlab.quantizers import (
    BY_NAME,
    ApproxSign,
    MagnitudeAwareSign,
    Quantizer,
    RSign,
    ScaledSign,
    SteHeaviside,
    SteSign,
    StochasticSign,
    SwishSign,
    get_quantizer,
)

DTYPES = [torch.float32, torch.float64]
SHAPES = [(48,), (4, 12), (2, 3, 2, 4)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def _np(t):
    return t.detach().cpu().numpy()


# --------------------------------------------------------------------------- the table
def _cdim(shape):
    return 1 if len(shape) >= 2 else 0


def _make_rsign(cls, shape, dtype, **kw):
    c = shape[_cdim(shape)]
    q = cls(c, channel_dim=_cdim(shape), dtype=dtype, **kw)
    with torch.no_grad():  # dyadic thresholds, so x - tau is exact and hits ties and +-clip
        q.threshold.copy_((torch.arange(c, dtype=dtype) % 5 - 2) * 0.25)
    return q


def _rsign_u(x, q):
    shape = [1] * x.ndim
    shape[_cdim(x.shape)] = -1
    return (x - _np(q.threshold).reshape(shape)).astype(x.dtype)


def _rsign_param_grads(x, dy, q):
    g = dy * ref.ste_grad(_rsign_u(x, q), q.clip_value)
    axes = tuple(i for i in range(x.ndim) if i != _cdim(x.shape))
    return {"threshold": -g.sum(axis=axes)}


def _no_params(x, dy, q):
    return {}


def _default(cls, shape, dtype, **kw):
    return cls(**kw)


# pytest.param(name, cls, make, forward_ref(x, q), grad_ref(x, q) = dq/dx, param_grad_ref(x, dy, q))
CASES = [
    pytest.param("ste_sign", SteSign, _default, lambda x, q: ref.sign(x),
                 lambda x, q: ref.ste_grad(x), _no_params, id="ste_sign"),
    pytest.param("ste_sign", SteSign, lambda c, s, d: c(clip_value=0.5),
                 lambda x, q: ref.sign(x), lambda x, q: ref.ste_grad(x, 0.5), _no_params,
                 id="ste_sign-c0.5"),
    pytest.param("ste_sign", SteSign, lambda c, s, d: c(clip_value=None),
                 lambda x, q: ref.sign(x), lambda x, q: ref.ste_grad(x, None), _no_params,
                 id="ste_sign-noclip"),
    pytest.param("approx_sign", ApproxSign, _default, lambda x, q: ref.sign(x),
                 lambda x, q: ref.approx_sign_grad(x), _no_params, id="approx_sign"),
    pytest.param("swish_sign", SwishSign, _default, lambda x, q: ref.sign(x),
                 lambda x, q: ref.swish_sign_grad(x, 5.0), _no_params, id="swish_sign"),
    pytest.param("swish_sign", SwishSign, lambda c, s, d: c(beta=1.5), lambda x, q: ref.sign(x),
                 lambda x, q: ref.swish_sign_grad(x, 1.5), _no_params, id="swish_sign-b1.5"),
    pytest.param("ste_heaviside", SteHeaviside, _default, lambda x, q: ref.heaviside(x),
                 lambda x, q: ref.ste_grad(x), _no_params, id="ste_heaviside"),
    pytest.param("magnitude_aware_sign", MagnitudeAwareSign, _default,
                 lambda x, q: ref.magnitude_aware_sign(x),
                 lambda x, q: ref.magnitude_aware_sign_grad(x), _no_params,
                 id="magnitude_aware_sign"),
    pytest.param("stochastic_sign", StochasticSign, lambda c, s, d: c("normal").eval(),
                 lambda x, q: ref.sign(x), lambda x, q: ref.ste_grad(x), _no_params,
                 id="stochastic_sign-eval"),
    pytest.param("stochastic_sign", StochasticSign, lambda c, s, d: c("uniform", scale=0.0),
                 lambda x, q: ref.sign(x), lambda x, q: ref.ste_grad(x), _no_params,
                 id="stochastic_sign-train-scale0"),
    pytest.param("rsign", RSign, _make_rsign, lambda x, q: ref.sign(_rsign_u(x, q)),
                 lambda x, q: ref.ste_grad(_rsign_u(x, q)), _rsign_param_grads, id="rsign"),
    pytest.param("rsign", RSign, lambda c, s, d: _make_rsign(c, s, d, clip_value=None),
                 lambda x, q: ref.sign(_rsign_u(x, q)),
                 lambda x, q: ref.ste_grad(_rsign_u(x, q), None), _rsign_param_grads,
                 id="rsign-noclip"),
    pytest.param("scaled_sign", ScaledSign, lambda c, s, d: c(1.3, dtype=d),
                 lambda x, q: q.scale.item() * ref.sign(x),
                 lambda x, q: q.scale.item() * ref.ste_grad(x),
                 lambda x, dy, q: {"scale": np.sum(dy * ref.sign(x))}, id="scaled_sign"),
    pytest.param("scaled_sign", ScaledSign, lambda c, s, d: c(0.5, learnable=False, dtype=d),
                 lambda x, q: 0.5 * ref.sign(x), lambda x, q: 0.5 * ref.ste_grad(x),
                 _no_params, id="scaled_sign-fixed"),
]

def _grid(q, shape, dtype):
    """The edge grid, with its +-clip edges at the quantizer's own clip value (default 1)."""
    clip = getattr(q, "clip_value", None) or 1.0
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    return torch.from_numpy(ref.grid(shape, np_dtype, clip))


def test_the_table_covers_every_registered_quantizer():
    names = {p.values[0] for p in CASES}
    assert names == set(BY_NAME)
    for p in CASES:
        assert BY_NAME[p.values[0]] is p.values[1]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, cls, make, forward_ref, grad_ref, param_grad_ref", CASES)
def test_forward_matches_reference(name, cls, make, forward_ref, grad_ref,
                                   param_grad_ref, dtype, shape):
    q = make(cls, shape, dtype)
    x = _grid(q, shape, dtype)
    y = q(x)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_allclose(_np(y), forward_ref(_np(x), q), **TOL[dtype])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name, cls, make, forward_ref, grad_ref, param_grad_ref", CASES)
def test_backward_matches_reference(name, cls, make, forward_ref, grad_ref,
                                    param_grad_ref, dtype, shape):
    q = make(cls, shape, dtype)
    x0 = _grid(q, shape, dtype)
    x = x0.clone().requires_grad_()
    dy = torch.randn(shape, dtype=dtype)
    q(x).backward(dy)
    x_np, dy_np = _np(x0), _np(dy).astype(np.float64)
    np.testing.assert_allclose(_np(x.grad), dy_np * grad_ref(x_np, q), **TOL[dtype])
    expected = param_grad_ref(x_np, dy_np, q)
    params = dict(q.named_parameters())
    assert set(params) == set(expected)  # no undocumented learnable state
    for pname, g in expected.items():
        np.testing.assert_allclose(_np(params[pname].grad), g, **TOL[dtype])


# --------------------------------------------------------------------------- the registry
@pytest.mark.parametrize("name, cls", list(BY_NAME.items()))
def test_registry_entries_are_binary_quantizers(name, cls):
    assert issubclass(cls, Quantizer) and issubclass(cls, nn.Module)
    assert cls.precision == 1
    assert name == name.lower() and " " not in name


def test_registry_names_are_larqs():
    assert set(BY_NAME) == {"ste_sign", "approx_sign", "swish_sign", "ste_heaviside",
                            "magnitude_aware_sign", "stochastic_sign", "rsign", "scaled_sign"}


@pytest.mark.parametrize("module, expected", [
    (SteSign(0.5), ["clip_value=0.5"]),
    (SteSign(None), ["clip_value=None"]),
    (ApproxSign(), ["2-2|x|"]),
    (SwishSign(2.0), ["beta=2.0"]),
    (SteHeaviside(2.0), ["clip_value=2.0"]),
    (MagnitudeAwareSign(0.25), ["clip_value=0.25"]),
    (StochasticSign("laplace", 0.5, stochastic_eval=True),
     ["'laplace'", "scale=0.5", "stochastic_eval=True"]),
    (RSign(7, channel_dim=-1), ["num_channels=7", "channel_dim=-1", "clip_value=1.0"]),
    (ScaledSign(1.3, learnable=False), ["scale=1.3", "learnable=False"]),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_extra_repr_is_informative(module, expected):
    text = repr(module)
    assert text.startswith(type(module).__name__ + "(")
    for piece in expected:
        assert piece in text


@pytest.mark.parametrize("name", [n for n in BY_NAME if n != "rsign"])
def test_default_quantizers_deepcopy_and_state_dict_round_trip(name):
    q = get_quantizer(name)
    q2 = copy.deepcopy(q)
    q2.load_state_dict(q.state_dict())
    x = torch.randn(3, 4)
    if name != "stochastic_sign":
        torch.testing.assert_close(q2(x), q(x))


# --------------------------------------------------------------------------- get_quantizer
def test_get_quantizer_none_is_none():
    assert get_quantizer(None) is None


@pytest.mark.parametrize("name", [n for n in BY_NAME if n != "rsign"])
def test_get_quantizer_by_name_instantiates_the_registered_class(name):
    q = get_quantizer(name)
    assert type(q) is BY_NAME[name]
    assert get_quantizer(name) is not q  # a fresh instance each time


def test_get_quantizer_instance_is_returned_as_is_and_class_is_instantiated():
    q = SwishSign(2.0)
    assert get_quantizer(q) is q
    assert get_quantizer(nn.Hardtanh()).__class__ is nn.Hardtanh  # any module passes through
    assert type(get_quantizer(ApproxSign)) is ApproxSign


def test_get_quantizer_unknown_name_lists_names_and_argname():
    with pytest.raises(ValueError, match="input_quantizer") as info:
        get_quantizer("ste_sgn", argname="input_quantizer")
    for name in BY_NAME:
        assert name in str(info.value)


def test_get_quantizer_rsign_by_name_asks_for_num_channels():
    with pytest.raises(ValueError, match="weight_quantizer.*num_channels"):
        get_quantizer("rsign", argname="weight_quantizer")
    with pytest.raises(ValueError, match="num_channels"):
        get_quantizer(RSign)
    assert isinstance(get_quantizer(RSign(4)), RSign)


@pytest.mark.parametrize("bad", [3, 1.0, True, BF.ste_sign, object(), int, ["ste_sign"]],
                         ids=["int", "float", "bool", "function", "object", "class", "list"])
def test_get_quantizer_bad_type_raises_type_error_naming_argname(bad):
    with pytest.raises(TypeError, match="my_arg"):
        get_quantizer(bad, argname="my_arg")


# --------------------------------------------------------------------------- constructor validation
@pytest.mark.parametrize("ctor, argname", [
    (lambda: SteSign(-1.0), "clip_value"),
    (lambda: SteSign(float("nan")), "clip_value"),
    (lambda: SteHeaviside(-0.1), "clip_value"),
    (lambda: MagnitudeAwareSign(-1.0), "clip_value"),
    (lambda: StochasticSign(clip_value=-1.0), "clip_value"),
    (lambda: RSign(3, clip_value=-1.0), "clip_value"),
    (lambda: ScaledSign(clip_value=-2.0), "clip_value"),
    (lambda: SwishSign(0.0), "beta"),
    (lambda: SwishSign(-5.0), "beta"),
    (lambda: SwishSign(float("inf")), "beta"),
    (lambda: StochasticSign("gumbel"), "noise"),
    (lambda: StochasticSign("Normal"), "noise"),
    (lambda: StochasticSign(scale=-0.5), "scale"),
    (lambda: RSign(0), "num_channels"),
    (lambda: ScaledSign(float("nan")), "scale"),
])
def test_constructor_rejects_bad_values_naming_the_argument(ctor, argname):
    with pytest.raises(ValueError, match=argname):
        ctor()


@pytest.mark.parametrize("ctor, argname", [
    (lambda: SteSign("1"), "clip_value"),
    (lambda: SwishSign(None), "beta"),
    (lambda: RSign(3.0), "num_channels"),
    (lambda: RSign(3, channel_dim=1.5), "channel_dim"),
    (lambda: StochasticSign(stochastic_eval="yes"), "stochastic_eval"),
    (lambda: ScaledSign("2"), "scale"),
])
def test_constructor_rejects_bad_types_naming_the_argument(ctor, argname):
    with pytest.raises(TypeError, match=argname):
        ctor()


# --------------------------------------------------------------------------- StochasticSign modes
def _frac_plus(q, n=20_000):
    return (q(torch.zeros(n)) == 1).float().mean().item()


def test_stochastic_sign_module_train_eval_and_stochastic_eval():
    q = StochasticSign(generator=torch.Generator().manual_seed(0))
    assert abs(_frac_plus(q) - 0.5) < 0.015          # training: random, P(+1) = 1/2 at x = 0
    q.eval()
    assert _frac_plus(q) == 1.0                      # eval: deterministic sign(0) = +1
    x = torch.randn(200)
    torch.testing.assert_close(q(x), q(x), rtol=0, atol=0)
    q_se = StochasticSign(stochastic_eval=True, generator=torch.Generator().manual_seed(0)).eval()
    assert abs(_frac_plus(q_se) - 0.5) < 0.015       # eval, but asked to stay stochastic


@pytest.mark.parametrize("noise, scale", [("uniform", 0.5), ("normal", 1.0), ("laplace", 2.0)])
def test_stochastic_sign_module_passes_noise_and_scale_through(noise, scale):
    levels = np.array([-1.0, -0.3, 0.0, 0.4, 1.2])
    q = StochasticSign(noise, scale, generator=torch.Generator().manual_seed(5))
    y = q(torch.tensor(levels)[:, None].expand(-1, 20_000))
    p_hat = _np((y == 1).double().mean(dim=1))
    np.testing.assert_allclose(p_hat, ref.p_plus_one(levels, noise, scale), atol=0.015)


# --------------------------------------------------------------------------- RSign
def test_rsign_threshold_is_a_zero_initialised_parameter():
    q = RSign(5)
    assert isinstance(q.threshold, nn.Parameter) and q.threshold.shape == (5,)
    assert torch.count_nonzero(q.threshold) == 0
    assert [n for n, _ in q.named_parameters()] == ["threshold"]
    assert "threshold" in q.state_dict()
    assert RSign(2, dtype=torch.float64).threshold.dtype == torch.float64


@pytest.mark.parametrize("shape, channel_dim", [((8, 3), 1), ((2, 3, 5, 5), 1),
                                                ((2, 5, 5, 3), -1), ((2, 5, 5, 3), 3)], ids=str)
def test_rsign_broadcasts_per_channel(shape, channel_dim):
    q = RSign(3, channel_dim=channel_dim, dtype=torch.float64)
    with torch.no_grad():
        q.threshold.copy_(torch.tensor([-0.5, 0.0, 0.75]))
    x = torch.randn(shape, dtype=torch.float64)
    xm = np.moveaxis(_np(x), channel_dim, -1)
    expected = np.moveaxis(ref.sign(xm - np.array([-0.5, 0.0, 0.75])), -1, channel_dim)
    np.testing.assert_array_equal(_np(q(x)), expected)


def test_rsign_wrong_number_of_channels_names_threshold():
    with pytest.raises(ValueError, match="threshold"):
        RSign(4)(torch.randn(2, 3, 5, 5))


def test_rsign_threshold_gradient_sign_and_learning():
    # Loss sum(w_c * q) with w = (+1, -1): channel 0 wants q = -1 (tau_0 above x), channel 1
    # wants q = +1 (tau_1 below x). x = 0.5 everywhere, so q = +1 and the loss is 0 at tau = 0.
    q = RSign(2)
    w = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    x = torch.full((4, 2, 3, 3), 0.5)
    opt = torch.optim.SGD(q.parameters(), lr=0.05)

    loss = (q(x) * w).sum()
    loss.backward()
    # dL/dtau_c = -sum dL/dx_c = -sum w_c * 1{|x - tau| <= 1} = -36 w_c
    torch.testing.assert_close(q.threshold.grad, torch.tensor([-36.0, 36.0]))
    opt.step()
    assert q.threshold[0] > 0.5 and q.threshold[1] < 0
    after = (q(x) * w).sum()
    assert after.item() == -72.0 < loss.item()


def test_rsign_thresholds_are_learned_per_channel():
    # Each channel's target is sign(x - t_c); minimising the squared error moves tau_c towards
    # the region that reproduces it.
    t = torch.tensor([-0.6, 0.1, 0.7])
    x = torch.rand(256, 3) * 2 - 1
    target = torch.where(x - t >= 0, 1.0, -1.0)
    q = RSign(3)
    opt = torch.optim.SGD(q.parameters(), lr=0.002)
    for _ in range(60):
        opt.zero_grad()
        ((q(x) - target) ** 2).sum().backward()
        opt.step()
    err = (q(x) != target).float().mean(dim=0)
    assert (err < 0.05).all(), err


# --------------------------------------------------------------------------- ScaledSign
def test_scaled_sign_learnable_scale_is_a_parameter_fixed_scale_a_buffer():
    learnable = ScaledSign(1.3)
    fixed = ScaledSign(1.3, learnable=False)
    assert [n for n, _ in learnable.named_parameters()] == ["scale"]
    assert list(fixed.parameters()) == [] and "scale" in fixed.state_dict()


def test_scaled_sign_module_gradcheck_on_scale():
    x = torch.randn(4, 6, dtype=torch.float64)
    q = ScaledSign(0.8, dtype=torch.float64)

    def f(s):
        with torch.no_grad():
            q.scale.copy_(s)
        return BF.scaled_sign(x, s)

    assert torch.autograd.gradcheck(f, (torch.tensor(0.8, dtype=torch.float64,
                                                     requires_grad=True),))
    y = q(x)
    y.sum().backward()
    assert q.scale.grad.item() == pytest.approx(float(ref.sign(_np(x)).sum()))


def test_official_reactnet_options_are_validated_and_shown():
    from bnnlab.quantizers import MagnitudeAwareSign, RSign
    with pytest.raises(TypeError, match="scale_gradient"):
        MagnitudeAwareSign(scale_gradient=1)
    with pytest.raises(ValueError, match="gradient"):
        RSign(3, gradient="official")
    assert "scale_gradient=False" in repr(MagnitudeAwareSign(scale_gradient=False))
    assert "gradient='approx_sign'" in repr(RSign(3, gradient="approx_sign"))
    assert "gradient" not in repr(RSign(3)) and "scale_gradient" not in repr(MagnitudeAwareSign())
