"""Tests of bnnlab.blocks against naive NumPy references (written here, not calling bnnlab)."""
import numpy as np
import pytest
import torch
from torch import nn

from bnnlab.blocks import BiRealBlock, LearnableBias, ReActBlock, RPReLU
from bnnlab.layers import BinaryConv2d
from bnnlab.quantizers import ApproxSign, MagnitudeAwareSign, Quantizer, RSign

EPS = 1e-5  # BatchNorm eps


# ---------------------------------------------------------------------------------- NumPy oracles
def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_mag_sign(w):
    """Magnitude-aware sign: mean |W| per output channel times sign(W)."""
    scale = np.abs(w).reshape(len(w), -1).mean(axis=1).reshape(-1, 1, 1, 1)
    return scale * np_sign(w)


def np_conv2d(x, w, stride=1, pad=0, pad_value=0.0):
    """Naive cross-correlation, NCHW / OIHW, constant padding."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.full((n, c, h + 2 * pad, wd + 2 * pad), pad_value, dtype=np.float64)
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return out


def np_avgpool2(x):
    """2x2 average pooling, stride 2, ceil mode, partial windows averaged over real cells."""
    n, c, h, w = x.shape
    ho, wo = -(-h // 2), -(-w // 2)
    out = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(2, 3))
    return out


def np_bn(z, bn):
    g = lambda t: t.detach().double().numpy().reshape(1, -1, 1, 1)  # noqa: E731
    return (z - g(bn.running_mean)) / np.sqrt(g(bn.running_var) + EPS) * g(bn.weight) + g(bn.bias)


def np_rprelu(x, gamma, zeta, slope):
    r = lambda t: np.asarray(t, dtype=np.float64).reshape(1, -1, *([1] * (x.ndim - 2)))  # noqa: E731
    y = x - r(gamma)
    return np.where(y > 0, y, r(slope) * y) + r(zeta)


def npy(t):
    return t.detach().double().numpy()


def randomize_bn(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2.0)


def x_with_zeros(*shape):
    x = torch.randn(*shape)
    x.view(-1)[::7] = 0.0                     # exact zeros: sign(0) must be +1
    return x


# ---------------------------------------------------------------------------------- LearnableBias
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5, 5), (2, 3, 7)])
def test_learnable_bias_matches_reference(shape):
    m = LearnableBias(3)
    with torch.no_grad():
        m.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(*shape)
    expected = npy(x) + np.array([0.5, -1.0, 2.0]).reshape(1, 3, *([1] * (len(shape) - 2)))
    np.testing.assert_allclose(npy(m(x)), expected, rtol=1e-6)
    assert torch.equal(LearnableBias(3)(x), x)            # initialised to zero


def test_learnable_bias_gradient_is_channel_sum():
    m = LearnableBias(3)
    x = torch.randn(2, 3, 4, 4)
    w = torch.randn(2, 3, 4, 4)
    (m(x) * w).sum().backward()
    np.testing.assert_allclose(m.bias.grad.numpy(), w.sum(dim=(0, 2, 3)).numpy(), rtol=1e-5)


# ---------------------------------------------------------------------------------- RPReLU
@pytest.mark.parametrize("shape", [(5, 4), (2, 4, 3, 3)])
def test_rprelu_matches_reference(shape):
    m = RPReLU(4)
    gamma, zeta, slope = [0.3, -0.2, 0.0, 1.0], [0.1, 0.0, -0.5, 2.0], [0.25, 0.1, -0.3, 1.0]
    with torch.no_grad():
        m.gamma.copy_(torch.tensor(gamma))
        m.zeta.copy_(torch.tensor(zeta))
        m.slope.copy_(torch.tensor(slope))
    x = torch.randn(*shape)
    x.view(-1)[:4] = torch.tensor(gamma)[: min(4, x.numel())]     # points on the kink
    np.testing.assert_allclose(npy(m(x)), np_rprelu(npy(x), gamma, zeta, slope),
                               rtol=1e-6, atol=1e-6)


def test_rprelu_defaults_are_prelu():
    m = RPReLU(3)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(m(x), nn.PReLU(3)(x))
    assert m.slope.shape == m.gamma.shape == m.zeta.shape == (3,)


def test_rprelu_gradcheck_away_from_kink():
    m = RPReLU(3).double()
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([0.2, -0.1, 0.0]))
        m.zeta.copy_(torch.tensor([0.5, -0.3, 0.1]))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    g = m.gamma.detach().view(1, 3, 1, 1)
    x = (x + 0.1 * torch.where(x - g >= 0, 1.0, -1.0)).requires_grad_()  # |x - gamma| >= 0.1

    def f(x, gamma, zeta, slope):
        return torch.func.functional_call(m, {"gamma": gamma, "zeta": zeta, "slope": slope}, (x,))

    params = [m.gamma.detach().clone().requires_grad_(), m.zeta.detach().clone().requires_grad_(),
              m.slope.detach().clone().requires_grad_()]
    assert torch.autograd.gradcheck(f, [x, *params])


def test_per_channel_modules_reject_wrong_channels():
    with pytest.raises(ValueError, match="channels"):
        RPReLU(3)(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="num_channels"):
        LearnableBias(0)
    with pytest.raises(TypeError, match="num_channels"):
        RPReLU(2.0)


# ---------------------------------------------------------------------------------- Bi-Real
@pytest.mark.parametrize("c_in, c_out, stride, size", [
    (4, 4, 1, 6), (4, 8, 2, 6), (4, 8, 1, 5), (3, 3, 2, 7),
])
def test_bireal_block_matches_reference(c_in, c_out, stride, size):
    block = BiRealBlock(c_in, c_out, stride)
    randomize_bn(block)
    block.eval()
    x = x_with_zeros(2, c_in, size, size)
    xn = npy(x)
    main = np_conv2d(np_sign(xn), np_mag_sign(npy(block.conv.weight)), stride, 1, pad_value=1.0)
    main = np_bn(main, block.bn)
    if stride == 1 and c_in == c_out:
        short = xn
    else:
        pooled = np_avgpool2(xn) if stride == 2 else xn
        conv1, bn1 = block.shortcut[-2], block.shortcut[-1]
        short = np_bn(np_conv2d(pooled, npy(conv1.weight)), bn1)
    out = block(x)
    assert out.shape == (2, c_out, -(-size // stride), -(-size // stride))
    np.testing.assert_allclose(npy(out), main + short, rtol=1e-4, atol=1e-4)


def test_bireal_shortcut_is_identity_when_conv_branch_is_silenced():
    block = BiRealBlock(5, 5).eval()
    with torch.no_grad():
        block.bn.weight.zero_()
        block.bn.bias.zero_()
    x = torch.randn(3, 5, 6, 6)
    assert torch.equal(block(x), x)


def test_bireal_block_parts():
    block = BiRealBlock(4, 8, 2)
    assert isinstance(block.conv, BinaryConv2d) and block.conv.pad_value == 1.0
    assert isinstance(block.conv.input_quantizer, ApproxSign)
    assert isinstance(block.conv.weight_quantizer, MagnitudeAwareSign)
    assert isinstance(block.shortcut[0], nn.AvgPool2d)
    assert isinstance(BiRealBlock(4, 4).shortcut, nn.Identity)


def test_bireal_float_twin_matches_reference():
    block = BiRealBlock(4, 4, binary=False, activation="hardtanh")
    randomize_bn(block)
    block.eval()
    assert type(block.conv) is nn.Conv2d
    x = torch.randn(2, 4, 5, 5) * 2
    xn = npy(x)
    ref = np_bn(np_conv2d(np.clip(xn, -1, 1), npy(block.conv.weight), 1, 1), block.bn) + xn
    np.testing.assert_allclose(npy(block(x)), ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- ReActNet
def _randomize_react(block):
    randomize_bn(block)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, RSign):
                m.threshold.uniform_(-0.3, 0.3)
            if isinstance(m, RPReLU):
                m.gamma.uniform_(-0.2, 0.2)
                m.zeta.uniform_(-0.2, 0.2)
                m.slope.uniform_(0.0, 0.5)
            if isinstance(m, LearnableBias):
                m.bias.uniform_(-0.3, 0.3)


def _rp(m):
    return npy(m.gamma), npy(m.zeta), npy(m.slope)


@pytest.mark.parametrize("c_in, c_out, stride", [(4, 4, 1), (4, 8, 2), (4, 8, 1), (4, 4, 2)])
def test_reactblock_matches_reference(c_in, c_out, stride):
    block = ReActBlock(c_in, c_out, stride)
    _randomize_react(block)
    block.eval()
    x = torch.randn(2, c_in, 6, 6)
    tau1 = block.conv3x3.input_quantizer.threshold.detach()
    x[0, :, 0, 0] = tau1                                 # ties x = tau give +1
    xn = npy(x)
    tau = npy(tau1).reshape(1, -1, 1, 1)
    z = np_conv2d(np_sign(xn - tau), np_mag_sign(npy(block.conv3x3.weight)), stride, 1, 1.0)
    h = np_bn(z, block.bn1) + (np_avgpool2(xn) if stride == 2 else xn)
    h = np_rprelu(h, *_rp(block.act1))
    hb = np_sign(h - npy(block.pointwise[0].input_quantizer.threshold).reshape(1, -1, 1, 1))
    outs = [np_bn(np_conv2d(hb, np_mag_sign(npy(pw.weight))), bn) + h
            for pw, bn in zip(block.pointwise, block.bn2, strict=True)]
    ref = np_rprelu(np.concatenate(outs, axis=1), *_rp(block.act2))
    out = block(x)
    assert out.shape == (2, c_out, 6 // stride, 6 // stride)
    np.testing.assert_allclose(npy(out), ref, rtol=1e-4, atol=1e-4)


def test_reactblock_float_twin_matches_reference():
    block = ReActBlock(3, 6, 2, binary=False)
    _randomize_react(block)
    block.eval()
    x = torch.randn(2, 3, 5, 5)
    xn = npy(x)
    b1 = npy(block.sign1.bias).reshape(1, -1, 1, 1)
    h = np_bn(np_conv2d(xn + b1, npy(block.conv3x3.weight), 2, 1), block.bn1) + np_avgpool2(xn)
    h = np_rprelu(h, *_rp(block.act1))
    hb = h + npy(block.sign2.bias).reshape(1, -1, 1, 1)
    outs = [np_bn(np_conv2d(hb, npy(pw.weight)), bn) + h
            for pw, bn in zip(block.pointwise, block.bn2, strict=True)]
    ref = np_rprelu(np.concatenate(outs, axis=1), *_rp(block.act2))
    np.testing.assert_allclose(npy(block(x)), ref, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- common
BLOCKS = [
    pytest.param(lambda b: BiRealBlock(4, 8, 2, binary=b), id="bireal-down"),
    pytest.param(lambda b: BiRealBlock(4, 4, binary=b), id="bireal"),
    pytest.param(lambda b: ReActBlock(4, 8, 2, binary=b), id="react-down"),
    pytest.param(lambda b: ReActBlock(4, 4, binary=b), id="react"),
]


@pytest.mark.parametrize("make", BLOCKS)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "float"])
def test_every_parameter_gets_a_gradient(make, binary):
    block = make(binary).train()
    x = torch.randn(4, 4, 8, 8, requires_grad=True)
    block(x).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("make", BLOCKS)
def test_float_twin_has_no_binary_parts(make):
    twin = make(False)
    assert not any(isinstance(m, (BinaryConv2d, Quantizer)) for m in twin.modules())
    binary = make(True)
    assert any(isinstance(m, BinaryConv2d) for m in binary.modules())
    assert (sum(p.numel() for p in twin.parameters())
            == sum(p.numel() for p in binary.parameters()))


@pytest.mark.parametrize("cls, kwargs, exc, match", [
    (BiRealBlock, {"in_channels": 4, "out_channels": 4, "stride": 3}, ValueError, "stride"),
    (BiRealBlock, {"in_channels": 0, "out_channels": 4}, ValueError, "in_channels"),
    (BiRealBlock, {"in_channels": 4, "out_channels": 4, "binary": False, "activation": "gelu"},
     ValueError, "activation"),
    (ReActBlock, {"in_channels": 4, "out_channels": 12}, ValueError, "out_channels"),
    (ReActBlock, {"in_channels": 4, "out_channels": 4, "weight_quantizer": "nope"},
     ValueError, "weight_quantizer"),
])
def test_block_bad_arguments(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(**kwargs)


def test_reactblock_binary_convs_have_binary_inputs():
    # RSign is each binary conv's input quantizer, so summary counts 1-bit MACs.
    from bnnlab.summary import summary

    block = ReActBlock(8, 16, stride=2)
    assert block.conv3x3.input_quantizer is not None
    assert block.pointwise[0].input_quantizer is block.pointwise[1].input_quantizer
    s = summary(block, (8, 6, 6))
    assert s.binary_macs > 0 and s.binary_macs == s.total_macs - s.float_macs


# ------------------------------------------------------------------ issue 8: ReActNet's official gradients
def test_reactblock_default_is_the_official_code():
    block = ReActBlock(4, 8)
    assert block.gradients == "official"
    for conv in [block.conv3x3, *block.pointwise]:
        assert conv.input_quantizer.gradient == "approx_sign"
        assert isinstance(conv.weight_quantizer, MagnitudeAwareSign)
        assert conv.weight_quantizer.scale_gradient is False
    larq = ReActBlock(4, 8, gradients="larq")
    for conv in [larq.conv3x3, *larq.pointwise]:
        assert conv.input_quantizer.gradient == "ste"
        assert conv.weight_quantizer.scale_gradient is True
    assert ReActBlock(4, 4, weight_quantizer=MagnitudeAwareSign()).conv3x3.weight_quantizer \
        .scale_gradient is True  # a module is used as it is


@pytest.mark.parametrize("gradients", ["official", "larq"])
def test_reactblock_weight_gradient_formula(gradients):
    # dL/dW = (dL/dW_b) * 1{|W| <= 1}, times alpha_o only for larq
    torch.manual_seed(0)
    block = ReActBlock(4, 4, gradients=gradients).double()
    conv = block.conv3x3
    with torch.no_grad():
        conv.weight.mul_(8.0)  # some latent weights beyond the clip
    wb = {}

    def keep(m, inp, out):
        out.retain_grad()
        wb["w"] = out

    conv.weight_quantizer.register_forward_hook(keep)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    block(x).square().sum().backward()
    w = conv.weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    expected = wb["w"].grad * (w.abs() <= 1) * (alpha if gradients == "larq" else 1.0)
    assert (w.abs() > 1).any() and (w.abs() <= 1).any()
    torch.testing.assert_close(conv.weight.grad, expected)


@pytest.mark.parametrize("gradients", ["official", "larq"])
def test_reactblock_activation_gradient_formula(gradients):
    torch.manual_seed(0)
    block = ReActBlock(4, 4, gradients=gradients).double()
    q = block.conv3x3.input_quantizer
    with torch.no_grad():
        q.threshold.copy_(torch.tensor([0.2, -0.1, 0.0, 0.4]))
    x = (torch.randn(3, 4, 6, 6, dtype=torch.float64) * 1.5).requires_grad_()
    out = {}

    def keep(m, inp, o):
        o.retain_grad()
        out["q"] = o

    q.register_forward_hook(keep)
    block.conv3x3(x).sum().backward()
    t = (x - q.threshold.view(1, -1, 1, 1)).detach()
    d = torch.where(t.abs() <= 1, 2 - 2 * t.abs(), torch.zeros_like(t)) if gradients == "official" \
        else (t.abs() <= 1).double()
    torch.testing.assert_close(x.grad, out["q"].grad * d)
    torch.testing.assert_close(q.threshold.grad, -(out["q"].grad * d).sum(dim=(0, 2, 3)))


def test_reactblock_forward_does_not_depend_on_the_gradient_variant():
    torch.manual_seed(0)
    a = ReActBlock(4, 8, 2).eval()
    b = ReActBlock(4, 8, 2, gradients="larq").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(a(x), b(x))


def test_reactblock_gradients_is_validated():
    with pytest.raises(ValueError, match="gradients"):
        ReActBlock(4, 4, gradients="paper")
