"""The CIFAR-size reference architectures: shapes, published sizes, float twins, binary layers."""
from __future__ import annotations

import pytest
import torch

from bnnlab import models as M
from bnnlab.layers import BinaryConv2d, BinaryLinear


def test_vgg_small_has_binarynet_size_and_binary_layers():
    net = M.vgg_small()
    assert M.count_parameters(net) == 14_029_706      # BinaryNet's CIFAR-10 net: about 14 M
    kinds = [type(m) for m in net.modules()]
    assert kinds.count(BinaryConv2d) == 5 and kinds.count(BinaryLinear) == 2
    assert isinstance(net[0], torch.nn.Conv2d) and isinstance(net[-1], torch.nn.Linear)
    twin = M.vgg_small(binary=False)
    assert M.count_parameters(twin) == M.count_parameters(net)
    assert not any(isinstance(m, (BinaryConv2d, BinaryLinear)) for m in twin.modules())


@pytest.mark.parametrize("block", ["bireal", "reactnet"])
def test_resnet18_bireal_forward_and_backward(block):
    net = M.resnet18_bireal(width=8, block=block)
    x = torch.randn(2, 3, 32, 32)
    out = net(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_resnet18_bireal_has_resnet18_widths():
    assert M.count_parameters(M.resnet18_bireal()) == 11_173_962
    with pytest.raises(ValueError, match="block"):
        M.resnet18_bireal(block="vgg")
    with pytest.raises(ValueError, match="image_size"):
        M.vgg_small(image_size=4)
