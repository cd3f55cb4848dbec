"""bnnlab.packed.fastops: the direct calls between packed layers give torch's float32 bits,
and the fused exports of Bi-Real nets equal the unfused ones (``fuse=False``) and torch."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from bnnlab import models, packed
from bnnlab.packed.fastops import AvgPoolNCHW, fast_call, supports_avgpool
from bnnlab.packed.residual import PackedResidualChain, PackedResidualConv


def _bits(t: torch.Tensor) -> torch.Tensor:
    """float32 as int32 bit patterns (tells -0.0 from +0.0 and compares NaNs)."""
    return t.contiguous().view(torch.int32)


def _hard_input(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Wide exponents, signed zeros, subnormals; optionally inf / NaN."""
    x = torch.randn(*shape, generator=gen) * torch.exp(torch.randn(*shape, generator=gen) * 15)
    flat = x.view(-1)
    flat[::5] = -0.0
    flat[1::7] = 0.0
    flat[2::11] = -1e-45
    flat[3::13] = 3e-39
    return x


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 3)
                m.running_var.copy_(torch.rand(c, generator=gen) * 10 ** (2 * torch.rand(c, generator=gen) - 1))
                m.weight.copy_(torch.randn(c, generator=gen))
                m.bias.copy_(torch.randn(c, generator=gen))
    model.eval()


@pytest.mark.parametrize("k,ceil,cip", list(itertools.product([1, 2, 3, (2, 3)], [False, True],
                                                              [False, True])))
def test_avgpool_gives_torch_bits(k, ceil, cip):
    gen = torch.Generator().manual_seed(0)
    m = nn.AvgPool2d(k, ceil_mode=ceil, count_include_pad=cip)
    f = AvgPoolNCHW(m)
    for shape in [(1, 3, 8, 8), (16, 5, 9, 7), (1, 1, 1, 1), (3, 70, 5, 11), (1, 4, 2, 3),
                  (2, 2, 12, 6)]:
        x = _hard_input(gen, *shape)
        try:
            want = m(x)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                f(x)
            continue
        got = f(x)
        assert got.shape == want.shape and torch.equal(_bits(got), _bits(want)), shape
        xt = x.transpose(2, 3).contiguous().transpose(2, 3)          # non-contiguous: same
        assert torch.equal(_bits(f(xt)), _bits(want))


def test_avgpool_non_finite_and_fallbacks():
    gen = torch.Generator().manual_seed(1)
    m = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
    f = AvgPoolNCHW(m)
    x = _hard_input(gen, 2, 3, 7, 8)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = float("inf"), float("-inf")
    x[1, 2, 3, 3] = float("nan")
    x[1, 1, 6, 7] = float("inf")
    assert torch.equal(_bits(f(x)), _bits(m(x)))
    # what AvgPoolNCHW does not take runs the module
    for y in (x.double(), x[0], x.clone().requires_grad_()):
        got, want = f(y), m(y)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert not supports_avgpool(nn.AvgPool2d(3, stride=2))
    assert not supports_avgpool(nn.AvgPool2d(2, padding=1))
    assert not supports_avgpool(nn.AvgPool2d(2, divisor_override=3))
    with pytest.raises(ValueError, match="stride == kernel_size"):
        AvgPoolNCHW(nn.AvgPool2d(3, stride=1))


@pytest.mark.parametrize("n", [1, 16])
def test_fast_call_gives_each_modules_bits(n):
    gen = torch.Generator().manual_seed(2)
    bn = nn.BatchNorm2d(6)
    seq = nn.Sequential(nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
                        nn.Conv2d(6, 10, 1, bias=False), nn.BatchNorm2d(10))
    _randomise_bn(bn, gen)
    _randomise_bn(seq, gen)
    mods = [nn.Conv2d(6, 5, 3, padding=1), bn, seq, nn.AdaptiveAvgPool2d(1), nn.Identity(),
            nn.Flatten(), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))]
    x = torch.randn(n, 6, 9, 7, generator=gen)
    with torch.no_grad():
        for m in mods:
            m.eval()
            assert torch.equal(_bits(fast_call(m)(x)), _bits(m(x))), type(m).__name__
        y = x.clone()
        fast_call(nn.Hardtanh(), fresh=True)(y)                     # fresh: in place
        assert torch.equal(y, nn.Hardtanh()(x))
        assert torch.equal(fast_call(nn.Hardtanh())(x), nn.Hardtanh()(x))
        with pytest.raises((RuntimeError, ValueError)):
            fast_call(bn)(x[0, 0])                                  # the module's own error


@pytest.mark.parametrize("seed,width,hw", [(0, 24, (13, 13)), (1, 20, (9, 11)),
                                           (2, 8, (16, 16))])
def test_fused_resnet18_equals_unfused_and_torch(seed, width, hw):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = models.resnet18_bireal(weight_quantizer="ste_sign", width=width)
    _randomise_bn(net, gen)
    x = torch.randn(16, 3, *hw, generator=gen)
    fused = packed.export(net, x[:4])
    plain = packed.export(net, x[:4], fuse=False)
    assert any(isinstance(m, PackedResidualChain) for m in fused.modules())
    assert not any(isinstance(m, PackedResidualConv) for m in plain.modules())
    assert sum("shortcut" in n and "direct" in n for n in fused.notes) == 3
    for batch in (x[:1], x):
        with torch.no_grad():
            want = net(batch)
        assert torch.equal(_bits(fused(batch)), _bits(want))
        assert torch.equal(_bits(plain(batch)), _bits(want))


@pytest.mark.parametrize("c", [1, 7, 70])
def test_batchnorm_addcmul_form_gives_torch_bits_and_follows_edits(c):
    from bnnlab.packed.fastops import BatchNormEval

    gen = torch.Generator().manual_seed(c)
    bn = nn.BatchNorm2d(c)
    _randomise_bn(bn, gen)
    f = BatchNormEval(bn)
    threads = torch.get_num_threads()
    try:
        for nt in (1, 2):                         # addcmul on one thread, batch_norm on more
            torch.set_num_threads(nt)
            for shape in [(1, c, 16, 16), (16, c, 5, 3), (2, c, 1, 1)]:
                x = _hard_input(gen, *shape)
                with torch.no_grad():
                    assert torch.equal(_bits(f(x)), _bits(bn(x)))
    finally:
        torch.set_num_threads(threads)
    assert f._ab is not None                     # the addcmul form was proved on this torch
    with torch.no_grad():
        bn.running_var.mul_(4.0)                  # in-place edit: the form is derived again
        bn.bias.add_(1.0)
        x = _hard_input(gen, 2, c, 6, 6)
        assert torch.equal(_bits(f(x)), _bits(bn(x)))
        with pytest.raises(ValueError, match="4D"):
            f(x[0])                                   # other ranks: the module's own error


def test_global_mean_flatten_step_gives_torch_bits():
    from bnnlab.packed.fastops import global_mean_flatten, mean_hw

    assert global_mean_flatten(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert not global_mean_flatten(nn.AdaptiveAvgPool2d(2), nn.Flatten())
    assert not global_mean_flatten(nn.AdaptiveAvgPool2d(1), nn.Flatten(0))
    gen = torch.Generator().manual_seed(5)
    for shape in [(1, 512, 4, 4), (16, 7, 3, 5), (1, 1, 1, 1)]:
        x = _hard_input(gen, *shape)
        want = nn.Flatten()(nn.AdaptiveAvgPool2d(1)(x))
        assert torch.equal(_bits(mean_hw(x)), _bits(want))
    x3 = torch.randn(4, 3, 3, generator=gen)                  # not 4-D: the modules' result
    assert torch.equal(mean_hw(x3), torch.flatten(nn.AdaptiveAvgPool2d(1)(x3), 1))


def test_bound_plans_follow_threshold_edits():
    torch.manual_seed(3)
    net = models.binary_cnn().eval()
    x = torch.randn(3, 1, 28, 28)
    pk = packed.export(net, x, fold_float_bn=False)

    def stagewise(inp):
        y = inp
        for st in pk.body:
            y = st(y)
        return y

    assert torch.equal(pk(x), stagewise(x))
    layer = next(m for m in pk.packed_layers() if m.fused)
    layer._set_threshold(layer.threshold + 3, layer.flip)      # a new epilogue
    got = pk(x)
    assert torch.equal(got, stagewise(x))
    assert not torch.equal(got, net(x))
