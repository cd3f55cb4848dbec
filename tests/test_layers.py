"""Tests for bnnlab.layers against NumPy oracles in tests/_ref_layers.py."""
from __future__ import annotations

import inspect

import _ref_layers as ref
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy

from bnnlab import layers as L
from bnnlab.quantizers import ApproxSign, SteSign

DT = torch.float64

ALL = [L.BinaryLinear, L.BinaryConv1d, L.BinaryConv2d, L.XnorLinear, L.XnorConv2d,
       L.XnorPlusLinear, L.XnorPlusConv2d, L.AbcLinear, L.AbcConv2d]
TORCH_BASE = {L.BinaryLinear: nn.Linear, L.BinaryConv1d: nn.Conv1d, L.BinaryConv2d: nn.Conv2d,
              L.XnorLinear: nn.Linear, L.XnorConv2d: nn.Conv2d, L.XnorPlusLinear: nn.Linear,
              L.XnorPlusConv2d: nn.Conv2d, L.AbcLinear: nn.Linear, L.AbcConv2d: nn.Conv2d}


def make(cls, **kw):
    """A small layer of ``cls`` in float64 and an input for it."""
    base = TORCH_BASE[cls]
    if base is nn.Linear:
        return cls(6, 5, dtype=DT, **kw), torch.randn(3, 6, dtype=DT)
    if base is nn.Conv1d:
        return cls(4, 6, 3, padding=1, dtype=DT, **kw), torch.randn(2, 4, 7, dtype=DT)
    return cls(4, 6, 3, padding=1, dtype=DT, **kw), torch.randn(2, 4, 5, 5, dtype=DT)


def with_zeros(t):
    """Put exact zeros in a tensor (sign(0) must be +1)."""
    t = t.clone()
    t.view(-1)[::7] = 0.0
    return t


def npy(t):
    return t.detach().numpy()


# --------------------------------------------------------------------------- interface
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_signature_matches_torch_and_extras_are_keyword_only(cls):
    base = inspect.signature(TORCH_BASE[cls].__init__).parameters
    ours = inspect.signature(cls.__init__).parameters
    names = list(ours)
    assert names[:len(base)] == list(base)
    for name, p in base.items():
        assert ours[name].default == p.default, name
        assert ours[name].kind == p.kind, name
    extras = names[len(base):]
    assert {"input_quantizer", "weight_quantizer", "weight_clip"} <= set(extras)
    assert all(ours[n].kind is inspect.Parameter.KEYWORD_ONLY for n in extras)
    assert ours["input_quantizer"].default == "ste_sign"
    assert ours["weight_quantizer"].default == "ste_sign"
    assert ours["weight_clip"].default is None
    if TORCH_BASE[cls] is not nn.Linear:
        assert ours["pad_value"].default == 0.0


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_is_torch_layer_with_quantizer_children(cls):
    layer, _ = make(cls)
    assert isinstance(layer, TORCH_BASE[cls])
    assert isinstance(layer.input_quantizer, SteSign)
    assert isinstance(layer.weight_quantizer, SteSign)
    assert {"input_quantizer", "weight_quantizer"} <= dict(layer.named_children()).keys()


@pytest.mark.parametrize("spec", ["approx_sign", ApproxSign, ApproxSign()], ids=["name", "class", "instance"])
def test_quantizer_specs(spec):
    layer = L.BinaryConv2d(2, 3, 3, input_quantizer=spec, weight_quantizer=None)
    assert isinstance(layer.input_quantizer, ApproxSign)
    assert layer.weight_quantizer is None
    if isinstance(spec, nn.Module):
        assert layer.input_quantizer is spec
    assert "(weight_quantizer): None" in repr(layer)


def test_extra_repr():
    conv = L.BinaryConv2d(2, 3, 3, padding=1, weight_clip=1.0, pad_value=-1.0)
    assert "weight_clip=1.0" in repr(conv) and "pad_value=-1.0" in repr(conv)
    assert "pad_value" not in repr(L.BinaryConv2d(2, 3, 3))
    assert "weight_clip" not in repr(L.BinaryLinear(2, 3))
    assert "input_scaling=False" in repr(L.XnorConv2d(2, 3, 3, input_scaling=False))
    assert "gamma_mode='scalar'" in repr(L.XnorPlusLinear(2, 3, gamma_mode="scalar"))
    assert "out_size=(4, 5)" in repr(L.XnorPlusConv2d(2, 3, 3, gamma_mode="factorised", out_size=(4, 5)))
    assert "num_weight_bases=2, num_act_bases=4" in repr(L.AbcConv2d(2, 3, 3, num_weight_bases=2, num_act_bases=4))


# --------------------------------------------------------------------------- no quantizer = torch
CONV2D_KWARGS = [{}, {"stride": 2, "padding": 1}, {"groups": 2, "dilation": 2, "padding": 2},
                 {"padding": "same"}, {"padding": 1, "padding_mode": "reflect"}]


@pytest.mark.parametrize("kwargs", CONV2D_KWARGS)
def test_binary_conv2d_without_quantizers_is_torch(kwargs):
    torch_conv = nn.Conv2d(4, 6, 3, dtype=DT, **kwargs)
    ours = L.BinaryConv2d.from_float(torch_conv, input_quantizer=None, weight_quantizer=None)
    x = torch.randn(2, 4, 7, 7, dtype=DT)
    assert torch.equal(ours(x), torch_conv(x))


@pytest.mark.parametrize("cls, torch_cls, shape", [
    (L.BinaryLinear, nn.Linear, (3, 6)), (L.BinaryConv1d, nn.Conv1d, (2, 6, 9)),
    (L.XnorLinear, nn.Linear, (3, 6)), (L.XnorConv2d, nn.Conv2d, (2, 6, 5, 5)),
    (L.XnorPlusLinear, nn.Linear, (3, 6)), (L.XnorPlusConv2d, nn.Conv2d, (2, 6, 5, 5)),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_layer_without_quantizers_is_torch(cls, torch_cls, shape):
    f = torch_cls(6, 4, dtype=DT) if torch_cls is nn.Linear else torch_cls(6, 4, 3, padding=1, dtype=DT)
    ours = cls.from_float(f, input_quantizer=None, weight_quantizer=None)
    x = torch.randn(*shape, dtype=DT)
    if cls in (L.BinaryLinear, L.BinaryConv1d):
        assert torch.equal(ours(x), f(x))  # same torch call
    else:  # bias added after the (unit) scale: same maths, rounding may differ by an ulp
        torch.testing.assert_close(ours(x), f(x), rtol=1e-14, atol=1e-14)


# --------------------------------------------------------------------------- BinaryNet vs NumPy
def test_binary_linear_is_linear_on_numpy_signs():
    layer = L.BinaryLinear(9, 4, dtype=DT)
    with torch.no_grad():
        layer.weight.copy_(with_zeros(layer.weight))
    x = with_zeros(torch.randn(5, 9, dtype=DT))
    xs, ws = ref.sign(npy(x)), ref.sign(npy(layer.weight))
    want = F.linear(torch.from_numpy(xs), torch.from_numpy(ws), layer.bias)
    assert torch.equal(layer(x), want)
    np.testing.assert_allclose(npy(layer(x)), ref.linear(xs, ws, npy(layer.bias)), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(npy(layer.binary_weight()), ws)


@pytest.mark.parametrize("kwargs", CONV2D_KWARGS[:4])
def test_binary_conv2d_is_conv_on_numpy_signs(kwargs):
    layer = L.BinaryConv2d(4, 6, 3, dtype=DT, **kwargs)
    with torch.no_grad():
        layer.weight.copy_(with_zeros(layer.weight))
    x = with_zeros(torch.randn(2, 4, 7, 7, dtype=DT))
    xs, ws = torch.from_numpy(ref.sign(npy(x))), torch.from_numpy(ref.sign(npy(layer.weight)))
    want = F.conv2d(xs, ws, layer.bias, layer.stride, kwargs.get("padding", 0), layer.dilation, layer.groups)
    assert torch.equal(layer(x), want)


def test_binary_conv1d_is_conv_on_numpy_signs():
    layer = L.BinaryConv1d(4, 6, 3, stride=2, padding=1, groups=2, dtype=DT)
    with torch.no_grad():
        layer.weight.copy_(with_zeros(layer.weight))
    x = with_zeros(torch.randn(2, 4, 9, dtype=DT))
    xs, ws = ref.sign(npy(x)), ref.sign(npy(layer.weight))
    want = F.conv1d(torch.from_numpy(xs), torch.from_numpy(ws), layer.bias, 2, 1, 1, 2)
    assert torch.equal(layer(x), want)
    np.testing.assert_allclose(npy(layer(x)), ref.conv1d(xs, ws, npy(layer.bias), 2, 1, 1, 2), atol=1e-12)


@pytest.mark.parametrize("pad_value", [1.0, -1.0])
@pytest.mark.parametrize("kwargs, pads", [
    ({"padding": 1}, 1),
    ({"padding": 2, "stride": 2, "dilation": 2, "groups": 2}, 2),
    ({"padding": (1, 2), "bias": False}, (1, 2)),
    ({"padding": "same", "kernel_size": 4}, ((1, 2), (1, 2))),  # torch pads 'same' as left 1, right 2
])
def test_pad_value_matches_numpy_padded_conv2d(pad_value, kwargs, pads):
    kwargs = {"kernel_size": 3, **kwargs}
    layer = L.BinaryConv2d(4, 6, dtype=DT, pad_value=pad_value, **kwargs)
    x = with_zeros(torch.randn(2, 4, 6, 7, dtype=DT))
    b = None if layer.bias is None else npy(layer.bias)
    want = ref.conv2d(ref.sign(npy(x)), ref.sign(npy(layer.weight)), b, layer.stride, pads,
                      layer.dilation, layer.groups, pad_value=pad_value)
    got = npy(layer(x))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    if layer.bias is None:  # every tap is +-1: outputs have the parity of K = C_in/groups * kh * kw
        k = 4 // layer.groups * int(np.prod(layer.kernel_size))
        assert np.all((got - k) % 2 == 0)


@pytest.mark.parametrize("pad_value", [1.0, -1.0])
def test_pad_value_matches_numpy_padded_conv1d(pad_value):
    layer = L.BinaryConv1d(4, 6, 3, padding=2, dilation=2, dtype=DT, pad_value=pad_value)
    x = with_zeros(torch.randn(2, 4, 8, dtype=DT))
    want = ref.conv1d(ref.sign(npy(x)), ref.sign(npy(layer.weight)), npy(layer.bias), 1, 2, 2,
                      pad_value=pad_value)
    np.testing.assert_allclose(npy(layer(x)), want, rtol=0, atol=1e-12)


def test_pad_value_zero_pads_zeros_after_binarizing():
    layer = L.BinaryConv2d(1, 1, 3, padding=1, bias=False, dtype=DT)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    y = layer(torch.ones(1, 1, 3, 3, dtype=DT))
    np.testing.assert_array_equal(npy(y)[0, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    layer.pad_value = -1.0
    np.testing.assert_array_equal(npy(layer(torch.ones(1, 1, 3, 3, dtype=DT)))[0, 0],
                                  [[-1, 3, -1], [3, 9, 3], [-1, 3, -1]])


# --------------------------------------------------------------------------- STE gradients
@pytest.mark.parametrize("cls", [L.BinaryLinear, L.BinaryConv2d], ids=lambda c: c.__name__)
def test_latent_gradients_are_ste(cls):
    layer, x = make(cls)
    with torch.no_grad():
        layer.weight.normal_(0.0, 1.5)  # some latent weights beyond the clip
        layer.weight.view(-1)[0] = 1.0  # the clip edge is inside: 1{|W| <= 1}
    x = (2.0 * with_zeros(x)).requires_grad_()
    y = layer(x)
    g = torch.randn_like(y)
    y.backward(g)
    # float twin on the NumPy signs
    w_b = torch.from_numpy(ref.sign(npy(layer.weight))).requires_grad_()
    x_b = torch.from_numpy(ref.sign(npy(x))).requires_grad_()
    if cls is L.BinaryLinear:
        yf = F.linear(x_b, w_b, layer.bias.detach())
    else:
        yf = F.conv2d(x_b, w_b, layer.bias.detach(), padding=1)
    yf.backward(g)
    w_mask, x_mask = ref.ste_grad(npy(layer.weight)), ref.ste_grad(npy(x))
    assert 0 < w_mask.sum() < w_mask.size and 0 < x_mask.sum() < x_mask.size  # both branches hit
    np.testing.assert_allclose(npy(layer.weight.grad), npy(w_b.grad) * w_mask, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(npy(x.grad), npy(x_b.grad) * x_mask, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(npy(layer.bias.grad), npy(g.sum(dim=[d for d in range(g.dim()) if d != 1])))


# --------------------------------------------------------------------------- XNOR-Net
@pytest.mark.parametrize("input_scaling", [True, False])
def test_xnor_linear_matches_numpy(input_scaling):
    layer = L.XnorLinear(7, 4, dtype=DT, input_scaling=input_scaling)
    x = with_zeros(torch.randn(3, 7, dtype=DT))
    w = npy(layer.weight)
    want = ref.linear(ref.sign(npy(x)), ref.sign(w)) * ref.xnor_alpha(w)
    if input_scaling:
        want = want * ref.xnor_beta_dense(npy(x))
    want = want + npy(layer.bias)
    np.testing.assert_allclose(npy(layer(x)), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(npy(layer.weight_scale()), ref.xnor_alpha(w), rtol=1e-12)


@pytest.mark.parametrize("kwargs", [
    {"padding": 1}, {"stride": 2, "padding": 1}, {"dilation": 2, "padding": 1, "bias": False},
    {"groups": 2, "padding": 1}, {"padding": 1, "pad_value": 1.0},
])
def test_xnor_conv2d_matches_numpy(kwargs):
    layer = L.XnorConv2d(4, 6, 3, dtype=DT, **kwargs)
    x = with_zeros(torch.randn(2, 4, 6, 6, dtype=DT))
    w, xn = npy(layer.weight), npy(x)
    b = None if layer.bias is None else npy(layer.bias)
    p = kwargs.get("padding", 0)
    conv = ref.conv2d(ref.sign(xn), ref.sign(w), None, layer.stride, p, layer.dilation,
                      layer.groups, pad_value=kwargs.get("pad_value", 0.0))
    kmap = ref.xnor_kmap(xn, 3, layer.stride, p, layer.dilation, layer.groups, 6)
    want = conv * ref.xnor_alpha(w).reshape(1, -1, 1, 1) * kmap
    if b is not None:
        want += b.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(npy(layer(x)), want, rtol=1e-12, atol=1e-12)
    if layer.groups == 1:
        np.testing.assert_allclose(npy(layer.input_scale(x)), kmap[:, :1], rtol=1e-12, atol=1e-15)


def test_xnor_without_input_quantizer_is_binary_weight_network():
    layer = L.XnorConv2d(3, 5, 3, padding=1, dtype=DT, input_quantizer=None)
    x = torch.randn(2, 3, 5, 5, dtype=DT)
    w = npy(layer.weight)
    want = (ref.conv2d(npy(x), ref.sign(w), None, 1, 1) * ref.xnor_alpha(w).reshape(1, -1, 1, 1)
            + npy(layer.bias).reshape(1, -1, 1, 1))
    np.testing.assert_allclose(npy(layer(x)), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [L.XnorLinear, L.XnorConv2d], ids=lambda c: c.__name__)
def test_xnor_gradients_reach_weight_and_input(cls):
    layer, x = make(cls)
    x.requires_grad_()
    layer(x).square().sum().backward()
    assert layer.weight.grad is not None and torch.count_nonzero(layer.weight.grad) > 0
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0


# --------------------------------------------------------------------------- XNOR-Net++
@pytest.mark.parametrize("mode, names_shapes", [
    ("scalar", {"gamma": (1,)}), ("channel", {"gamma": (5,)}), ("factorised", {"gamma": (5,)}),
])
def test_xnor_plus_linear_gamma(mode, names_shapes):
    layer = L.XnorPlusLinear(6, 5, dtype=DT, gamma_mode=mode)
    for name, shape in names_shapes.items():
        assert getattr(layer, name).shape == shape
        assert torch.all(getattr(layer, name) == 1)
    with torch.no_grad():
        layer.gamma.uniform_(0.5, 2.0)
    x = with_zeros(torch.randn(3, 6, dtype=DT))
    want = (ref.linear(ref.sign(npy(x)), ref.sign(npy(layer.weight))) * npy(layer.gamma)
            + npy(layer.bias))
    np.testing.assert_allclose(npy(layer(x)), want, rtol=1e-12, atol=1e-12)
    layer(x).sum().backward()
    assert layer.gamma.grad is not None and layer.gamma.grad.shape == layer.gamma.shape


@pytest.mark.parametrize("mode, out_size, shapes", [
    ("scalar", None, {"gamma": (1, 1, 1)}),
    ("channel", None, {"gamma": (6, 1, 1)}),
    ("factorised", (3, 2), {"gamma_c": (6, 1, 1), "gamma_h": (1, 3, 1), "gamma_w": (1, 1, 2)}),
    ("factorised", None, {"gamma_c": (6, 1, 1), "gamma_h": (1, 3, 1), "gamma_w": (1, 1, 2)}),
])
def test_xnor_plus_conv2d_gamma(mode, out_size, shapes):
    layer = L.XnorPlusConv2d(4, 6, 3, stride=2, padding=1, dtype=DT, gamma_mode=mode, out_size=out_size)
    x = with_zeros(torch.randn(2, 4, 6, 4, dtype=DT))  # output 3 x 2
    layer(x)  # materialises a lazy factorised Gamma
    assert {n for n, _ in layer.named_parameters()} == {"weight", "bias", *shapes}
    for name, shape in shapes.items():
        assert getattr(layer, name).shape == shape
    with torch.no_grad():
        for name in shapes:
            getattr(layer, name).uniform_(0.5, 2.0)
    gamma = np.ones((1, 1, 1))
    for name in shapes:
        gamma = gamma * npy(getattr(layer, name))
    want = (ref.conv2d(ref.sign(npy(x)), ref.sign(npy(layer.weight)), None, 2, 1) * gamma
            + npy(layer.bias).reshape(1, -1, 1, 1))
    y = layer(x)
    np.testing.assert_allclose(npy(y), want, rtol=1e-12, atol=1e-12)
    y.square().sum().backward()
    for name in shapes:
        grad = getattr(layer, name).grad
        assert grad is not None and grad.shape == shapes[name] and torch.count_nonzero(grad) > 0


def test_xnor_plus_factorised_lazy_size_and_state_dict():
    layer = L.XnorPlusConv2d(2, 3, 3, padding=1, gamma_mode="factorised")
    assert is_lazy(layer.gamma_h) and layer.out_size is None
    sd = layer.state_dict()  # saving before the first forward works
    assert is_lazy(sd["gamma_h"])
    with pytest.raises(RuntimeError, match="first forward"):
        layer.output_scale()
    layer(torch.randn(1, 2, 4, 5))
    assert layer.out_size == (4, 5) and not is_lazy(layer.gamma_w)
    with pytest.raises(ValueError, match="out_size"):
        layer(torch.randn(1, 2, 5, 5))
    with torch.no_grad():
        layer.gamma_w.uniform_()
    fresh = L.XnorPlusConv2d(2, 3, 3, padding=1, gamma_mode="factorised")
    fresh.load_state_dict(layer.state_dict())  # materialised from the state dict's shapes
    assert fresh.out_size == (4, 5)
    x = torch.randn(2, 2, 4, 5)
    assert torch.equal(fresh(x), layer(x))


# --------------------------------------------------------------------------- ABC-Net (per_channel)
def test_abc_shifts_and_defaults():
    layer = L.AbcConv2d(2, 3, 3, num_weight_bases=5, num_act_bases=4, formulation="per_channel")
    np.testing.assert_allclose(npy(layer.weight_shifts), ref.abc_shifts(5))
    np.testing.assert_allclose(npy(layer.weight_shifts), [-1, -0.5, 0, 0.5, 1])
    np.testing.assert_allclose(npy(layer.act_shifts), ref.abc_shifts(4), atol=1e-7)
    np.testing.assert_allclose(npy(layer.act_scales), np.full(4, 0.25))
    assert layer.weight_scales.shape == (5, 3)
    assert layer.binary_weight().shape == (5, 3, 2, 3, 3)
    assert set(torch.unique(layer.binary_weight()).tolist()) == {-1.0, 1.0}
    one = L.AbcLinear(4, 2, num_weight_bases=1, num_act_bases=1, formulation="per_channel")
    assert one.weight_shifts.tolist() == [0.0] and one.act_shifts.tolist() == [0.0]


@pytest.mark.parametrize("scale_init", ["lstsq", "mean"])
@pytest.mark.parametrize("pad_value", [0.0, 1.0])
def test_abc_one_base_is_sign_conv(scale_init, pad_value):
    layer = L.AbcConv2d(3, 4, 3, padding=1, dtype=DT, num_weight_bases=1, num_act_bases=1,
                        scale_init=scale_init, pad_value=pad_value, formulation="per_channel")
    x = with_zeros(torch.randn(2, 3, 5, 5, dtype=DT))
    w = npy(layer.weight)
    flat = w.reshape(4, -1)
    b1 = ref.sign(w - flat.mean(axis=1).reshape(-1, 1, 1, 1))  # u = 0: sign of centred W
    if scale_init == "lstsq":  # least squares of W ~ alpha * B with B in {-1,1}^K: <W, B> / K
        alpha = (flat * b1.reshape(4, -1)).mean(axis=1)
    else:
        alpha = ref.xnor_alpha(w)
    np.testing.assert_allclose(npy(layer.weight_scales)[0], alpha, rtol=1e-10)
    want = (ref.conv2d(ref.sign(npy(x)), b1, None, 1, 1, pad_value=pad_value) * alpha.reshape(1, -1, 1, 1)
            + npy(layer.bias).reshape(1, -1, 1, 1))
    np.testing.assert_allclose(npy(layer(x)), want, rtol=1e-10, atol=1e-10)


def _abc_numpy(layer, x, conv):
    m, n = layer.num_weight_bases, layer.num_act_bases
    bases = ref.sign(ref.abc_shifted_weights(npy(layer.weight), m))
    alpha, v, beta = npy(layer.weight_scales), npy(layer.act_shifts), npy(layer.act_scales)
    total = 0.0
    for i in range(n):
        a = ref.sign(npy(x) + v[i])
        for j in range(m):
            if conv:
                total = total + beta[i] * alpha[j].reshape(1, -1, 1, 1) * conv(a, bases[j])
            else:
                total = total + beta[i] * alpha[j] * ref.linear(a, bases[j])
    return total, bases


@pytest.mark.parametrize("pad_value", [0.0, 1.0, -1.0])
def test_abc_conv2d_is_double_sum(pad_value):
    layer = L.AbcConv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=DT, num_weight_bases=3,
                        num_act_bases=2, pad_value=pad_value, formulation="per_channel")
    with torch.no_grad():
        layer.weight_scales.uniform_(0.1, 1.0)
        layer.act_shifts.uniform_(-0.5, 0.5)
        layer.act_scales.uniform_(0.1, 1.0)
    x = torch.randn(2, 4, 5, 5, dtype=DT)
    total, bases = _abc_numpy(layer, x, lambda a, b: ref.conv2d(a, b, None, 2, 1, 1, 2, pad_value))
    want = total + npy(layer.bias).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(npy(layer(x)), want, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(npy(layer.binary_weight()), bases)


def test_abc_linear_is_double_sum_and_lstsq_init_and_ste_gradient():
    layer = L.AbcLinear(8, 5, dtype=DT, num_weight_bases=3, num_act_bases=2,
                         formulation="per_channel")
    bases = ref.sign(ref.abc_shifted_weights(npy(layer.weight), 3))
    np.testing.assert_allclose(npy(layer.weight_scales), ref.abc_lstsq_scales(npy(layer.weight), bases),
                               rtol=1e-8, atol=1e-12)
    x = with_zeros(torch.randn(4, 8, dtype=DT))
    total, _ = _abc_numpy(layer, x, None)
    y = layer(x)
    np.testing.assert_allclose(npy(y), total + npy(layer.bias), rtol=1e-10, atol=1e-10)
    # STE through the signs, mean/std constant: dW = sum_m alpha_m (G^T X_c) 1{|shifted_m| <= 1}
    g = torch.randn_like(y)
    y.backward(g)
    beta, v = npy(layer.act_scales), npy(layer.act_shifts)
    xc = sum(beta[i] * ref.sign(npy(x) + v[i]) for i in range(2))
    shifted = ref.abc_shifted_weights(npy(layer.weight), 3)
    alpha = npy(layer.weight_scales)
    want = sum(alpha[j][:, None] * (npy(g).T @ xc) * ref.ste_grad(shifted[j]) for j in range(3))
    np.testing.assert_allclose(npy(layer.weight.grad), want, rtol=1e-10, atol=1e-10)
    for p in (layer.weight_scales, layer.act_shifts, layer.act_scales, layer.bias):
        assert p.grad is not None and p.grad.shape == p.shape


def test_abc_reset_parameters_and_from_float_refit_scales():
    f = nn.Conv2d(3, 4, 3)
    layer = L.AbcConv2d.from_float(f, num_weight_bases=2, num_act_bases=1,
                                   formulation="per_channel")
    bases = ref.sign(ref.abc_shifted_weights(npy(f.weight).astype(float), 2))
    np.testing.assert_allclose(npy(layer.weight_scales), ref.abc_lstsq_scales(npy(f.weight), bases),
                               rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        layer.act_scales.fill_(7.0)
    layer.reset_parameters()
    assert torch.all(layer.act_scales == 1.0)
    bases = ref.sign(ref.abc_shifted_weights(npy(layer.weight).astype(float), 2))
    np.testing.assert_allclose(npy(layer.weight_scales), ref.abc_lstsq_scales(npy(layer.weight), bases),
                               rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- ABC-Net (paper)
def test_abc_paper_is_the_default_with_scalar_alphas_and_centred_thresholds():
    layer = L.AbcConv2d(2, 3, 3, num_weight_bases=5, num_act_bases=3)
    assert layer.formulation == "paper" and layer.weight_scales.shape == (5,)
    # thresholds 0.5 - v_n at -1, 0, 1
    np.testing.assert_allclose(0.5 - npy(layer.act_shifts), [1.0, 0.0, -1.0])
    assert L.AbcLinear(4, 2, num_act_bases=1).act_shifts.tolist() == [0.5]
    assert "formulation" not in repr(layer)
    assert "formulation='per_channel'" in repr(L.AbcLinear(4, 2, formulation="per_channel"))
    with pytest.raises(ValueError, match="formulation"):
        L.AbcLinear(4, 2, formulation="channel")


def _abc_paper_numpy(layer, x, conv):
    m, n = layer.num_weight_bases, layer.num_act_bases
    bases = ref.sign(ref.abc_shifted_weights_paper(npy(layer.weight), m))
    alpha, v, beta = npy(layer.weight_scales), npy(layer.act_shifts), npy(layer.act_scales)
    total = 0.0
    for i in range(n):
        a = ref.abc_act_paper(npy(x), v[i])
        for j in range(m):
            total = total + beta[i] * alpha[j] * (conv(a, bases[j]) if conv else ref.linear(a, bases[j]))
    return total, bases


@pytest.mark.parametrize("pad_value", [0.0, 1.0, -1.0])
def test_abc_paper_conv2d_is_the_papers_double_sum(pad_value):
    layer = L.AbcConv2d(4, 6, 3, stride=2, padding=1, groups=2, dtype=DT, num_weight_bases=3,
                        num_act_bases=2, pad_value=pad_value)
    with torch.no_grad():
        layer.weight_scales.uniform_(0.1, 1.0)
        layer.act_shifts.uniform_(-0.5, 1.5)
        layer.act_scales.uniform_(0.1, 1.0)
    x = torch.randn(2, 4, 5, 5, dtype=DT)
    x.view(-1)[::9] = 0.5 - layer.act_shifts[0].detach()  # ties: x + v = 0.5 gives +1
    total, bases = _abc_paper_numpy(layer, x, lambda a, b: ref.conv2d(a, b, None, 2, 1, 1, 2, pad_value))
    np.testing.assert_allclose(npy(layer(x)), total + npy(layer.bias).reshape(1, -1, 1, 1),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(npy(layer.binary_weight()), bases)


def test_abc_paper_linear_lstsq_init_and_gradients():
    layer = L.AbcLinear(8, 5, dtype=DT, num_weight_bases=3, num_act_bases=2)
    bases = ref.sign(ref.abc_shifted_weights_paper(npy(layer.weight), 3))
    np.testing.assert_allclose(npy(layer.weight_scales), ref.abc_lstsq_scales_paper(npy(layer.weight), bases),
                               rtol=1e-8, atol=1e-12)
    x = (torch.randn(4, 8, dtype=DT) * 1.5).requires_grad_()
    total, _ = _abc_paper_numpy(layer, x.detach(), None)
    y = layer(x)
    np.testing.assert_allclose(npy(y), total + npy(layer.bias), rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y)
    y.backward(g)
    beta, v = npy(layer.act_scales), npy(layer.act_shifts)
    alpha = npy(layer.weight_scales)
    xn, gn = npy(x), npy(g)
    # dW: STE through the weight signs, whole-tensor mean/std constant
    xc = sum(beta[i] * ref.abc_act_paper(xn, v[i]) for i in range(2))
    shifted = ref.abc_shifted_weights_paper(npy(layer.weight), 3)
    want_w = sum(alpha[j] * (gn.T @ xc) * ref.ste_grad(shifted[j]) for j in range(3))
    np.testing.assert_allclose(npy(layer.weight.grad), want_w, rtol=1e-10, atol=1e-10)
    # dx and dv: the gradient passes for 0 <= x + v_n <= 1 (the paper's STE through the clip)
    w_eff = sum(alpha[j] * bases[j] for j in range(3))
    gx = gn @ w_eff  # dL/d(sum_n beta_n A_n)
    want_x = sum(beta[i] * gx * ref.abc_act_paper_grad(xn, v[i]) for i in range(2))
    np.testing.assert_allclose(npy(x.grad), want_x, rtol=1e-10, atol=1e-10)
    want_v = [(beta[i] * gx * ref.abc_act_paper_grad(xn, v[i])).sum() for i in range(2)]
    np.testing.assert_allclose(npy(layer.act_shifts.grad), want_v, rtol=1e-10, atol=1e-10)


def test_abc_activation_sign_forward_and_gradient():
    from bnnlab import functional as BF
    v = torch.tensor(0.3, dtype=DT, requires_grad=True)
    x = torch.tensor([-0.8, -0.3, 0.0, 0.2, 0.7, 0.71, 1.5], dtype=DT, requires_grad=True)
    q = BF.abc_activation_sign(x, v)
    np.testing.assert_array_equal(npy(q), ref.abc_act_paper(npy(x), 0.3))
    assert q[4].item() == 1.0 and q[3].item() == 1.0  # x + v = 0.5 (rounded) and above
    g = torch.randn_like(x)
    q.backward(g)
    d = ref.abc_act_paper_grad(npy(x), 0.3)
    np.testing.assert_allclose(npy(x.grad), npy(g) * d)
    np.testing.assert_allclose(v.grad.item(), (npy(g) * d).sum())


def test_abc_paper_mean_init_is_one_scalar_per_base():
    layer = L.AbcLinear(6, 4, dtype=DT, num_weight_bases=2, scale_init="mean")
    np.testing.assert_allclose(npy(layer.weight_scales), np.full(2, np.abs(npy(layer.weight)).mean() / 2))


# --------------------------------------------------------------------------- from_float, clip, errors
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_from_float_copies(cls):
    base = TORCH_BASE[cls]
    f = base(6, 4) if base is nn.Linear else base(6, 4, 3, stride=2, padding=1, bias=False)
    f.eval()
    ours = cls.from_float(f, weight_quantizer="approx_sign", weight_clip=0.5)
    assert type(ours) is cls and not ours.training
    assert torch.equal(ours.weight, f.weight) and ours.weight is not f.weight
    assert (ours.bias is None) == (f.bias is None)
    if f.bias is not None:
        assert torch.equal(ours.bias, f.bias)
    if base is not nn.Linear:
        assert ours.stride == f.stride and ours.padding == f.padding
    assert isinstance(ours.weight_quantizer, ApproxSign) and ours.weight_clip == 0.5
    with torch.no_grad():
        ours.weight.add_(1.0)
    assert not torch.equal(ours.weight, f.weight)  # a copy, not shared storage


def test_from_float_rejects_wrong_layer_and_torch_kwargs():
    with pytest.raises(TypeError, match="layer"):
        L.BinaryConv2d.from_float(nn.Conv1d(2, 3, 3))
    with pytest.raises(TypeError, match="bias"):
        L.BinaryLinear.from_float(nn.Linear(2, 3), bias=False)


def test_clip_weights():
    model = nn.Sequential(L.BinaryLinear(4, 4, weight_clip=1.0), nn.Linear(4, 4),
                          L.AbcConv2d(1, 2, 1, weight_clip=0.5), L.BinaryLinear(4, 4))
    with torch.no_grad():
        for m in model:
            m.weight.fill_(3.0)
    x = torch.randn(2, 4)
    model[0](x)
    assert torch.all(model[0].weight == 3.0)  # forward never clips
    assert L.clip_weights_(model) == 2
    assert torch.all(model[0].weight == 1.0) and torch.all(model[2].weight == 0.5)
    assert torch.all(model[1].weight == 3.0) and torch.all(model[3].weight == 3.0)
    layer = L.BinaryConv2d(1, 1, 1, weight_clip=2.0)
    with torch.no_grad():
        layer.weight.fill_(-5.0)
    assert layer.clip_weights_() is layer and layer.weight.item() == -2.0
    with pytest.raises(TypeError, match="model"):
        L.clip_weights_("model")


@pytest.mark.parametrize("factory, exc, match", [
    (lambda: L.BinaryConv2d(2, 3, 3, pad_value=0.5), ValueError, "pad_value"),
    (lambda: L.BinaryConv1d(2, 3, 3, pad_value=2), ValueError, "pad_value"),
    (lambda: L.BinaryConv2d(2, 3, 3, padding=1, padding_mode="reflect", pad_value=1.0), ValueError, "padding_mode"),
    (lambda: L.BinaryLinear(2, 3, weight_clip=-1.0), ValueError, "weight_clip"),
    (lambda: L.XnorConv2d(2, 3, 3, weight_clip=0), ValueError, "weight_clip"),
    (lambda: L.BinaryLinear(2, 3, weight_clip="1"), TypeError, "weight_clip"),
    (lambda: L.XnorPlusLinear(2, 3, gamma_mode="pixel"), ValueError, "gamma_mode"),
    (lambda: L.XnorPlusConv2d(2, 3, 3, gamma_mode="factorized"), ValueError, "gamma_mode"),
    (lambda: L.XnorPlusConv2d(2, 3, 3, gamma_mode="channel", out_size=4), ValueError, "out_size"),
    (lambda: L.XnorPlusConv2d(2, 3, 3, gamma_mode="factorised", out_size=(4, 0)), ValueError, "out_size"),
    (lambda: L.AbcConv2d(2, 3, 3, num_weight_bases=0), ValueError, "num_weight_bases"),
    (lambda: L.AbcLinear(2, 3, num_act_bases=0), ValueError, "num_act_bases"),
    (lambda: L.AbcLinear(2, 3, num_weight_bases=2.0), TypeError, "num_weight_bases"),
    (lambda: L.AbcLinear(2, 3, scale_init="ols"), ValueError, "scale_init"),
    (lambda: L.XnorLinear(2, 3, input_scaling="yes"), TypeError, "input_scaling"),
    (lambda: L.BinaryLinear(2, 3, input_quantizer="sgn"), ValueError, "input_quantizer"),
    (lambda: L.BinaryConv2d(2, 3, 3, weight_quantizer=3), TypeError, "weight_quantizer"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_name_the_argument(factory, exc, match):
    with pytest.raises(exc, match=match):
        factory()


# --------------------------------------------------------------------------- state, batch 1, eval
def _randomise(layer):
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-1.5, 1.5)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_state_dict_round_trip(cls):
    kw = {"gamma_mode": "factorised", "out_size": 5} if cls is L.XnorPlusConv2d else {}
    layer, x = make(cls, **kw)
    _randomise(layer)
    torch.manual_seed(1)
    other, _ = make(cls, **kw)
    assert not torch.equal(other(x), layer(x))
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other(x), layer(x))
    assert {"weight", "bias"} <= set(layer.state_dict())


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_batch_of_one_in_eval_mode(cls):
    layer, x = make(cls)
    y_train = layer(x[:1])
    layer.eval()
    y = layer(x[:1])
    assert y.shape[0] == 1 and torch.isfinite(y).all()
    assert torch.equal(y, y_train)  # deterministic quantizers: no train/eval difference
    assert torch.allclose(y, layer(x)[:1], rtol=1e-12, atol=1e-12)  # rows are independent
    if TORCH_BASE[cls] is not nn.Linear:  # unbatched input, as torch convolutions accept
        torch.testing.assert_close(layer(x[0]), y[0], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- issue 8, defect 6
@pytest.mark.parametrize("cls", [L.XnorLinear, L.XnorConv2d])
def test_xnor_refuses_magnitude_aware_weight_quantizer(cls):
    # alpha = mean|W| would be applied by the quantizer and again by the layer
    with pytest.raises(ValueError, match="alpha twice"):
        make(cls, weight_quantizer="magnitude_aware_sign")


@pytest.mark.parametrize("cls", [L.XnorLinear, L.XnorConv2d])
def test_xnor_refuses_magnitude_aware_input_quantizer_with_input_scaling(cls):
    with pytest.raises(ValueError, match="input_quantizer=MagnitudeAwareSign"):
        make(cls, input_quantizer="magnitude_aware_sign")
    layer, x = make(cls, input_quantizer="magnitude_aware_sign", input_scaling=False)
    assert layer(x).shape[0] == x.shape[0]


def test_xnor_linear_applies_alpha_once():
    layer, x = make(L.XnorLinear)
    w = layer.weight.detach()
    alpha = w.abs().mean(1)
    beta = x.abs().mean(1, keepdim=True)
    expected = (ref_sign(x) @ ref_sign(w).T) * alpha * beta + layer.bias.detach()
    torch.testing.assert_close(layer(x).detach(), expected)


def ref_sign(t):
    return torch.where(t >= 0, 1.0, -1.0).to(t.dtype)
