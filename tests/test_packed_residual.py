"""Fused Bi-Real units (bnnlab.packed.residual): conv -> BatchNorm -> + shortcut in the kernel
epilogue reproduces the torch block bit for bit, or is refused with a note."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from bnnlab import models, packed
from bnnlab.blocks import BiRealBlock
from bnnlab.packed.residual import PackedResidualConv

HYP = settings(max_examples=25, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])


def _randomise_bn(model: nn.Module, gen: torch.Generator, spread: float = 1.0) -> None:
    """Non-trivial eval statistics: negative and tiny scales, large means."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 5 * spread)
                decades = 4 * spread * torch.rand(c, generator=gen) - 2
                m.running_var.copy_(torch.rand(c, generator=gen) * 10 ** decades)
                m.weight.copy_(torch.randn(c, generator=gen))
                m.weight[::7] = -m.weight[::7].abs()
                m.bias.copy_(torch.randn(c, generator=gen) * 3)
    model.eval()


def _input(gen, *shape):
    x = torch.randn(*shape, generator=gen)
    x.view(-1)[::9] = 0.0                                 # sign(0) = +1
    return x


def test_bireal_net_with_sign_weights_is_fused_and_bit_exact():
    gen = torch.Generator().manual_seed(0)
    net = models.tiny_bireal(in_channels=3, width=16, weight_quantizer="ste_sign")
    _randomise_bn(net, gen)
    x = _input(gen, 6, 3, 16, 16)
    pk = packed.export(net, x)
    units = [m for m in pk.modules() if isinstance(m, PackedResidualConv)]
    blocks = [m for m in net.modules() if isinstance(m, BiRealBlock)]
    assert len(units) == len(blocks) > 0
    assert sum("BiRealBlock fused" in n for n in pk.notes) == len(blocks)
    with torch.no_grad():
        want = net(x)
    assert torch.equal(pk(x), want)
    with torch.no_grad():
        want1 = net(x[:1])              # torch's own float layers differ at batch 1
    assert torch.equal(pk(x[:1]), want1)
    plain = packed.export(net, x, fuse=False)
    assert not any(isinstance(m, PackedResidualConv) for m in plain.modules())
    assert torch.equal(plain(x), want)


def test_fused_unit_inside_a_non_sequential_model():
    gen = torch.Generator().manual_seed(1)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.block = BiRealBlock(8, 16, 2, weight_quantizer="ste_sign")

        def forward(self, x):
            return self.block(self.stem(x)).mean(dim=(2, 3))

    net = Wrapper()
    _randomise_bn(net, gen)
    x = _input(gen, 3, 3, 9, 9)
    pk = packed.export(net, x)
    assert pk.kind == "modules" and isinstance(pk.body.block, PackedResidualConv)
    with torch.no_grad():
        assert torch.equal(pk(x), net(x))


def test_zero_padding_block_is_not_fused_and_says_why():
    gen = torch.Generator().manual_seed(2)
    net = nn.Sequential(BiRealBlock(8, 8, pad_value=0.0, weight_quantizer="ste_sign"))
    _randomise_bn(net, gen)
    x = _input(gen, 2, 8, 6, 6)
    pk = packed.export(net, x)
    assert not any(isinstance(m, PackedResidualConv) for m in pk.modules())
    assert any("not fused" in n and "zero padding" in n for n in pk.notes)
    with torch.no_grad():
        assert torch.equal(pk(x), net(x))


@HYP
@given(c_in=st.integers(1, 70), widen=st.booleans(), stride=st.sampled_from([1, 2]),
       hw=st.integers(2, 9), spread=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_property_fused_unit_equals_torch_block(c_in, widen, stride, hw, spread, seed):
    gen = torch.Generator().manual_seed(seed)
    c_out = 2 * c_in if widen else c_in
    block = BiRealBlock(c_in, c_out, stride, weight_quantizer="ste_sign")
    _randomise_bn(block, gen, spread)
    unit, note = PackedResidualConv.from_block(copy.deepcopy(block), name="b")
    assert unit is not None, note
    x = _input(gen, 2, c_in, hw, hw)
    with torch.no_grad():
        want = block(x)
    got = unit(x)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    with torch.no_grad():
        want0 = block(x[:1])[0]
    assert torch.equal(unit(x[0]), want0)                   # unbatched input


def test_fused_unit_refuses_non_bireal_modules():
    unit, note = PackedResidualConv.from_block(nn.Conv2d(3, 3, 1))
    assert unit is None and "BiRealBlock" in note
    float_block = BiRealBlock(4, 4, binary=False)
    unit, note = PackedResidualConv.from_block(float_block)
    assert unit is None


@pytest.mark.parametrize("bad", ["float64", "int"])
def test_fused_unit_rejects_bad_inputs(bad):
    gen = torch.Generator().manual_seed(3)
    block = BiRealBlock(4, 4, weight_quantizer="ste_sign")
    _randomise_bn(block, gen)
    unit, _ = PackedResidualConv.from_block(block)
    assert unit is not None
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64) if bad == "float64" else \
        torch.ones(1, 4, 5, 5, dtype=torch.int64)
    with pytest.raises(TypeError, match="float32"):
        unit(x)


def test_consecutive_units_are_chained_and_pass_packed_signs():
    from bnnlab.packed.residual import PackedResidualChain

    gen = torch.Generator().manual_seed(4)
    net = models.tiny_bireal(in_channels=3, width=8, weight_quantizer="ste_sign")
    _randomise_bn(net, gen)
    x = _input(gen, 3, 3, 12, 12)
    pk = packed.export(net, x)
    chains = [m for m in pk.modules() if isinstance(m, PackedResidualChain)]
    assert len(chains) == 1 and any("chained" in n for n in pk.notes)
    units = list(chains[0].units)
    assert len(units) == sum(isinstance(m, BiRealBlock) for m in net.modules())
    with torch.no_grad():
        assert torch.equal(pk(x), net(x))
    # the emitted bits are exactly the next unit's own packing of the output
    h = pk.body[1](pk.body[0](x))
    y, bits = units[0]._run(h, None, True)
    y = torch.from_numpy(y)                 # _run returns the kernel's output array
    assert torch.equal(y, units[0](h))
    np.testing.assert_array_equal(bits.words, units[1].conv._pack(y).words)
    # a non-finite output raises as the unfused packing would
    assert isinstance(units[0].shortcut, nn.Identity)
    with pytest.raises(ValueError, match="conv output contains NaN or inf"):
        units[0]._run(torch.full_like(h, float("inf")), units[0].conv._pack(h), True)
    with pytest.raises(ValueError, match="NaN or inf"):
        chains[0](torch.full_like(h, float("nan")))
