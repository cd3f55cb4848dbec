"""Differential fuzzer of ``bnnlab.packed.export`` (issue 8): reproduce or refuse.

Random models from the grammar the export supports (flat ``nn.Sequential`` chains of dense or
conv layers, Bi-Real and ReActNet blocks, a ResNet-style block with its own ``forward``;
every quantizer of ``quantizers.BY_NAME``; kernel sizes 1-5, strides 1-2, padding 0-2,
``pad_value`` ±1 and 0, channel counts around the 64-bit word boundary; BatchNorm with
negative and zero γ, biases, max-pools, flatten, Hardtanh / ReLU / PReLU / RPReLU) are built
from a seed, put in eval mode and exported. Each export either raises ``ValueError`` naming
the layer, or the packed model reproduces torch on random inputs (contiguous, channels_last,
non-contiguous, batch 0): ``torch.equal`` for models whose layers carry no float scale
(``fold_float_bn=False``), ``allclose`` with identical arg-max otherwise and with the default
``fold_float_bn=True``.

Counter-examples found while writing the fuzzer are kept in ``REGRESSIONS`` (seeds).
"""
import collections
import copy
import random
import re

import pytest
import torch
from torch import nn

from bnnlab import blocks, packed
from bnnlab import layers as L
from bnnlab import quantizers as Q

WIDTHS = [1, 3, 8, 63, 64, 65]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)          # tiny layers: threads only add latency on a shared CPU
    yield
    torch.set_num_threads(old)
ACTS = ["none", "none", "hardtanh", "relu", "prelu", "rprelu"]


def _input_quantizer(rng, channels):
    name = rng.choice(["ste_sign"] * 6 + ["approx_sign", "swish_sign", "stochastic_sign",
                                          "rsign", "rsign", "scaled_sign", "scaled_sign_unit"])
    if rng.random() < 0.05:                             # refused: not ±1, or random in eval
        name = rng.choice(["ste_heaviside", "magnitude_aware_sign", "stochastic_eval"])
    if name == "rsign":
        return Q.RSign(channels)
    if name == "scaled_sign":
        # dyadic scales: s·α is then exact in float64, so the float64 reference sums exactly
        return Q.ScaledSign(rng.choice([0.5, 2.0, -0.75, 0.375]), learnable=rng.random() < 0.5)
    if name == "scaled_sign_unit":
        return Q.ScaledSign(rng.choice([1.0, -1.0]), learnable=False)
    if name == "stochastic_eval":
        return Q.StochasticSign(stochastic_eval=True)
    return Q.get_quantizer(name)


def _weight_quantizer(rng):
    if rng.random() < 0.05:                             # refused: random in eval, not ±α
        return rng.choice(["stochastic_eval", "ste_heaviside"])
    return rng.choice(["ste_sign"] * 6 + ["magnitude_aware_sign", "approx_sign",
                                          "stochastic_sign", "scaled_sign"])


def _wq(rng):
    name = _weight_quantizer(rng)
    if name == "stochastic_eval":
        return Q.StochasticSign(stochastic_eval=True)
    if name == "scaled_sign":
        return Q.ScaledSign(0.8, learnable=False)
    return name


def _act(rng, c, conv):
    kind = rng.choice(ACTS)
    if kind == "hardtanh":
        return [nn.Hardtanh()]
    if kind == "relu":
        return [nn.ReLU()]
    if kind == "prelu":
        return [nn.PReLU(c if rng.random() < 0.5 else 1)]
    if kind == "rprelu" and conv:
        return [blocks.RPReLU(c)]
    return []


def _dense_layer(rng, i, o):
    cls = rng.choice([L.BinaryLinear] * 8 + [L.XnorLinear, L.XnorPlusLinear])
    if rng.random() < 0.03:
        cls = L.AbcLinear                                # refused: no packed kernel
    kw = {"bias": rng.random() < 0.5}
    if cls is L.AbcLinear:
        return cls(i, o)
    if cls is L.BinaryLinear:
        kw["weight_quantizer"] = _wq(rng)
    return cls(i, o, input_quantizer=_xnor_safe(cls, _input_quantizer(rng, i)), **kw)


def _xnor_safe(cls, iq):
    """XNOR-Net layers refuse a magnitude-aware input sign at construction (beta twice, tested
    in test_layers); the draw is kept, so the random stream and the regression seeds stay."""
    if cls in (L.XnorLinear, L.XnorConv2d) and isinstance(iq, Q.MagnitudeAwareSign):
        return "ste_sign"
    return iq


def _conv_layer(rng, c, o, size):
    k = rng.randint(1, min(5, size + 2))
    stride = rng.choice([1, 1, 2])
    padding = rng.choice([0, 0, 1, 2])
    while size + 2 * padding < k:
        padding += 1
    cls = rng.choice([L.BinaryConv2d] * 4 + [L.XnorConv2d, L.XnorPlusConv2d])
    kw = {"bias": rng.random() < 0.3, "stride": stride, "padding": padding,
          "pad_value": rng.choice([1.0, -1.0, 0.0, 0.0])}
    if cls is L.BinaryConv2d:
        kw["weight_quantizer"] = _wq(rng)
    if rng.random() < 0.05:
        kw["dilation"] = 2
        if size + 2 * padding < 2 * k - 1:
            kw.pop("dilation")
    layer = cls(c, o, k, input_quantizer=_xnor_safe(cls, _input_quantizer(rng, c)), **kw)
    out = (size + 2 * padding - (k - 1) * (2 if "dilation" in kw else 1) - 1) // stride + 1
    return layer, out


def _bn(rng, c, conv):
    bn = nn.BatchNorm2d(c) if conv else nn.BatchNorm1d(c)
    with torch.no_grad():
        bn.running_mean.normal_(0.0, 2.0)
        bn.running_var.uniform_(0.1, 4.0)
        bn.weight.normal_()
        bn.weight[torch.rand(c) < 0.1] = 0.0                    # zero γ: constant channels
        bn.bias.normal_(0.0, 0.5)
    return bn


def _dense_model(rng):
    f = rng.choice(WIDTHS[1:] + [100])
    mods, c = [], f
    if rng.random() < 0.4:
        h = rng.choice(WIDTHS[2:])
        mods += [nn.Linear(f, h), _bn(rng, h, False), nn.Hardtanh()]
        c = h
    for _ in range(rng.randint(1, 3)):
        o = rng.choice(WIDTHS)
        mods.append(_dense_layer(rng, c, o))
        if rng.random() < 0.7:
            mods.append(_bn(rng, o, False))
        mods += _act(rng, o, False)
        c = o
    if rng.random() < 0.6:
        mods.append(nn.Linear(c, 10))
    return nn.Sequential(*mods), (f,)


def _conv_model(rng):
    cin, size = rng.choice([1, 3, 64, 65]), rng.randint(3, 7)
    shape = (cin, size, size)
    mods, c = [], cin
    if rng.random() < 0.5:
        w = rng.choice([8, 63, 64, 65])
        mods += [nn.Conv2d(cin, w, 3, padding=1), _bn(rng, w, True), nn.Hardtanh()]
        c = w
    for _ in range(rng.randint(1, 3)):
        o = rng.choice([1, 3, 8, 63, 64, 65])
        layer, size = _conv_layer(rng, c, o, size)
        mods.append(layer)
        if rng.random() < 0.7:
            mods.append(_bn(rng, o, True))
        if size >= 2 and rng.random() < 0.3:
            mods.append(nn.MaxPool2d(2))
            size //= 2
        mods += _act(rng, o, True)
        c = o
        if size < 2:
            break
    mods.append(nn.Flatten())
    if rng.random() < 0.5:
        mods.append(_dense_layer(rng, c * size * size, rng.choice([3, 64, 65])))
    else:
        mods.append(nn.Linear(c * size * size, 10))
    return nn.Sequential(*mods), shape


class _ResNetBlock(nn.Module):
    """A basic block the way users write one: ReLU and shortcut inside ``forward``."""

    def __init__(self, c, stride, pad_value, rng):
        super().__init__()
        self.conv1 = L.BinaryConv2d(c, c, 3, stride=stride, padding=1, bias=False,
                                    pad_value=pad_value)
        self.bn1 = _bn(rng, c, True)
        self.conv2 = L.BinaryConv2d(c, c, 3, padding=1, bias=False, pad_value=pad_value)
        self.bn2 = _bn(rng, c, True)
        self.down = None if stride == 1 else nn.Sequential(
            nn.Conv2d(c, c, 1, stride=stride, bias=False), _bn(rng, c, True))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


def _block_model(rng):
    c = rng.choice([8, 63, 64, 65])
    kind = rng.choice(["bireal", "reactnet", "resnet"])
    pad = rng.choice([1.0, -1.0, 0.0])
    mods = [nn.Conv2d(3, c, 3, padding=1), _bn(rng, c, True)]
    for _ in range(rng.randint(1, 2)):
        stride = rng.choice([1, 2])
        if kind == "bireal":
            mods.append(blocks.BiRealBlock(c, c, stride, pad_value=pad))
        elif kind == "reactnet":
            mods.append(blocks.ReActBlock(c, c, stride, pad_value=pad))
        else:
            mods.append(_ResNetBlock(c, stride, pad, rng))
    mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*mods), (3, 8, 8)


def make_model(seed):
    """A random model of the grammar and its input shape (without the batch)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    kind = rng.choice(["dense", "dense", "conv", "conv", "conv", "block"])
    build = {"dense": _dense_model, "conv": _conv_model, "block": _block_model}[kind]
    model, shape = build(rng)
    with torch.no_grad():                   # thresholds, Γ, RPReLU, biases away from their init
        for name, p in model.named_parameters():
            if "bn" not in name and not name.endswith(("weight", "scale")) and p.dim() <= 3:
                p.normal_(0.0, 0.3)
        # latent binary weights of one magnitude per layer (a dyadic c): α = mean|W| = c is then
        # exact, so the float64 reference sums ±α exactly (an arbitrary α makes torch's own sum
        # at d = 0 a rounding residue in float64 too: counter-example 2445)
        for m in model.modules():
            if isinstance(m, L._BinaryMixin):
                c = rng.choice([0.25, 0.375, 0.5])
                m.weight.copy_(torch.where(torch.randn_like(m.weight) >= 0, c, -c))
    return model.eval(), shape


def _scaled(model):
    """Does any packed layer carry a float scale (α, β, Γ) or a bias (torch's rounding)?"""
    for m in model.modules():
        if isinstance(m, L._BinaryMixin):
            wq, iq = m.weight_quantizer, m.input_quantizer
            if isinstance(m, (L.XnorLinear, L.XnorConv2d, L.XnorPlusLinear, L.XnorPlusConv2d)):
                return True
            if isinstance(wq, (Q.MagnitudeAwareSign, Q.ScaledSign)):
                return True
            if isinstance(iq, Q.ScaledSign):
                return True
            if m.bias is not None:            # torch may add it inside its float accumulation
                return True
    return False


def _reason(msg):
    """A short refusal reason: the message after the layer name, numbers removed."""
    tail = msg.split(": ", 1)[-1]
    return re.sub(r"-?\d+(\.\d+)?", "#", tail)[:70]


def _inputs(shape, seed):
    """Random inputs with exact zeros; every few seeds also batch 0, channels_last and a
    non-contiguous view (the packed model must not depend on the layout)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, *shape, generator=g)
    x[0].view(-1)[::7] = 0.0                                 # exact zeros: sign(0) = +1
    out = [x]
    if seed % 4 == 0:
        out.append(torch.zeros(0, *shape))
        if len(shape) == 3:
            out.append(x.contiguous(memory_format=torch.channels_last))
        wide = torch.randn(3, *shape[:-1], 2 * shape[-1], generator=g)
        out.append(wide[..., ::2])
    return out


def _atol(want):
    return 1e-4 * max(1.0, want.abs().max().item() if want.numel() else 1.0)


def check_model(seed, stats):
    """Export the model of ``seed``: refused by name, or reproduced. Updates ``stats``."""
    model, shape = make_model(seed)
    try:
        exact_model = packed.export(model, fold_float_bn=False)
    except ValueError as exc:
        msg = str(exc)
        assert msg.startswith("cannot export "), msg
        assert re.search(r"layer '[^']*'|parameter '", msg), msg     # names the layer
        stats["refused"] += 1
        stats["reasons"][_reason(msg)] += 1
        return
    scaled = _scaled(model)
    # A float scale α (magnitude-aware, ScaledSign) makes torch sum ±α terms in float32: where
    # the integer d is 0 that sum is a rounding residue of either sign, so torch's next sign
    # depends on its summation order, while the packed layer computes α·d exactly. The reference
    # for such models is torch in float64, where those sums are exact (K < 2**29 terms of a
    # 24-bit α). Counter-examples 78, 207, 217, 231 of the float32 comparison were such ties.
    reference = copy.deepcopy(model).double() if scaled else model
    default_model = packed.export(model) if seed % 3 == 0 else None
    for i, x in enumerate(_inputs(shape, seed)):
        with torch.no_grad():
            want = reference(x.to(torch.float64)).float() if scaled else model(x)
        got = exact_model(x)
        assert got.shape == want.shape, (seed, i)
        if not scaled and x.is_contiguous():
            # (channels_last: torch's float modules round differently by layout, in both)
            assert torch.equal(got, want), (seed, i, (got - want).abs().max())
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=_atol(want))
        if default_model is not None and want.numel():
            got = default_model(x)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=_atol(want))
            if want.dim() == 2 and want.shape[1] > 1:
                assert torch.equal(got.argmax(1), want.argmax(1)), (seed, i)
    stats["reproduced"] += 1
    stats["exact" if not scaled else "allclose"] += 1


def _run(seeds):
    stats = {"refused": 0, "reproduced": 0, "exact": 0, "allclose": 0,
             "reasons": collections.Counter()}
    for seed in seeds:
        check_model(seed, stats)
    print(f"\nexport fuzzer: {len(seeds)} models, {stats['reproduced']} reproduced "
          f"({stats['exact']} torch.equal, {stats['allclose']} allclose), {stats['refused']} "
          "refused:")
    for reason, n in stats["reasons"].most_common():
        print(f"  {n:5d}  {reason}")
    return stats


# seeds of counter-examples found while writing the fuzzer (kept as fixed regressions)
REGRESSIONS = [
    1057,              # a BinaryLinear's bias: torch adds it inside its accumulation (rounding)
    24,                # channels_last: torch's float modules round differently by layout
    2265,              # ScaledSign s times α: float64 sums of s·α terms must stay exact
    2445,              # magnitude-aware α = mean|W| computed in float64: not exact either
    78, 207, 217, 231,  # ties d = 0 behind a float α: torch float32's sign is order-dependent
]


@pytest.mark.parametrize("seed", REGRESSIONS)
def test_export_fuzz_regressions(seed):
    check_model(seed, {"refused": 0, "reproduced": 0, "exact": 0, "allclose": 0,
                       "reasons": collections.Counter()})


def test_export_fuzz_40_models():
    """The fast loop (``make check``); the 300- and 5000-model runs are ``slow``."""
    stats = _run(range(6000, 6040))
    assert stats["reproduced"] >= 20 and stats["exact"] >= 5


@pytest.mark.slow
def test_export_fuzz_300_models():
    stats = _run(range(300))
    assert stats["reproduced"] >= 150 and stats["refused"] >= 20     # both branches exercised
    assert stats["exact"] >= 30


@pytest.mark.slow
@pytest.mark.long
def test_export_fuzz_5000_models():
    _run(range(1000, 6000))
